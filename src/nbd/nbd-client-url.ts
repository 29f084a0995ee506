/**
 * NBD URIs (the NBD project's `uri.md`): `nbd://host[:port]/export`,
 * `nbd+unix:///export?socket=path`, and their TLS forms `nbds://` and
 * `nbds+unix://`, which must fail rather than connect in the clear.
 */
import { BlockDeviceError } from '../errors.js';
import { NBD_DEFAULT_PORT, NBD_MAX_STRING } from './protocol.js';

/** Where an NBD URI points: a TCP host and port, or a Unix socket path, and the export. */
export interface NbdAddress {
  /** TCP host (a name or an IP address, IPv6 without brackets); undefined for a Unix socket. */
  readonly host: string | undefined;
  /** TCP port; undefined for a Unix socket. */
  readonly port: number | undefined;
  /** Unix socket path; undefined for TCP. */
  readonly path: string | undefined;
  /** The export name: the URI's path without its leading `/`, percent-decoded. */
  readonly exportName: string;
  /** Whether the scheme demands TLS (`nbds`, `nbds+unix`). */
  readonly tls: boolean;
  /** `tls-hostname`: the name to check the server's certificate against, if given. */
  readonly tlsServername: string | undefined;
}

const SCHEMES: Readonly<Record<string, { unix: boolean; tls: boolean }>> = {
  'nbd:': { unix: false, tls: false },
  'nbds:': { unix: false, tls: true },
  'nbd+unix:': { unix: true, tls: false },
  'nbds+unix:': { unix: true, tls: true },
};

/** Query parameters this client understands; any other is diagnosed, as uri.md asks. */
const KNOWN_QUERY = new Set(['socket', 'tls-hostname', 'tls-type', 'tls-verify-peer']);

/**
 * Parses an NBD URI.
 * @throws `EINVAL` naming the URI for another scheme, a Unix URI without
 *   `socket` or with a host, a TCP URI without a host, a bad port, an
 *   unknown query parameter, or an export name over the spec's 4096 bytes.
 */
export function parseNbdUrl(url: string | URL): NbdAddress {
  const text = String(url);
  let parsed: URL;
  try {
    parsed = new URL(text);
  } catch {
    throw new BlockDeviceError('EINVAL', `not a URL: ${JSON.stringify(text)}`);
  }
  const scheme = SCHEMES[parsed.protocol];
  if (scheme === undefined) {
    throw new BlockDeviceError(
      'EINVAL',
      `${JSON.stringify(text)}: scheme must be nbd, nbds, nbd+unix or nbds+unix`,
    );
  }
  for (const key of parsed.searchParams.keys()) {
    if (!KNOWN_QUERY.has(key) && !key.startsWith('x-')) {
      throw new BlockDeviceError(
        'EINVAL',
        `${JSON.stringify(text)}: unknown query parameter ${key}`,
      );
    }
  }
  if (parsed.searchParams.get('tls-verify-peer') === '0') {
    throw new BlockDeviceError(
      'EINVAL',
      `${JSON.stringify(text)}: tls-verify-peer=0 is refused: an unverified server is not a secure one`,
    );
  }
  // uri.md: the path except its leading '/' is the export name, percent-decoded.
  let exportName: string;
  try {
    exportName = decodeURIComponent(parsed.pathname.replace(/^\//, ''));
  } catch {
    throw new BlockDeviceError(
      'EINVAL',
      `${JSON.stringify(text)}: bad percent-encoding in the export name`,
    );
  }
  if (Buffer.byteLength(exportName) > NBD_MAX_STRING || exportName.includes('\0')) {
    throw new BlockDeviceError(
      'EINVAL',
      `${JSON.stringify(text)}: an export name is at most ${NBD_MAX_STRING} bytes, without NUL`,
    );
  }
  const tlsServername = parsed.searchParams.get('tls-hostname') ?? undefined;
  if (scheme.unix) {
    const path = parsed.searchParams.get('socket');
    if (path === null || path === '') {
      throw new BlockDeviceError(
        'EINVAL',
        `${JSON.stringify(text)}: a Unix URI needs ?socket=path`,
      );
    }
    if (parsed.host !== '') {
      throw new BlockDeviceError('EINVAL', `${JSON.stringify(text)}: a Unix URI has no host`);
    }
    return { host: undefined, port: undefined, path, exportName, tls: scheme.tls, tlsServername };
  }
  if (parsed.searchParams.has('socket')) {
    throw new BlockDeviceError(
      'EINVAL',
      `${JSON.stringify(text)}: socket= belongs to nbd+unix URIs`,
    );
  }
  if (parsed.hostname === '') {
    throw new BlockDeviceError('EINVAL', `${JSON.stringify(text)}: a TCP URI needs a host`);
  }
  // The URL class keeps IPv6 literals in brackets; net.connect wants them bare.
  const host = parsed.hostname.replace(/^\[(.*)\]$/, '$1');
  const port = parsed.port === '' ? NBD_DEFAULT_PORT : Number(parsed.port);
  return { host, port, path: undefined, exportName, tls: scheme.tls, tlsServername };
}
