import type { SnapshotCapable } from '../device.js';

/** A writable snapshot held still: what {@link SNAPSHOT_FREEZE} returns. */
export interface SnapshotFreeze {
  /**
   * Resolves once every write to the snapshot called before the freeze has
   * settled: from then on its content and its change tables stay as they are
   * until `release`.
   */
  readonly settled: Promise<void>;
  /** Lets writes through again (once the last freeze on the snapshot is released); idempotent. */
  release(): void;
}

/**
 * Internal method of a snapshot-capable device: holds writable snapshot
 * `id` still — every write to it called from now on, through any handle,
 * rejects `EBUSY` until the freeze is released; writes called before it
 * complete (`settled`). Keyed by a symbol so it stays off the public
 * surface: an export of a writable snapshot uses it, so that its stream
 * carries one state of the snapshot, never some of the writes made while it
 * ran (docs/ARCHITECTURE.md, "Exporting a writable snapshot").
 * @throws `ENOENT` for an unknown id, `ECLOSED`.
 */
export const SNAPSHOT_FREEZE: unique symbol = Symbol('blocksnap.snapshotFreeze');

/** A device that can hold a writable snapshot still (see {@link SNAPSHOT_FREEZE}). */
export interface SnapshotFreezing {
  [SNAPSHOT_FREEZE](id: string): SnapshotFreeze;
}

/** True if `device` can hold a writable snapshot still. */
export function canFreezeSnapshots(
  device: SnapshotCapable,
): device is SnapshotCapable & SnapshotFreezing {
  return typeof (device as Partial<SnapshotFreezing>)[SNAPSHOT_FREEZE] === 'function';
}

/**
 * Per-snapshot bookkeeping of freezes and of the writes a freeze waits for,
 * for a device whose snapshots are numbered by `seq`.
 */
export class SnapshotFreezes {
  /** Snapshots held still, with how many freezes hold each. */
  readonly #frozen = new Map<number, number>();
  /** Writes in flight per snapshot (only what a freeze has to wait for). */
  readonly #writing = new Map<number, Set<Promise<unknown>>>();

  /** True while a freeze holds snapshot `seq`: a write called now must reject `EBUSY`. */
  isFrozen(seq: number): boolean {
    return this.#frozen.has(seq);
  }

  /** Tracks `write`, a write to snapshot `seq`, until it settles; returns it. */
  track<T>(seq: number, write: Promise<T>): Promise<T> {
    let writes = this.#writing.get(seq);
    if (writes === undefined) {
      writes = new Set();
      this.#writing.set(seq, writes);
    }
    const set = writes;
    const tracked = write.finally(() => {
      set.delete(tracked);
      if (set.size === 0 && this.#writing.get(seq) === set) this.#writing.delete(seq);
    });
    set.add(tracked);
    return tracked;
  }

  /**
   * Freezes snapshot `seq` now (see {@link SnapshotFreeze}). `inFlight`, for
   * a host that tracks its handles' I/O itself, settles once the writes
   * called before have; by default the writes {@link track} saw.
   */
  freeze(seq: number, inFlight?: Promise<void>): SnapshotFreeze {
    this.#frozen.set(seq, (this.#frozen.get(seq) ?? 0) + 1);
    const settled =
      inFlight ?? Promise.allSettled([...(this.#writing.get(seq) ?? [])]).then(() => {});
    let released = false;
    return {
      settled,
      release: () => {
        if (released) return;
        released = true;
        const left = (this.#frozen.get(seq) ?? 1) - 1;
        if (left === 0) this.#frozen.delete(seq);
        else this.#frozen.set(seq, left);
      },
    };
  }
}

/**
 * Internal method of a change-tracking device whose snapshots may need work
 * before their extents can be read — a JournalDevice's pending snapshots
 * (their markers still in the journal) are materialized by a checkpoint.
 * `exportStream` awaits it on its first pull, then reads the extents.
 * @throws what that work throws.
 */
export const PREPARE_EXPORT: unique symbol = Symbol('blocksnap.prepareExport');

/** A device that prepares snapshots for an export (see {@link PREPARE_EXPORT}). */
export interface ExportPreparing {
  [PREPARE_EXPORT](ids: readonly string[]): Promise<void>;
}

/** True if `device` wants {@link PREPARE_EXPORT} called before its extents are read. */
export function preparesExport(device: object): device is ExportPreparing {
  return typeof (device as Partial<ExportPreparing>)[PREPARE_EXPORT] === 'function';
}
