/**
 * NbdDevice's options: their types and the checks that turn a URL or an
 * options object into where to connect (src/devices/nbd-device.ts).
 */
import { checkOptions, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE, SECTOR } from '../base/index.js';
import { BlockDeviceError } from '../errors.js';
import {
  type ConnectionTarget,
  NBD_DEFAULT_PORT,
  type NegotiatedExport,
  parseNbdUrl,
} from '../nbd/index.js';

/** TLS settings for `nbds://` URLs or the `tls` option (X.509 or a pre-shared key). */
export interface NbdClientTlsOptions {
  /** CA certificates (PEM) the server's certificate must chain to. @default Node's bundled CAs */
  ca?: string | Uint8Array | readonly (string | Uint8Array)[] | undefined;
  /** The client's certificate (PEM), for servers that verify clients. @default none */
  cert?: string | Uint8Array | undefined;
  /** The client certificate's private key (PEM). @default none */
  key?: string | Uint8Array | undefined;
  /**
   * A pre-shared key instead of certificates (qemu-nbd's and nbdkit's
   * `--tls-psk`): the identity and the key, as bytes or a hex string.
   * Uses TLS 1.2 PSK cipher suites. @default none
   */
  psk?: { identity: string; key: string | Uint8Array } | undefined;
  /** The name the server's certificate must carry. @default the host */
  servername?: string | undefined;
}

/** Options for {@link NbdDevice.connect}. */
export interface NbdDeviceOptions {
  /** TCP host of the server. @default '127.0.0.1' (unless `path` is given) */
  host?: string | undefined;
  /** TCP port of the server. @default 10809 */
  port?: number | undefined;
  /** Unix socket path of the server, instead of `host` and `port`. @default none */
  path?: string | undefined;
  /** The export's name. @default '' (the server's default export) */
  exportName?: string | undefined;
  /**
   * Upgrade the connection with `STARTTLS` (`true`: with Node's default
   * trust). Required by `nbds://` URLs; the connection fails rather than
   * continue in the clear. @default false
   */
  tls?: NbdClientTlsOptions | boolean | undefined;
  /**
   * Connections to open, used round-robin, where the export advertises
   * `NBD_FLAG_CAN_MULTI_CONN`; one otherwise. From 1 to 16. @default 1
   */
  connections?: number | undefined;
  /**
   * Milliseconds a request (and the connect with its handshake) may take;
   * past it the connection is dropped and the device fails with `EIO`.
   * @default 30000
   */
  timeoutMs?: number | undefined;
  /** Aborts the connect (and handshake); the promise rejects with the signal's reason. */
  signal?: AbortSignal | undefined;
  /** Refuse writes (`EROFS`) even where the export accepts them. @default false */
  readOnly?: boolean | undefined;
}

const DEFAULT_TIMEOUT_MS = 30_000;
const MAX_CONNECTIONS = 16;

/** The export's block size: preferred, clamped to 512 B..1 MiB, dividing the size. */
export function chooseBlockSize(info: NegotiatedExport): number {
  if (info.size % SECTOR !== 0) {
    throw new BlockDeviceError(
      'EINVAL',
      `NbdDevice: the export's size ${info.size} is not a multiple of ${SECTOR} bytes`,
    );
  }
  const preferred = info.preferredBlock;
  const hint = preferred > 0 && (preferred & (preferred - 1)) === 0 ? preferred : 4096;
  let blockSize = Math.min(MAX_BLOCK_SIZE, Math.max(MIN_BLOCK_SIZE, hint, info.minimumBlock));
  while (blockSize > MIN_BLOCK_SIZE && info.size % blockSize !== 0) blockSize /= 2;
  return blockSize;
}

/** Checks a URL or options object and the options beside it, before any connection. */
export function resolveTarget(
  target: string | URL | NbdDeviceOptions,
  options: NbdDeviceOptions | undefined,
): { connection: ConnectionTarget; count: number; readOnly: boolean } {
  const fromUrl = typeof target === 'string' || target instanceof URL;
  if (!fromUrl && (typeof target !== 'object' || target === null)) {
    throw new BlockDeviceError(
      'EINVAL',
      'NbdDevice.connect: a URL or an options object is required',
    );
  }
  const opts = checkOptions(
    fromUrl ? options : (target as NbdDeviceOptions),
    {
      host: 'string',
      port: 'number',
      path: 'string',
      exportName: 'string',
      tls: 'object',
      connections: 'number',
      timeoutMs: 'number',
      signal: 'signal',
      readOnly: 'boolean',
    },
    'NbdDevice.connect',
  );
  const tlsOption = opts.tls as NbdClientTlsOptions | boolean | undefined;
  if (tlsOption !== undefined && typeof tlsOption !== 'boolean' && typeof tlsOption !== 'object') {
    throw new BlockDeviceError(
      'EINVAL',
      'NbdDevice.connect: option tls must be an object or a boolean',
    );
  }
  let host: string | undefined;
  let port: number | undefined;
  let path: string | undefined;
  let exportName: string;
  let tlsRequired: boolean;
  let servername: string | undefined;
  if (fromUrl) {
    for (const key of ['host', 'port', 'path', 'exportName'] as const) {
      if (opts[key] !== undefined) {
        throw new BlockDeviceError(
          'EINVAL',
          `NbdDevice.connect: ${key} comes from the URL; do not pass it too`,
        );
      }
    }
    const address = parseNbdUrl(target as string | URL);
    ({ host, port, path, exportName } = address);
    tlsRequired = address.tls;
    servername = address.tlsServername;
    if (tlsRequired && tlsOption === false) {
      throw new BlockDeviceError(
        'EINVAL',
        `NbdDevice.connect: ${String(target)} requires TLS, but tls is false`,
      );
    }
  } else {
    if (opts.path !== undefined && (opts.host !== undefined || opts.port !== undefined)) {
      throw new BlockDeviceError('EINVAL', 'NbdDevice.connect: give path or host/port, not both');
    }
    path = opts.path;
    host = path === undefined ? (opts.host ?? '127.0.0.1') : undefined;
    port = path === undefined ? (opts.port ?? NBD_DEFAULT_PORT) : undefined;
    exportName = opts.exportName ?? '';
    tlsRequired = false;
  }
  if (port !== undefined && (!Number.isInteger(port) || port < 1 || port > 65535)) {
    throw new BlockDeviceError(
      'EINVAL',
      `NbdDevice.connect: port must be an integer 1..65535, got ${port}`,
    );
  }
  const count = opts.connections ?? 1;
  if (!Number.isInteger(count) || count < 1 || count > MAX_CONNECTIONS) {
    throw new BlockDeviceError(
      'EINVAL',
      `NbdDevice.connect: connections must be an integer 1..${MAX_CONNECTIONS}, got ${count}`,
    );
  }
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    throw new BlockDeviceError(
      'EINVAL',
      `NbdDevice.connect: timeoutMs must be a positive number, got ${timeoutMs}`,
    );
  }
  const tlsSettings =
    typeof tlsOption === 'object' ? tlsOption : tlsOption === true || tlsRequired ? {} : undefined;
  const tls =
    tlsSettings === undefined
      ? undefined
      : { ...tlsSettings, servername: tlsSettings.servername ?? servername };
  return {
    connection: { host, port, path, exportName, tls, timeoutMs, signal: opts.signal },
    count,
    readOnly: opts.readOnly ?? false,
  };
}
