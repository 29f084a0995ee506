import { io, type LockTable, type ReadDone } from '../base/index.js';
import { crc32Combine } from '../checksum/index.js';
import { BlockDeviceError } from '../errors.js';
import { type SnapshotFreeze, SnapshotFreezes, type SnapshotHost } from '../snapshot/index.js';
import { type BlockRanges, rangesHoldAll, rangesOverlap } from './block-ranges.js';
import { BlockViewReads } from './block-view-reads.js';
import type { CowState } from './cow-state.js';
import type { CowStore } from './cow-store.js';
import type { GatePass, RangeGate } from './range-gate.js';

/** What a read of bytes a selective snapshot does not hold does. */
export type ExcludedReads = 'error' | 'zero';

/**
 * The I/O of snapshot handles on a copy-on-write device: reads of a
 * snapshot's view, redirect-on-write into a writable snapshot's own chunks,
 * and the flush that makes those durable. Each operation enters the device's
 * gate for the blocks it touches and takes their locks, so it never
 * interleaves with a copy-on-write of the same block; bytes a selective
 * snapshot does not hold are `EEXCLUDED` (or read as zeros).
 */
export class CowSnapshotIO {
  readonly #cow: CowStore;
  /** `#cow.state`, which the hot path reads without a hop through the store. */
  readonly #state: CowState;
  readonly #gate: RangeGate;
  readonly #locks: LockTable;
  readonly #excludedReads: ExcludedReads;
  readonly #bs: number;
  readonly #freezes = new SnapshotFreezes();
  readonly #blockReads: BlockViewReads;

  constructor(cow: CowStore, gate: RangeGate, locks: LockTable, excludedReads: ExcludedReads) {
    this.#cow = cow;
    this.#state = cow.state;
    this.#blockReads = new BlockViewReads(cow);
    this.#gate = gate;
    this.#locks = locks;
    this.#excludedReads = excludedReads;
    this.#bs = cow.layout.blockSize;
  }

  /** What snapshot handles call back into; `release` forgets a closed handle. */
  host(release: SnapshotHost['releaseHandle']): SnapshotHost {
    return {
      readSnapshot: (seq, offset, length) => this.read(seq, offset, length, nothing),
      readSnapshotCounted: (seq, offset, length, settled) =>
        this.read(seq, offset, length, settled),
      readSnapshotIntoCounted: (seq, offset, target, settled) =>
        this.readInto(seq, offset, target, settled),
      writeSnapshot: (seq, offset, data) => this.write(seq, offset, data),
      flushSnapshots: () => this.flush(),
      releaseHandle: release,
      storedChecksum: (seq, offset, length) => this.storedChecksum(seq, offset, length),
    };
  }

  /**
   * Serves a snapshot handle's read; bytes the snapshot does not hold are
   * `EEXCLUDED` or zeros. `settled` runs exactly once, just before the
   * returned promise settles; this never throws.
   *
   * The hot path — the gate open to the read's blocks and their locks free,
   * taken synchronously — makes one promise, the one returned, settled from
   * the store's or the origin's read callback for a read inside one block.
   * Anything else takes its turn at the gate and the locks in call order.
   * Either way the read holds its blocks' locks until its bytes are in
   * hand, so it never interleaves with a copy-on-write of the same block
   * (the lock-table rule).
   */
  read(seq: number, offset: number, length: number, settled: () => void): Promise<Uint8Array> {
    return this.#serve(seq, offset, length, undefined, settled);
  }

  /**
   * Serves a snapshot handle's `readInto`: {@link read}'s bytes, in
   * `target`, under the same gate and lock rules. The hot path reads the
   * block straight into `target` (src/cow/block-view-reads.ts `read`, given
   * `target`), with one promise; a read the hot path does not take
   * (several blocks, the gate or the lock held, bytes a selective snapshot
   * does not hold) reads as {@link read} does and copies. `settled` runs exactly once, just
   * before the returned promise settles; this never throws. On a failure
   * `target`'s content is undefined.
   */
  readInto(
    seq: number,
    offset: number,
    target: Uint8Array,
    settled: () => void,
  ): Promise<Uint8Array> {
    return this.#serve(seq, offset, target.length, target, settled);
  }

  /** {@link read} (no `target`) or {@link readInto}: the one entry of both. */
  #serve(
    seq: number,
    offset: number,
    length: number,
    target: Uint8Array | undefined,
    settled: () => void,
  ): Promise<Uint8Array> {
    const bs = this.#bs;
    const first = Math.floor(offset / bs);
    const last = Math.floor((offset + length - 1) / bs);
    const pass = this.#gate.tryEnter(first, last, true);
    if (pass === undefined) {
      return settleWith(this.#readWaiting(seq, offset, length, first, last), target, settled);
    }
    // The snapshot's record, looked up once: the checks here and the
    // block's lookup below (src/cow/block-view-reads.ts) both use it.
    const snap = this.#state.bySeq(seq);
    if (snap === undefined) {
      pass.leave();
      settled();
      return Promise.reject(deleted(seq));
    }
    const locks = this.#locks;
    const ranges = snap.ranges;
    // The hot path: one block the snapshot holds, its lock free and taken
    // now. Anything else takes its turn at the locks.
    let locked: boolean;
    try {
      locked =
        first === last &&
        (ranges === undefined || rangesHoldAll(ranges, first, last)) &&
        locks.tryLock(first);
    } catch (err) {
      // Neither the pass nor the in-flight count may leak (a hold or close would wait forever).
      pass.leave();
      settled();
      return Promise.reject(err);
    }
    if (!locked) {
      const read = this.#readEntered(seq, offset, length, first, last, pass);
      return settleWith(read, target, settled);
    }
    const blockReads = this.#blockReads;
    return new Promise((resolve, reject) => {
      // Once only: a second call would unlock the block and leave the gate
      // twice, or write into `target` after its read settled.
      let called = false;
      const done: ReadDone = (err, data) => {
        if (called) return;
        called = true;
        locks.unlock(first);
        pass.leave();
        settled();
        if (err !== null) reject(err);
        else if (target === undefined || data === target) resolve(data!);
        else {
          // A device below whose READ_CALLBACK ignores `into` answered with a buffer of its own.
          target.set(data!);
          resolve(target);
        }
      };
      try {
        blockReads.read(snap, offset, length, target, done);
      } catch (err) {
        done(err instanceof Error ? err : new Error(String(err)), undefined);
      }
    });
  }

  /** A read that waits for the gate (a delete or restore holds its blocks). */
  async #readWaiting(
    seq: number,
    offset: number,
    length: number,
    first: number,
    last: number,
  ): Promise<Uint8Array> {
    const pass = await this.#gate.enter(first, last, true);
    return this.#readEntered(seq, offset, length, first, last, pass);
  }

  /** A read inside the gate: its locks in turn, then the view; it leaves with `pass`. */
  async #readEntered(
    seq: number,
    offset: number,
    length: number,
    first: number,
    last: number,
    pass: GatePass,
  ): Promise<Uint8Array> {
    try {
      const ranges = this.#liveSnapshot(seq).ranges;
      if (ranges !== undefined && !rangesHoldAll(ranges, first, last)) {
        if (this.#excludedReads === 'error') throw excluded(seq, offset, length);
        return await this.#readHeldOrZero(seq, ranges, offset, length);
      }
      const unlock = await this.#locks.acquire(first, last);
      try {
        return await this.#cow.readView(seq, offset, length);
      } finally {
        unlock();
      }
    } finally {
      pass.leave();
    }
  }

  /** A read across held and excluded blocks with `excludedReads: 'zero'` (the gate is entered). */
  async #readHeldOrZero(
    seq: number,
    ranges: BlockRanges,
    offset: number,
    length: number,
  ): Promise<Uint8Array> {
    const bs = this.#bs;
    const out = new Uint8Array(length);
    const first = Math.floor(offset / bs);
    const last = Math.floor((offset + length - 1) / bs);
    for (let b = first; b <= last; b++) {
      if (!rangesOverlap(ranges, b, b)) continue;
      const from = Math.max(offset, b * bs);
      const to = Math.min(offset + length, (b + 1) * bs);
      const unlock = await this.#locks.acquire(b, b);
      try {
        out.set(await this.#cow.readView(seq, from, to - from), from - offset);
      } finally {
        unlock();
      }
    }
    return out;
  }

  /**
   * Serves a writable snapshot handle's write: redirect-on-write into fresh
   * chunks. `EBUSY` while an export holds the snapshot still (checked at the
   * call, so call order decides which writes the export carries).
   */
  write(seq: number, offset: number, data: Uint8Array): Promise<void> {
    if (this.#freezes.isFrozen(seq)) {
      return Promise.reject(
        new BlockDeviceError(
          'EBUSY',
          `write of ${data.length} bytes at ${offset}: snapshot #${seq} is being exported, and takes no writes until the export ends`,
        ),
      );
    }
    return this.#freezes.track(seq, this.#write(seq, offset, data));
  }

  /** Holds snapshot `seq` still (see SNAPSHOT_FREEZE in src/snapshot). */
  freeze(seq: number): SnapshotFreeze {
    this.#liveSnapshot(seq);
    return this.#freezes.freeze(seq);
  }

  async #write(seq: number, offset: number, data: Uint8Array): Promise<void> {
    if (this.#cow.log.failed) throw this.#cow.log.failed; // fail-stop, as CowStore.preserve
    const first = Math.floor(offset / this.#bs);
    const last = Math.floor((offset + data.length - 1) / this.#bs);
    const pass = await this.#gate.enter(first, last, true);
    try {
      const ranges = this.#liveSnapshot(seq).ranges;
      if (ranges !== undefined && !rangesHoldAll(ranges, first, last)) {
        throw new BlockDeviceError(
          'EEXCLUDED',
          `write of ${data.length} bytes at ${offset}: snapshot #${seq} does not hold all of them`,
        );
      }
      const unlock = await this.#locks.acquire(first, last);
      try {
        await this.#cow.writeOwn(seq, offset, data);
      } finally {
        unlock();
      }
    } finally {
      pass.leave();
    }
  }

  /**
   * The CRC-32 of the whole blocks `[offset, offset+length)` as snapshot
   * `seq` holds them, combined from the store records' per-block CRCs — the
   * very CRCs `readView` checks the chunks against, so it equals the CRC of
   * what a read would return. `undefined` when some block is read from the
   * origin (no CRC kept) or is not held by a selective snapshot. A memory
   * lookup at one instant: records are only ever added or replaced whole.
   * @throws `ENOENT` if the snapshot was deleted (its records may now serve
   *   other snapshots, so they say nothing about it).
   */
  storedChecksum(seq: number, offset: number, length: number): number | undefined {
    const bs = this.#bs;
    if (offset % bs !== 0 || length % bs !== 0 || length <= 0) return undefined;
    const first = offset / bs;
    const last = first + length / bs - 1;
    const ranges = this.#liveSnapshot(seq).ranges;
    if (ranges !== undefined && !rangesHoldAll(ranges, first, last)) return undefined;
    const state = this.#cow.state;
    let crc = 0;
    for (let b = first; b <= last; b++) {
      const ref = state.locate(seq, b);
      if (ref === undefined) return undefined;
      crc = b === first ? ref.crc : crc32Combine(crc, ref.crc, bs);
    }
    return crc;
  }

  /** Snapshot writes are durable once acknowledged; this waits for any still committing. */
  async flush(): Promise<void> {
    await this.#cow.log.idle();
    await io('store flush', this.#cow.store.flush());
  }

  #liveSnapshot(seq: number): { ranges: BlockRanges | undefined } {
    const snap = this.#cow.state.bySeq(seq);
    if (snap === undefined) throw deleted(seq);
    return snap;
  }
}

function deleted(seq: number): BlockDeviceError {
  return new BlockDeviceError('ENOENT', `snapshot #${seq} was deleted`);
}

function nothing(): void {}

/**
 * A slow-path `read` with `settled` run once, just before it settles,
 * whichever way; with `target`, its bytes are copied into `target` first,
 * which it then resolves with.
 */
function settleWith(
  read: Promise<Uint8Array>,
  target: Uint8Array | undefined,
  settled: () => void,
): Promise<Uint8Array> {
  return read.then(
    (data) => {
      settled();
      if (target === undefined) return data;
      target.set(data);
      return target;
    },
    (err: unknown) => {
      settled();
      throw err;
    },
  );
}

function excluded(seq: number, offset: number, length: number): BlockDeviceError {
  return new BlockDeviceError(
    'EEXCLUDED',
    `read of ${length} bytes at ${offset}: snapshot #${seq} does not hold all of them`,
  );
}
