export {
  canFreezeSnapshots,
  type ExportPreparing,
  PREPARE_EXPORT,
  preparesExport,
  SNAPSHOT_FREEZE,
  type SnapshotFreeze,
  SnapshotFreezes,
  type SnapshotFreezing,
} from './snapshot-freeze.js';
export { SnapshotHandle, type SnapshotHost, STORED_CHECKSUM } from './snapshot-handle.js';
export { checkSnapshotOptions } from './snapshot-options.js';
