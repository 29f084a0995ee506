import type { BlockDevice, JournalDeviceEvents, PointInTime, ProgressEvent } from '../device.js';
import { BlockDeviceError, wrapIO } from '../errors.js';
import { AbstractBlockDevice } from '../internal/abstract-device.js';
import { BlockTable } from '../internal/block-table.js';
import { type CheckpointHost, runCheckpoint } from '../internal/journal-checkpoint.js';
import {
  formatJournal,
  headerBytes,
  type JournalSuper,
  readJournalSuper,
  writeJournalSuper,
} from '../internal/journal-format.js';
import { addRecord, RecordIndex } from '../internal/journal-index.js';
import { PartialWrites } from '../internal/journal-merge.js';
import { checkDevices, checkOptions } from '../internal/journal-options.js';
import { readOverlay } from '../internal/journal-overlay.js';
import { type ReplayResult, replayJournal } from '../internal/journal-scan.js';
import { JournalView, resolvePoint, type ViewHost } from '../internal/journal-view.js';
import { JournalWriter } from '../internal/journal-writer.js';
import { AccessGate } from '../internal/lock-table.js';
import { SECTOR } from '../internal/log-format.js';

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
export class JournalDevice extends AbstractBlockDevice<JournalDeviceEvents> {
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
  readonly #host: CheckpointHost;
  #checkpointRun: Promise<void> | undefined;
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
  ) {
    super('JournalDevice', production.size, production.blockSize, false);
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
        landed: (_seq, firstBlock, blocks, sector, time) =>
          addRecord(index, table, this.#sectorsPerBlock, firstBlock, blocks, sector, time),
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
      retire: (seq) => {
        this.#retiredBelow = Math.max(this.#retiredBelow, seq);
        return [...this.#views].some((view) => view.sequence < seq);
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
    await formatJournal(journal, production);
    return JournalDevice.open(production, journal, options);
  }

  /**
   * Opens a journal formatted by {@link JournalDevice.create}: replays it
   * from the head, checking every record, and rebuilds the changes table.
   * @throws `ECORRUPT` naming a damaged record that a completed flush had made
   *   durable (a torn tail is dropped instead) or a damaged superblock;
   *   `EINVAL` if the journal belongs to a production device of another
   *   geometry; `EIO` if a device fails.
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
    const replay = await replayJournal(
      journal,
      sb,
      (_seq, firstBlock, blocks, sector, time) =>
        addRecord(index, table, perBlock, firstBlock, blocks, sector, time),
      onProgress,
    );
    // Not clean from now on until close; the flush also makes every replayed
    // record durable, which frames written from now on will attest.
    const next: JournalSuper = { ...sb, generation: sb.generation + 1, clean: false };
    await writeJournalSuper(journal, next);
    return new JournalDevice(production, journal, next, table, index, replay, checkpointAt);
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

  protected _flush(): Promise<void> {
    return this.#writer.flush();
  }

  protected async _close(): Promise<void> {
    this.#writer.close();
    await Promise.all([...this.#views].map((view) => view.close()));
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
      const run = this.#runCheckpoint();
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

  async #runCheckpoint(): Promise<void> {
    const done = await runCheckpoint(this.#host);
    if (done !== undefined) this.emit('checkpoint', done);
  }
}
