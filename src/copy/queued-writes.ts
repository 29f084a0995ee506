import { type HeldWrite, HeldWrites } from './held-writes.js';

/** What the `'queue'` policy needs of the copy engine (`copy-engine.ts`). */
export interface QueueHooks {
  /** Whether chunks `first..last` may take a source write now (their old bytes out of its way). */
  writable(first: number, last: number): boolean;
  /** Whether the job no longer guards the snapshot: every held write may go. */
  passThrough(): boolean;
  /**
   * Saves the old bytes a write of `[offset, offset + length)` overwrites
   * (`saved-old-bytes.ts`): `true` once held, `false` over the memory limit.
   * Undefined with a map store, where a write waits for its chunks' copy.
   */
  readonly save: ((offset: number, length: number) => Promise<boolean>) | undefined;
  /** A save's source read failed: the job fails (and every held write then goes). */
  fail(err: unknown): void;
  /** A write was queued: progress changed. */
  queued(): void;
  /** A held write waits for a copy of its chunks: the copier may take them first. */
  awaitCopy(): void;
  /** The write to the source itself. */
  writeSource(offset: number, data: Uint8Array): Promise<void>;
}

/**
 * The `'queue'` policy (seed 004, claims 31, 47–49): a write into chunks
 * whose old bytes are not out of its way waits in a FIFO ({@link HeldWrites})
 * and leaves in arrival order among the writes it overlaps. It leaves once
 * its old data is preserved: with a map store, its chunks copied and
 * durably in the map; without one, as soon as the old bytes it overwrites
 * are saved in memory, or its chunks' old bytes are read by a copy —
 * whichever comes first (docs/ARCHITECTURE.md, "Copy job pacing").
 */
export class QueuedWrites {
  readonly #held: HeldWrites;
  readonly #hooks: QueueHooks;
  /** Whether a held write may go once no earlier one overlaps it: its old bytes saved, or its chunks writable. */
  readonly #mayGo = (e: HeldWrite): boolean =>
    e.preserved === 'yes' || this.#hooks.writable(e.firstChunk, e.lastChunk);

  constructor(held: HeldWrites, hooks: QueueHooks) {
    this.#held = held;
    this.#hooks = hooks;
  }

  /** `read()` of `[offset, offset + length)`, the writes queued at the call laid over what it returns. */
  async read(offset: number, length: number, read: () => Promise<Uint8Array>): Promise<Uint8Array> {
    // Taken at the call: a queued write applied while the source read is in
    // flight may be missing from what it returns.
    const queued = this.#held.length === 0 ? [] : this.#held.overlapping(offset, length);
    const data = await read();
    if (queued.length === 0) return data;
    const out = new Uint8Array(length);
    out.set(data);
    HeldWrites.overlay(queued, offset, out);
    return out;
  }

  /** `readInto()` of `target` at `offset`, the writes queued at the call laid over it (as {@link read}). */
  async readInto(
    offset: number,
    target: Uint8Array,
    readInto: () => Promise<unknown>,
  ): Promise<Uint8Array> {
    const queued = this.#held.length === 0 ? [] : this.#held.overlapping(offset, target.length);
    await readInto();
    if (queued.length > 0) HeldWrites.overlay(queued, offset, target);
    return target;
  }

  /** Queues a write over chunks `first..last` (none: `first > last`); settles with its source write. */
  enqueue(offset: number, data: Uint8Array, first: number, last: number): Promise<void> {
    const done = new Promise<void>((resolve, reject) => {
      this.#held.push({
        offset,
        data,
        firstChunk: first,
        lastChunk: last,
        applying: false,
        preserved: 'no',
        resolve,
        reject,
      });
    });
    this.#hooks.queued();
    // With saves, the copier is woken only for a write whose save cannot be held.
    if (this.#hooks.save === undefined) this.#hooks.awaitCopy();
    void this.drain(false);
    return done;
  }

  /**
   * Applies the queued writes that may go now (all, with `force` or once
   * the job passes through), each once its source write is issued; starts
   * the saves of those that wait for their old bytes.
   */
  drain(force: boolean): Promise<void> {
    const all = force || this.#hooks.passThrough();
    if (!all) this.#startSaves();
    const ready = this.#held.release(this.#mayGo, all);
    // Called on every save, copy and write that settles: one that finds
    // nothing to apply allocates nothing.
    if (ready.length === 0) return DRAINED;
    // Nearly always one write: no array of promises and no Promise.all for it.
    if (ready.length === 1) return this.#apply(ready[0]!, force);
    return Promise.all(ready.map((entry) => this.#apply(entry, force))).then(nothing);
  }

  /**
   * Issues a released write's source write (now, in the call: in release
   * order), settles the write with it, then drains again; resolves once
   * that drain did. One `then`, not an async function's promises.
   */
  #apply(entry: HeldWrite, force: boolean): Promise<void> {
    return this.#hooks.writeSource(entry.offset, entry.data).then(
      () => {
        entry.resolve();
        return this.#applied(entry, force);
      },
      (err: unknown) => {
        entry.reject(err);
        return this.#applied(entry, force);
      },
    );
  }

  /** A released write's source write settled: it leaves the queue, and its removal may unblock a later write that overlapped it. */
  #applied(entry: HeldWrite, force: boolean): Promise<void> {
    this.#held.remove(entry);
    return this.drain(force);
  }

  /**
   * Starts saving the old bytes of each queued write that waits for them
   * and that no earlier queued write overlaps: no source write can then
   * land on its bytes while they are read (an overlapping write called
   * later queues behind it, and an earlier one has left the queue, its
   * source write completed).
   */
  #startSaves(): void {
    const { save, writable } = this.#hooks;
    if (save === undefined) return;
    for (const entry of this.#held.unblocked(notPreserved)) {
      if (writable(entry.firstChunk, entry.lastChunk)) continue;
      entry.preserved = 'reading';
      save(entry.offset, entry.data.length).then(
        (saved) => {
          // Over the memory limit: it waits for its chunks' copy (and may try again later).
          entry.preserved = saved ? 'yes' : 'no';
          if (saved) void this.drain(false);
          else this.#hooks.awaitCopy();
        },
        (err: unknown) => {
          entry.preserved = 'no';
          this.#hooks.fail(err);
        },
      );
    }
  }
}

const DRAINED = Promise.resolve();
const nothing = (): void => {};
const notPreserved = (e: HeldWrite): boolean => e.preserved === 'no';
