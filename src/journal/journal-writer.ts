import { randomInt } from 'node:crypto';
import { allocateBuffer, immediateWriter, io, ownedWriter, SECTOR } from '../base/index.js';
import type { BlockDevice } from '../device.js';
import { DURABLE_MARK_AT, encodeDurableMark } from './durable-mark.js';
import { headerBytes, RECORD_WRITE, RING_START } from './journal-format.js';
import { buildFrame } from './journal-frame.js';
import { encodeNote, type JournalNote, noteKind } from './journal-notes.js';
import { RingSpace } from './journal-ring.js';
import { type PendingRecord, type RecordContent, RecordQueue } from './record-queue.js';

/** A frame gathers queued writes up to this many bytes (a larger single write goes alone). */
const MAX_BATCH = 4 << 20;

/** What the device learns from the writer; all called synchronously. */
export interface JournalWriterHooks {
  /** A record reached the store; called in sequence order before its write resolves. */
  landed(seq: number, record: RecordContent, sector: number, time: number): void;
  /** The next frame does not fit: free journal space (a checkpoint). */
  needSpace(): Promise<void>;
  /** A frame landed and its writes resolved. */
  afterFrame(): void;
  /** An attestation frame (no caller waits for one) failed: the journal now refuses writes. */
  attestationFailed(err: unknown): void;
}

/** Where the journal stood when it was opened. */
export interface WriterStart {
  epoch: number;
  capacity: number;
  headAbs: number;
  tailAbs: number;
  nextSeq: number;
  link: number;
  lastTime: number;
}

/** The newest landed frame: what a checkpoint captures. */
export interface LandedState {
  /** Absolute position just past the newest landed frame. */
  abs: number;
  /** Sequence number of the newest landed record. */
  seq: number;
  /** Link of the newest landed frame. */
  link: number;
}

/**
 * Appends writes to the journal ring: one store write per frame, gathering
 * every write queued meanwhile, and group-commit flushes.
 *
 * Ordering rules:
 * - Writes take queue positions in call order; sequence numbers are given
 *   when a frame is built, in queue order, and a frame never starts past a
 *   write still merging, so sequence order is call order.
 * - One frame is in flight at a time; records land (and the changes table
 *   is told) in sequence order, before their writes resolve.
 * - Journal writes never wait for a flush. Instead every frame header carries
 *   `durableSeq`, the newest record a *completed* flush covered when the
 *   frame was built, and after a flush an otherwise idle journal appends an
 *   empty frame carrying it (an attestation). Replay trusts such a header to prove
 *   that a damaged record before it was durable (ECORRUPT), rather than a
 *   torn tail.
 * - A frame is placed only in free ring space: between the newest landed
 *   frame and the head a checkpoint last made durable.
 */
export class JournalWriter {
  readonly capacity: number;
  readonly #ring: RingSpace;
  readonly #store: BlockDevice;
  /**
   * The store's WRITE_OWNED (a FileDevice's): a frame then goes down as its
   * header and the records' own buffers in one vectored write, neither
   * gathered into a frame buffer nor copied again by the store's `write` —
   * two fresh frame-sized buffers and copies per frame otherwise, on the
   * path every durable write waits for (bench jd-write-durable).
   */
  readonly #writeOwned:
    | ((offset: number, blocks: readonly Uint8Array[]) => Promise<void>)
    | undefined;
  /** The store's WRITE_NOW (a FileDevice's), for the durable mark. */
  readonly #writeNow: ((offset: number, data: Uint8Array) => void) | undefined;
  readonly #hooks: JournalWriterHooks;
  readonly #epoch: number;
  readonly #session = randomInt(0, 0xffffffff);
  readonly #blockSize: number;
  readonly #queue = new RecordQueue();
  #pumping = false;
  #nextSeq: number;
  #link: number;
  #lastTime: number;
  #durableSeq: number;
  /** Absolute position up to which a completed flush covered every landed frame, empty ones too. */
  #durableAbs: number;
  /** The largest `durableSeq` put into any frame header built so far. */
  #attestedSeq = 0;
  /** The largest `durableSeq` in any landed frame header. */
  #attestedLandedSeq: number;
  /** The largest `durableSeq` the durable mark on the store says (see {@link syncAttested}). */
  #markedSeq: number;
  /** The durable mark's write in flight: one at a time, newest value wins. */
  #marking: Promise<void> | undefined;
  #syncing: Promise<void> | undefined;
  /**
   * The attestation waiting for its turn, if any. Cleared at close: while
   * it waits it holds the writer (and through it the stores), and a caller
   * whose I/O never yields to the event loop (memory devices in a loop)
   * would otherwise keep every closed journal alive.
   */
  #attestation: NodeJS.Immediate | undefined;
  #closed = false;
  /** A frame write failed: it may have landed in part, so nothing may follow it (reopen). */
  #failed: unknown;

  constructor(
    store: BlockDevice,
    blockSize: number,
    start: WriterStart,
    hooks: JournalWriterHooks,
  ) {
    this.#store = store;
    this.#writeOwned = ownedWriter(store);
    this.#writeNow = immediateWriter(store);
    this.#blockSize = blockSize;
    this.#hooks = hooks;
    this.#epoch = start.epoch;
    this.capacity = start.capacity;
    this.#ring = new RingSpace(start.capacity, start.headAbs, start.tailAbs);
    this.#nextSeq = start.nextSeq;
    this.#link = start.link;
    this.#lastTime = start.lastTime;
    // Open flushed the store after replay: every replayed record is durable.
    this.#durableSeq = start.nextSeq - 1;
    this.#durableAbs = start.tailAbs;
    // Open's seal frame (or, after a clean close, the superblock's tail)
    // attests every replayed record.
    this.#attestedLandedSeq = start.nextSeq - 1;
    this.#markedSeq = start.nextSeq - 1;
  }

  /** Sequence number of the newest landed record (0 if none ever). */
  get writtenSeq(): number {
    return this.#nextSeq - 1;
  }

  /** Sequence number of the newest record a completed flush covered. */
  get durableSeq(): number {
    return this.#durableSeq;
  }

  /** Absolute position of the oldest frame still needed. */
  get headAbs(): number {
    return this.#ring.headAbs;
  }

  /** Ring bytes between the head and the newest landed frame. */
  get used(): number {
    return this.#ring.used;
  }

  /** The ticket of the newest queued write: wait for it with {@link landedThrough}. */
  get lastTicket(): number {
    return this.#queue.lastTicket;
  }

  /** The newest landed frame, captured synchronously. */
  landed(): LandedState {
    return { abs: this.#ring.landedAbs, seq: this.#nextSeq - 1, link: this.#link };
  }

  /** Queues a whole-block image; resolves once its record has landed. */
  append(firstBlock: number, data: Uint8Array, time: number): Promise<void> {
    const blocks = data.length / this.#blockSize;
    const { landed } = this.#enqueue(firstBlock, blocks, time, data, undefined, false);
    this.#kick();
    return landed;
  }

  /** Queues a note, in call order like a write; resolves once its record has landed. */
  appendNote(note: JournalNote, time: number): Promise<void> {
    const { landed } = this.#enqueue(0, 0, time, encodeNote(note), note, false);
    this.#kick();
    return landed;
  }

  /**
   * Takes a queue position now for a write whose image is still being merged;
   * {@link fill} or {@link fail} it later. `landed` resolves once it landed.
   */
  reserve(
    firstBlock: number,
    blocks: number,
    time: number,
  ): { entry: PendingRecord; landed: Promise<void> } {
    return this.#enqueue(firstBlock, blocks, time, undefined, undefined, false);
  }

  /**
   * Takes a queue position now for `note`, written once {@link fill}ed with
   * `encodeNote(note)` (or {@link fail}ed): a note whose call must wait for
   * something keeps its place in call order meanwhile.
   */
  reserveNote(note: JournalNote, time: number): { entry: PendingRecord; landed: Promise<void> } {
    return this.#enqueue(0, 0, time, undefined, note, false);
  }

  /** Supplies a reserved write's merged image. */
  fill(entry: PendingRecord, data: Uint8Array): void {
    entry.data = data;
    this.#kick();
  }

  /** Drops a reserved write whose merge failed; its `landed` rejects with `err`. */
  fail(entry: PendingRecord, err: unknown): void {
    entry.failed = err;
    this.#kick();
  }

  /** Writes queued before `entry` or in flight — not in the changes table yet — newest first. */
  unlandedBefore(entry: PendingRecord): Generator<PendingRecord> {
    return this.#queue.unlandedBefore(entry);
  }

  /** Resolves once every write with a ticket up to `ticket` has landed or failed. */
  landedThrough(ticket: number): Promise<void> {
    return this.#queue.doneThrough(ticket);
  }

  /**
   * Group commit: every write called before is durable when this resolves,
   * and the store says so (see {@link syncAttested}).
   */
  async flush(): Promise<void> {
    await this.#queue.doneThrough(this.#queue.lastTicket);
    await this.syncAttested();
  }

  /**
   * {@link sync}, then makes sure the store says so: unless a landed frame
   * header already carries a `durableSeq` covering every landed record, it
   * writes the durable mark (`durable-mark.ts`) and waits for that write.
   *
   * Why: replay cannot tell a damaged record from a torn tail unless the
   * store says a completed flush covered it (see `replayJournal`). Without
   * the wait, a process that exits right after a flush leaves its last group
   * unattested, and a byte later damaged there would be dropped silently as a
   * torn tail. The mark is a sector beside the ring, written while frames go
   * on (a frame header would have to wait behind the frame in flight), and
   * not flushed (a second flush per group would halve the group-commit
   * rate): the window that remains is a power cut before it reaches the disk
   * *and* damage in that same group — docs/ARCHITECTURE.md "Crash ordering"
   * gives its bound. Writes no mark once {@link close} was called (close's
   * clean mark names the tail instead) or the writer failed (open's seal
   * attests what is durable).
   * @throws `EIO` if the store flush or the mark's write fails.
   */
  async syncAttested(): Promise<void> {
    await this.sync();
    const target = this.#durableSeq;
    while (this.#markedSeq < target && this.#attestedLandedSeq < target) {
      if (this.#closed || this.#failed !== undefined) return;
      if (this.#writeNow !== undefined) {
        // Written and counted before this returns, with no await: the
        // caller that writes the mark resumes in the same turn as the
        // callers the flush woke that find it written. Through the async
        // path below it came back a few microtask turns after them, and
        // its next write missed their frame: two frame writes, one after
        // the other, per group commit (bench jd-write-durable).
        this.#writeMarkNow(this.#writeNow);
        continue;
      }
      if (this.#marking === undefined) {
        // Cleared once settled: the write may finish before it is stored here.
        const marking = this.#writeMark().finally(() => {
          if (this.#marking === marking) this.#marking = undefined;
        });
        this.#marking = marking;
      }
      await this.#marking;
    }
  }

  /**
   * The durable mark through the store's WRITE_NOW (a FileDevice's): a
   * `pwrite` on this thread, so the flush waits for no thread-pool round
   * trip (bench jd-write-durable). Throws what WRITE_NOW throws.
   */
  #writeMarkNow(writeNow: (offset: number, data: Uint8Array) => void): void {
    const seq = this.#durableSeq;
    writeNow(DURABLE_MARK_AT, encodeDurableMark(this.#epoch, seq));
    if (seq > this.#markedSeq) this.#markedSeq = seq;
  }

  /** The durable mark through the store's `write`, for a store without WRITE_NOW. */
  async #writeMark(): Promise<void> {
    const seq = this.#durableSeq;
    await io(
      'journal mark write',
      this.#store.write(DURABLE_MARK_AT, encodeDurableMark(this.#epoch, seq)),
    );
    if (seq > this.#markedSeq) this.#markedSeq = seq;
  }

  /**
   * Makes every landed record durable. Concurrent callers share one store
   * flush; a caller whose records landed after a flush was issued waits for
   * the next one (a flush covers only writes complete when it is called).
   */
  async sync(): Promise<void> {
    const target = this.#nextSeq - 1;
    while (this.#durableSeq < target) {
      this.#syncing ??= this.#syncOnce();
      await this.#syncing;
    }
  }

  /**
   * Makes every landed frame durable, empty ones (attestations) included,
   * which {@link sync} leaves alone: a clean close names where the last frame
   * ends, so that frame must be durable before the mark is written.
   */
  async syncFrames(): Promise<void> {
    await this.sync();
    if (this.#durableAbs >= this.#ring.landedAbs) return;
    const covers = this.#ring.landedAbs;
    await io('journal flush', this.#store.flush());
    this.#durableAbs = Math.max(this.#durableAbs, covers);
  }

  /** Frees ring space up to `headAbs`, which a durable superblock now names as the head. */
  release(headAbs: number): void {
    this.#ring.release(headAbs);
  }

  /** Whether a failed store write stopped the journal (reads go on; reopen to write again). */
  get failed(): boolean {
    return this.#failed !== undefined;
  }

  /**
   * Makes the writer refuse every later append with `err` until the device
   * is reopened, as after a failed frame write (the owner's fail-stop).
   */
  stop(err: unknown): void {
    this.#failed ??= err;
  }

  /** Stops appending attestations; the device is closing. */
  close(): void {
    this.#closed = true;
    if (this.#attestation !== undefined) clearImmediate(this.#attestation);
    this.#attestation = undefined;
  }

  async #syncOnce(): Promise<void> {
    const covers = this.#nextSeq - 1;
    const coversAbs = this.#ring.landedAbs;
    try {
      await io('journal flush', this.#store.flush());
    } finally {
      this.#syncing = undefined;
    }
    if (covers > this.#durableSeq) this.#durableSeq = covers;
    if (coversAbs > this.#durableAbs) this.#durableAbs = coversAbs;
    this.#scheduleAttestation();
  }

  /**
   * After a flush, once the writes it woke have had their turn: if nothing is
   * queued to carry the new `durableSeq`, append an empty frame that does.
   */
  #scheduleAttestation(): void {
    if (this.#attestation !== undefined || this.#closed || this.#failed !== undefined) return;
    this.#attestation = setImmediate(() => {
      this.#attestation = undefined;
      if (this.#closed || this.#queue.length > 0 || this.#durableSeq <= this.#attestedSeq) return;
      // No one awaits an attestation: its failure goes to the hook (and fails the next write too).
      this.#enqueue(0, 0, 0, undefined, undefined, true).landed.catch((err: unknown) =>
        this.#hooks.attestationFailed(err),
      );
      this.#kick();
    });
  }

  #enqueue(
    firstBlock: number,
    blocks: number,
    time: number,
    data: Uint8Array | undefined,
    note: JournalNote | undefined,
    attestation: boolean,
  ): { entry: PendingRecord; landed: Promise<void> } {
    const kind = note === undefined ? RECORD_WRITE : noteKind(note);
    return this.#queue.push(kind, firstBlock, blocks, time, data, note, attestation);
  }

  #kick(): void {
    if (this.#pumping || !this.#queue.frontReady()) return;
    this.#pumping = true;
    // A microtask later, so writes called in the same tick share the frame.
    queueMicrotask(() => void this.#pump());
  }

  async #pump(): Promise<void> {
    try {
      for (;;) {
        const batch = this.#queue.take(Math.min(MAX_BATCH, this.capacity / 4));
        if (batch === undefined) break;
        await this.#commit(batch);
      }
    } finally {
      this.#pumping = false;
    }
  }

  /** Writes one frame for `batch` and lands it; never throws (failures reject the writes). */
  async #commit(batch: PendingRecord[]): Promise<void> {
    if (this.#failed !== undefined) {
      for (const e of batch) e.reject(this.#failed);
      this.#queue.finish(batch);
      return;
    }
    for (const e of batch) if (e.failed !== undefined) e.reject(e.failed);
    const entries = batch.filter((e) => e.data !== undefined && e.failed === undefined);
    if (entries.length === 0 && !batch.some((e) => e.attestation)) {
      this.#queue.finish(batch);
      return;
    }
    const durableSeq = this.#durableSeq;
    this.#attestedSeq = Math.max(this.#attestedSeq, durableSeq);
    const { pieces, length, link, headers } = buildFrame(
      {
        epoch: this.#epoch,
        session: this.#session,
        firstSeq: this.#nextSeq,
        durableSeq,
        prevLink: this.#link,
      },
      entries as (PendingRecord & { data: Uint8Array })[],
      this.#blockSize,
      this.#lastTime,
      allocateBuffer,
      this.#writeOwned === undefined,
    );
    let landed = false;
    let writing = false;
    try {
      let at = this.#ring.place(length);
      while (at === undefined) {
        await this.#hooks.needSpace();
        at = this.#ring.place(length);
      }
      writing = true;
      // The records' buffers are ours (private copies or merged images) and
      // nothing changes them: the store may write them uncopied.
      const where = RING_START + (at % this.capacity);
      await io(
        'journal write',
        this.#writeOwned === undefined
          ? this.#store.write(where, pieces[0]!)
          : this.#writeOwned(where, pieces),
      );
      this.#ring.landed(at + length);
      this.#nextSeq += entries.length;
      this.#link = link;
      let dataAbs = at + headerBytes(entries.length);
      for (const [i, r] of headers.entries()) {
        const sector = (dataAbs % this.capacity) / SECTOR;
        this.#hooks.landed(r.seq, entries[i]!, sector, r.time);
        this.#lastTime = r.time;
        dataAbs += r.length;
      }
      landed = true;
    } catch (err) {
      // No space (a checkpoint failed): nothing was written, and sequence
      // numbers are only taken on landing, so the next frame simply takes
      // this one's place. A failed store write may have landed in part:
      // a later frame placed elsewhere could then be shadowed by it, so the
      // journal stops (as MetadataLog does) until reopened.
      if (writing) this.#failed = err;
      for (const e of entries) e.reject(err);
      for (const e of batch) if (e.attestation) e.reject(err);
    } finally {
      this.#queue.landed();
    }
    if (landed) {
      for (const e of batch) if (e.failed === undefined) e.resolve();
      if (durableSeq > this.#attestedLandedSeq) this.#attestedLandedSeq = durableSeq;
    }
    this.#queue.finish(batch);
    if (landed) this.#hooks.afterFrame();
  }
}
