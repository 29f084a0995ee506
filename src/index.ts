export type { EventMap, TypedEmitter } from './base/index.js';
export { AbstractBlockDevice } from './base/index.js';
export {
  type CopyConflictPolicy,
  type CopyProgress,
  type CopyReport,
  SnapshotCopyJob,
  type SnapshotCopyJobEvents,
  type SnapshotCopyJobOptions,
  type SnapshotCopyJobResumeOptions,
} from './copy/index.js';
export {
  CowSnapshotDevice,
  type CowSnapshotDeviceOptions,
  type SelectiveRestoreOptions,
  SelectiveSnapshotDevice,
  type SelectiveSnapshotDeviceOpenOptions,
  type SelectiveSnapshotDeviceOptions,
  type SelectiveSnapshotOptions,
} from './cow/index.js';
export type {
  BlockDevice,
  BlockDeviceEvents,
  ChangeTracking,
  CheckCounts,
  CheckOptions,
  CheckProblem,
  CheckpointEvent,
  CheckReadable,
  CheckReport,
  CheckStructure,
  Extent,
  JournalDeviceEvents,
  JournalSnapshotInfo,
  PointInTime,
  PreserveEvent,
  ProgressEvent,
  Snapshot,
  SnapshotCapable,
  SnapshotInfo,
  SnapshotOptions,
} from './device.js';
export {
  FileDevice,
  type FileDeviceOptions,
  MemoryDevice,
  type MemoryDeviceOptions,
  type NbdClientTlsOptions,
  NbdDevice,
  type NbdDeviceEvents,
  type NbdDeviceOptions,
  type NbdNegotiated,
} from './devices/index.js';
export { BlockDeviceError, type BlockDeviceErrorCode, ERROR_CODES } from './errors.js';
export {
  JournalDevice,
  type JournalDeviceOptions,
  type JournalRepair,
} from './journal/index.js';
export {
  type NbdConnectionInfo,
  type NbdExport,
  type NbdExportResolver,
  type NbdExports,
  NbdServer,
  type NbdServerAddress,
  NbdServerError,
  type NbdServerEvents,
  type NbdServerOptions,
  type NbdTlsCertificateOptions,
  type NbdTlsOptions,
  type NbdTlsPskOptions,
  type ResolvedNbdExport,
  serveNbd,
  snapshotExports,
} from './nbd/index.js';
export {
  type AppliedProgress,
  type ApplyReport,
  type ApplyStreamOptions,
  applyStream,
  type ByteSource,
  type ExportStreamOptions,
  exportStream,
  StreamApplyError,
} from './stream/index.js';
