import { randomUUID } from 'node:crypto';
import { Mutex } from 'async-mutex';
import type {
  BlockDevice,
  JournalDeviceEvents,
  JournalSnapshotInfo,
  PointInTime,
  ProgressEvent,
  Snapshot,
  SnapshotCapable,
  SnapshotOptions,
} from '../device.js';
import { BlockDeviceError, wrapIO } from '../errors.js';
import { AbstractBlockDevice } from '../internal/abstract-device.js';
import { BlockTable } from '../internal/block-table.js';
import { readCatalog, writeCatalog } from '../internal/journal-catalog.js';
import { type CheckpointHost, runCheckpoint } from '../internal/journal-checkpoint.js';
import {
  CATALOG_ENTRY_MAX,
  formatJournal,
  headerBytes,
  type JournalSuper,
  readJournalSuper,
  writeJournalSuper,
} from '../internal/journal-format.js';
import { addRecord, RecordIndex } from '../internal/journal-index.js';
import { PartialWrites } from '../internal/journal-merge.js';
import type { JournalNote } from '../internal/journal-notes.js';
import { checkDevices, checkOptions } from '../internal/journal-options.js';
import { readOverlay } from '../internal/journal-overlay.js';
import { type ReplayResult, replayJournal } from '../internal/journal-scan.js';
import {
  deleteOrphan,
  isSnapshotCapable,
  reconcileSnapshots,
  type SnapshotCapableDevice,
  SnapshotRegistry,
} from '../internal/journal-snapshots.js';
import { JournalView, resolvePoint, type ViewHost } from '../internal/journal-view.js';
import { JournalWriter, type RecordContent } from '../internal/journal-writer.js';
import { AccessGate } from '../internal/lock-table.js';
import { SECTOR } from '../internal/log-format.js';
import { io } from '../internal/lower-io.js';
import { SnapshotHandle, type SnapshotHost } from '../internal/snapshot-handle.js';
import { checkSnapshotOptions } from '../internal/snapshot-options.js';

/** Options for {@link JournalDevice.create} and {@link JournalDevice.open}. */
export interface JournalDeviceOptions {
  /**
   * Fraction of the journal in use, in (0, 1], at which a checkpoint starts
   * in the background after a write lands. At 1 a checkpoint runs only on
   * request or when a write finds the journal full (the write waits for it),
   * which keeps the longest `pointInTime` history. @default 0.75
   */
  checkpointAt?: number;
  /**
   * Most snapshots that may exist at once; sizes the snapshot catalog
   * reserved on the journal store at `create` (ignored by `open`).
   * `snapshot()` beyond it fails with `ENOSPC`. @default 64 if production is
   * snapshot-capable, else 0
   */
  maxSnapshots?: number;
  /**
   * Called with `{ operation: 'replay', done, total }` — bytes of journal
   * replayed, and the journal's capacity as an upper bound — while `open`
   * replays the journal, before there is a device to listen on. @default undefined
   */
  onProgress?: (event: ProgressEvent) => void;
}

/**
 * A write journal in front of a production device (seed 000, claims 51, 54,
 * 55): each write is one I/O — a checksummed record `{seq, time, offset,
 * length, crc, data}` appended to the journal store in call order — and an
 * in-memory changes table maps each changed block to the journal location of
 * its newest image. Reads overlay the changes table on production.
 * `checkpoint()` applies the journal to production and reclaims the space.
 *
 * Snapshots (claim 52) are instant: `snapshot()` appends a durable marker
 * record and returns a Snapshot that reads through the journal. The next
 * checkpoint *materializes* it: it applies the journal up to each marker in
 * turn and has the production device take a snapshot there — so this needs
 * a snapshot-capable production device, such as a {@link CowSnapshotDevice}
 * over a FileDevice, whose copy-on-write preserves a chunk for the snapshot
 * just before the journal's newer image overwrites it. A handle keeps
 * working across materialization. The first write to a pending writable
 * snapshot materializes it first (a checkpoint), then goes to production's
 * snapshot, which keeps its own copy of every chunk it wrote.
 *
 * A partial-block write first reads the block's current content and journals
 * the merged whole block, so every record holds whole blocks, the changes
 * table needs one location per block, and any read of a block is one I/O.
 *
 * Guarantees: an aligned write issues exactly one write to the journal store
 * and none to production; concurrent writes share one journal write, and
 * concurrent flushes one journal flush; `pointInTime(seq)` shows the device
 * exactly as it was right after record `seq`, for any record since the last
 * checkpoint; after a power cut, `open` recovers every write acknowledged
 * before the last completed `flush()` (a torn tail is dropped, a damaged
 * record a completed flush had made durable is `ECORRUPT`), and a power cut at
 * any point of a checkpoint recovers the same content.
 */
export class JournalDevice
  extends AbstractBlockDevice<JournalDeviceEvents>
  implements SnapshotCapable
{
  readonly #writer: JournalWriter;
  /** Changed block → ring sector of its newest landed image (claim 51). */
  readonly #table: BlockTable;
  readonly #index: RecordIndex;
  readonly #checkpointAt: number;
  readonly #sectorsPerBlock: number;
  /**
   * Reads enter shared. A checkpoint enters exclusive to retire views of
   * records before its cut before production changes, and to free journal
   * space, so no read is still reading space a new frame may reuse.
   */
  readonly #readGate = new AccessGate();
  readonly #partial: PartialWrites;
  readonly #views = new Set<JournalView>();
  readonly #viewHost: ViewHost = {
    readView: (view, offset, length) => this.#readView(view, offset, length),
    releaseView: (view) => this.#views.delete(view),
  };
  /** What a checkpoint works on; it also holds the durable superblock. */
  readonly #host: CheckpointHost & { superblock: JournalSuper };
  #checkpointRun: Promise<void> | undefined;
  /**
   * Checkpoints, snapshot deletions and restores run one at a time: each
   * changes production, the catalog or the superblock.
   */
  readonly #admin = new Mutex();
  readonly #snapshots: SnapshotRegistry;
  /** A restore is running: writes and notes called meanwhile wait for it, in call order. */
  #barrier: Promise<void> | undefined;
  readonly #handles = new Set<SnapshotHandle>();
  /** A snapshot handle wrote to production since the last flush. */
  #snapshotWrites = false;
  readonly #snapshotHost: SnapshotHost = {
    readSnapshot: (key, offset, length) => this.#readSnapshot(key, offset, length),
    writeSnapshot: (key, offset, data) => this.#writeSnapshot(key, offset, data),
    flushSnapshots: () => this.#flushProduction(),
    releaseHandle: (handle) => this.#handles.delete(handle),
  };
  /** A checkpoint through this record has begun: views of earlier records are gone. */
  #retiredBelow = 0;
  /** Completed checkpoints; views rebuild their tables when it moves. */
  #generation = 0;

  private constructor(
    production: BlockDevice,
    journal: BlockDevice,
    sb: JournalSuper,
    table: BlockTable,
    index: RecordIndex,
    replay: ReplayResult,
    checkpointAt: number,
    snapshots: SnapshotRegistry,
  ) {
    super('JournalDevice', production.size, production.blockSize, false);
    this.#snapshots = snapshots;
    this.#table = table;
    this.#index = index;
    this.#checkpointAt = checkpointAt;
    this.#sectorsPerBlock = production.blockSize / SECTOR;
    this.#retiredBelow = sb.applyingSeq;
    const writer = new JournalWriter(
      journal,
      production.blockSize,
      { ...replay, epoch: sb.epoch, capacity: sb.capacity },
      {
        landed: (seq, record, sector, time) => {
          addRecord(index, table, this.#sectorsPerBlock, record, sector, time);
          if (record.note === undefined) return;
          if (record.note.kind === 'snapshot') snapshots.reserved--;
          snapshots.noteLanded(seq, record.note);
        },
        needSpace: () => this.#startCheckpoint(),
        afterFrame: () => this.#maybeCheckpoint(),
      },
    );
    this.#writer = writer;
    this.#partial = new PartialWrites(writer, production.blockSize, (block) =>
      this.#readLanded(block),
    );
    this.#host = {
      journal,
      production,
      blockSize: production.blockSize,
      writer,
      table,
      index,
      gate: this.#readGate,
      superblock: sb,
      persist: (next) => this.#persist(next),
      retire: (seq) => {
        this.#retiredBelow = Math.max(this.#retiredBelow, seq);
        return (
          [...this.#views].some((view) => view.sequence < seq) ||
          this.#snapshots.hasPendingThrough(seq)
        );
      },
      markersBetween: (from, to) => this.#snapshots.markersBetween(from, to),
      materialize: async (seq) => {
        const snap = this.#snapshots.pendingAt(seq);
        if (snap === undefined) return;
        try {
          await this.#snapshots.materialize(snap, this.#snapshotCapable());
        } catch (err) {
          throw BlockDeviceError.is(err) ? err : wrapIO('production snapshot', err);
        }
      },
      freed: () => {
        this.#generation++;
      },
      progress: (done, total) => this.emit('progress', { operation: 'checkpoint', done, total }),
    };
  }

  /**
   * Formats `journal` for a journal over `production` and opens the device.
   * Resolves only once the format is durable. The device owns both devices
   * from then on: its `close()` flushes and closes them.
   * @throws `EINVAL` for bad options, a read-only device, or a journal too
   *   small for one record of one block; `EIO` if a device fails.
   */
  static async create(
    production: BlockDevice,
    journal: BlockDevice,
    options: JournalDeviceOptions = {},
  ): Promise<JournalDevice> {
    checkDevices(production, journal);
    checkOptions(options);
    const maxSnapshots = options.maxSnapshots ?? (isSnapshotCapable(production) ? 64 : 0);
    if (!Number.isSafeInteger(maxSnapshots) || maxSnapshots < 0 || maxSnapshots > 4096) {
      throw new BlockDeviceError(
        'EINVAL',
        `maxSnapshots ${String(maxSnapshots)} is not an integer from 0 to 4096`,
      );
    }
    await formatJournal(journal, production, maxSnapshots);
    return JournalDevice.open(production, journal, options);
  }

  /**
   * Opens a journal formatted by {@link JournalDevice.create}: replays it
   * from the head, checking every record, and rebuilds the changes table.
   * Then it checks the snapshot catalog against production's snapshots and
   * deletes a production snapshot that a deletion cut short left behind.
   * @throws `ECORRUPT` naming a damaged record that a completed flush had made
   *   durable (a torn tail is dropped instead), a damaged superblock or
   *   catalog, or a materialized snapshot production no longer has;
   *   `EINVAL` if the journal belongs to a production device of another
   *   geometry, or holds materialized snapshots and production is not
   *   snapshot-capable; `EIO` if a device fails.
   */
  static async open(
    production: BlockDevice,
    journal: BlockDevice,
    options: JournalDeviceOptions = {},
  ): Promise<JournalDevice> {
    checkDevices(production, journal);
    const { checkpointAt, onProgress } = checkOptions(options);
    const sb = await readJournalSuper(journal);
    if (sb.productionSize !== production.size || sb.blockSize !== production.blockSize) {
      throw new BlockDeviceError(
        'EINVAL',
        `journal belongs to a production device of ${sb.productionSize} bytes in ${sb.blockSize}-byte blocks, ` +
          `not ${production.size} in ${production.blockSize}`,
      );
    }
    const table = new BlockTable();
    const index = new RecordIndex(sb.headSeq);
    const perBlock = sb.blockSize / SECTOR;
    const snapshots = new SnapshotRegistry(
      Math.floor(sb.catalogCapacity / CATALOG_ENTRY_MAX),
      await readCatalog(journal, sb),
    );
    const replay = await replayJournal(
      journal,
      sb,
      (seq: number, record: RecordContent, sector: number, time: number) => {
        addRecord(index, table, perBlock, record, sector, time);
        if (record.note !== undefined) snapshots.noteLanded(seq, record.note);
      },
      onProgress,
    );
    await reconcileSnapshots(snapshots, production);
    // Not clean from now on until close; the flush also makes every replayed
    // record durable, which frames written from now on will attest.
    const next: JournalSuper = { ...sb, generation: sb.generation + 1, clean: false };
    await writeJournalSuper(journal, next);
    return new JournalDevice(
      production,
      journal,
      next,
      table,
      index,
      replay,
      checkpointAt,
      snapshots,
    );
  }

  /** Sequence number of the newest record in the journal (0 before the first write). */
  get sequence(): number {
    return this.#writer.writtenSeq;
  }

  /**
   * The oldest sequence number `pointInTime` accepts: the last record a
   * checkpoint applied to production, or is applying (0 before any).
   */
  get oldestSequence(): number {
    return Math.max(this.#host.superblock.headSeq - 1, this.#retiredBelow);
  }

  /** Bytes of journal ring in all. */
  get journalCapacity(): number {
    return this.#writer.capacity;
  }

  /** Bytes of journal ring holding records not yet applied to production. */
  get journalUsed(): number {
    return this.#writer.used;
  }

  /** Entries in the changes table: blocks whose newest content is in the journal. */
  get changedBlocks(): number {
    return this.#table.size;
  }

  /** Bytes of memory the changes table holds. */
  get changesTableBytes(): number {
    return this.#table.byteLength;
  }

  /**
   * A read-only view of the device as it was right after record `point`, or
   * — for a Date — after the last record written at or before it.
   * @throws `EINVAL` if `point` is neither a number nor a Date; `ERANGE` for
   *   a negative, fractional or NaN sequence number, one past
   *   {@link sequence}, or an invalid Date; `ENOENT` for a point before
   *   {@link oldestSequence} (checkpointed into production); `ECLOSED`.
   */
  pointInTime(point: number | Date): Promise<PointInTime> {
    // During a restore, the newest points are not settled yet.
    if (this.#barrier !== undefined && !this.closed) {
      return this.#barrier.then(() => this.pointInTime(point));
    }
    try {
      this.checkOpen();
      const { headSeq, headTime } = this.#host.superblock;
      const seq = resolvePoint(point, {
        oldest: this.oldestSequence,
        newest: this.sequence,
        headSeq,
        headTime,
        index: this.#index,
      });
      const time = seq >= this.#index.firstSeq ? this.#index.timeOf(seq) : headTime;
      const view = new JournalView(this.#viewHost, seq, time, this.size, this.blockSize);
      this.#views.add(view);
      return Promise.resolve(view);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * Applies every record written before this call to production — in
   * address order, adjacent blocks coalesced, newest image of each block
   * once — flushes production, then durably moves the journal head past
   * them and deletes their changes-table entries (claim 54). Writes go on
   * meanwhile. A power cut at any point recovers the same content.
   * @throws `EIO` if a device fails (nothing is lost: the journal still holds
   *   every record), `ECLOSED`.
   */
  checkpoint(): Promise<void> {
    try {
      this.checkOpen();
    } catch (err) {
      return Promise.reject(err);
    }
    const ticket = this.#writer.lastTicket;
    return this.track(
      (async () => {
        await this.#writer.landedThrough(ticket);
        const target = this.#writer.landed().abs;
        while (this.#writer.headAbs < target) await this.#startCheckpoint();
      })(),
    );
  }

  // ---------------------------------------------------------------- snapshots

  /**
   * Takes a snapshot holding exactly the writes called before this call —
   * those still in flight included — and none called after (DESIGN.md rule
   * 1): it appends a marker record in call order, so nothing is held. The
   * snapshot reads through the journal until the next checkpoint
   * materializes it on production. A durability point: when it resolves,
   * the marker and every write called before it survive a power cut.
   * @throws `EINVAL` for bad options or a production device that cannot take
   *   snapshots; `ENOSPC` past `maxSnapshots`; `ECLOSED`; `EIO`.
   */
  snapshot(options: SnapshotOptions = {}): Promise<Snapshot> {
    const createdAt = Date.now();
    try {
      this.checkOpen();
      checkSnapshotOptions(options);
      this.#snapshotCapable();
      if (this.#snapshots.count >= this.#snapshots.maxSnapshots) {
        throw new BlockDeviceError(
          'ENOSPC',
          `already ${this.#snapshots.maxSnapshots} snapshots (maxSnapshots)`,
        );
      }
    } catch (err) {
      return Promise.reject(err);
    }
    const note: JournalNote = {
      kind: 'snapshot',
      id: randomUUID(),
      name: options.name,
      createdAt,
      writable: options.writable ?? false,
    };
    this.#snapshots.reserved++;
    const landed = this.#afterBarrier(() => this.#writer.appendNote(note, createdAt));
    return this.track(
      (async () => {
        try {
          await landed;
        } catch (err) {
          this.#snapshots.reserved--;
          throw err;
        }
        await this.#writer.sync();
        const snap = this.#snapshots.get(note.id);
        this.emit('snapshot', this.#snapshots.info(snap, this.#productionInfos()));
        return this.#openHandle(snap.key);
      })(),
    );
  }

  /** The live snapshots, oldest first, pending and materialized. @throws `ECLOSED`. */
  listSnapshots(): JournalSnapshotInfo[] {
    this.checkOpen();
    const production = this.#productionInfos();
    return this.#snapshots.all().map((snap) => this.#snapshots.info(snap, production));
  }

  /**
   * Opens another handle on a snapshot.
   * @throws `ENOENT` for an unknown id, `ECLOSED`.
   */
  async openSnapshot(id: string): Promise<Snapshot> {
    this.checkOpen();
    return this.#openHandle(this.#snapshots.get(id).key);
  }

  /**
   * Deletes a snapshot: a pending one by a durable delete record (its marker
   * is then skipped by checkpoints), a materialized one from the catalog and
   * then from production. Open handles on it fail with `ENOENT` from then
   * on. A durability point.
   * @throws `ENOENT` for an unknown id, `ECLOSED`, `EIO`.
   */
  deleteSnapshot(id: string): Promise<void> {
    try {
      this.checkOpen();
      this.#snapshots.get(id);
    } catch (err) {
      return Promise.reject(err);
    }
    const note: JournalNote = { kind: 'delete', id };
    const landed = this.#afterBarrier(() => this.#writer.appendNote(note, Date.now()));
    return this.track(
      (async () => {
        await landed;
        await this.#writer.sync();
        await this.#admin.runExclusive(() => this.#deleteLocked(id));
        this.emit('snapshot-deleted', id);
      })(),
    );
  }

  /**
   * Makes the device's content equal the snapshot's; every snapshot stays
   * intact. It appends a restore record in call order — writes called after
   * wait for the restore — checkpoints through it (materializing the
   * snapshot if it is pending), then restores production from its
   * production snapshot. A durability point, and all-or-nothing across a
   * power cut when production's restore is (CowSnapshotDevice's is).
   * `pointInTime` of records before the restore record is gone afterwards.
   * @throws `ENOENT` for an unknown id, `EINVAL` if production cannot take
   *   snapshots, `ECLOSED`, `EIO` (production's own failure as `cause`).
   */
  restore(id: string): Promise<void> {
    let production: SnapshotCapableDevice;
    try {
      this.checkOpen();
      production = this.#snapshotCapable();
      this.#snapshots.get(id);
    } catch (err) {
      return Promise.reject(err);
    }
    const note: JournalNote = { kind: 'restore', id };
    const landed = this.#afterBarrier(() => this.#writer.appendNote(note, Date.now()));
    let lift!: () => void;
    const barrier = new Promise<void>((resolve) => {
      lift = resolve;
    });
    this.#barrier = barrier;
    return this.track(
      (async () => {
        try {
          await landed;
          // Nothing else lands before the barrier lifts: this is the restore record.
          const through = this.#writer.writtenSeq;
          await this.#admin.runExclusive(async () => {
            while (this.#host.superblock.headSeq <= through) await this.#checkpointLocked();
            const { productionId } = this.#snapshots.get(id);
            const release = await this.#readGate.exclusive();
            try {
              await production.restore(productionId!);
            } catch (err) {
              throw wrapIO('production restore', err);
            } finally {
              release();
            }
          });
        } finally {
          lift();
          void barrier.then(() => {
            if (this.#barrier === barrier) this.#barrier = undefined;
          });
        }
      })(),
    );
  }

  // ------------------------------------------------------------ block device

  protected _read(offset: number, length: number): Promise<Uint8Array> {
    // The hot path: no checkpoint waiting, so no promise of our own.
    if (this.#readGate.tryShared() !== undefined) {
      return readOverlay(this.#host, this.#table, offset, length).then(
        this.#readDone,
        this.#readFailed,
      );
    }
    return this.#readGate
      .shared()
      .then(() => readOverlay(this.#host, this.#table, offset, length))
      .then(this.#readDone, this.#readFailed);
  }

  readonly #readDone = (data: Uint8Array): Uint8Array => {
    this.#readGate.releaseShared();
    return data;
  };

  readonly #readFailed = (err: unknown): never => {
    this.#readGate.releaseShared();
    throw wrapIO('read', err);
  };

  protected _write(offset: number, data: Uint8Array): Promise<void> {
    // Writes called during a restore wait for it, in call order.
    if (this.#barrier !== undefined) {
      return this.#barrier.then(() => this.#writeNow(offset, data));
    }
    return this.#writeNow(offset, data);
  }

  #writeNow(offset: number, data: Uint8Array): Promise<void> {
    const bs = this.blockSize;
    const time = Date.now();
    const first = Math.floor(offset / bs);
    const blocks = Math.floor((offset + data.length - 1) / bs) - first + 1;
    if (headerBytes(1) + blocks * bs > this.#writer.capacity) {
      return Promise.reject(
        new BlockDeviceError(
          'ENOSPC',
          `a write of ${data.length} bytes at ${offset} needs ${headerBytes(1) + blocks * bs} bytes of journal; it has ${this.#writer.capacity}`,
        ),
      );
    }
    if (offset % bs === 0 && data.length % bs === 0) return this.#writer.append(first, data, time);
    return this.#partial.write(offset, data, time);
  }

  protected async _flush(): Promise<void> {
    await this.#writer.flush();
    if (this.#snapshotWrites) await this.#flushProduction();
  }

  protected async _close(): Promise<void> {
    this.#writer.close();
    await Promise.all([...this.#views].map((view) => view.close()));
    await Promise.all([...this.#handles].map((handle) => handle.close()));
    await this.#snapshots.closeAll();
    let failure: unknown;
    // Clean only if every record is durable: open then expects all of them.
    if (!this.#writer.failed && this.#writer.durableSeq === this.#writer.writtenSeq) {
      const sb = this.#host.superblock;
      const clean = { ...sb, generation: sb.generation + 1, clean: true };
      try {
        await writeJournalSuper(this.#host.journal, { ...clean, tailSeq: this.#writer.writtenSeq });
      } catch (err) {
        failure = err;
      }
    }
    const { production, journal } = this.#host;
    const results = await Promise.allSettled([production.close(), journal.close()]);
    const failed = results.find((r) => r.status === 'rejected');
    if (failure !== undefined)
      throw BlockDeviceError.is(failure) ? failure : wrapIO('close', failure);
    if (failed) throw wrapIO('close', failed.reason);
  }

  // ---------------------------------------------------------------- internals

  /** Reads a block as the changes table shows it now (for a partial-block write's merge). */
  async #readLanded(block: number): Promise<Uint8Array> {
    const release = await this.#readGate.shared();
    try {
      return await readOverlay(this.#host, this.#table, block * this.blockSize, this.blockSize);
    } catch (err) {
      throw wrapIO('read before a partial-block write', err);
    } finally {
      release();
    }
  }

  async #readView(view: JournalView, offset: number, length: number): Promise<Uint8Array> {
    const release = await this.#readGate.shared();
    try {
      if (view.sequence < this.oldestSequence) {
        throw new BlockDeviceError(
          'ENOENT',
          `record ${view.sequence} was checkpointed into production (the oldest point is now ${this.oldestSequence})`,
        );
      }
      if (view.table === undefined || view.generation !== this.#generation) {
        view.table = this.#index.tableAt(view.sequence, this.#sectorsPerBlock);
        view.generation = this.#generation;
      }
      return await readOverlay(this.#host, view.table, offset, length).catch((err: unknown) => {
        throw wrapIO('read', err);
      });
    } finally {
      release();
    }
  }

  // -------------------------------------------------------------- checkpoint

  /** Starts a checkpoint unless one is running; resolves when the running one ends. */
  #startCheckpoint(): Promise<void> {
    if (this.#checkpointRun === undefined) {
      const run = this.#admin.runExclusive(() => this.#checkpointLocked());
      this.#checkpointRun = run;
      const clear = (): void => {
        if (this.#checkpointRun === run) this.#checkpointRun = undefined;
      };
      run.then(clear, clear);
    }
    return this.#checkpointRun;
  }

  /** After a frame lands: past `checkpointAt`, start a checkpoint in the background. */
  #maybeCheckpoint(): void {
    if (this.closed || this.#checkpointRun !== undefined || this.#checkpointAt >= 1) return;
    if (this.#writer.used < this.#checkpointAt * this.#writer.capacity) return;
    this.track(this.#startCheckpoint()).catch((err: unknown) =>
      this.reportError(BlockDeviceError.is(err) ? err : wrapIO('checkpoint', err)),
    );
  }

  /** One checkpoint; the caller holds the admin lock. */
  async #checkpointLocked(): Promise<void> {
    const done = await runCheckpoint(this.#host);
    if (done !== undefined) this.emit('checkpoint', done);
  }

  /** Makes `sb` the durable superblock, after writing the catalog if it changed. */
  async #persist(sb: JournalSuper): Promise<void> {
    const journal = this.#host.journal;
    let next = sb;
    if (this.#snapshots.catalogDirty) {
      next = await writeCatalog(journal, sb, this.#snapshots.catalog());
      this.#snapshots.catalogDirty = false;
    }
    await writeJournalSuper(journal, next);
    this.#host.superblock = next;
  }

  // ------------------------------------------------------ snapshot internals

  /** Runs `enqueue` now, or once a running restore is done (writes called meanwhile go first). */
  #afterBarrier(enqueue: () => Promise<void>): Promise<void> {
    return this.#barrier === undefined ? enqueue() : this.#barrier.then(enqueue);
  }

  #snapshotCapable(): SnapshotCapableDevice {
    const production = this.#host.production;
    if (!isSnapshotCapable(production)) {
      throw new BlockDeviceError(
        'EINVAL',
        'the production device cannot take snapshots, which journal snapshots are materialized into: ' +
          'wrap it in a CowSnapshotDevice',
      );
    }
    return production;
  }

  #productionInfos(): ReturnType<SnapshotCapable['listSnapshots']> {
    const production = this.#host.production;
    return isSnapshotCapable(production) ? production.listSnapshots() : [];
  }

  #openHandle(key: number): SnapshotHandle {
    const snap = this.#snapshots.byKey(key);
    const handle = new SnapshotHandle(
      this.#snapshotHost,
      {
        seq: key,
        id: snap.id,
        name: snap.name,
        createdAt: snap.createdAt,
        writable: snap.writable,
      },
      this.size,
      this.blockSize,
    );
    this.#handles.add(handle);
    return handle;
  }

  /** Deletes snapshot `id` once its delete record is durable; the caller holds the admin lock. */
  async #deleteLocked(id: string): Promise<void> {
    const production = this.#snapshotCapable();
    const snap = this.#snapshots.find(id);
    if (snap !== undefined && snap.productionId !== undefined) {
      // Catalog first: a power cut before production's delete leaves a
      // snapshot `open` finds by name and deletes.
      await this.#snapshots.forget(snap);
      const sb = this.#host.superblock;
      await this.#persist({ ...sb, generation: sb.generation + 1 });
      await io('production delete snapshot', production.deleteSnapshot(snap.productionId));
      return;
    }
    // Pending: its delete record did it. A checkpoint that a power cut (or
    // this delete) interrupted may have taken its production snapshot.
    await deleteOrphan(production, id);
  }

  /** Serves a snapshot handle's read: through the journal while pending, from production's snapshot after. */
  async #readSnapshot(key: number, offset: number, length: number): Promise<Uint8Array> {
    for (;;) {
      const snap = this.#snapshots.byKey(key);
      if (snap.productionId !== undefined) {
        const handle = await this.#snapshots.productionHandle(snap, this.#snapshotCapable());
        return handle.read(offset, length).catch((err: unknown) => {
          throw snap.deleted ? this.#snapshots.byKey(key) : wrapIO('snapshot read', err);
        });
      }
      // A checkpoint is materializing it: read once it is done.
      if (snap.sequence <= this.#retiredBelow) {
        await this.#startCheckpoint();
        continue;
      }
      const release = await this.#readGate.shared();
      try {
        if (snap.deleted || snap.sequence <= this.#retiredBelow) continue;
        if (snap.table === undefined || snap.generation !== this.#generation) {
          snap.table = this.#index.tableAt(snap.sequence, this.#sectorsPerBlock);
          snap.generation = this.#generation;
        }
        return await readOverlay(this.#host, snap.table, offset, length).catch((err: unknown) => {
          throw wrapIO('snapshot read', err);
        });
      } finally {
        release();
      }
    }
  }

  /** Serves a writable snapshot handle's write: materializes it first if pending. */
  async #writeSnapshot(key: number, offset: number, data: Uint8Array): Promise<void> {
    for (;;) {
      const snap = this.#snapshots.byKey(key);
      if (snap.productionId === undefined) {
        await this.#startCheckpoint();
        continue;
      }
      const handle = await this.#snapshots.productionHandle(snap, this.#snapshotCapable());
      this.#snapshotWrites = true;
      return handle.write(offset, data).catch((err: unknown) => {
        throw snap.deleted ? this.#snapshots.byKey(key) : wrapIO('snapshot write', err);
      });
    }
  }

  /** Makes writes through snapshot handles durable: they went to production's snapshots. */
  async #flushProduction(): Promise<void> {
    this.#snapshotWrites = false;
    await io('production flush', this.#host.production.flush());
  }
}
