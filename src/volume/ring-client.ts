import { readResultBuffer } from '../base/index.js';
import type { BlockDeviceError } from '../errors.js';
import {
  DONE_TAIL,
  ENTRY_WORDS,
  MAIN_ASLEEP,
  OP_FLUSH,
  OP_MESSAGE,
  OP_READ,
  OP_WRITE,
  REQUEST_HEAD,
  REQUEST_TAIL,
  RING_SLOTS,
  type RingBuffers,
  type RingViews,
  ringViews,
  SLAB_BYTES,
  sleepUntilMoved,
  TICKETS,
  WORKER_ASLEEP,
  wake,
} from './worker-ring.js';

/*
 * The volume's end of a processor's rings (src/volume/worker-ring.ts;
 * docs/ARCHITECTURE.md, "VirtualVolume"). Entries are published in call
 * order; when the request ring is full they wait here, in the same order,
 * behind any entry already waiting, and go in as the worker takes entries.
 */

/** A ring operation awaiting its completion. */
interface Ticket {
  resolve(value: Uint8Array | undefined): void;
  reject(err: Error): void;
  /** For a read: the bytes to copy out of the slab. */
  readLength: number | undefined;
}

/** Publishes ring operations and MESSAGE entries; settles completions. */
export class RingClient {
  readonly #views: RingViews;
  readonly #tickets: (Ticket | undefined)[] = new Array(TICKETS).fill(undefined);
  /** Free ticket numbers (a stack). */
  readonly #free: number[] = Array.from({ length: TICKETS }, (_, i) => TICKETS - 1 - i);
  /** Entries published (mirrors REQUEST_TAIL). */
  #tail = 0;
  /** Completions settled. */
  #doneHead = 0;
  /** Entries waiting for room in the request ring, in call order: kind, partition, length, ticket, offset. */
  #waiting: [number, number, number, number, number][] = [];
  /** Whether a wait for completions is armed. */
  #sleeping = false;
  /** Whether the end of this turn is queued (see {@link #endTurn}). */
  #turnQueued = false;
  /** Whether entries were published since the last end of a turn. */
  #published = false;
  #failure: BlockDeviceError | undefined;

  constructor(buffers: RingBuffers) {
    this.#views = ringViews(buffers);
  }

  /**
   * Starts a read of `length` bytes at `offset` on partition `p` through the
   * ring, or returns undefined if it cannot go there (too long, or every
   * slab in use): the caller posts it instead.
   */
  read(p: number, offset: number, length: number): Promise<Uint8Array> | undefined {
    if (length > SLAB_BYTES || this.#free.length === 0) return undefined;
    return this.#start(OP_READ, p, offset, length, undefined) as Promise<Uint8Array>;
  }

  /** Starts a write through the ring (copying `data` into its slab now), or returns undefined as {@link read}. */
  write(p: number, offset: number, data: Uint8Array): Promise<void> | undefined {
    if (data.length > SLAB_BYTES || this.#free.length === 0) return undefined;
    return this.#start(OP_WRITE, p, offset, data.length, data) as Promise<unknown> as Promise<void>;
  }

  /** Starts a flush of partition `p` through the ring, or returns undefined as {@link read}. */
  flush(p: number): Promise<void> | undefined {
    if (this.#free.length === 0) return undefined;
    return this.#start(OP_FLUSH, p, 0, 0, undefined) as Promise<unknown> as Promise<void>;
  }

  /** Publishes a MESSAGE entry: the caller has just posted the batch it stands for. */
  message(): void {
    this.#publish(OP_MESSAGE, 0, 0, 0, 0);
  }

  /** Settles ring operation `ticket` with the error the worker posted for it. */
  failed(ticket: number, err: Error): void {
    const pending = this.#tickets[ticket];
    if (pending === undefined) return;
    this.#release(ticket);
    pending.reject(err);
  }

  /**
   * The worker is gone: every ring operation in flight, and every later
   * one, rejects with `err`; the wait for completions is woken so nothing
   * stays armed on the dead worker's memory.
   */
  fail(err: BlockDeviceError): void {
    if (this.#failure !== undefined) return;
    this.#failure = err;
    this.#waiting = [];
    for (let ticket = 0; ticket < TICKETS; ticket++) {
      const pending = this.#tickets[ticket];
      if (pending === undefined) continue;
      this.#release(ticket);
      pending.reject(err);
    }
    wake(this.#views.control, MAIN_ASLEEP);
  }

  #start(
    kind: number,
    p: number,
    offset: number,
    length: number,
    data: Uint8Array | undefined,
  ): Promise<Uint8Array | undefined> {
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    const ticket = this.#free.pop()!;
    // The one copy a write makes, before `write` returns (the caller may reuse `data`).
    if (data !== undefined) this.#views.data.set(data, ticket * SLAB_BYTES);
    const settled = new Promise<Uint8Array | undefined>((resolve, reject) => {
      this.#tickets[ticket] = {
        resolve,
        reject,
        readLength: kind === OP_READ ? length : undefined,
      };
    });
    this.#publish(kind, p, length, ticket, offset);
    return settled;
  }

  #publish(kind: number, p: number, length: number, ticket: number, offset: number): void {
    if (this.#waiting.length > 0 || !this.#room()) {
      this.#waiting.push([kind, p, length, ticket, offset]);
      if (this.#waiting.length === 1) this.#admitLater();
      return;
    }
    this.#put(kind, p, length, ticket, offset);
    this.#published = true;
    this.#endTurnLater();
  }

  #endTurnLater(): void {
    if (this.#turnQueued) return;
    this.#turnQueued = true;
    setImmediate(() => this.#endTurn());
  }

  /**
   * At the end of a turn: wakes the worker if this turn published entries
   * and it sleeps (once for the turn's requests: a worker woken by the first
   * would take it alone and sleep again), then takes the completions that
   * came in the meantime, without a wake-up, and sleeps only when none did.
   * While both sides are busy they see each other's entries at the ends of
   * their turns and no one is woken.
   */
  #endTurn(): void {
    this.#turnQueued = false;
    if (this.#failure !== undefined) return;
    if (this.#published) {
      this.#published = false;
      wake(this.#views.control, WORKER_ASLEEP);
    }
    if (this.#free.length === TICKETS || this.#sleeping) return;
    if (Atomics.load(this.#views.control, DONE_TAIL) !== this.#doneHead) {
      this.#settleCompletions();
      this.#endTurnLater();
    } else {
      this.#sleep();
    }
  }

  /** Wakes the worker now, if it sleeps: before this thread blocks on an answer from it. */
  wakeNow(): void {
    wake(this.#views.control, WORKER_ASLEEP);
  }

  #room(): boolean {
    return ((this.#tail - Atomics.load(this.#views.control, REQUEST_HEAD)) | 0) < RING_SLOTS;
  }

  #put(kind: number, p: number, length: number, ticket: number, offset: number): void {
    const slot = this.#tail & (RING_SLOTS - 1);
    const at = slot * ENTRY_WORDS;
    const entries = this.#views.entries;
    entries[at] = kind;
    entries[at + 1] = p;
    entries[at + 2] = length;
    entries[at + 3] = ticket;
    this.#views.offsets[slot] = offset;
    this.#tail = (this.#tail + 1) | 0;
    // Publishes the entry: the worker reads it only after it sees this store.
    Atomics.store(this.#views.control, REQUEST_TAIL, this.#tail);
  }

  /** Moves waiting entries into the ring while it has room; true if some are still waiting. */
  #admit(): boolean {
    if (this.#waiting.length === 0) return false;
    let moved = 0;
    while (moved < this.#waiting.length && this.#room()) {
      const [kind, p, length, ticket, offset] = this.#waiting[moved++]!;
      this.#put(kind, p, length, ticket, offset);
    }
    this.#waiting.splice(0, moved);
    if (moved > 0) {
      this.#published = true;
      this.#endTurnLater();
    }
    return this.#waiting.length > 0;
  }

  /**
   * Entries wait for room (the worker is over a thousand entries behind, a
   * rare case): tried again every millisecond until they are all in. The
   * worker takes the entries in the ring without being asked again.
   */
  #admitLater(): void {
    setTimeout(() => {
      if (this.#failure === undefined && this.#admit()) this.#admitLater();
    }, 1);
  }

  /** Waits for completions; settles them on the wake-up and ends that turn as any other. */
  #sleep(): void {
    this.#sleeping = true;
    sleepUntilMoved(this.#views.control, MAIN_ASLEEP, DONE_TAIL, this.#doneHead, () => {
      this.#sleeping = false;
      if (this.#failure !== undefined) return;
      this.#settleCompletions();
      this.#endTurnLater();
    });
  }

  #settleCompletions(): void {
    const { control, done, data } = this.#views;
    const tail = Atomics.load(control, DONE_TAIL);
    while (this.#doneHead !== tail) {
      const ticket = done[this.#doneHead & (TICKETS - 1)]!;
      this.#doneHead = (this.#doneHead + 1) | 0;
      const pending = this.#tickets[ticket];
      if (pending === undefined) continue;
      let value: Uint8Array | undefined;
      if (pending.readLength !== undefined) {
        // The reader owns its buffer (src/device.ts): a copy out of the slab, which is reused.
        const start = ticket * SLAB_BYTES;
        value = readResultBuffer(pending.readLength);
        value.set(data.subarray(start, start + pending.readLength));
      }
      this.#release(ticket);
      pending.resolve(value);
    }
  }

  #release(ticket: number): void {
    this.#tickets[ticket] = undefined;
    this.#free.push(ticket);
  }
}
