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
} from './devices/index.js';
export { BlockDeviceError, type BlockDeviceErrorCode, ERROR_CODES } from './errors.js';
export {
  JournalDevice,
  type JournalDeviceOptions,
  type JournalRepair,
} from './journal/index.js';
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
export {
  type DeviceSource,
  type DeviceSpec,
  type FileSpec,
  type MemorySpec,
  type PartitionSnapshotInfo,
  type PartitionSpec,
  type ScheduleOptions,
  SnapshotSchedule,
  type SnapshotScheduleEvents,
  VirtualVolume,
  type VirtualVolumeCommonOptions,
  type VirtualVolumeEvents,
  type VirtualVolumeOpenOptions,
  type VirtualVolumeOptions,
  type VolumeSnapshotInfo,
} from './volume/index.js';
