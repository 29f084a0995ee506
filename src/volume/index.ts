export type { DeviceSource, DeviceSpec, FileSpec, MemorySpec, NbdSpec } from './device-spec.js';
export { VirtualVolume } from './virtual-volume.js';
export type { OrphanPartitionSnapshot, VolumeCheckReport } from './volume-check.js';
export type { SnapshotScheduleEvents, VirtualVolumeEvents } from './volume-events.js';
export type {
  PartitionSnapshotInfo,
  PartitionSpec,
  VirtualVolumeCommonOptions,
  VirtualVolumeOpenOptions,
  VirtualVolumeOptions,
  VolumeSnapshotInfo,
} from './volume-options.js';
export { type ScheduleOptions, SnapshotSchedule } from './volume-schedule.js';
