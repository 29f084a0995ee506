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
