import type { Socket } from 'node:net';
import tls from 'node:tls';
import { BlockDeviceError } from '../errors.js';

/** TLS with X.509 certificates (as `qemu-nbd --tls-creds` and `nbdkit --tls-certificates`). */
export interface NbdTlsCertificateOptions {
  /**
   * `'require'`: every option but STARTTLS and ABORT is refused with
   * `NBD_REP_ERR_TLS_REQD` until the client upgrades (the spec's FORCEDTLS,
   * `--tls=require`); `'allow'`: the client may upgrade or not. @default 'require'
   */
  readonly mode?: 'require' | 'allow' | undefined;
  /** The server's private key, PEM. */
  readonly key: string | Uint8Array;
  /** The server's certificate (chain), PEM. */
  readonly cert: string | Uint8Array;
  /**
   * Certificate authorities whose client certificates are accepted; when
   * given, a client must present a certificate they signed. @default undefined
   */
  readonly ca?: string | Uint8Array | undefined;
}

/** TLS with pre-shared keys (as `nbdkit --tls-psk` and qemu-nbd's `tls-creds-psk`). */
export interface NbdTlsPskOptions {
  /** As for certificates. @default 'require' */
  readonly mode?: 'require' | 'allow' | undefined;
  /** Identity → key (the raw key bytes, or the hex string a `psktool` file holds). */
  readonly psk:
    | ReadonlyMap<string, string | Uint8Array>
    | Readonly<Record<string, string | Uint8Array>>;
}

/** The `tls` option of `serveNbd`. */
export type NbdTlsOptions = NbdTlsCertificateOptions | NbdTlsPskOptions;

/**
 * PSK cipher suites of TLS 1.2 that libnbd (GnuTLS), qemu and nbdkit
 * negotiate; Node offers PSK only through `pskCallback`, which OpenSSL runs
 * for TLS 1.2 suites like these.
 */
const PSK_CIPHERS = [
  'ECDHE-PSK-AES256-CBC-SHA384',
  'ECDHE-PSK-AES128-CBC-SHA256',
  'DHE-PSK-AES256-GCM-SHA384',
  'DHE-PSK-AES128-GCM-SHA256',
  'PSK-AES256-GCM-SHA384',
  'PSK-AES128-GCM-SHA256',
].join(':');

/** How one server upgrades a connection after acknowledging STARTTLS. */
export interface TlsUpgrader {
  /** Whether plain clients are refused until they upgrade. */
  readonly required: boolean;
  /** Wraps `socket` in a TLS server session; resolves once the handshake succeeded. */
  upgrade(socket: Socket): Promise<tls.TLSSocket>;
}

/** Validates the `tls` option and builds its secure context once. @throws `EINVAL`. */
export function tlsUpgrader(options: NbdTlsOptions): TlsUpgrader {
  if (typeof options !== 'object' || options === null) {
    throw new BlockDeviceError('EINVAL', 'serveNbd: tls must be an object');
  }
  const mode = options.mode ?? 'require';
  if (mode !== 'require' && mode !== 'allow') {
    throw new BlockDeviceError(
      'EINVAL',
      `serveNbd: tls.mode ${JSON.stringify(mode)} is not 'require' or 'allow'`,
    );
  }
  // TLSSocket takes pskCallback as tls.createServer does (Node's typings omit it there).
  let socketOptions: tls.TLSSocketOptions & Pick<tls.TlsOptions, 'pskCallback'>;
  if ('psk' in options) {
    const keys = pskKeys(options.psk);
    socketOptions = {
      isServer: true,
      secureContext: tls.createSecureContext({ ciphers: PSK_CIPHERS, maxVersion: 'TLSv1.2' }),
      pskCallback: (_socket: tls.TLSSocket, identity: string) => keys.get(identity) ?? null,
    };
  } else {
    let secureContext: tls.SecureContext;
    try {
      secureContext = tls.createSecureContext({
        key: pemOf(options.key),
        cert: pemOf(options.cert),
        ...(options.ca === undefined ? {} : { ca: pemOf(options.ca) }),
        minVersion: 'TLSv1.2',
      });
    } catch (err) {
      throw new BlockDeviceError(
        'EINVAL',
        `serveNbd: tls key or certificate refused: ${String(err)}`,
        {
          cause: err,
        },
      );
    }
    const verify = options.ca !== undefined;
    socketOptions = {
      isServer: true,
      secureContext,
      requestCert: verify,
      rejectUnauthorized: verify,
    };
  }
  return {
    required: mode === 'require',
    upgrade(socket) {
      const secure = new tls.TLSSocket(socket, socketOptions);
      return new Promise((resolve, reject) => {
        const fail = (err: Error) => {
          secure.destroy();
          reject(err);
        };
        secure.once('error', fail);
        secure.once('close', () => fail(new Error('connection closed during the TLS handshake')));
        secure.once('secure', () => {
          secure.off('error', fail);
          secure.removeAllListeners('close');
          resolve(secure);
        });
      });
    },
  };
}

function pemOf(value: string | Uint8Array): string | Buffer {
  return typeof value === 'string' ? value : Buffer.from(value);
}

function pskKeys(psk: NbdTlsPskOptions['psk']): Map<string, Buffer> {
  if (typeof psk !== 'object' || psk === null) {
    throw new BlockDeviceError('EINVAL', 'serveNbd: tls.psk must be a Map or an object');
  }
  const entries = psk instanceof Map ? [...psk] : Object.entries(psk);
  const keys = new Map<string, Buffer>();
  for (const [identity, key] of entries as [string, string | Uint8Array][]) {
    const bytes =
      typeof key === 'string' && /^(?:[0-9a-fA-F]{2})+$/.test(key)
        ? Buffer.from(key, 'hex')
        : key instanceof Uint8Array
          ? Buffer.from(key)
          : undefined;
    if (bytes === undefined || bytes.length === 0) {
      throw new BlockDeviceError(
        'EINVAL',
        `serveNbd: tls.psk key of ${JSON.stringify(identity)} is not bytes or hex`,
      );
    }
    keys.set(identity, bytes);
  }
  if (keys.size === 0) throw new BlockDeviceError('EINVAL', 'serveNbd: tls.psk holds no key');
  return keys;
}
