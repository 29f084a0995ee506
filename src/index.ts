export type {
  BlockDevice,
  BlockDeviceEvents,
  ChangeTracking,
  CheckpointEvent,
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
  CowSnapshotDevice,
  type CowSnapshotDeviceOptions,
} from './devices/cow-snapshot-device.js';
export { FileDevice, type FileDeviceOptions } from './devices/file-device.js';
export { JournalDevice, type JournalDeviceOptions } from './devices/journal-device.js';
export { MemoryDevice, type MemoryDeviceOptions } from './devices/memory-device.js';
export {
  type SelectiveRestoreOptions,
  SelectiveSnapshotDevice,
  type SelectiveSnapshotDeviceOpenOptions,
  type SelectiveSnapshotDeviceOptions,
  type SelectiveSnapshotOptions,
} from './devices/selective-snapshot-device.js';
export {
  type CopyConflictPolicy,
  type CopyProgress,
  type CopyReport,
  SnapshotCopyJob,
  type SnapshotCopyJobEvents,
  type SnapshotCopyJobOptions,
  type SnapshotCopyJobResumeOptions,
} from './devices/snapshot-copy-job.js';
export { BlockDeviceError, type BlockDeviceErrorCode, ERROR_CODES } from './errors.js';
export { AbstractBlockDevice } from './internal/abstract-device.js';
export type { EventMap, TypedEmitter } from './internal/typed-emitter.js';
export {
  type AppliedProgress,
  type ApplyReport,
  type ApplyStreamOptions,
  applyStream,
  type ByteSource,
  type ExportStreamOptions,
  exportStream,
  StreamApplyError,
} from './stream.js';
