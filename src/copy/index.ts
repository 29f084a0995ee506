export {
  type CopyConflictPolicy,
  type CopyProgress,
  type CopyReport,
  SnapshotCopyJob,
  type SnapshotCopyJobEvents,
  type SnapshotCopyJobOptions,
  type SnapshotCopyJobResumeOptions,
} from './snapshot-copy-job.js';
