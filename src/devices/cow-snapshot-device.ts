import { randomUUID } from 'node:crypto';
import type {
  BlockDevice,
  BlockDeviceEvents,
  ChangeTracking,
  Extent,
  Snapshot,
  SnapshotInfo,
  SnapshotOptions,
} from '../device.js';
import { BlockDeviceError, wrapIO } from '../errors.js';
import { AbstractBlockDevice } from '../internal/abstract-device.js';
import type { CowState } from '../internal/cow-state.js';
import { CowStore } from '../internal/cow-store.js';
import { AccessGate, LockTable } from '../internal/lock-table.js';
import { io } from '../internal/lower-io.js';
import type { CowEntry } from '../internal/metadata-codec.js';
import type { MetadataLog } from '../internal/metadata-log.js';
import { blocksToExtents } from '../internal/range.js';
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
  implements ChangeTracking
{
  readonly #cow: CowStore;
  readonly #origin: BlockDevice;
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

  private constructor(cow: CowStore) {
    super('CowSnapshotDevice', cow.origin.size, cow.origin.blockSize, cow.origin.readOnly);
    this.#cow = cow;
    this.#origin = cow.origin;
    this.#state = cow.state;
    this.#log = cow.log;
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
    await CowStore.format(origin, store, maxSnapshots);
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
    const device = new CowSnapshotDevice(await CowStore.recover(origin, store));
    const state = device.#state;
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
    return this.#cow.layout.chunkCount;
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
      if (this.#state.snapshotCount >= this.#cow.layout.maxSnapshots) {
        throw new BlockDeviceError(
          'ENOSPC',
          `already ${this.#cow.layout.maxSnapshots} snapshots (maxSnapshots)`,
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
   * The extents that may differ between snapshot `fromId` and snapshot `toId`
   * or the live device, from the lookup table alone (no data is read): every
   * block overwritten in between, and a writable snapshot's own blocks.
   * Survives reopen and power cuts with the lookup table it comes from.
   * @throws `ENOENT` for an unknown id, `ECLOSED`.
   */
  changedExtents(fromId: string, toId: string | 'live'): Extent[] {
    this.checkOpen();
    const from = this.#state.byId(fromId).seq;
    const to = toId === 'live' ? undefined : this.#state.byId(toId).seq;
    return blocksToExtents(this.#state.changedBlocks(from, to), this.blockSize);
  }

  /**
   * What snapshot `id` holds: the whole device.
   * @throws `ENOENT` for an unknown id, `ECLOSED`.
   */
  snapshotExtents(id: string): Extent[] {
    this.checkOpen();
    this.#state.byId(id);
    return this.size === 0 ? [] : [{ offset: 0, length: this.size }];
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
    await io('store flush', this.#cow.store.flush());
  }

  protected async _close(): Promise<void> {
    await Promise.all([...this.#handles].map((h) => h.close()));
    const results = await Promise.allSettled([this.#origin.close(), this.#cow.store.close()]);
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
        return await this.#cow.readView(seq, offset, length);
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
      const first = Math.floor(offset / this.blockSize);
      const last = Math.floor((offset + data.length - 1) / this.blockSize);
      const unlock = await this.#locks.acquire(first, last);
      try {
        await this.#cow.writeOwn(seq, offset, data);
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
    await io('store flush', this.#cow.store.flush());
  }

  // ---------------------------------------------------------------- internals

  /** Preserves what live snapshots need of `first..last` (locks held) and reports each copy. */
  async #preserve(first: number, last: number): Promise<void> {
    const preserved = await this.#cow.preserve(first, last);
    for (const event of preserved) this.emit('preserve', event);
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
          const content = await this.#cow.readView(seq, block * bs, bs);
          await this.#preserve(block, block);
          await io('origin write', this.#origin.write(block * bs, content));
        }),
      );
      this.emit('progress', { operation: 'restore', done: i + batch.length, total: blocks.length });
    }
    await io('origin flush', this.#origin.flush());
    await this.#log.append([{ kind: 'restore-end', seq }]);
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
