import { randomUUID } from 'node:crypto';
import { Mutex } from 'async-mutex';
import {
  AbstractBlockDevice,
  checkCheckOptions,
  type InFlightCounter,
  inFlightCounter,
  io,
  isBytes,
  LayerKind,
  LockTable,
  ownedWriter,
  STACK_IDENTITY,
  type StackIdentity,
  WRITE_OWNED,
} from '../base/index.js';
import type {
  BlockDeviceEvents,
  ChangeTracking,
  CheckOptions,
  CheckReport,
  Extent,
  Snapshot,
  SnapshotInfo,
  SnapshotOptions,
} from '../device.js';
import { BlockDeviceError, wrapIO } from '../errors.js';
import {
  SNAPSHOT_FREEZE,
  type SnapshotFreeze,
  SnapshotHandle,
  type SnapshotHost,
} from '../snapshot/index.js';
import type { BlockRanges } from './block-ranges.js';
import { checkCowStore } from './cow-check.js';
import { changedExtentsOf, heldExtentsOf } from './cow-extents.js';
import { CowRestore } from './cow-restore.js';
import { CowSnapshotIO, type ExcludedReads } from './cow-snapshot-io.js';
import type { CowState } from './cow-state.js';
import type { CowStore } from './cow-store.js';
import type { CowEntry } from './metadata-codec.js';
import { OriginReads } from './origin-reads.js';
import { type GatePass, RangeGate } from './range-gate.js';
import { UnheldWrites } from './unheld-writes.js';

export type { ExcludedReads };

/**
 * The copy-on-write device itself, shared by CowSnapshotDevice (every
 * snapshot holds every block) and SelectiveSnapshotDevice (a snapshot holds
 * the blocks the user designated): locks, gates, the write path, snapshot
 * handles, delete, restore and change tracking, over one {@link CowStore}.
 * The only difference between the two is the `ranges` a snapshot is taken
 * with, and that lives in {@link CowState}.
 *
 * Gates: I/O enters a {@link RangeGate} with the blocks it touches; taking a
 * snapshot holds only the blocks it designates (so I/O elsewhere never
 * waits), delete and restore hold every block. Snapshot operations are
 * serialized among themselves, so sequence numbers follow call order.
 */
export abstract class CowDeviceBase
  extends AbstractBlockDevice<BlockDeviceEvents>
  implements ChangeTracking
{
  readonly #cow: CowStore;
  readonly #state: CowState;
  readonly #locks = new LockTable();
  readonly #gate = new RangeGate();
  /** Snapshot, delete and restore, one at a time, in call order. */
  readonly #admin = new Mutex();
  readonly #handles = new Set<SnapshotHandle>();
  readonly #everyBlock: BlockRanges;
  /** Reads (OriginReads) and passed-on writes (UnheldWrites) count themselves in flight. */
  readonly #inFlight: InFlightCounter = inFlightCounter(this);
  readonly #snapshotIO: CowSnapshotIO;
  /** What snapshot handles call back into; kept off the public surface. */
  readonly #host: SnapshotHost;
  readonly #reads: OriginReads;
  readonly #unheld: UnheldWrites;
  readonly #restore: CowRestore;
  /** The origin's WRITE_OWNED (a FileDevice's), for a preserving write's private copy. */
  readonly #writeOriginOwned: ReturnType<typeof ownedWriter>;

  protected constructor(what: string, cow: CowStore, excludedReads: ExcludedReads = 'error') {
    super(what, cow.origin.size, cow.origin.blockSize, cow.origin.readOnly);
    this.#inFlight.ownReads = true;
    this.#inFlight.ownPassedWrites = true;
    this.#cow = cow;
    this.#state = cow.state;
    this.#everyBlock = [{ start: 0, end: cow.origin.size / cow.origin.blockSize }];
    this.#reads = new OriginReads(cow.origin, this.#inFlight);
    this.#writeOriginOwned = ownedWriter(cow.origin);
    this.#unheld = new UnheldWrites(cow.origin, this.#inFlight, () => cow.log.failed);
    this.#restore = new CowRestore(
      cow,
      this.#locks,
      cow.origin.blockSize,
      (first, last) => this.#preserve(first, last),
      (done, total) => this.emit('progress', { operation: 'restore', done, total }),
    );
    this.#snapshotIO = new CowSnapshotIO(cow, this.#gate, this.#locks, excludedReads);
    this.#host = this.#snapshotIO.host((handle) => this.#handles.delete(handle));
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

  /**
   * The store's layout limits: most snapshots, and most runs in a designation.
   * @internal
   */
  protected get limits(): { maxSnapshots: number; maxRuns: number } {
    return { maxSnapshots: this.#cow.layout.maxSnapshots, maxRuns: this.#cow.layout.maxRuns };
  }

  /**
   * Finishes a restore a power cut interrupted (its begin record is durable); called by `open`.
   * @internal
   */
  protected recoverRestore(): Promise<void> {
    return this.#restore.recover();
  }

  // ---------------------------------------------------------------- snapshots

  /** Takes a snapshot; each device documents what it holds. */
  abstract snapshot(options?: SnapshotOptions): Promise<Snapshot>;

  /** Makes the device's content equal a snapshot's; each device documents how much of it. */
  abstract restore(id: string): Promise<void>;

  /**
   * Takes a snapshot of `ranges` (undefined: every block): holds the writes
   * to those blocks called before this call — in flight ones included —
   * and none called after. Only writes to those blocks wait, and only while
   * the in-flight ones drain and the cut is made durable.
   * @internal
   */
  protected takeSnapshot(
    options: SnapshotOptions,
    ranges: BlockRanges | undefined,
  ): Promise<Snapshot> {
    const createdAt = Date.now();
    try {
      this.checkOpen();
      this.checkUnowned('snapshot');
      const { maxSnapshots } = this.limits;
      if (this.#state.snapshotCount >= maxSnapshots) {
        throw new BlockDeviceError('ENOSPC', `already ${maxSnapshots} snapshots (maxSnapshots)`);
      }
    } catch (err) {
      return Promise.reject(err);
    }
    // Register the hold now, synchronously: writes called before this line
    // are ahead of it, writes called after wait behind it.
    const held = this.#gate.hold(ranges ?? this.#everyBlock);
    return this.#inFlight.track(
      this.#admin.runExclusive(async () => {
        const release = await held;
        let entry: CowEntry & { kind: 'snapshot' };
        try {
          // No checkOpen: called before close(), it completes (close waits for it).
          if (this.#state.snapshotCount >= this.limits.maxSnapshots) {
            throw new BlockDeviceError('ENOSPC', `already ${this.limits.maxSnapshots} snapshots`);
          }
          // Rule 5: the writes the snapshot holds must survive with it.
          await io('origin flush', this.#cow.origin.flush());
          entry = {
            kind: 'snapshot',
            seq: this.#state.lastSeq + 1,
            id: randomUUID(),
            name: options.name,
            createdAt,
            writable: options.writable ?? false,
            ranges,
          };
          await this.#cow.log.append([entry]);
        } finally {
          release();
        }
        const handle = this.#openHandle(entry.seq);
        this.emit('snapshot', this.#info(entry.seq));
        return handle;
      }),
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
      this.checkUnowned('delete a snapshot of');
      this.#state.byId(id);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#holdingEverything(async () => {
      const seq = this.#state.byId(id).seq;
      // A durability point (rule 5): the writes called before it survive too.
      await io('origin flush', this.#cow.origin.flush());
      await this.#cow.log.append([{ kind: 'delete', seq }]);
    }).then(() => {
      this.emit('snapshot-deleted', id);
    });
  }

  /**
   * Runs `fn` with every block held (all I/O, snapshot handles' included,
   * drained and kept out) and the other snapshot operations shut out. The
   * hold is registered at the call, so it follows every write called before.
   */
  #holdingEverything(fn: () => Promise<void>): Promise<void> {
    const held = this.#gate.hold(this.#everyBlock, true);
    return this.#inFlight.track(
      this.#admin.runExclusive(async () => {
        const release = await held;
        try {
          await fn();
        } finally {
          release();
        }
      }),
    );
  }

  /**
   * The extents that may differ between snapshot `fromId` and snapshot `toId`
   * or the live device, from the lookup table alone (no data is read): every
   * block overwritten in between that both hold, a writable snapshot's own
   * blocks, and the blocks `toId` holds but `fromId` does not. Survives
   * reopen and power cuts with the lookup table it comes from.
   * @throws `ENOENT` for an unknown id, `ECLOSED`.
   */
  changedExtents(fromId: string, toId: string | 'live'): Extent[] {
    this.checkOpen();
    return changedExtentsOf(this.#state, this.#everyBlock, this.blockSize, fromId, toId);
  }

  /**
   * What snapshot `id` holds, coalesced and ascending: the whole device, or a
   * selective snapshot's designated blocks.
   * @throws `ENOENT` for an unknown id, `ECLOSED`.
   */
  snapshotExtents(id: string): Extent[] {
    this.checkOpen();
    return heldExtentsOf(this.#state, this.#everyBlock, this.blockSize, id);
  }

  /** What a layer stacked on this one records of it (src/base/stack-identity.ts). @internal */
  [STACK_IDENTITY](): StackIdentity {
    const { maxRuns, id } = this.#cow.layout;
    return { kind: maxRuns === 0 ? LayerKind.cow : LayerKind.selective, id };
  }

  /** Holds a writable snapshot still for an export (see SNAPSHOT_FREEZE). @internal */
  [SNAPSHOT_FREEZE](id: string): SnapshotFreeze {
    this.checkOpen();
    return this.#snapshotIO.freeze(this.#state.byId(id).seq);
  }

  /**
   * Walks the store and verifies every checksum, like `qemu-img check`: both
   * superblock slots, the table, every log frame the device holds, every
   * chunk the metadata names, and the free-space accounting; reports each
   * problem with its structure and store offset, and what each snapshot can
   * no longer read. Read-only and safe in use: it writes nothing, metadata
   * commits wait only while the metadata is read, and a chunk freed and
   * reused meanwhile is skipped, never reported as damage.
   * @throws `ECLOSED`, `EINVAL`, `EIO` (a store read failed; damage is reported, not thrown).
   */
  check(options: CheckOptions = {}): Promise<CheckReport> {
    try {
      this.checkOpen();
      checkCheckOptions(options);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#inFlight.track(checkCowStore(this.#cow, options));
  }

  /**
   * Makes what snapshot `id` holds — within `extents` if given, to the
   * byte — equal the snapshot's content; every other byte and every
   * snapshot are left alone. All I/O waits while it runs; atomic across a
   * power cut (`open` finishes it) and a durability point.
   * @internal
   */
  protected restoreSnapshot(id: string, extents: readonly Extent[] | undefined): Promise<void> {
    try {
      this.checkOpen();
      this.checkWritable();
      this.checkUnowned('restore');
      this.#state.byId(id);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#holdingEverything(() =>
      this.#reads.exclusive(() => this.#restore.run(id, extents)),
    );
  }

  // ------------------------------------------------------------ block device

  protected _read(offset: number, length: number): Promise<Uint8Array> {
    return this.#reads.read(offset, length);
  }

  /** Live content is the origin's: its read goes straight into the caller's buffer. */
  protected override _readInto(offset: number, target: Uint8Array): Promise<Uint8Array> {
    return this.#reads.readInto(offset, target);
  }

  /**
   * A write with nothing to preserve (no snapshot holds its blocks, or every
   * one that does has its copy already) goes straight to the origin — whose
   * `write`, by the BlockDevice contract, is done with `data` once it
   * returns — with no copy here, no block lock and, on
   * this hot path, no promise of our own; anything else (a snapshot holds a
   * block, or a hold is being taken) goes the copying way to `_write`.
   */
  protected override _writeThrough(offset: number, data: Uint8Array): Promise<void> | undefined {
    const first = Math.floor(offset / this.blockSize);
    const last = Math.floor((offset + data.length - 1) / this.blockSize);
    // Both checks and the origin's write run in this one synchronous turn, so
    // no snapshot can come to hold the blocks in between; one that does later
    // drains this write through the gate first.
    if (!this.#nothingToPreserve(first, last)) return undefined;
    const pass = this.#gate.tryEnter(first, last);
    if (pass === undefined) return undefined;
    this.#inFlight.started();
    return this.#unheld.write(offset, data, pass, true);
  }

  /**
   * See {@link WRITE_OWNED}: `blocks` written back to back from `offset` as
   * `write` writes them, with its checks and errors, without the private
   * copy `write` takes (several blocks are joined into one buffer first).
   * No path here keeps `data` past the write's settling — a held write
   * waits in the gate with it, a preserving one hands it to the origin —
   * so the caller may reuse the buffers once the promise settles. The
   * volume's workers write ring slabs this way (src/volume/volume-worker.ts).
   * @internal A fast path for the library's own layers.
   */
  [WRITE_OWNED](offset: number, blocks: readonly Uint8Array[]): Promise<void> {
    if (blocks.length === 1) return this.writeHandedOver(offset, blocks[0]!);
    let length = 0;
    for (const block of blocks) {
      if (!isBytes(block)) {
        return Promise.reject(
          new BlockDeviceError('EINVAL', 'every block to write must be a Uint8Array'),
        );
      }
      length += block.length;
    }
    const joined = new Uint8Array(length);
    let at = 0;
    for (const block of blocks) {
      joined.set(block, at);
      at += block.length;
    }
    return this.writeHandedOver(offset, joined);
  }

  protected _write(offset: number, data: Uint8Array): Promise<void> {
    return this.#writeGated(offset, data, false);
  }

  /**
   * A one-block write's private copy goes into a spare block buffer
   * (src/cow/spare-blocks.ts), given back once the origin write it went to
   * has settled ({@link #writeLocked}); other writes take the shared pool's.
   */
  protected override _writeCopy(offset: number, data: Uint8Array): Promise<void> {
    const spares = this.#cow.spareBlocks;
    if (data.length !== spares.blockSize) return super._writeCopy(offset, data);
    const own = spares.take();
    own.set(data);
    return this.#writeGated(offset, own, true);
  }

  /** `_write`; `spare`: `data` is a spare block buffer, to give back once nothing uses it. */
  #writeGated(offset: number, data: Uint8Array, spare: boolean): Promise<void> {
    const first = Math.floor(offset / this.blockSize);
    const last = Math.floor((offset + data.length - 1) / this.blockSize);
    const pass = this.#gate.tryEnter(first, last);
    if (pass === undefined) {
      return this.#gate
        .enter(first, last)
        .then((entered) => this.#writeEntered(offset, data, first, last, entered, spare));
    }
    // In the same synchronous turn as `_writeThrough`, which found the gate
    // open too and so declined because a block needs preserving (or is
    // locked): no need to ask again. Were that ever not so, the locked way
    // is still right, only slower (`preserve` finds nothing to do).
    return this.#writeLocked(offset, data, first, last, pass, spare);
  }

  /** A write that waited at the gate; it leaves with `pass` once the write settles. */
  #writeEntered(
    offset: number,
    data: Uint8Array,
    first: number,
    last: number,
    pass: GatePass,
    spare: boolean,
  ): Promise<void> {
    // A spare buffer passed on here is not given back: it is simply dropped.
    if (this.#nothingToPreserve(first, last)) return this.#unheld.write(offset, data, pass, false);
    return this.#writeLocked(offset, data, first, last, pass, spare);
  }

  /**
   * A write to blocks some snapshot holds: preserve what it needs under the
   * block locks, then write; then leave the gate with `pass`.
   */
  async #writeLocked(
    offset: number,
    data: Uint8Array,
    first: number,
    last: number,
    pass: GatePass,
    spare: boolean,
  ): Promise<void> {
    try {
      const unlock = await this.#locks.acquire(first, last);
      try {
        await this.#preserve(first, last);
        // `data` is this device's private copy (AbstractBlockDevice `write`): handed over, not copied again.
        const owned = this.#writeOriginOwned;
        const written = owned ? owned(offset, [data]) : this.#cow.origin.write(offset, data);
        await io('origin write', written);
      } finally {
        unlock();
        // The origin write has settled, or was never issued (the preserve
        // failed): nothing reads `data` any more.
        if (spare) this.#cow.spareBlocks.give(data);
      }
    } finally {
      // Only once the write is done (or failed): a snapshot's hold waits for it.
      pass.leave();
    }
  }

  protected async _flush(): Promise<void> {
    await io('origin flush', this.#cow.origin.flush());
    // The store's flush, then the durable-frame count (docs/ARCHITECTURE.md, "Crash ordering").
    await this.#cow.log.flush();
  }

  protected async _close(): Promise<void> {
    const handles = await Promise.allSettled([...this.#handles].map((h) => h.close()));
    // Sealed after the handles (a writable one may still append), unless one failed to close.
    const clean = handles.every((r) => r.status === 'fulfilled');
    const sealed = clean ? await Promise.allSettled([this.#cow.seal()]) : [];
    const closed = await Promise.allSettled([this.#cow.origin.close(), this.#cow.store.close()]);
    const failed = [...handles, ...sealed, ...closed].find((r) => r.status === 'rejected');
    if (failed) throw wrapIO('close', failed.reason);
  }

  // ---------------------------------------------------------------- internals

  /**
   * Whether a write to `first..last` may go to the origin with no block
   * lock: no live snapshot needs any of its blocks preserved (none holds
   * them, or each one holding a block already has its preserved copy, so its
   * reads no longer look at the origin there), and none of them is locked —
   * a lock is a preserve-then-write or a snapshot read of the block under
   * way, which this write must not overtake. Asked inside the gate, or in
   * the same synchronous turn as its `tryEnter`: a snapshot that makes a
   * block need preserving again registers its hold first, which keeps later
   * writes out until its cut is applied and drains those already in.
   */
  #nothingToPreserve(first: number, last: number): boolean {
    const state = this.#state;
    if (!state.anyHolds(first, last)) return true;
    if (this.#locks.anyLocked(first, last)) return false;
    for (let block = first; block <= last; block++) if (state.needsPreserve(block)) return false;
    return true;
  }

  /** Preserves what live snapshots need of `first..last` (locks held) and reports each copy. */
  async #preserve(first: number, last: number): Promise<void> {
    const preserved = await this.#cow.preserve(first, last);
    for (const event of preserved) this.emit('preserve', event);
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
