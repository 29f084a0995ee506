import { allocateBuffer, io, readInto } from '../base/index.js';
import { checksum } from '../checksum/index.js';
import type { BlockDevice } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import { refuseReformat } from '../store/index.js';
import { chunkDamage } from './block-view-reads.js';
import type { CommitData } from './commit-writes.js';
import {
  type CowLayout,
  checkedLayout,
  cowCodec,
  planCowLayout,
  readCowParams,
  writeCowParams,
} from './cow-layout.js';
import { CowState } from './cow-state.js';
import { verifyChunks } from './last-frame-chunks.js';
import type { CowEntry } from './metadata-codec.js';
import { MetadataLog } from './metadata-log.js';
import { SpareBlocks } from './spare-blocks.js';

/** Identifies a copy-on-write store ("COW1"). */
const COW_KIND = 0x31574f43;

/** A block whose old content was just preserved, and where. */
export interface Preserved {
  block: number;
  chunk: number;
}

/**
 * The store side of copy-on-write, shared by every device that keeps
 * snapshots this way: preserving blocks, reading a snapshot's view, writing a
 * writable snapshot's own blocks, all over the metadata log and the
 * in-memory state it feeds. It knows nothing of locks or gates: callers hold
 * the block locks of what they pass in, and keep out whatever must not run
 * concurrently.
 */
export class CowStore {
  readonly origin: BlockDevice;
  readonly store: BlockDevice;
  readonly layout: CowLayout;
  readonly state: CowState;
  readonly log: MetadataLog<CowEntry>;
  readonly #bs: number;
  /** Block buffers for first writes' data: the old blocks read here, the device's private copies. */
  readonly spareBlocks: SpareBlocks;

  private constructor(
    origin: BlockDevice,
    store: BlockDevice,
    layout: CowLayout,
    state: CowState,
    log: MetadataLog<CowEntry>,
  ) {
    this.origin = origin;
    this.store = store;
    this.layout = layout;
    this.state = state;
    this.log = log;
    this.#bs = layout.blockSize;
    this.spareBlocks = new SpareBlocks(layout.blockSize);
  }

  /**
   * Formats `store` for copy-on-write of `origin`; resolves once durable.
   * @throws `EINVAL` if the store cannot hold metadata and one chunk.
   */
  static async format(
    origin: BlockDevice,
    store: BlockDevice,
    maxSnapshots: number,
    maxRuns = 0,
    force = false,
  ): Promise<void> {
    const layout = planCowLayout(origin, store, maxSnapshots, maxRuns);
    await refuseReformat(store, 'store', force);
    await MetadataLog.format(store, COW_KIND, layout.log, writeCowParams(layout), cowCodec, []);
  }

  /**
   * Reads a formatted store back: the newest superblock, its table and log,
   * with a last frame whose chunks never reached the disk dropped — unless
   * it is known durable (a clean close, {@link seal}; a flush's
   * {@link attest}; the origin already overwritten), where it is damage.
   * @throws `ECORRUPT` naming the damage, `EINVAL` for another origin geometry.
   */
  static async recover(origin: BlockDevice, store: BlockDevice): Promise<CowStore> {
    let layout: CowLayout | undefined;
    let state: CowState | undefined;
    const recovered = await MetadataLog.open(
      store,
      COW_KIND,
      cowCodec,
      async (entries, params) => {
        layout ??= checkedLayout(readCowParams(params, store), origin);
        return verifyChunks(origin, store, layout, entries);
      },
      () => state!.entries(),
      (entries) => {
        for (const entry of entries) state!.apply(entry);
      },
    );
    layout ??= checkedLayout(readCowParams(recovered.params, store), origin);
    state = new CowState(layout.chunkCount);
    for (const entry of recovered.entries) state.apply(entry);
    return new CowStore(origin, store, layout, state, recovered.log);
  }

  /**
   * Marks the store closed cleanly once every metadata append is durable, so
   * the next open reports damage to the last log frame or its data as
   * `ECORRUPT` instead of taking it for a torn tail. Call it when nothing
   * more will be written.
   */
  seal(): Promise<void> {
    return this.log.seal();
  }

  /**
   * Preserves every block of `first..last` that a live snapshot still needs
   * (the caller holds their locks). The old data and its lookup entries go
   * to the log as one append: its group commit writes the data to fresh
   * chunks (coalesced with the other first writes of the group), then the
   * frame, then flushes the store. Both are durable when this resolves, so
   * an origin write that follows can never reach the disk before them
   * (rule 4). Concurrent callers share the log's writes and flush.
   * @throws `ENOSPC` (nothing taken) when the store is full; `EIO` (chunks
   *   freed) if the chunk write failed.
   */
  async preserve(first: number, last: number): Promise<Preserved[]> {
    // Fail-stop: no origin write may follow a failed log (docs/ARCHITECTURE.md, "After an I/O error").
    if (this.log.failed) throw this.log.failed;
    const state = this.state;
    // One lookup per block (a first write's is a miss in a large table).
    const blocks: number[] = [];
    for (let b = first; b <= last; b++) if (state.needsPreserve(b)) blocks.push(b);
    if (blocks.length === 0) return NONE;
    const chunks = state.allocator.allocate(blocks.length);
    const bs = this.#bs;
    const single = blocks.length === 1;
    const entries: CowEntry[] = [];
    let old: Uint8Array | undefined;
    let handed = false;
    try {
      old = single ? await this.#readOriginBlock(blocks[0]!) : await this.#readOriginBlocks(blocks);
      const epoch = state.lastSeq;
      for (let i = 0; i < blocks.length; i++) {
        const crc = checksum(single ? old : old.subarray(i * bs, (i + 1) * bs));
        entries.push({ kind: 'preserve', epoch, block: blocks[i]!, chunk: chunks[i]!, crc });
      }
      handed = true;
      await this.log.append(entries, this.#chunkData(chunks, old));
    } catch (err) {
      this.#releaseUncommitted(chunks);
      if (handed && single) this.spareBlocks.give(old!);
      throw err;
    }
    // The append has settled: the commit's store write is done with `old`.
    if (single) this.spareBlocks.give(old);
    const preserved: Preserved[] = [];
    for (let i = 0; i < blocks.length; i++)
      preserved.push({ block: blocks[i]!, chunk: chunks[i]! });
    return preserved;
  }

  /**
   * Writes into writable snapshot `seq` by redirect-on-write: the touched
   * blocks get fresh chunks holding the snapshot's view overlaid with
   * `data`, durable with their entries before this resolves; the old chunks
   * are freed once that is durable (the caller holds the block locks).
   * @throws `ENOSPC` (nothing changed) when the store is full.
   */
  async writeOwn(seq: number, offset: number, data: Uint8Array): Promise<void> {
    const bs = this.#bs;
    const first = Math.floor(offset / bs);
    const last = Math.floor((offset + data.length - 1) / bs);
    const count = last - first + 1;
    const chunks = this.state.allocator.allocate(count);
    try {
      // Only the edge blocks can be partly covered; read the snapshot's
      // current view of the whole span once and overlay the new bytes.
      const start = first * bs;
      const content =
        offset === start && data.length === count * bs
          ? data
          : await this.readView(seq, start, count * bs);
      if (content !== data) content.set(data, offset - start);
      const entries: CowEntry[] = [];
      for (let i = 0; i < count; i++) {
        const block = content.subarray(i * bs, (i + 1) * bs);
        entries.push({
          kind: 'private',
          seq,
          block: first + i,
          chunk: chunks[i]!,
          crc: checksum(block),
        });
      }
      await this.log.append(entries, this.#chunkData(chunks, content));
    } catch (err) {
      this.#releaseUncommitted(chunks);
      throw err;
    }
  }

  /** Reads `[offset, offset+length)` as snapshot `seq` sees it (the caller holds the block locks). */
  async readView(seq: number, offset: number, length: number): Promise<Uint8Array> {
    const bs = this.#bs;
    const end = offset + length;
    const first = Math.floor(offset / bs);
    const last = Math.floor((end - 1) / bs);
    if (first === last) {
      // One block, the common case: hand back what the device read, uncopied
      // when it is the whole chunk. Part of one is copied out: a view would
      // hand the reader a buffer larger than the read (BlockDevice.read).
      const ref = this.state.locate(seq, first);
      if (ref === undefined) return io('origin read', this.origin.read(offset, length));
      const chunk = await this.#readChunk(ref.chunk, ref.crc, first);
      const within = offset - first * bs;
      return length === bs ? chunk : chunk.slice(within, within + length);
    }
    const out = new Uint8Array(length);
    const reads: Promise<void>[] = [];
    let originFrom = -1;
    const flushOriginRun = (upTo: number): void => {
      if (originFrom < 0) return;
      const from = Math.max(offset, originFrom * bs);
      const to = Math.min(end, upTo * bs);
      reads.push(
        io('origin read', this.origin.read(from, to - from)).then((d) => out.set(d, from - offset)),
      );
      originFrom = -1;
    };
    for (let b = first; b <= last; b++) {
      const ref = this.state.locate(seq, b);
      if (ref === undefined) {
        if (originFrom < 0) originFrom = b;
        continue;
      }
      flushOriginRun(b);
      const blockStart = b * bs;
      reads.push(
        this.#readChunk(ref.chunk, ref.crc, b).then((chunk) => {
          const from = Math.max(offset, blockStart);
          const to = Math.min(end, blockStart + bs);
          out.set(chunk.subarray(from - blockStart, to - blockStart), from - offset);
        }),
      );
    }
    flushOriginRun(last + 1);
    await Promise.all(reads);
    return out;
  }

  /**
   * Reads one origin block into a spare block buffer (a first write's usual
   * case), given back by `preserve` once its append has settled; one whose
   * read failed is dropped ({@link SpareBlocks}).
   */
  #readOriginBlock(block: number): Promise<Uint8Array> {
    const buffer = this.spareBlocks.take();
    return io('origin read', readInto(this.origin, block * this.#bs, buffer)).then(() => buffer);
  }

  /**
   * Reads whole origin blocks (ascending) into one buffer, one read per
   * contiguous run. The buffer is cut from the shared pool
   * (`allocateBuffer`), not a fresh ArrayBuffer per first write: it is kept
   * only until the append that writes it to the store settles, and a pool
   * region is never handed out twice.
   */
  async #readOriginBlocks(blocks: number[]): Promise<Uint8Array> {
    const bs = this.#bs;
    const out = allocateBuffer(blocks.length * bs);
    // One run (one block, a first write's usual case): one read straight into it.
    if (blocks[blocks.length - 1]! - blocks[0]! === blocks.length - 1) {
      return io('origin read', readInto(this.origin, blocks[0]! * bs, out));
    }
    const reads: Promise<Uint8Array>[] = [];
    forEachRun(blocks, (from, i, n) => {
      reads.push(
        io('origin read', readInto(this.origin, from * bs, out.subarray(i * bs, (i + n) * bs))),
      );
    });
    await Promise.all(reads);
    return out;
  }

  /** `data` (one block per chunk, in order) as the store writes it takes, one per contiguous run of `chunks`. */
  #chunkData(chunks: number[], data: Uint8Array): CommitData[] {
    const bs = this.#bs;
    const out: CommitData[] = [];
    forEachRun(chunks, (from, i, n) => {
      const bytes = n * bs === data.length ? data : data.subarray(i * bs, (i + n) * bs);
      out.push({ offset: this.#chunkOffset(from), bytes });
    });
    return out;
  }

  /** Reads a chunk and checks it against its recorded CRC: stale or rotten data is `ECORRUPT`, never returned. */
  async #readChunk(chunk: number, crc: number, block: number): Promise<Uint8Array> {
    const at = this.#chunkOffset(chunk);
    const data = await io('store read', this.store.read(at, this.#bs));
    const damage = chunkDamage(data, crc, chunk, block, at);
    if (damage !== undefined) throw damage;
    return data;
  }

  /** Returns chunks taken for an operation that failed before its log entries were durable. */
  #releaseUncommitted(chunks: number[]): void {
    // After a log failure a frame naming these chunks may still have reached
    // the disk: keep them taken until a reopen sorts out what is durable.
    if (this.log.failed) return;
    for (const chunk of chunks) this.state.allocator.release(chunk);
  }

  #chunkOffset(chunk: number): number {
    return this.layout.dataOffset + chunk * this.#bs;
  }
}

const NONE: Preserved[] = [];

/** Calls `fn(start, index, length)` for each run of consecutive numbers in ascending `values`. */
function forEachRun(
  values: number[],
  fn: (start: number, index: number, length: number) => void,
): void {
  let i = 0;
  while (i < values.length) {
    let n = 1;
    while (i + n < values.length && values[i + n] === values[i]! + n) n++;
    fn(values[i]!, i, n);
    i += n;
  }
}

/**
 * Checks the two devices a copy-on-write device is made of.
 * @throws `EINVAL` if either is not a BlockDevice or the store is read-only.
 */
export function checkCowDevices(origin: BlockDevice, store: BlockDevice): void {
  for (const [what, dev] of [
    ['origin', origin],
    ['store', store],
  ] as const) {
    if (typeof dev !== 'object' || dev === null || typeof dev.read !== 'function') {
      throw new BlockDeviceError('EINVAL', `${what} is not a BlockDevice`);
    }
  }
  if (store.readOnly) throw new BlockDeviceError('EINVAL', 'store is read-only');
}
