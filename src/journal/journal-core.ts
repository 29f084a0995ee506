import { Mutex } from 'async-mutex';
import {
  AccessGate,
  type CallbackReader,
  callbackReader,
  type READ_CALLBACK,
  readByCallback,
  readInto,
  SECTOR,
} from '../base/index.js';
import type { BlockDevice, CheckpointEvent, PointInTime } from '../device.js';
import { BlockDeviceError, wrapIO } from '../errors.js';
import { writeCatalog } from './journal-catalog.js';
import { type CheckpointHost, runCheckpoint } from './journal-checkpoint.js';
import { headerBytes, type JournalSuper, writeJournalSuper } from './journal-format.js';
import { addRecord, type RecordIndex } from './journal-index.js';
import { PartialWrites } from './journal-merge.js';
import { ON_PRODUCTION, readOverlay, singleRunAt } from './journal-overlay.js';
import type { ReplayResult } from './journal-scan.js';
import type { SnapshotRegistry } from './journal-snapshot-registry.js';
import type { ChangesTable } from './journal-table.js';
import { JournalView, resolvePoint, type ViewHost } from './journal-view.js';
import { JournalWriter } from './journal-writer.js';

/** What `open` hands the core: the stores, the durable superblock, and what replay rebuilt. */
export interface JournalParts {
  production: BlockDevice;
  journal: BlockDevice;
  superblock: JournalSuper;
  table: ChangesTable;
  index: RecordIndex;
  replay: ReplayResult;
  registry: SnapshotRegistry;
  checkpointAt: number;
}

/** What the core tells the device it works for. */
export interface JournalCoreEvents {
  checkpoint(event: CheckpointEvent): void;
  progress(done: number, total: number): void;
  /** An automatic checkpoint, or an attestation frame, failed: no caller is waiting for it. */
  backgroundError(err: BlockDeviceError): void;
  /** Keeps background work in the device's in-flight count, so close waits for it. */
  track(work: Promise<void>): Promise<void>;
  /** A live read began: in the device's in-flight count until {@link readSettled}. */
  readStarted(): void;
  /** A live read settled. */
  readSettled(): void;
  closed(): boolean;
}

/**
 * A state of the device some reader wants — a point-in-time view, or a
 * pending snapshot — with the changes table as of it, rebuilt whenever a
 * checkpoint moved blocks from the journal to production.
 */
export interface ReadPoint {
  readonly sequence: number;
  table: ChangesTable | undefined;
  generation: number;
}

/**
 * The machinery of a journal device (JournalDevice is its public face):
 * the writer, the changes table and record index it keeps current, reads
 * overlaying them on production, point-in-time views, checkpoints, the
 * durable superblock and the restore barrier.
 *
 * Ordering rules: reads enter the read gate shared; a checkpoint enters it
 * exclusive to retire views of records before its cut before production
 * changes, and to free journal space, so no read still reads space a new
 * frame may reuse. Checkpoints, snapshot deletions and restores hold the
 * admin lock, one at a time: each changes production, the catalog or the
 * superblock.
 */
export class JournalCore {
  readonly production: BlockDevice;
  readonly journal: BlockDevice;
  readonly blockSize: number;
  readonly writer: JournalWriter;
  readonly registry: SnapshotRegistry;
  readonly index: RecordIndex;
  /** Changed block → ring sector of its newest landed image (claim 51). */
  readonly table: ChangesTable;
  readonly readGate = new AccessGate();
  readonly admin = new Mutex();
  readonly #sectorsPerBlock: number;
  /** The stores' {@link READ_CALLBACK}, where they have it: live reads' hot path. */
  readonly #productionReader: CallbackReader | undefined;
  readonly #journalReader: CallbackReader | undefined;
  readonly #checkpointAt: number;
  readonly #events: JournalCoreEvents;
  readonly #partial: PartialWrites;
  readonly #views = new Set<JournalView>();
  readonly #viewHost: ViewHost = {
    readView: (view, offset, length) => this.#readView(view, offset, length),
    releaseView: (view) => this.#views.delete(view),
  };
  readonly #host: CheckpointHost & { superblock: JournalSuper };
  #checkpointRun: Promise<void> | undefined;
  /** A restore is running: writes and notes called meanwhile wait for it, in call order. */
  #barrier: Promise<void> | undefined;
  /** A checkpoint through this record has begun: views of earlier records are gone. */
  #retiredBelow: number;
  /**
   * Pending snapshots with markers through this record wait for a
   * checkpoint to materialize them: `#retiredBelow` again, except after a
   * checkpoint failed (see {@link checkpointLocked}).
   */
  #snapshotsRetiredBelow: number;
  /** Completed checkpoints; read points rebuild their tables when it moves. */
  #generation = 0;

  constructor(parts: JournalParts, events: JournalCoreEvents) {
    const { production, journal, superblock: sb, table, index, registry } = parts;
    this.production = production;
    this.journal = journal;
    this.blockSize = production.blockSize;
    this.registry = registry;
    this.index = index;
    this.table = table;
    this.#events = events;
    this.#checkpointAt = parts.checkpointAt;
    this.#sectorsPerBlock = production.blockSize / SECTOR;
    this.#productionReader = callbackReader(production);
    this.#journalReader = callbackReader(journal);
    this.#retiredBelow = sb.applyingSeq;
    this.#snapshotsRetiredBelow = sb.applyingSeq;
    const writer = new JournalWriter(
      journal,
      production.blockSize,
      { ...parts.replay, epoch: sb.epoch, capacity: sb.capacity },
      {
        landed: (seq, record, sector, time) => {
          const { firstBlock, blocks } = record;
          addRecord(index, table, this.#sectorsPerBlock, firstBlock, blocks, sector, time);
          if (record.note === undefined) return;
          if (record.note.kind === 'snapshot') registry.reserved--;
          registry.noteLanded(seq, record.note);
        },
        needSpace: () => this.startCheckpoint(),
        afterFrame: () => this.#maybeCheckpoint(),
        attestationFailed: (err) =>
          this.#events.backgroundError(
            BlockDeviceError.is(err) ? err : wrapIO('journal attestation', err),
          ),
      },
    );
    this.writer = writer;
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
      gate: this.readGate,
      superblock: sb,
      persist: (next) => this.persist(next),
      retire: (seq) => {
        this.#retiredBelow = Math.max(this.#retiredBelow, seq);
        this.#snapshotsRetiredBelow = Math.max(this.#snapshotsRetiredBelow, seq);
        return (
          [...this.#views].some((view) => view.sequence < seq) || registry.hasPendingThrough(seq)
        );
      },
      markersBetween: (from, to) => registry.markersBetween(from, to),
      materialize: (seq) => registry.materializeAt(seq, production),
      freed: () => {
        this.#generation++;
      },
      progress: (done, total) => events.progress(done, total),
    };
  }

  /** The durable superblock. */
  get superblock(): JournalSuper {
    return this.#host.superblock;
  }

  /** Records up to this one are retired: checkpointed into production, or being so. */
  get retiredBelow(): number {
    return this.#retiredBelow;
  }

  /** A pending snapshot whose marker is up to this record waits for a checkpoint to read. */
  get snapshotsRetiredBelow(): number {
    return this.#snapshotsRetiredBelow;
  }

  /** The oldest sequence number a view may show. */
  get oldestSequence(): number {
    return Math.max(this.#host.superblock.headSeq - 1, this.#retiredBelow);
  }

  // ------------------------------------------------------------------ I/O

  /**
   * Reads the live device, into `into` (a `readInto` target) if given. The
   * hot path: no checkpoint waiting, and the read lies in one run on a store
   * with READ_CALLBACK — one promise, ours, settled from the store's
   * callback, and `into` passed down so the bytes land in the caller's
   * buffer; otherwise the store's promise and one reaction (a read over
   * several runs is assembled by the overlay, then copied into `into`).
   * Either way the read gate and the device's in-flight count
   * (events.readStarted/readSettled) are left together, once (#leaveRead).
   */
  read(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    this.#events.readStarted();
    const done =
      into === undefined
        ? this.#readDone
        : (data: Uint8Array) => this.#readDone(copyInto(into, data));
    if (this.readGate.tryShared() === undefined) {
      return this.readGate
        .shared()
        .then(() => readOverlay(this.#host, this.table, offset, length))
        .then(done, this.#readFailed);
    }
    // A byte offset on the journal store, ON_PRODUCTION, or SEVERAL_RUNS (another negative).
    const at = singleRunAt(this.table, this.blockSize, offset, length);
    const oneRun = at === ON_PRODUCTION || at >= 0;
    const from = at === ON_PRODUCTION ? offset : at;
    const reader = at === ON_PRODUCTION ? this.#productionReader : this.#journalReader;
    if (oneRun && reader !== undefined) {
      return readByCallback(reader, from, length, this.#leaveRead, wrapRead, into);
    }
    if (oneRun && into !== undefined) {
      const store = at === ON_PRODUCTION ? this.production : this.journal;
      return readInto(store, from, into).then(this.#readDone, this.#readFailed);
    }
    return readOverlay(this.#host, this.table, offset, length).then(done, this.#readFailed);
  }

  readonly #leaveRead = (): void => {
    this.readGate.releaseShared();
    this.#events.readSettled();
  };

  readonly #readDone = (data: Uint8Array): Uint8Array => {
    this.#leaveRead();
    return data;
  };

  readonly #readFailed = (err: unknown): never => {
    this.#leaveRead();
    throw wrapIO('read', err);
  };

  /** Journals a write; writes called during a restore wait for it, in call order. */
  write(offset: number, data: Uint8Array): Promise<void> {
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
    const needed = headerBytes(1) + blocks * bs;
    if (needed > this.writer.capacity) {
      return Promise.reject(
        new BlockDeviceError(
          'ENOSPC',
          `a write of ${data.length} bytes at ${offset} needs ${needed} bytes of journal; it has ${this.writer.capacity}`,
        ),
      );
    }
    if (offset % bs === 0 && data.length % bs === 0) return this.writer.append(first, data, time);
    return this.#partial.write(offset, data, time);
  }

  /** Reads a block as the changes table shows it now (for a partial-block write's merge). */
  async #readLanded(block: number): Promise<Uint8Array> {
    const release = await this.readGate.shared();
    try {
      return await readOverlay(this.#host, this.table, block * this.blockSize, this.blockSize);
    } catch (err) {
      throw wrapIO('read before a partial-block write', err);
    } finally {
      release();
    }
  }

  /**
   * Reads `point` through the journal, or returns undefined if `retired`
   * says a checkpoint has begun applying past it (checked inside the read
   * gate, so the changes table it reads stays valid until the read ends).
   */
  async readPoint(
    point: ReadPoint,
    offset: number,
    length: number,
    retired: (sequence: number) => boolean,
  ): Promise<Uint8Array | undefined> {
    const release = await this.readGate.shared();
    try {
      if (retired(point.sequence)) return undefined;
      if (point.table === undefined || point.generation !== this.#generation) {
        point.table = this.index.tableAt(point.sequence, this.#sectorsPerBlock);
        point.generation = this.#generation;
      }
      return await readOverlay(this.#host, point.table, offset, length).catch((err: unknown) => {
        throw wrapIO('read', err);
      });
    } finally {
      release();
    }
  }

  async #readView(view: JournalView, offset: number, length: number): Promise<Uint8Array> {
    const data = await this.readPoint(view, offset, length, (seq) => seq < this.oldestSequence);
    if (data !== undefined) return data;
    throw new BlockDeviceError(
      'ENOENT',
      `record ${view.sequence} was checkpointed into production (the oldest point is now ${this.oldestSequence})`,
    );
  }

  /** A view right after record `point` (resolved and checked as `pointInTime` says). */
  view(point: unknown, size: number): PointInTime {
    const { headSeq, headTime } = this.#host.superblock;
    const seq = resolvePoint(point, {
      oldest: this.oldestSequence,
      newest: this.writer.writtenSeq,
      headSeq,
      headTime,
      index: this.index,
    });
    const time = seq >= this.index.firstSeq ? this.index.timeOf(seq) : headTime;
    const view = new JournalView(this.#viewHost, seq, time, size, this.blockSize);
    this.#views.add(view);
    return view;
  }

  async closeViews(): Promise<void> {
    await Promise.all([...this.#views].map((view) => view.close()));
  }

  // ------------------------------------------------------------- barrier

  /** Resolves once no restore is running (now, if none is). */
  get barrier(): Promise<void> | undefined {
    return this.#barrier;
  }

  /** Runs `enqueue` now, or once a running restore is done (writes called meanwhile go first). */
  afterBarrier<T>(enqueue: () => Promise<T>): Promise<T> {
    return this.#barrier === undefined ? enqueue() : this.#barrier.then(enqueue);
  }

  /** Holds writes and notes called from now on until the returned function is called. */
  raiseBarrier(): () => void {
    let lift!: () => void;
    const barrier = new Promise<void>((resolve) => {
      lift = resolve;
    });
    this.#barrier = barrier;
    return () => {
      lift();
      // Writes queued on the barrier go first; the ones after them see it lifted.
      void barrier.then(() => {
        if (this.#barrier === barrier) this.#barrier = undefined;
      });
    };
  }

  // ---------------------------------------------------------- checkpoints

  /** Starts a checkpoint unless one is running or queued; resolves when it ends. */
  startCheckpoint(): Promise<void> {
    if (this.#checkpointRun === undefined) {
      const run = this.admin.runExclusive(() => this.checkpointLocked());
      this.#checkpointRun = run;
      const clear = (): void => {
        if (this.#checkpointRun === run) this.#checkpointRun = undefined;
      };
      run.then(clear, clear);
    }
    return this.#checkpointRun;
  }

  /** One checkpoint of everything landed; the caller holds the admin lock. */
  async checkpointLocked(): Promise<void> {
    const before = this.#snapshotsRetiredBelow;
    let done: CheckpointEvent | undefined;
    try {
      done = await runCheckpoint(this.#host);
    } catch (err) {
      // A checkpoint applies its segments in order and stops at the first
      // failure, so production then holds at most the records before the
      // first marker still pending: every snapshot still pending reads
      // exactly again through the journal (production plus its records up to
      // the marker), rather than wait for checkpoints a stopped production
      // refuses. Views stay retired: production may hold records after them.
      this.#snapshotsRetiredBelow = before;
      throw err;
    }
    if (done !== undefined) this.#events.checkpoint(done);
  }

  /** After a frame lands: past `checkpointAt`, start a checkpoint in the background. */
  #maybeCheckpoint(): void {
    if (this.#events.closed() || this.#checkpointRun !== undefined || this.#checkpointAt >= 1) {
      return;
    }
    if (this.writer.used < this.#checkpointAt * this.writer.capacity) return;
    this.#events
      .track(this.startCheckpoint())
      .catch((err: unknown) =>
        this.#events.backgroundError(BlockDeviceError.is(err) ? err : wrapIO('checkpoint', err)),
      );
  }

  /**
   * Makes `sb` the durable superblock, after writing the catalog if it
   * changed. The catalog counts as written only once the superblock naming
   * it is durable: if either write fails, the next persist writes it again.
   */
  async persist(sb: JournalSuper): Promise<void> {
    const registry = this.registry;
    // The version is read in the same tick as the catalog it describes.
    const version = registry.catalogVersion;
    let next = sb;
    if (registry.catalogDirty) next = await writeCatalog(this.journal, sb, registry.catalog());
    await writeJournalSuper(this.journal, next);
    this.#host.superblock = next;
    registry.catalogDurable(version);
  }

  /** The superblock with the next generation and `changes`, made durable. */
  bumpSuperblock(changes: Partial<JournalSuper>): Promise<void> {
    const sb = this.#host.superblock;
    return this.persist({ ...sb, generation: sb.generation + 1, ...changes });
  }
}

function wrapRead(err: Error): Error {
  return wrapIO('read', err);
}

/** Copies an assembled read into the caller's `readInto` buffer of the same length. */
function copyInto(target: Uint8Array, data: Uint8Array): Uint8Array {
  target.set(data);
  return target;
}
