import type { Extent, SnapshotInfo } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import { type BlockRanges, rangesHold } from './block-ranges.js';
import { ChunkAllocator } from './chunk-allocator.js';
import { FirstRecords } from './first-records.js';
import type { CowEntry } from './metadata-codec.js';

/** Where a block's content lives in the store, with the CRC it must match. */
export interface ChunkRef {
  chunk: number;
  crc: number;
}

/** One live snapshot as the state knows it. */
export interface SnapshotRecord {
  seq: number;
  id: string;
  name: string | undefined;
  createdAt: number;
  writable: boolean;
  /** The blocks a selective snapshot holds; undefined: every block. */
  ranges: BlockRanges | undefined;
  /** A writable snapshot's own blocks. */
  own: Map<number, ChunkRef>;
}

/**
 * Which live snapshot is the newest to hold each block, when some snapshot
 * holds only some blocks: elementary intervals `[points[i], points[i+1])`,
 * each with the newest live snapshot holding it (0: none).
 */
interface Coverage {
  points: number[];
  newest: number[];
}

/**
 * The in-memory copy-on-write state: live snapshots, the lookup table of
 * preserved blocks, writable snapshots' own blocks, and which store chunks are
 * in use. It changes only by `apply`-ing metadata entries — the live path
 * applies an entry once it is durable, and `open` replays the same entries —
 * so memory and disk cannot drift apart.
 *
 * Generations (rule 3): snapshots get increasing sequence numbers; a write
 * made while the newest snapshot is `e` happens in epoch `e`. The first write
 * to a block in an epoch that some live snapshot still needs preserves the old
 * content once, as a record `(epoch e, chunk)`. That one record serves every
 * snapshot `s` with `previous record's epoch < s <= e`, however many there
 * are; a snapshot reads the first record of the block with `epoch >= s`, or
 * the origin if there is none.
 *
 * Selective snapshots change only who counts: a snapshot that
 * does not hold a block never asks for it, so the first write to a block
 * preserves it when the newest live snapshot *holding that block* was taken
 * after its last record — found in O(log intervals) from a coverage index
 * rebuilt when a snapshot comes or goes — and a record is freed when no live
 * snapshot that holds its block is left in its interval. The records
 * themselves, and how reads find them, are the same for both kinds.
 */
export class CowState {
  /** Sequence number of the newest snapshot ever taken (deleted ones included). */
  lastSeq = 0;
  /** Set while a restore is in progress (its begin is durable, its end not yet). */
  restoring: number | undefined;
  /** The bytes that restore is limited to, if it is partial. */
  restoringExtents: readonly Extent[] | undefined;
  readonly allocator: ChunkAllocator;
  readonly #bySeq = new Map<number, SnapshotRecord>();
  readonly #byId = new Map<string, SnapshotRecord>();
  /** Live snapshot sequence numbers, ascending. */
  readonly #live: number[] = [];
  /** Per block: flattened `[epoch, chunk, crc, ...]` in ascending epoch. */
  readonly #records = new Map<number, number[]>();
  readonly #firstRecords = new FirstRecords(); // each list's head again, for reads
  #recordCount = 0;
  /** Undefined while every live snapshot holds every block: the newest live one is then the answer. */
  #coverage: Coverage | undefined;

  constructor(chunkCount: number) {
    this.allocator = new ChunkAllocator(chunkCount);
  }

  /** Applies one durable entry. Frees happen here, so a freed chunk is reused only after its release is durable. */
  apply(entry: CowEntry): void {
    switch (entry.kind) {
      case 'snapshot': {
        const { kind: _kind, ...identity } = entry;
        const record: SnapshotRecord = { ...identity, ranges: entry.ranges, own: new Map() };
        this.#bySeq.set(entry.seq, record);
        this.#byId.set(entry.id, record);
        this.#live.push(entry.seq);
        this.#live.sort((a, b) => a - b);
        if (entry.seq > this.lastSeq) this.lastSeq = entry.seq;
        this.#rebuildCoverage();
        break;
      }
      case 'delete':
        this.#delete(entry.seq);
        break;
      case 'preserve': {
        this.allocator.markUsed(entry.chunk);
        const list = this.#records.get(entry.block);
        if (list !== undefined) list.push(entry.epoch, entry.chunk, entry.crc);
        else this.#records.set(entry.block, this.#firstRecords.start(entry.block, entry));
        this.#recordCount++;
        if (entry.epoch > this.lastSeq) this.lastSeq = entry.epoch;
        break;
      }
      case 'private': {
        const snap = this.#bySeq.get(entry.seq);
        if (snap === undefined) {
          throw new BlockDeviceError('ECORRUPT', `own block of unknown snapshot #${entry.seq}`);
        }
        this.allocator.markUsed(entry.chunk);
        const old = snap.own.get(entry.block);
        if (old !== undefined && old.chunk !== entry.chunk) this.allocator.release(old.chunk);
        snap.own.set(entry.block, { chunk: entry.chunk, crc: entry.crc });
        break;
      }
      case 'restore-begin':
        this.restoring = entry.seq;
        this.restoringExtents = entry.extents;
        break;
      case 'restore-end':
        this.restoring = undefined;
        this.restoringExtents = undefined;
        break;
      case 'sequence':
        if (entry.seq > this.lastSeq) this.lastSeq = entry.seq;
        break;
    }
  }

  /** The newest live snapshot's sequence number, or 0. */
  get newestLive(): number {
    return this.#live.length === 0 ? 0 : this.#live[this.#live.length - 1]!;
  }

  /** Number of preserved-block records. */
  get recordCount(): number {
    return this.#recordCount;
  }

  /**
   * Whether a write to `block` now must first preserve its old content: some
   * live snapshot was taken after the block's last preservation. O(1) — the
   * cost of a write does not grow with the number of snapshots (rule 3).
   */
  needsPreserve(block: number): boolean {
    const newest = this.#newestHolding(block);
    if (newest === 0) return false;
    const list = this.#records.get(block);
    return list === undefined || list[list.length - 3]! < newest;
  }

  /** Where snapshot `seq` (record `snap`) keeps `block`: its own, a preserved chunk, or undefined. */
  locate(seq: number, block: number, snap = this.#bySeq.get(seq)): ChunkRef | undefined {
    // Its own copy (a writable snapshot's), else the block's first record if that serves `seq`.
    const own = snap === undefined || snap.own.size === 0 ? undefined : snap.own.get(block);
    const found = own ?? this.#firstRecords.serving(block, seq);
    if (found !== null) return found;
    const list = this.#records.get(block)!;
    for (let i = 3; i < list.length; i += 3) {
      if (list[i]! >= seq) return { chunk: list[i + 1]!, crc: list[i + 2]! };
    }
    return undefined;
  }

  /**
   * Whether any live snapshot holds a block of `first..last`. When none
   * does, a write there needs no preservation and no block lock; that can
   * only change through a snapshot's gate hold, which drains such writes.
   */
  anyHolds(first: number, last: number): boolean {
    const coverage = this.#coverage;
    if (coverage === undefined) return this.#live.length > 0;
    const { points, newest } = coverage;
    let i = Math.max(0, lowerBound(points, first + 1) - 1);
    for (; i < newest.length && points[i]! <= last; i++) {
      if (newest[i] !== 0 && points[i + 1]! > first) return true;
    }
    return false;
  }

  /** Whether snapshot `seq` (live) holds `block`. */
  holds(seq: number, block: number): boolean {
    const ranges = this.#bySeq.get(seq)?.ranges;
    return ranges === undefined || rangesHold(ranges, block);
  }

  /** Blocks that snapshot `seq` holds and whose content there may differ from the origin's, ascending. */
  divergedBlocks(seq: number): number[] {
    const out = new Set<number>();
    for (const [block, list] of this.#records) {
      if (list[list.length - 3]! >= seq && this.holds(seq, block)) out.add(block);
    }
    const snap = this.#bySeq.get(seq);
    if (snap !== undefined) for (const block of snap.own.keys()) out.add(block);
    return [...out].sort((a, b) => a - b);
  }

  /**
   * Blocks whose content may differ between snapshot `from` and snapshot `to`
   * (`undefined`: the live origin), ascending, from the lookup table alone.
   * A write in epoch `e` (the newest snapshot then) that changed a block
   * leaves a record with epoch in `[from, to)` as long as `from` lives: the
   * first record at or after `from` serves `from`, so a delete never removes
   * it. Writable snapshots' own blocks differ too. Only blocks both `from`
   * and `to` hold are reported: nothing tracks the others.
   */
  changedBlocks(from: number, to: number | undefined): number[] {
    const lo = to === undefined ? from : Math.min(from, to);
    const hi = to === undefined ? Number.POSITIVE_INFINITY : Math.max(from, to);
    const inScope = (block: number): boolean =>
      this.holds(from, block) && (to === undefined || this.holds(to, block));
    const out = new Set<number>();
    for (const [block, list] of this.#records) {
      if (!inScope(block)) continue;
      for (let i = 0; i < list.length; i += 3) {
        const epoch = list[i]!;
        if (epoch >= hi) break;
        if (epoch >= lo) {
          out.add(block);
          break;
        }
      }
    }
    for (const seq of to === undefined ? [from] : [from, to]) {
      const snap = this.#bySeq.get(seq);
      if (snap === undefined) continue;
      for (const block of snap.own.keys()) if (inScope(block)) out.add(block);
    }
    return [...out].sort((a, b) => a - b);
  }

  /** The live snapshot with this id. @throws `ENOENT`. */
  byId(id: string): SnapshotRecord {
    const snap = typeof id === 'string' ? this.#byId.get(id) : undefined;
    if (snap === undefined)
      throw new BlockDeviceError('ENOENT', `no snapshot with id ${String(id)}`);
    return snap;
  }

  /** The live snapshot with this sequence number, if any. */
  bySeq(seq: number): SnapshotRecord | undefined {
    return this.#bySeq.get(seq);
  }

  /** Number of live snapshots. */
  get snapshotCount(): number {
    return this.#live.length;
  }

  /** Public descriptions of the live snapshots, oldest first. */
  infos(chunkSize: number): SnapshotInfo[] {
    return this.#live.map((seq) => describe(this.#bySeq.get(seq)!, chunkSize));
  }

  /** The whole state as entries, for a checkpoint table; replaying them rebuilds it exactly. */
  entries(): CowEntry[] {
    const out: CowEntry[] = [];
    // Keeps the sequence counter even when every snapshot is gone, so a new
    // snapshot never reuses an epoch that records were written under.
    out.push({ kind: 'sequence', seq: this.lastSeq });
    for (const seq of this.#live) {
      const { own: _own, ...snap } = this.#bySeq.get(seq)!;
      out.push({ kind: 'snapshot', ...snap });
    }
    for (const [block, list] of this.#records) {
      for (let i = 0; i < list.length; i += 3) {
        out.push({
          kind: 'preserve',
          epoch: list[i]!,
          block,
          chunk: list[i + 1]!,
          crc: list[i + 2]!,
        });
      }
    }
    for (const seq of this.#live) {
      for (const [block, ref] of this.#bySeq.get(seq)!.own) {
        out.push({ kind: 'private', seq, block, chunk: ref.chunk, crc: ref.crc });
      }
    }
    if (this.restoring !== undefined) {
      out.push({ kind: 'restore-begin', seq: this.restoring, extents: this.restoringExtents });
    }
    return out;
  }

  #delete(seq: number): void {
    const snap = this.#bySeq.get(seq);
    if (snap === undefined) return;
    this.#bySeq.delete(seq);
    this.#byId.delete(snap.id);
    this.#live.splice(this.#live.indexOf(seq), 1);
    this.#rebuildCoverage();
    for (const ref of snap.own.values()) this.allocator.release(ref.chunk);
    // The record that served `seq` is still needed only if another live
    // snapshot falls in its interval (previous epoch, its epoch].
    for (const [block, list] of this.#records) {
      let i = 0;
      while (i < list.length && list[i]! < seq) i += 3;
      if (i >= list.length) continue;
      const low = i === 0 ? 0 : list[i - 3]!;
      if (this.#anyLiveHolding(low, list[i]!, block)) continue;
      this.allocator.release(list[i + 1]!);
      list.splice(i, 3);
      this.#recordCount--;
      if (list.length === 0) this.#records.delete(block);
      if (i === 0) this.#firstRecords.follow(block, list);
    }
  }

  /** Whether a live snapshot with `low < seq <= high` holds `block`. */
  #anyLiveHolding(low: number, high: number, block: number): boolean {
    const live = this.#live;
    let lo = 0;
    let hi = live.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (live[mid]! <= low) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < live.length && live[i]! <= high; i++) {
      if (this.holds(live[i]!, block)) return true;
    }
    return false;
  }

  /** The newest live snapshot that holds `block`, or 0. */
  #newestHolding(block: number): number {
    const coverage = this.#coverage;
    if (coverage === undefined) return this.newestLive;
    const { points, newest } = coverage;
    let lo = 0;
    let hi = points.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (points[mid]! <= block) lo = mid + 1;
      else hi = mid;
    }
    // points[lo - 1] <= block < points[lo]: interval lo - 1.
    return lo === 0 || lo >= points.length ? 0 : newest[lo - 1]!;
  }

  /**
   * Rebuilds the coverage index after a snapshot came or went: newest
   * snapshots paint their runs first, so each interval keeps the newest
   * holder. Costs O(snapshots × intervals) at snapshot and delete time,
   * nothing on the write path.
   */
  #rebuildCoverage(): void {
    const snaps = this.#live.map((seq) => this.#bySeq.get(seq)!);
    if (snaps.every((s) => s.ranges === undefined)) {
      this.#coverage = undefined;
      return;
    }
    const whole = [{ start: 0, end: Number.MAX_SAFE_INTEGER }];
    const set = new Set<number>();
    for (const snap of snaps) {
      for (const run of snap.ranges ?? whole) set.add(run.start).add(run.end);
    }
    const points = [...set].sort((a, b) => a - b);
    const newest = new Array<number>(Math.max(0, points.length - 1)).fill(0);
    for (let k = snaps.length - 1; k >= 0; k--) {
      const snap = snaps[k]!;
      for (const run of snap.ranges ?? whole) {
        let i = lowerBound(points, run.start);
        for (; i < newest.length && points[i]! < run.end; i++) {
          if (newest[i] === 0) newest[i] = snap.seq;
        }
      }
    }
    this.#coverage = { points, newest };
  }
}

/** First index whose value is `>= value` in ascending `values`. */
function lowerBound(values: readonly number[], value: number): number {
  let lo = 0;
  let hi = values.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (values[mid]! < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function describe(snap: SnapshotRecord, chunkSize: number): SnapshotInfo {
  return {
    id: snap.id,
    name: snap.name,
    createdAt: new Date(snap.createdAt),
    writable: snap.writable,
    privateBytes: snap.own.size * chunkSize,
  };
}
