export { type ConnectionTarget, NbdClientConnection } from './nbd-client-connection.js';
export { NbdServerError } from './nbd-client-errors.js';
export type { HandshakeTls, NegotiatedExport } from './nbd-client-handshake.js';
export { type NbdAddress, parseNbdUrl } from './nbd-client-url.js';
export {
  type NbdConnectionInfo,
  NbdServer,
  type NbdServerAddress,
  type NbdServerEvents,
  type NbdServerOptions,
  serveNbd,
} from './nbd-server.js';
export * from './protocol.js';
export {
  type NbdExport,
  type NbdExportResolver,
  type NbdExports,
  type ResolvedNbdExport,
  snapshotExports,
} from './server-exports.js';
export type { NbdTlsCertificateOptions, NbdTlsOptions, NbdTlsPskOptions } from './server-tls.js';
