/**
 * `blocksnap/nbd`: everything NBD in one entry — the server (`serveNbd`,
 * `snapshotExports`), the client device (`NbdDevice`), their types, and the
 * protocol's numbers as `NbdProtocol` (the constants of the NBD project's
 * `proto.md`), for programs that speak NBD themselves. The classes are the
 * main entry's own: `NbdDevice` from here is `NbdDevice` from `blocksnap`.
 */
export {
  type NbdClientTlsOptions,
  NbdDevice,
  type NbdDeviceEvents,
  type NbdDeviceOptions,
  type NbdNegotiated,
} from './devices/index.js';
export {
  type NbdAddress,
  type NbdConnectionInfo,
  type NbdExport,
  type NbdExportResolver,
  type NbdExports,
  NbdProtocol,
  NbdServer,
  type NbdServerAddress,
  NbdServerError,
  type NbdServerEvents,
  type NbdServerOptions,
  type NbdTlsCertificateOptions,
  type NbdTlsOptions,
  type NbdTlsPskOptions,
  parseNbdUrl,
  type ResolvedNbdExport,
  serveNbd,
  snapshotExports,
} from './nbd/index.js';
