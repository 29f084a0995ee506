import { IntegerKeyTable } from './integer-key-table.js';

/** Releases what an acquire took; safe to call once. */
export type Release = () => void;

/** Hands a released block's lock to the caller that waited for it. */
type Grant = () => void;

/**
 * Per-block locks kept apart from every image (seed 003, claims 4–5, 9–10,
 * 13–14): a copy-on-write, a snapshot read and a write of the same block never
 * interleave, while I/O to different blocks proceeds in parallel. A block is
 * in the table only while it is locked, so memory follows the I/O in flight,
 * not the device size.
 *
 * Written here rather than on async-mutex: a hot read takes and drops a lock
 * per I/O, and a Mutex per block plus its generator-based `acquire` cost more
 * than the rest of a snapshot read (docs/ARCHITECTURE.md, "Performance
 * notes"). Each block is a FIFO lock: a release hands it to the longest
 * waiter at once, synchronously, so nobody can slip in between.
 */
export class LockTable {
  /**
   * Locked blocks. A hash table rather than a Map: with locks taken and
   * dropped per read, a Map's upkeep cost a snapshot read about as much as
   * the rest of its lookups (docs/ARCHITECTURE.md, "Performance notes");
   * this one, sized for a few hundred locks, never resizes below that.
   */
  readonly #locked = new IntegerKeyTable(0, LOCKED_SLOTS);
  /** Each locked block's waiters in call order, for blocks someone waits for. */
  readonly #waiters = new Map<number, Grant[]>();

  /** Number of blocks currently locked (for tests and diagnostics). */
  get size(): number {
    return this.#locked.size;
  }

  /**
   * Locks blocks `first..last` inclusive. Blocks are always taken in
   * ascending order, so two overlapping range locks can never deadlock.
   */
  acquire(first: number, last: number): Promise<Release> {
    if (first === last) return this.#acquireOne(first);
    return this.#acquireRange(first, last);
  }

  /**
   * Locks `block` at once if it is free, returning true; otherwise takes
   * nothing and returns false. It never passes a waiter: a block someone
   * waits for is locked. Lets an uncontended read skip a promise, and a
   * release closure, per lock (the snapshot-read hot path). The caller hands
   * it back with {@link unlock}, exactly once.
   */
  tryLock(block: number): boolean {
    return this.#locked.add(block);
  }

  /**
   * Releases `block`, taken by {@link tryLock}: hands it to its first
   * waiter, as a release from {@link acquire} does. Call it once per
   * `tryLock` that returned true, never for a lock taken otherwise.
   */
  unlock(block: number): void {
    this.#unlock(block);
  }

  /**
   * Whether any block of `first..last` is locked now (held, or waited for:
   * a block someone waits for is held). Lets a write that needs no lock of
   * its own check that it overtakes no locked I/O of the same blocks.
   */
  anyLocked(first: number, last: number): boolean {
    const locked = this.#locked;
    if (locked.size === 0) return false;
    for (let block = first; block <= last; block++) if (locked.find(block) >= 0) return true;
    return false;
  }

  async #acquireRange(first: number, last: number): Promise<Release> {
    const releases: Release[] = [];
    for (let block = first; block <= last; block++) releases.push(await this.#acquireOne(block));
    return () => {
      for (let i = releases.length - 1; i >= 0; i--) releases[i]!();
    };
  }

  #acquireOne(block: number): Promise<Release> {
    if (this.tryLock(block)) return Promise.resolve(this.#releaser(block));
    return new Promise((resolve) => {
      const grant: Grant = () => resolve(this.#releaser(block));
      const waiters = this.#waiters.get(block);
      if (waiters === undefined) this.#waiters.set(block, [grant]);
      else waiters.push(grant);
    });
  }

  #releaser(block: number): Release {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#unlock(block);
    };
  }

  /** Hands `block` to its first waiter, or drops it from the table if nobody waits. */
  #unlock(block: number): void {
    const waiters = this.#waiters.size === 0 ? undefined : this.#waiters.get(block);
    if (waiters === undefined) {
      this.#locked.delete(block);
      return;
    }
    const next = waiters.shift()!;
    if (waiters.length === 0) this.#waiters.delete(block);
    // The block stays locked: it is the waiter's from this instant.
    next();
  }
}

/** Slots of the locked-block table: room for a few hundred locks (the I/O in flight) without a resize. */
const LOCKED_SLOTS = 1024;
