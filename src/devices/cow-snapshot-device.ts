import { randomUUID } from 'node:crypto';
import type {
  BlockDevice,
  BlockDeviceEvents,
  Snapshot,
  SnapshotCapable,
  SnapshotInfo,
  SnapshotOptions,
} from '../device.js';
import { BlockDeviceError, wrapIO } from '../errors.js';
import { AbstractBlockDevice } from '../internal/abstract-device.js';
import {
  type CowLayout,
  cowCodec,
  planCowLayout,
  readCowParams,
  writeCowParams,
} from '../internal/cow-layout.js';
import { CowState } from '../internal/cow-state.js';
import { AccessGate, LockTable } from '../internal/lock-table.js';
import { type CowEntry, checksum } from '../internal/metadata-codec.js';
import { MetadataLog } from '../internal/metadata-log.js';
import { SnapshotHandle, type SnapshotHost } from '../internal/snapshot-handle.js';
import { checkSnapshotOptions } from '../internal/snapshot-options.js';

/** Options for {@link CowSnapshotDevice.create}. */
export interface CowSnapshotDeviceOptions {
  /**
   * Most snapshots that may exist at once; sizes the metadata reserved on the
   * store. `snapshot()` beyond it fails with `ENOSPC`. @default 1024
   */
  maxSnapshots?: number;
}

/** Identifies a copy-on-write store ("COW1"). */
const COW_KIND = 0x31574f43;
/** Blocks restored concurrently: enough to keep the devices busy, few enough to bound memory. */
const RESTORE_BATCH = 64;

/**
 * Copy-on-write snapshots of an origin device (seed 003). The origin always
 * holds the live content; the store holds the old content of blocks
 * overwritten since a snapshot (its lookup table says which, claims 3, 11–12),
 * writable snapshots' own blocks, and checksummed, crash-safe metadata.
 *
 * Guarantees (DESIGN.md rules 1–5): a snapshot holds exactly the writes called
 * before `snapshot()` (in flight ones included) and none after; snapshots and
 * the origin never change each other; a block overwritten after several
 * snapshots is preserved once and shared, at a cost independent of the
 * number of snapshots; preserved data and its lookup entry are durable before
 * the origin write that overwrites the block is issued, with concurrent
 * first-writes sharing one store flush; `snapshot`, `deleteSnapshot` and
 * `restore` are durability points, and `open` after a power cut recovers every
 * write acknowledged before the last completed `flush()`.
 */
export class CowSnapshotDevice
  extends AbstractBlockDevice<BlockDeviceEvents>
  implements SnapshotCapable
{
  readonly #origin: BlockDevice;
  readonly #store: BlockDevice;
  readonly #layout: CowLayout;
  readonly #state: CowState;
  readonly #log: MetadataLog<CowEntry>;
  readonly #locks = new LockTable();
  /** Writes and snapshot I/O enter shared; snapshot, delete and restore enter exclusive. */
  readonly #gate = new AccessGate();
  /** Origin reads enter shared; only restore shuts them out, so no one sees it half done. */
  readonly #readGate = new AccessGate();
  readonly #handles = new Set<SnapshotHandle>();
  /** What snapshot handles call back into; kept off the public surface. */
  readonly #host: SnapshotHost = {
    readSnapshot: (seq, offset, length) => this.#readSnapshot(seq, offset, length),
    writeSnapshot: (seq, offset, data) => this.#writeSnapshot(seq, offset, data),
    flushSnapshots: () => this.#flushSnapshots(),
    releaseHandle: (handle) => this.#handles.delete(handle),
  };

  private constructor(
    origin: BlockDevice,
    store: BlockDevice,
    layout: CowLayout,
    state: CowState,
    log: MetadataLog<CowEntry>,
  ) {
    super('CowSnapshotDevice', origin.size, origin.blockSize, origin.readOnly);
    this.#origin = origin;
    this.#store = store;
    this.#layout = layout;
    this.#state = state;
    this.#log = log;
  }

  /**
   * Formats `store` for copy-on-write snapshots of `origin` and opens the
   * device. Resolves only once the format is durable. The device owns both
   * devices from then on: its `close()` flushes and closes them.
   * @throws `EINVAL` for bad options, a read-only store, or a store too small
   *   to hold metadata and at least one chunk; `EIO` if the store fails.
   */
  static async create(
    origin: BlockDevice,
    store: BlockDevice,
    options: CowSnapshotDeviceOptions = {},
  ): Promise<CowSnapshotDevice> {
    checkDevices(origin, store);
    const maxSnapshots = options.maxSnapshots ?? 1024;
    if (!Number.isSafeInteger(maxSnapshots) || maxSnapshots < 1 || maxSnapshots > 65536) {
      throw new BlockDeviceError(
        'EINVAL',
        `maxSnapshots ${maxSnapshots} is not an integer from 1 to 65536`,
      );
    }
    const layout = planCowLayout(origin, store, maxSnapshots);
    await MetadataLog.format(store, COW_KIND, layout.log, writeCowParams(layout), cowCodec, []);
    return CowSnapshotDevice.open(origin, store);
  }

  /**
   * Opens a store formatted by {@link CowSnapshotDevice.create}: reads the
   * metadata back, drops a torn tail left by a power cut, and finishes a
   * restore that a power cut interrupted.
   * @throws `ECORRUPT` (naming the damaged structure) if the metadata is
   *   damaged, `EINVAL` if the store belongs to a different origin geometry.
   */
  static async open(origin: BlockDevice, store: BlockDevice): Promise<CowSnapshotDevice> {
    checkDevices(origin, store);
    let layout: CowLayout | undefined;
    let state: CowState | undefined;
    const recovered = await MetadataLog.open(
      store,
      COW_KIND,
      cowCodec,
      async (entries, params) => {
        layout ??= readCowParams(params, store);
        return verifyChunks(store, layout, entries);
      },
      () => state!.entries(),
      (entries) => {
        for (const entry of entries) state!.apply(entry);
      },
    );
    layout ??= readCowParams(recovered.params, store);
    if (layout.originSize !== origin.size || layout.blockSize !== origin.blockSize) {
      throw new BlockDeviceError(
        'EINVAL',
        `store was formatted for an origin of ${layout.originSize} bytes in ${layout.blockSize}-byte blocks, ` +
          `not ${origin.size} in ${origin.blockSize}`,
      );
    }
    state = new CowState(layout.chunkCount);
    for (const entry of recovered.entries) state.apply(entry);
    const device = new CowSnapshotDevice(origin, store, layout, state, recovered.log);
    if (state.restoring !== undefined) {
      // The restore's begin record is durable, so the caller may have been
      // told nothing yet — but the origin may be half restored. Finish it.
      await device.#finishRestore(state.restoring);
    }
    return device;
  }

  /** Store chunks free for preserved and snapshot-owned blocks. */
  get freeChunks(): number {
    return this.#state.allocator.free;
  }

  /** Store chunks in all. */
  get totalChunks(): number {
    return this.#layout.chunkCount;
  }

  /** Number of preserved-block records (each shared by every snapshot that needs it). */
  get preservedBlocks(): number {
    return this.#state.recordCount;
  }

  // ---------------------------------------------------------------- snapshots

  /**
   * Takes a snapshot holding exactly the writes called before this call —
   * those still in flight included — and none called after. Writes are held
   * only while in-flight ones drain and the cut is made durable; reads go on.
   * A durability point: when it resolves, the snapshot and every write called
   * before it survive a power cut.
   * @throws `EINVAL` for bad options, `ENOSPC` past `maxSnapshots`, `ECLOSED`.
   */
  snapshot(options: SnapshotOptions = {}): Promise<Snapshot> {
    const createdAt = Date.now();
    try {
      this.checkOpen();
      checkSnapshotOptions(options);
      if (this.#state.snapshotCount >= this.#layout.maxSnapshots) {
        throw new BlockDeviceError(
          'ENOSPC',
          `already ${this.#layout.maxSnapshots} snapshots (maxSnapshots)`,
        );
      }
    } catch (err) {
      return Promise.reject(err);
    }
    // Queue for the gate now, synchronously: writes called before this line
    // are ahead of us in it, writes called after are behind.
    const entered = this.#gate.exclusive();
    return this.track(
      (async () => {
        const release = await entered;
        let entry: CowEntry & { kind: 'snapshot' };
        try {
          this.checkOpen();
          // Rule 5: the writes the snapshot holds must survive with it.
          await io('origin flush', this.#origin.flush());
          entry = {
            kind: 'snapshot',
            seq: this.#state.lastSeq + 1,
            id: randomUUID(),
            name: options.name,
            createdAt,
            writable: options.writable ?? false,
          };
          await this.#log.append([entry]);
        } finally {
          release();
        }
        const handle = this.#openHandle(entry.seq);
        this.emit('snapshot', this.#info(entry.seq));
        return handle;
      })(),
    );
  }

  /** The live snapshots, oldest first. */
  listSnapshots(): SnapshotInfo[] {
    this.checkOpen();
    return this.#state.infos(this.blockSize);
  }

  /**
   * Opens another handle on a snapshot.
   * @throws `ENOENT` for an unknown id, `ECLOSED`.
   */
  async openSnapshot(id: string): Promise<Snapshot> {
    this.checkOpen();
    return this.#openHandle(this.#state.byId(id).seq);
  }

  /**
   * Deletes a snapshot; store space no other snapshot needs is freed and
   * reused. Open handles on it fail with `ENOENT` from then on. A durability point.
   * @throws `ENOENT` for an unknown id, `ECLOSED`.
   */
  deleteSnapshot(id: string): Promise<void> {
    try {
      this.checkOpen();
      this.#state.byId(id);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.track(
      this.#gate.runExclusive(async () => {
        const seq = this.#state.byId(id).seq;
        // A durability point (rule 5): the writes called before it survive too.
        await io('origin flush', this.#origin.flush());
        await this.#log.append([{ kind: 'delete', seq }]);
        this.emit('snapshot-deleted', id);
      }),
    );
  }

  /**
   * Makes the device's content equal the snapshot's. Other snapshots (and this
   * one) are kept intact. All I/O waits while it runs. A durability point, and
   * atomic across a power cut: `open` finishes a restore that was cut short.
   * @throws `ENOENT` for an unknown id, `ENOSPC` if the store cannot preserve
   *   what the restore overwrites (checked before anything changes), `EROFS`.
   */
  restore(id: string): Promise<void> {
    try {
      this.checkOpen();
      this.checkWritable();
      this.#state.byId(id);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.track(
      this.#gate.runExclusive(() =>
        this.#readGate.runExclusive(async () => {
          const seq = this.#state.byId(id).seq;
          const blocks = this.#state.divergedBlocks(seq);
          const needed = blocks.filter((b) => this.#state.needsPreserve(b)).length;
          if (needed > this.#state.allocator.free) {
            throw new BlockDeviceError(
              'ENOSPC',
              `restore of ${id} must preserve ${needed} block(s); the store has ${this.#state.allocator.free} free`,
            );
          }
          await this.#log.append([{ kind: 'restore-begin', seq }]);
          await this.#finishRestore(seq, blocks);
        }),
      ),
    );
  }

  // ------------------------------------------------------------ block device

  protected _read(offset: number, length: number): Promise<Uint8Array> {
    // The hot path: no restore running, so no promise of our own — the
    // origin's, with two preallocated reactions.
    const release = this.#readGate.tryShared();
    if (release !== undefined)
      return this.#origin.read(offset, length).then(this.#readDone, this.#readFailed);
    return this.#readGate
      .shared()
      .then(() => this.#origin.read(offset, length).then(this.#readDone, this.#readFailed));
  }

  readonly #readDone = (data: Uint8Array): Uint8Array => {
    this.#readGate.releaseShared();
    return data;
  };

  readonly #readFailed = (err: unknown): never => {
    this.#readGate.releaseShared();
    throw wrapIO('origin read', err);
  };

  protected async _write(offset: number, data: Uint8Array): Promise<void> {
    const release = await this.#gate.shared();
    try {
      const first = Math.floor(offset / this.blockSize);
      const last = Math.floor((offset + data.length - 1) / this.blockSize);
      const unlock = await this.#locks.acquire(first, last);
      try {
        await this.#preserve(first, last);
        await io('origin write', this.#origin.write(offset, data));
      } finally {
        unlock();
      }
    } finally {
      release();
    }
  }

  protected async _flush(): Promise<void> {
    await this.#log.idle();
    await io('origin flush', this.#origin.flush());
    await io('store flush', this.#store.flush());
  }

  protected async _close(): Promise<void> {
    await Promise.all([...this.#handles].map((h) => h.close()));
    const results = await Promise.allSettled([this.#origin.close(), this.#store.close()]);
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw wrapIO('close', failed.reason);
  }

  // ---------------------------------------------------------- snapshot host

  /** Serves a snapshot handle's read. */
  async #readSnapshot(seq: number, offset: number, length: number): Promise<Uint8Array> {
    const release = await this.#gate.shared();
    try {
      this.#liveSnapshot(seq);
      const first = Math.floor(offset / this.blockSize);
      const last = Math.floor((offset + length - 1) / this.blockSize);
      const unlock = await this.#locks.acquire(first, last);
      try {
        return await this.#readView(seq, offset, length);
      } finally {
        unlock();
      }
    } finally {
      release();
    }
  }

  /** Serves a writable snapshot handle's write: redirect-on-write into fresh chunks. */
  async #writeSnapshot(seq: number, offset: number, data: Uint8Array): Promise<void> {
    const release = await this.#gate.shared();
    try {
      this.#liveSnapshot(seq);
      const bs = this.blockSize;
      const first = Math.floor(offset / bs);
      const last = Math.floor((offset + data.length - 1) / bs);
      const unlock = await this.#locks.acquire(first, last);
      try {
        const count = last - first + 1;
        const chunks = this.#state.allocator.allocate(count);
        try {
          // Only the edge blocks can be partly covered; read the snapshot's
          // current view of the whole span once and overlay the new bytes.
          const start = first * bs;
          const content =
            offset === start && data.length === count * bs
              ? data
              : await this.#readView(seq, start, count * bs);
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
          await this.#writeChunks(chunks, content);
          await this.#log.append(entries);
        } catch (err) {
          this.#releaseUncommitted(chunks);
          throw err;
        }
      } finally {
        unlock();
      }
    } finally {
      release();
    }
  }

  /** Snapshot writes are durable once acknowledged; this waits for any still committing. */
  async #flushSnapshots(): Promise<void> {
    await this.#log.idle();
    await io('store flush', this.#store.flush());
  }

  // ---------------------------------------------------------------- internals

  /**
   * Preserves every block of `first..last` that a live snapshot still needs
   * (the caller holds their locks). The old data is written to fresh chunks,
   * then its lookup entries are appended to the log; both are durable when
   * this resolves, so the origin write that follows can never reach the disk
   * before them (rule 4). Concurrent callers share the log's flush.
   */
  async #preserve(first: number, last: number): Promise<void> {
    const state = this.#state;
    let needed = 0;
    for (let b = first; b <= last; b++) if (state.needsPreserve(b)) needed++;
    if (needed === 0) return;
    const blocks: number[] = [];
    for (let b = first; b <= last; b++) if (state.needsPreserve(b)) blocks.push(b);
    const chunks = state.allocator.allocate(blocks.length);
    const bs = this.blockSize;
    try {
      const old = await this.#readOriginBlocks(blocks);
      const epoch = state.lastSeq;
      const entries: CowEntry[] = blocks.map((block, i) => ({
        kind: 'preserve',
        epoch,
        block,
        chunk: chunks[i]!,
        crc: checksum(old.subarray(i * bs, (i + 1) * bs)),
      }));
      await this.#writeChunks(chunks, old);
      await this.#log.append(entries);
    } catch (err) {
      this.#releaseUncommitted(chunks);
      throw err;
    }
    for (let i = 0; i < blocks.length; i++)
      this.emit('preserve', { block: blocks[i]!, chunk: chunks[i]! });
  }

  /** Reads whole origin blocks (ascending) into one buffer, one read per contiguous run. */
  async #readOriginBlocks(blocks: number[]): Promise<Uint8Array> {
    const bs = this.blockSize;
    const out = new Uint8Array(blocks.length * bs);
    const reads: Promise<void>[] = [];
    forEachRun(blocks, (from, i, n) => {
      reads.push(
        io('origin read', this.#origin.read(from * bs, n * bs)).then((data) =>
          out.set(data, i * bs),
        ),
      );
    });
    await Promise.all(reads);
    return out;
  }

  /** Writes `data` (one block per chunk, in order) to `chunks`, one write per contiguous run. */
  async #writeChunks(chunks: number[], data: Uint8Array): Promise<void> {
    const bs = this.blockSize;
    const writes: Promise<void>[] = [];
    forEachRun(chunks, (from, i, n) => {
      writes.push(
        io(
          'store write',
          this.#store.write(this.#chunkOffset(from), data.subarray(i * bs, (i + n) * bs)),
        ),
      );
    });
    await Promise.all(writes);
  }

  /**
   * Returns chunks taken for an operation that failed before its log
   * entries were durable.
   */
  #releaseUncommitted(chunks: number[]): void {
    // After a log failure a frame naming these chunks may still have reached
    // the disk: keep them taken until a reopen sorts out what is durable.
    if (this.#log.failed) return;
    for (const chunk of chunks) this.#state.allocator.release(chunk);
  }

  /** Reads `[offset, offset+length)` as snapshot `seq` sees it (caller holds the block locks). */
  async #readView(seq: number, offset: number, length: number): Promise<Uint8Array> {
    const bs = this.blockSize;
    const out = new Uint8Array(length);
    const end = offset + length;
    const first = Math.floor(offset / bs);
    const last = Math.floor((end - 1) / bs);
    const reads: Promise<void>[] = [];
    let originFrom = -1;
    const flushOriginRun = (upTo: number): void => {
      if (originFrom < 0) return;
      const from = Math.max(offset, originFrom * bs);
      const to = Math.min(end, upTo * bs);
      reads.push(
        io('origin read', this.#origin.read(from, to - from)).then((d) =>
          out.set(d, from - offset),
        ),
      );
      originFrom = -1;
    };
    for (let b = first; b <= last; b++) {
      const ref = this.#state.locate(seq, b);
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

  /** Reads a chunk and checks it against its recorded CRC: stale or rotten data is `ECORRUPT`, never returned. */
  async #readChunk(chunk: number, crc: number, block: number): Promise<Uint8Array> {
    const at = this.#chunkOffset(chunk);
    const data = await io('store read', this.#store.read(at, this.blockSize));
    if (checksum(data) !== crc) {
      throw new BlockDeviceError(
        'ECORRUPT',
        `store chunk ${chunk} (block ${block}) at store offset ${at} fails its checksum`,
      );
    }
    return data;
  }

  /**
   * Writes snapshot `seq`'s content over every block where the origin may
   * differ, through the ordinary preserve-then-write path, so other snapshots
   * stay intact; then makes it durable and records the end. Idempotent, which
   * is what lets `open` simply run it again after a power cut.
   */
  async #finishRestore(seq: number, blocks = this.#state.divergedBlocks(seq)): Promise<void> {
    const bs = this.blockSize;
    for (let i = 0; i < blocks.length; i += RESTORE_BATCH) {
      const batch = blocks.slice(i, i + RESTORE_BATCH);
      await Promise.all(
        batch.map(async (block) => {
          const content = await this.#readView(seq, block * bs, bs);
          await this.#preserve(block, block);
          await io('origin write', this.#origin.write(block * bs, content));
        }),
      );
      this.emit('progress', { operation: 'restore', done: i + batch.length, total: blocks.length });
    }
    await io('origin flush', this.#origin.flush());
    await this.#log.append([{ kind: 'restore-end', seq }]);
  }

  #chunkOffset(chunk: number): number {
    return this.#layout.dataOffset + chunk * this.blockSize;
  }

  #liveSnapshot(seq: number): void {
    if (this.#state.bySeq(seq) === undefined) {
      throw new BlockDeviceError('ENOENT', `snapshot #${seq} was deleted`);
    }
  }

  #openHandle(seq: number): SnapshotHandle {
    const snap = this.#state.bySeq(seq)!;
    const handle = new SnapshotHandle(this.#host, snap, this.size, this.blockSize);
    this.#handles.add(handle);
    return handle;
  }

  #info(seq: number): SnapshotInfo {
    return this.#state.infos(this.blockSize).find((i) => i.id === this.#state.bySeq(seq)?.id)!;
  }
}

function checkDevices(origin: BlockDevice, store: BlockDevice): void {
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

/** Verifies the data of chunks named by the last log frame, which a power cut may have left unwritten. */
async function verifyChunks(
  store: BlockDevice,
  layout: CowLayout,
  entries: CowEntry[],
): Promise<boolean> {
  for (const entry of entries) {
    if (entry.kind !== 'preserve' && entry.kind !== 'private') continue;
    const at = layout.dataOffset + entry.chunk * layout.blockSize;
    if (entry.chunk >= layout.chunkCount) return false;
    const data = await io('store read', store.read(at, layout.blockSize));
    if (checksum(data) !== entry.crc) return false;
  }
  return true;
}

async function io<T>(what: string, op: Promise<T>): Promise<T> {
  try {
    return await op;
  } catch (err) {
    throw wrapIO(what, err);
  }
}
