import { AbstractBlockDevice } from '../base/index.js';
import type { PointInTime } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import type { RecordIndex } from './journal-index.js';
import type { ChangesTable } from './journal-table.js';

/** What a point-in-time view needs from the journal device that owns it. */
export interface ViewHost {
  /** Reads the view's range; `ENOENT` once a checkpoint applied past its point. */
  readView(view: JournalView, offset: number, length: number): Promise<Uint8Array>;
  /** Forgets a closed view. */
  releaseView(view: JournalView): void;
}

/**
 * A read-only view of a journal device right after record `sequence`: the
 * production device overlaid with the journal's records up to it. Its owner
 * serves the reads; closing it closes only the view.
 */
export class JournalView extends AbstractBlockDevice implements PointInTime {
  readonly sequence: number;
  readonly time: Date;
  /**
   * The changes table as of `sequence` (built by the owner on first read, and
   * again after each checkpoint, which moves applied blocks to production),
   * with the owner's checkpoint generation it was built in.
   */
  table: ChangesTable | undefined;
  generation = -1;
  readonly #host: ViewHost;

  constructor(host: ViewHost, sequence: number, time: number, size: number, blockSize: number) {
    super('PointInTime', size, blockSize, true);
    this.#host = host;
    this.sequence = sequence;
    this.time = new Date(time);
  }

  protected override checkWritable(): void {
    throw new BlockDeviceError(
      'EROFS',
      `the point-in-time view of record ${this.sequence} is read-only`,
    );
  }

  protected _read(offset: number, length: number): Promise<Uint8Array> {
    return this.#host.readView(this, offset, length);
  }

  /** Never reached: the base class refuses writes to a read-only device first. */
  protected async _write(): Promise<void> {
    this.checkWritable();
  }

  protected async _flush(): Promise<void> {}

  protected async _close(): Promise<void> {
    this.table = undefined;
    this.#host.releaseView(this);
  }
}

/** Where a journal's viewable history starts and ends. */
export interface History {
  /** The oldest viewable record (a checkpoint applied, or is applying, through it). */
  oldest: number;
  /** The newest record. */
  newest: number;
  /** The oldest record still in the journal, and when the last applied one was written. */
  headSeq: number;
  headTime: number;
  index: RecordIndex;
}

/**
 * The record a `pointInTime` argument names: a sequence number as given, a
 * Date as the last record written at or before it.
 * @throws `EINVAL` for neither; `ERANGE` for a negative, fractional or NaN
 *   number, one past `newest`, or an invalid Date; `ENOENT` for a point
 *   before `oldest` (checkpointed into production).
 */
export function resolvePoint(point: unknown, history: History): number {
  const { oldest, newest } = history;
  if (point instanceof Date) {
    const time = point.getTime();
    if (Number.isNaN(time)) throw new BlockDeviceError('ERANGE', 'pointInTime: invalid Date');
    const seq = history.index.seqAt(time);
    if (seq < oldest || (seq === history.headSeq - 1 && time < history.headTime)) {
      throw new BlockDeviceError(
        'ENOENT',
        `pointInTime: ${point.toISOString()} is before the oldest point still in the journal (record ${oldest})`,
      );
    }
    return seq;
  }
  if (typeof point !== 'number') {
    throw new BlockDeviceError(
      'EINVAL',
      `pointInTime: expected a sequence number or a Date, got ${typeof point}`,
    );
  }
  if (!Number.isSafeInteger(point) || point < 0) {
    throw new BlockDeviceError('ERANGE', `pointInTime: ${point} is not a sequence number`);
  }
  if (point > newest) {
    throw new BlockDeviceError(
      'ERANGE',
      `pointInTime: record ${point} is past the newest, ${newest}`,
    );
  }
  if (point < oldest) {
    throw new BlockDeviceError(
      'ENOENT',
      `pointInTime: record ${point} was checkpointed into production (the oldest point is ${oldest})`,
    );
  }
  return point;
}
