export type { ExcludedReads } from './cow-device-base.js';
export { CowSnapshotDevice, type CowSnapshotDeviceOptions } from './cow-snapshot-device.js';
export {
  type SelectiveRestoreOptions,
  SelectiveSnapshotDevice,
  type SelectiveSnapshotDeviceOpenOptions,
  type SelectiveSnapshotDeviceOptions,
  type SelectiveSnapshotOptions,
} from './selective-snapshot-device.js';
