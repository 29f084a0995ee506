import {
  AbstractBlockDevice,
  checkCheckOptions,
  type InFlightCounter,
  inFlightCounter,
  LayerKind,
  STACK_IDENTITY,
  type StackIdentity,
  withClaimed,
} from '../base/index.js';
import type {
  BlockDevice,
  ChangeTracking,
  CheckOptions,
  CheckReport,
  Extent,
  JournalDeviceEvents,
  JournalSnapshotInfo,
  PointInTime,
  Snapshot,
  SnapshotCapable,
  SnapshotOptions,
} from '../device.js';
import { BlockDeviceError, wrapIO } from '../errors.js';
import {
  checkSnapshotOptions,
  PREPARE_EXPORT,
  SNAPSHOT_FREEZE,
  type SnapshotFreeze,
} from '../snapshot/index.js';
import { checkJournalStore } from './journal-check.js';
import { JournalCore } from './journal-core.js';
import { journalChangedExtents, prepareExport } from './journal-extents.js';
import { formatJournal } from './journal-format.js';
import { recoverJournal } from './journal-open.js';
import {
  catalogSize,
  checkJournalDevices,
  type JournalDeviceOptions,
  parseJournalOptions,
} from './journal-options.js';

export type { JournalDeviceOptions };

import { isSnapshotCapable, type JournalRepair } from './journal-snapshot-registry.js';
import { JournalSnapshots } from './journal-snapshots.js';

/**
 * A write journal in front of a production device: each write is one
 * I/O — a checksummed record `{seq, time, offset,
 * length, crc, data}` appended to the journal store in call order — and an
 * in-memory changes table maps each changed block to the journal location of
 * its newest image. Reads overlay the changes table on production.
 * `checkpoint()` applies the journal to production and reclaims the space.
 *
 * Snapshots are instant: `snapshot()` appends a durable marker
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
 * any point of a checkpoint recovers the same content. After a clean
 * `close()` nothing is a torn tail: `open` must replay exactly to where the
 * close left the last frame, and any record or frame before it that is
 * missing or damaged is `ECORRUPT`. Snapshots keep
 * the snapshot rules 1–5: `snapshot`, `deleteSnapshot` and `restore` are
 * durability points.
 */
export class JournalDevice
  extends AbstractBlockDevice<JournalDeviceEvents>
  implements SnapshotCapable, ChangeTracking
{
  readonly #core: JournalCore;
  readonly #snapshots: JournalSnapshots;
  #repairs: readonly JournalRepair[] = [];
  /**
   * The core counts reads in flight in the reaction that leaves its read
   * gate; writes (no `_writeThrough`) are tracked by the base class.
   */
  readonly #inFlight: InFlightCounter = inFlightCounter(this);

  private constructor(
    core: (device: JournalDevice) => JournalCore,
    size: number,
    blockSize: number,
  ) {
    super('JournalDevice', size, blockSize, false);
    this.#inFlight.ownReads = true;
    this.#core = core(this);
    this.#snapshots = new JournalSnapshots(this.#core, size);
  }

  /**
   * Formats `journal` for a journal over `production` and opens the device.
   * Resolves only once the format is durable. The device owns both devices
   * from then on: its `close()` flushes and closes them.
   * @throws `EINVAL` for bad options, a read-only device, or a journal too
   *   small for one record of one block and the snapshot catalog; `EBUSY`
   *   (nothing written) if the journal store already holds a blocksnap
   *   format, unless `force`; `EIO` if a device fails.
   */
  static async create(
    production: BlockDevice,
    journal: BlockDevice,
    options: JournalDeviceOptions = {},
  ): Promise<JournalDevice> {
    checkJournalDevices(production, journal);
    parseJournalOptions(options);
    const maxSnapshots = catalogSize(options, isSnapshotCapable(production));
    return withClaimed([production, journal] as const, 'JournalDevice', async ([p, j]) => {
      await formatJournal(j, p, maxSnapshots, options.force);
      return JournalDevice.#openOwned(p, j, options);
    });
  }

  /**
   * Opens a journal formatted by {@link JournalDevice.create}: replays it
   * from the head, checking every record, and rebuilds the changes table.
   * Then it checks the snapshot catalog against production's snapshots and
   * deletes a production snapshot that a deletion cut short left behind.
   * @throws `ECORRUPT` naming a damaged record that a completed flush had made
   *   durable (a torn tail is dropped instead), any missing or damaged frame
   *   of a journal closed cleanly (it has no torn tail), a damaged superblock or
   *   catalog, or a materialized snapshot production no longer has (unless
   *   `repair`, which drops it from the journal: see {@link repairs});
   *   `EINVAL` if the journal belongs to a production device of another
   *   geometry, or holds materialized snapshots and production is not
   *   snapshot-capable; `EIO` if a device fails.
   */
  static async open(
    production: BlockDevice,
    journal: BlockDevice,
    options: JournalDeviceOptions = {},
  ): Promise<JournalDevice> {
    checkJournalDevices(production, journal);
    parseJournalOptions(options);
    return withClaimed([production, journal] as const, 'JournalDevice', ([p, j]) =>
      JournalDevice.#openOwned(p, j, options),
    );
  }

  /** `open` over the views of the claimed production device and journal store. */
  static async #openOwned(
    production: BlockDevice,
    journal: BlockDevice,
    options: JournalDeviceOptions,
  ): Promise<JournalDevice> {
    const { checkpointAt, onProgress } = parseJournalOptions(options);
    const { repairs, ...recovered } = await recoverJournal(
      production,
      journal,
      onProgress,
      options.repair === true,
    );
    const parts = { production, journal, ...recovered, checkpointAt };
    const device = new JournalDevice(
      (device) =>
        new JournalCore(parts, {
          checkpoint: (event) => device.emit('checkpoint', event),
          progress: (done, total) =>
            device.emit('progress', { operation: 'checkpoint', done, total }),
          backgroundError: (err) => device.reportError(err),
          track: (work) => device.#inFlight.track(work),
          readStarted: () => device.#inFlight.started(),
          readSettled: device.#inFlight.settled,
          closed: () => device.closed,
        }),
      production.size,
      production.blockSize,
    );
    device.#repairs = repairs;
    return device;
  }

  /**
   * What `open` with `repair: true` repaired (empty otherwise, and after a
   * repairing open that found nothing to repair).
   */
  get repairs(): readonly JournalRepair[] {
    return this.#repairs;
  }

  /**
   * The extents that may differ between snapshot `fromId` and snapshot `toId`
   * or the live device (`'live'`), from production's change tables and the
   * journal's changes table, without reading data; the journal's own ids.
   * Both snapshots must be materialized (`exportStream` does it first).
   * @throws `ENOENT` for an unknown id, `EBUSY` for a snapshot still in the
   *   journal (await `checkpoint()`), `EINVAL` if production does not track
   *   changes, `ECLOSED`.
   */
  changedExtents(fromId: string, toId: string | 'live'): Extent[] {
    this.checkOpen();
    const snapshots = this.#snapshots;
    const to = toId === 'live' ? 'live' : snapshots.live(toId);
    return journalChangedExtents(this.#core, snapshots.live(fromId), to);
  }

  /**
   * What snapshot `id` holds: the whole device (a journal snapshot is of all of it).
   * @throws `ENOENT` for an unknown id, `ECLOSED`.
   */
  snapshotExtents(id: string): Extent[] {
    this.checkOpen();
    this.#snapshots.live(id);
    return [{ offset: 0, length: this.size }];
  }

  /** Materializes pending snapshots `ids` before an export reads their extents. @internal */
  [PREPARE_EXPORT](ids: readonly string[]): Promise<void> {
    const snaps = ids.map((id) => this.#snapshots.live(id));
    return prepareExport(snaps, () => this.checkpoint());
  }

  /** Holds a writable snapshot still for an export (see SNAPSHOT_FREEZE). @internal */
  [SNAPSHOT_FREEZE](id: string): SnapshotFreeze {
    this.checkOpen();
    return this.#snapshots.freeze(id);
  }

  /** What a layer stacked on this one records of it (src/base/stack-identity.ts). @internal */
  [STACK_IDENTITY](): StackIdentity {
    return { kind: LayerKind.journal, id: this.#core.superblock.id };
  }

  /** Sequence number of the newest record in the journal (0 before the first write). */
  get sequence(): number {
    return this.#core.writer.writtenSeq;
  }

  /**
   * The oldest sequence number `pointInTime` accepts: the last record a
   * checkpoint applied to production, or is applying (0 before any).
   */
  get oldestSequence(): number {
    return this.#core.oldestSequence;
  }

  /** Bytes of journal ring in all. */
  get journalCapacity(): number {
    return this.#core.writer.capacity;
  }

  /** Bytes of journal ring holding records not yet applied to production. */
  get journalUsed(): number {
    return this.#core.writer.used;
  }

  /** Entries in the changes table: blocks whose newest content is in the journal. */
  get changedBlocks(): number {
    return this.#core.table.size;
  }

  /** Bytes of memory the changes table holds. */
  get changesTableBytes(): number {
    return this.#core.table.byteLength;
  }

  /**
   * A read-only view of the device as it was right after record `point`, or
   * — for a Date — after the last record written at or before it. Called
   * during a restore, it resolves once the restore is done.
   * @throws `EINVAL` if `point` is neither a number nor a Date; `ERANGE` for
   *   a negative, fractional or NaN sequence number, one past
   *   {@link sequence}, or an invalid Date; `ENOENT` for a point before
   *   {@link oldestSequence} (checkpointed into production); `ECLOSED`.
   */
  pointInTime(point: number | Date): Promise<PointInTime> {
    const barrier = this.#core.barrier;
    // During a restore, the newest points are not settled yet.
    if (barrier !== undefined && !this.closed) return barrier.then(() => this.pointInTime(point));
    try {
      this.checkOpen();
      return Promise.resolve(this.#core.view(point, this.size));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * Applies every record written before this call to production — in
   * address order, adjacent blocks coalesced, newest image of each block
   * once between snapshot markers — materializes the snapshots whose
   * markers it passes, flushes production, then durably moves the journal
   * head past them and deletes their changes-table entries.
   * Writes go on meanwhile. A power cut at any point recovers the same
   * content.
   * @throws `EIO` if a device fails (nothing is lost: the journal still holds
   *   every record), `ECLOSED`.
   */
  checkpoint(): Promise<void> {
    try {
      this.checkOpen();
    } catch (err) {
      return Promise.reject(err);
    }
    const { writer } = this.#core;
    const ticket = writer.lastTicket;
    return this.#inFlight.track(
      (async () => {
        await writer.landedThrough(ticket);
        const target = writer.landed().abs;
        while (writer.headAbs < target) await this.#core.startCheckpoint();
      })(),
    );
  }

  /**
   * Walks the journal store and verifies every checksum: both superblock
   * slots, the catalog, every frame from the head to the last landed one
   * (header, chain, each record and note); reports each problem with its
   * structure and store offset, and what the live device and each pending
   * snapshot can no longer read.
   * Read-only and safe in use: it writes nothing, checkpoints wait only while
   * superblocks and catalog are read, and a frame freed meanwhile is skipped.
   * @throws `ECLOSED`, `EINVAL`, `EIO` (a store read failed; damage is reported, not thrown).
   */
  check(options: CheckOptions = {}): Promise<CheckReport> {
    try {
      this.checkOpen();
      checkCheckOptions(options);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#inFlight.track(
      checkJournalStore(this.#core, () => this.#snapshots.list(), options),
    );
  }

  // ---------------------------------------------------------------- snapshots

  /**
   * Takes a snapshot holding exactly the writes called before this call —
   * those still in flight included — and none called after (snapshot rule
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
      this.checkUnowned('snapshot');
      checkSnapshotOptions(options);
      this.#snapshots.checkRoom();
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#inFlight.track(
      this.#snapshots.take(options, createdAt).then(([info, handle]) => {
        this.emit('snapshot', info);
        return handle;
      }),
    );
  }

  /** The live snapshots, oldest first, pending and materialized. @throws `ECLOSED`. */
  listSnapshots(): JournalSnapshotInfo[] {
    this.checkOpen();
    return this.#snapshots.list();
  }

  /**
   * Opens another handle on a snapshot.
   * @throws `ENOENT` for an unknown id, `ECLOSED`.
   */
  async openSnapshot(id: string): Promise<Snapshot> {
    this.checkOpen();
    return this.#snapshots.open(id);
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
      this.checkUnowned('delete a snapshot of');
      this.#snapshots.live(id);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#inFlight.track(
      this.#snapshots.delete(id).then(() => {
        this.emit('snapshot-deleted', id);
      }),
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
    try {
      this.checkOpen();
      this.checkUnowned('restore');
      this.#snapshots.production();
      this.#snapshots.live(id);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#inFlight.track(this.#snapshots.restore(id));
  }

  // ------------------------------------------------------------ block device

  protected _read(offset: number, length: number): Promise<Uint8Array> {
    return this.#core.read(offset, length);
  }

  /** The overlay read into the caller's buffer: a read in one run goes straight into it. */
  protected override _readInto(offset: number, target: Uint8Array): Promise<Uint8Array> {
    return this.#core.read(offset, target.length, target);
  }

  protected _write(offset: number, data: Uint8Array): Promise<void> {
    return this.#core.write(offset, data);
  }

  protected async _flush(): Promise<void> {
    await this.#core.writer.flush();
    await this.#snapshots.flushIfDirty();
  }

  protected async _close(): Promise<void> {
    const { writer, production, journal } = this.#core;
    writer.close();
    await this.#core.closeViews();
    let failure: unknown;
    // A handle that fails to close (a writable one's store flush) fails
    // close(), after production and the journal store are closed too.
    await this.#snapshots.close().catch((err: unknown) => {
      failure = err;
    });
    // Clean only if every record is durable: open then expects all of them,
    // and its replay to end exactly where the last frame does. An attestation
    // queued before writer.close() may still land: wait for the writer to be
    // idle, and make that frame durable before the mark names its end.
    if (!writer.failed && writer.durableSeq === writer.writtenSeq) {
      try {
        await writer.landedThrough(writer.lastTicket);
        await writer.syncFrames();
        if (!writer.failed) {
          await this.#core.bumpSuperblock({
            clean: true,
            tailSeq: writer.writtenSeq,
            tailAbs: writer.landed().abs,
          });
        }
      } catch (err) {
        failure = err;
      }
    }
    const results = await Promise.allSettled([production.close(), journal.close()]);
    const failed = results.find((r) => r.status === 'rejected');
    if (failure !== undefined)
      throw BlockDeviceError.is(failure) ? failure : wrapIO('close', failure);
    if (failed) throw wrapIO('close', failed.reason);
  }
}
