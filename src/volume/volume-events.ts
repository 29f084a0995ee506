import type { SnapshotInfo } from '../device.js';
import type { BlockDeviceError } from '../errors.js';
import type { VolumeSnapshotInfo } from './volume-options.js';

/** The typed events of a {@link VirtualVolume}. */
export type VirtualVolumeEvents = {
  /** An overall snapshot was committed. */
  snapshot: (info: VolumeSnapshotInfo) => void;
  /** An overall snapshot was deleted. */
  'snapshot-deleted': (id: string) => void;
  /**
   * A processor's worker died: its partitions' I/O fails `EIO` until
   * `restartProcessor(index)`.
   */
  'processor-exit': (index: number, err: BlockDeviceError) => void;
  /**
   * A background failure no caller could receive: a worker died, or a
   * partition snapshot a delete or a failed snapshot left behind could not
   * be removed (the next open removes it).
   */
  error: (err: Error) => void;
};

/** The typed events of a {@link SnapshotSchedule}. */
export type SnapshotScheduleEvents = {
  /** The schedule took an overall snapshot. */
  snapshot: (info: SnapshotInfo) => void;
  /** The schedule deleted a snapshot beyond `keep`. */
  deleted: (id: string) => void;
  /** A scheduled snapshot or delete failed; the schedule goes on. */
  error: (err: Error) => void;
  /** The schedule stopped (close, abort or `stop()`); no event follows. */
  stopped: () => void;
};
