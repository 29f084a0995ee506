import { readFile } from 'node:fs/promises';
import {
  BlockDeviceError,
  type NbdExports,
  type NbdServerAddress,
  type NbdServerOptions,
  type NbdTlsOptions,
  serveNbd,
} from '../index.js';
import {
  type CommandContext,
  type OptionSpec,
  type OptionValues,
  stringOption,
} from './command.js';

/*
 * What `serve` and `pit --serve` share: where to listen and with what TLS
 * (the flags qemu-nbd and nbdkit users know), the URLs a client connects
 * to, and the loop that serves until SIGINT/SIGTERM and then closes the
 * server before the caller closes the volume, so no request is cut off by
 * a device closing under it.
 */

/** The listening and TLS options of every command that serves. */
export const LISTEN_OPTIONS: OptionSpec = {
  host: { type: 'string' },
  port: { type: 'string' },
  socket: { type: 'string' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  'tls-ca': { type: 'string' },
  'tls-psk': { type: 'string' },
  tls: { type: 'string' },
};

/** Help for {@link LISTEN_OPTIONS}. */
export const LISTEN_HELP: readonly (readonly [string, string])[] = [
  ['--host ADDR', 'address to listen on (default 127.0.0.1; 0.0.0.0 or :: for every interface)'],
  ['--port PORT', 'TCP port (default 10809; 0 lets the system pick one, printed in the URL)'],
  ['--socket PATH', 'listen on a Unix socket instead of TCP (nbd+unix:///NAME?socket=PATH)'],
  ['--tls-cert FILE', 'TLS with this certificate (PEM); needs --tls-key'],
  ['--tls-key FILE', "the certificate's private key (PEM)"],
  ['--tls-ca FILE', 'accept only clients with a certificate these CAs signed (PEM)'],
  ['--tls-psk FILE', 'TLS with pre-shared keys: identity:hexkey lines (psktool -p FILE -u NAME)'],
  [
    '--tls require|allow',
    'refuse clients that do not upgrade to TLS, or let them choose (default require)',
  ],
];

/** Where to listen and with what TLS, as `serveNbd` takes it. */
export type ListenOptions = Pick<NbdServerOptions, 'host' | 'port' | 'path' | 'tls'>;

/**
 * The listen options the flags name, with certificate and key files read.
 * @throws `EINVAL` for a bad port, conflicting flags or a malformed PSK
 *   file; `ENOENT` for a file that is not there.
 */
export async function listenOptions(values: OptionValues): Promise<ListenOptions> {
  const host = stringOption(values, 'host');
  const portText = stringOption(values, 'port');
  const socket = stringOption(values, 'socket');
  if (socket !== undefined && (host !== undefined || portText !== undefined)) {
    throw new BlockDeviceError('EINVAL', 'give either --socket or --host/--port');
  }
  let port: number | undefined;
  if (portText !== undefined) {
    port = /^\d{1,5}$/.test(portText) ? Number(portText) : Number.NaN;
    if (!(port <= 65535)) {
      throw new BlockDeviceError('EINVAL', `--port '${portText}' is not a port from 0 to 65535`);
    }
  }
  const tls = await tlsOptions(values);
  return {
    ...(socket === undefined
      ? { host: host ?? '127.0.0.1', port: port ?? 10809 }
      : { path: socket }),
    ...(tls === undefined ? {} : { tls }),
  };
}

async function tlsOptions(values: OptionValues): Promise<NbdTlsOptions | undefined> {
  const cert = stringOption(values, 'tls-cert');
  const key = stringOption(values, 'tls-key');
  const ca = stringOption(values, 'tls-ca');
  const psk = stringOption(values, 'tls-psk');
  const modeText = stringOption(values, 'tls');
  if (modeText !== undefined && modeText !== 'require' && modeText !== 'allow') {
    throw new BlockDeviceError('EINVAL', `--tls '${modeText}' is not require or allow`);
  }
  const mode = modeText as 'require' | 'allow' | undefined;
  if (psk !== undefined) {
    if (cert !== undefined || key !== undefined || ca !== undefined) {
      throw new BlockDeviceError('EINVAL', 'give either --tls-psk or --tls-cert/--tls-key');
    }
    return { mode, psk: parsePskFile(await readFile(psk, 'utf8'), psk) };
  }
  if (cert === undefined && key === undefined) {
    if (ca !== undefined || mode !== undefined) {
      throw new BlockDeviceError(
        'EINVAL',
        '--tls and --tls-ca need --tls-cert and --tls-key (or --tls-psk)',
      );
    }
    return undefined;
  }
  if (cert === undefined || key === undefined) {
    throw new BlockDeviceError(
      'EINVAL',
      'TLS with certificates needs both --tls-cert and --tls-key',
    );
  }
  return {
    mode,
    cert: await readFile(cert),
    key: await readFile(key),
    ...(ca === undefined ? {} : { ca: await readFile(ca) }),
  };
}

/**
 * The keys of a PSK file as psktool writes it and nbdkit and qemu-nbd read
 * it: one `identity:hexkey` line per client; blank lines are skipped.
 * @throws `EINVAL` naming the line (never the key) that is not one, or a file without keys.
 */
export function parsePskFile(text: string, file: string): Map<string, string> {
  const keys = new Map<string, string>();
  const lines = text.split(/\r?\n/);
  for (const [index, line] of lines.entries()) {
    if (line.trim() === '') continue;
    const colon = line.indexOf(':');
    const identity = colon > 0 ? line.slice(0, colon) : '';
    const key = line.slice(colon + 1).trim();
    if (identity === '' || !/^(?:[0-9a-fA-F]{2})+$/.test(key)) {
      throw new BlockDeviceError(
        'EINVAL',
        `${file}:${index + 1} is not an identity:hexkey line (psktool -p ${file} -u NAME writes one)`,
      );
    }
    keys.set(identity, key);
  }
  if (keys.size === 0)
    throw new BlockDeviceError('EINVAL', `${file} holds no identity:hexkey line`);
  return keys;
}

/**
 * The URL a client uses for `name` on `address` (the NBD project's uri.md):
 * `nbd://host:port/name`, `nbd+unix:///name?socket=path`, `nbds…` with TLS.
 */
export function exportUrl(address: NbdServerAddress, name: string, tls: boolean): string {
  const scheme = tls ? 'nbds' : 'nbd';
  // '@' and ':' are allowed in a URI path; '?' and '#' would end it.
  const path = encodeURI(name).replace(/[?#]/g, encodeURIComponent);
  if ('path' in address) {
    const socket = encodeURI(address.path).replace(/[?#&+=]/g, encodeURIComponent);
    return `${scheme}+unix:///${path}?socket=${socket}`;
  }
  const host = address.host.includes(':') ? `[${address.host}]` : address.host;
  return `${scheme}://${host}:${address.port}/${path}`;
}

/** One export as `serve` announces it. */
export interface AnnouncedExport {
  readonly name: string;
  readonly readOnly: boolean;
  /** What it is: `live volume`, `snapshot <id>`, `point in time after record <n>`. */
  readonly what: string;
}

/**
 * Serves `exports` until the command's signal aborts (SIGINT, SIGTERM),
 * then closes the server: requests already read are answered and every
 * connection ends before this resolves, so the caller may close the
 * devices. Prints once listening: every export's URL, or with `--json`
 * one line `{volume, address, tls, exports: [{name, url, readOnly, what}]}`.
 * @throws `EBUSY` when the address is in use, what `serveNbd` throws otherwise.
 */
export async function serveUntilStopped(
  source: string,
  exports: NbdExports,
  announced: readonly AnnouncedExport[],
  listen: ListenOptions,
  context: CommandContext,
): Promise<void> {
  const server = await serveNbd({ ...listen, exports, defaultExport: announced[0]?.name }).catch(
    (err: unknown) => {
      throw BlockDeviceError.is(err, 'EBUSY') ? addressInUse(listen, err) : err;
    },
  );
  try {
    server.on('error', (err, connection) =>
      context.note(
        `${connection === undefined ? 'server' : `client ${connection.remote}`}: ${err.message}`,
      ),
    );
    const tls = listen.tls === undefined ? null : (listen.tls.mode ?? 'require');
    const listed = announced.map((e) => ({
      ...e,
      url: exportUrl(server.address, e.name, listen.tls !== undefined),
    }));
    if (context.json) {
      const line = { volume: source, address: server.address, tls, exports: listed };
      context.io.stdout.write(`${JSON.stringify(line)}\n`);
    } else if (!context.quiet) {
      const width = Math.max(...listed.map((e) => e.url.length));
      const rows = listed.map(
        (e) => `  ${e.url.padEnd(width)}  ${e.what}${e.readOnly ? ', read-only' : ', writable'}`,
      );
      context.io.stdout.write(
        `serving ${source}${tls === null ? '' : tls === 'require' ? ' (TLS required)' : ' (TLS allowed)'}; Ctrl-C or SIGTERM stops:\n${rows.join('\n')}\n`,
      );
    }
    await aborted(context.signal);
  } finally {
    await server.close();
  }
}

/** The one line an operator needs when the address is taken: where, and what to do. */
function addressInUse(listen: ListenOptions, err: BlockDeviceError): BlockDeviceError {
  const message =
    listen.path === undefined
      ? `${listen.host}:${listen.port} is in use (another NBD server?): pick another --port`
      : `${listen.path} exists (another server, or a stale socket: remove it if none runs)`;
  return new BlockDeviceError('EBUSY', message, { cause: err });
}

function aborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener('abort', () => resolve(), { once: true });
  });
}
