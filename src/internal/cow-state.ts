import type { SnapshotInfo } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import { ChunkAllocator } from './chunk-allocator.js';
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
  /** A writable snapshot's own blocks. */
  own: Map<number, ChunkRef>;
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
 */
export class CowState {
  /** Sequence number of the newest snapshot ever taken (deleted ones included). */
  lastSeq = 0;
  /** Set while a restore is in progress (its begin is durable, its end not yet). */
  restoring: number | undefined;
  readonly allocator: ChunkAllocator;
  readonly #bySeq = new Map<number, SnapshotRecord>();
  readonly #byId = new Map<string, SnapshotRecord>();
  /** Live snapshot sequence numbers, ascending. */
  readonly #live: number[] = [];
  /** Per block: flattened `[epoch, chunk, crc, ...]` in ascending epoch. */
  readonly #records = new Map<number, number[]>();
  #recordCount = 0;

  constructor(chunkCount: number) {
    this.allocator = new ChunkAllocator(chunkCount);
  }

  /** Applies one durable entry. Frees happen here, so a freed chunk is reused only after its release is durable. */
  apply(entry: CowEntry): void {
    switch (entry.kind) {
      case 'snapshot': {
        const record: SnapshotRecord = { ...entry, own: new Map() };
        this.#bySeq.set(entry.seq, record);
        this.#byId.set(entry.id, record);
        this.#live.push(entry.seq);
        this.#live.sort((a, b) => a - b);
        if (entry.seq > this.lastSeq) this.lastSeq = entry.seq;
        break;
      }
      case 'delete':
        this.#delete(entry.seq);
        break;
      case 'preserve': {
        this.allocator.markUsed(entry.chunk);
        const list = this.#records.get(entry.block);
        if (list === undefined)
          this.#records.set(entry.block, [entry.epoch, entry.chunk, entry.crc]);
        else list.push(entry.epoch, entry.chunk, entry.crc);
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
        break;
      case 'restore-end':
        this.restoring = undefined;
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
    const newest = this.newestLive;
    if (newest === 0) return false;
    const list = this.#records.get(block);
    return list === undefined || list[list.length - 3]! < newest;
  }

  /** Where snapshot `seq` keeps `block`: its own copy, a preserved one, or undefined for the origin. */
  locate(seq: number, block: number): ChunkRef | undefined {
    const own = this.#bySeq.get(seq)?.own.get(block);
    if (own !== undefined) return own;
    const list = this.#records.get(block);
    if (list === undefined) return undefined;
    for (let i = 0; i < list.length; i += 3) {
      if (list[i]! >= seq) return { chunk: list[i + 1]!, crc: list[i + 2]! };
    }
    return undefined;
  }

  /** Blocks whose content in snapshot `seq` may differ from the origin's, ascending. */
  divergedBlocks(seq: number): number[] {
    const out = new Set<number>();
    for (const [block, list] of this.#records) {
      if (list[list.length - 3]! >= seq) out.add(block);
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
   * it. Writable snapshots' own blocks differ too.
   */
  changedBlocks(from: number, to: number | undefined): number[] {
    const lo = to === undefined ? from : Math.min(from, to);
    const hi = to === undefined ? Number.POSITIVE_INFINITY : Math.max(from, to);
    const out = new Set<number>();
    for (const [block, list] of this.#records) {
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
      if (snap !== undefined) for (const block of snap.own.keys()) out.add(block);
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
    if (this.restoring !== undefined) out.push({ kind: 'restore-begin', seq: this.restoring });
    return out;
  }

  #delete(seq: number): void {
    const snap = this.#bySeq.get(seq);
    if (snap === undefined) return;
    this.#bySeq.delete(seq);
    this.#byId.delete(snap.id);
    this.#live.splice(this.#live.indexOf(seq), 1);
    for (const ref of snap.own.values()) this.allocator.release(ref.chunk);
    // The record that served `seq` is still needed only if another live
    // snapshot falls in its interval (previous epoch, its epoch].
    for (const [block, list] of this.#records) {
      let i = 0;
      while (i < list.length && list[i]! < seq) i += 3;
      if (i >= list.length) continue;
      const low = i === 0 ? 0 : list[i - 3]!;
      if (this.#anyLiveIn(low, list[i]!)) continue;
      this.allocator.release(list[i + 1]!);
      list.splice(i, 3);
      this.#recordCount--;
      if (list.length === 0) this.#records.delete(block);
    }
  }

  /** Whether a live snapshot has `low < seq <= high`. */
  #anyLiveIn(low: number, high: number): boolean {
    const live = this.#live;
    let lo = 0;
    let hi = live.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (live[mid]! <= low) lo = mid + 1;
      else hi = mid;
    }
    return lo < live.length && live[lo]! <= high;
  }
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
