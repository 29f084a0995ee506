export { SnapshotHandle, type SnapshotHost, STORED_CHECKSUM } from './snapshot-handle.js';
export { checkSnapshotOptions } from './snapshot-options.js';
