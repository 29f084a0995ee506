import type { JournalNote } from './journal-notes.js';

/** What a landed record holds: a write's blocks, or a note (and no blocks). */
export interface RecordContent {
  readonly firstBlock: number;
  readonly blocks: number;
  readonly note: JournalNote | undefined;
}

/** One write (or note) in the journal queue, in call order. */
export interface PendingRecord extends RecordContent {
  readonly ticket: number;
  /** RECORD_WRITE or the note's record kind. */
  readonly kind: number;
  /** `Date.now()` when the write was called. */
  readonly time: number;
  /** Whole-block image; undefined until a read-modify-write has merged it. */
  data: Uint8Array | undefined;
  /** Why the merge failed; the write is then dropped without a sequence number. */
  failed: unknown;
  /** An empty frame that only records how far the journal is durable. */
  readonly attestation: boolean;
  resolve(): void;
  reject(err: unknown): void;
}

/**
 * The journal's writes in call order: each takes a ticket when called, waits
 * in the queue until a frame takes it (a batch in flight), and is done once
 * that frame landed or failed — which wakes whoever waits for its ticket.
 */
export class RecordQueue {
  readonly #queue: PendingRecord[] = [];
  #inflight: PendingRecord[] = [];
  #tickets = 0;
  #doneTicket = 0;
  readonly #waiters: { ticket: number; wake: () => void }[] = [];

  /** The ticket of the newest queued write. */
  get lastTicket(): number {
    return this.#tickets;
  }

  /** Writes waiting for a frame. */
  get length(): number {
    return this.#queue.length;
  }

  /** Queues a write (or note, or attestation); `landed` settles when its frame lands or fails. */
  push(
    kind: number,
    firstBlock: number,
    blocks: number,
    time: number,
    data: Uint8Array | undefined,
    note: JournalNote | undefined,
    attestation: boolean,
  ): { entry: PendingRecord; landed: Promise<void> } {
    let entry!: PendingRecord;
    const landed = new Promise<void>((resolve, reject) => {
      const ticket = ++this.#tickets;
      const failed = undefined;
      entry = {
        ticket,
        kind,
        firstBlock,
        blocks,
        time,
        data,
        failed,
        note,
        attestation,
        resolve,
        reject,
      };
    });
    this.#queue.push(entry);
    return { entry, landed };
  }

  /** Whether the write at the front can go into a frame. */
  frontReady(): boolean {
    return this.#queue.length > 0 && isReady(this.#queue[0]!);
  }

  /**
   * Takes the ready writes at the front, up to `cap` bytes of data (at least
   * one), as the batch in flight; undefined if the front is not ready.
   */
  take(cap: number): PendingRecord[] | undefined {
    const queue = this.#queue;
    let n = 0;
    let bytes = 0;
    while (n < queue.length) {
      const e = queue[n]!;
      if (!isReady(e)) break;
      const size = e.failed === undefined ? (e.data?.length ?? 0) : 0;
      if (n > 0 && bytes + size > cap) break;
      bytes += size;
      n++;
    }
    if (n === 0) return undefined;
    this.#inflight = queue.splice(0, n);
    return this.#inflight;
  }

  /** The batch in flight has landed (or failed): it is no longer unlanded. */
  landed(): void {
    this.#inflight = [];
  }

  /** Marks `batch` done and wakes the waiters it satisfies. */
  finish(batch: readonly PendingRecord[]): void {
    this.#inflight = [];
    this.#doneTicket = batch[batch.length - 1]!.ticket;
    while (this.#waiters.length > 0 && this.#waiters[0]!.ticket <= this.#doneTicket) {
      this.#waiters.shift()!.wake();
    }
  }

  /** Writes queued before `entry` or in flight — not in the changes table yet — newest first. */
  *unlandedBefore(entry: PendingRecord): Generator<PendingRecord> {
    for (let i = this.#queue.indexOf(entry) - 1; i >= 0; i--) yield this.#queue[i]!;
    for (let i = this.#inflight.length - 1; i >= 0; i--) yield this.#inflight[i]!;
  }

  /** Resolves once every write with a ticket up to `ticket` has landed or failed. */
  doneThrough(ticket: number): Promise<void> {
    if (this.#doneTicket >= ticket) return Promise.resolve();
    return new Promise((wake) => this.#waiters.push({ ticket, wake }));
  }
}

function isReady(e: PendingRecord): boolean {
  return e.data !== undefined || e.failed !== undefined || e.attestation;
}
