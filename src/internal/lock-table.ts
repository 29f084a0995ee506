import { E_CANCELED, Mutex } from 'async-mutex';
import { BlockDeviceError } from '../errors.js';

/** Releases what an acquire took; safe to call once. */
export type Release = () => void;

/**
 * Per-block locks kept apart from every image (seed 003, claims 4–5, 9–10,
 * 13–14): a copy-on-write, a snapshot read and a write of the same block never
 * interleave, while I/O to different blocks proceeds in parallel. A mutex
 * exists only while its block is locked or awaited, so memory follows the
 * I/O in flight, not the device size.
 */
export class LockTable {
  readonly #locks = new Map<number, Mutex>();

  /** Number of blocks currently locked or awaited (for tests and diagnostics). */
  get size(): number {
    return this.#locks.size;
  }

  /**
   * Locks blocks `first..last` inclusive. Blocks are always taken in
   * ascending order, so two overlapping range locks can never deadlock.
   */
  async acquire(first: number, last: number): Promise<Release> {
    if (first === last) return this.#acquireOne(first);
    const releases: Release[] = [];
    try {
      for (let block = first; block <= last; block++) releases.push(await this.#acquireOne(block));
    } catch (err) {
      for (const release of releases) release();
      throw err;
    }
    return () => {
      for (let i = releases.length - 1; i >= 0; i--) releases[i]!();
    };
  }

  async #acquireOne(block: number): Promise<Release> {
    let mutex = this.#locks.get(block);
    if (mutex === undefined) {
      mutex = new Mutex(LOCK_CANCELLED);
      this.#locks.set(block, mutex);
    }
    const held = mutex;
    await acquireMapped(held);
    return () => {
      held.release();
      // Waiters are handed the lock synchronously on release, so an unlocked
      // mutex here has nobody queued and can be dropped.
      if (!held.isLocked() && this.#locks.get(block) === held) this.#locks.delete(block);
    };
  }
}

/**
 * A shared/exclusive gate in FIFO order: ordinary I/O enters shared; an
 * operation that needs a consistent cut (taking a snapshot, restore, delete)
 * enters exclusive, which first drains the shared holders already inside and
 * holds back everyone who arrives after it (DESIGN.md rule 1: "drains
 * in-flight writes and holds new ones for the instant it needs").
 *
 * Entry is queued synchronously at the call, so call order is gate order.
 * Written here rather than on async-mutex's weighted Semaphore: its release
 * walks every unit of weight, so an exclusive weight large enough to stand
 * for "all readers" costs seconds per release. The uncontended shared path
 * takes no promise at all beyond the one it returns.
 */
export class AccessGate {
  #shared = 0;
  #exclusive = false;
  readonly #waiters: { exclusive: boolean; wake: () => void }[] = [];

  /** Enters shared; resolves once no exclusive holder is inside or queued ahead. */
  shared(): Promise<Release> {
    if (!this.#exclusive && this.#waiters.length === 0) {
      this.#shared++;
      return Promise.resolve(this.releaseShared);
    }
    return new Promise((resolve) =>
      this.#waiters.push({ exclusive: false, wake: () => resolve(this.releaseShared) }),
    );
  }

  /**
   * Enters shared at once if nobody exclusive is inside or waiting, returning
   * the release; otherwise returns undefined and takes nothing. Lets the
   * uncontended read path skip a promise and a microtask per I/O.
   */
  tryShared(): Release | undefined {
    if (this.#exclusive || this.#waiters.length > 0) return undefined;
    this.#shared++;
    return this.releaseShared;
  }

  /** Enters exclusive; resolves once every earlier holder has left. */
  exclusive(): Promise<Release> {
    if (!this.#exclusive && this.#shared === 0 && this.#waiters.length === 0) {
      this.#exclusive = true;
      return Promise.resolve(this.#releaseExclusive);
    }
    return new Promise((resolve) =>
      this.#waiters.push({ exclusive: true, wake: () => resolve(this.#releaseExclusive) }),
    );
  }

  /** Runs `fn` holding the gate exclusively. */
  async runExclusive<T>(fn: () => Promise<T>): Promise<T> {
    const release = await this.exclusive();
    try {
      return await fn();
    } finally {
      release();
    }
  }

  /** Leaves shared; the same function every shared entry returns as its release. */
  readonly releaseShared: Release = () => {
    this.#shared--;
    this.#admit();
  };

  readonly #releaseExclusive: Release = () => {
    this.#exclusive = false;
    this.#admit();
  };

  /** Lets in waiters from the front: a run of shared ones, or one exclusive once the gate is empty. */
  #admit(): void {
    while (this.#waiters.length > 0 && !this.#exclusive) {
      const next = this.#waiters[0]!;
      if (next.exclusive) {
        if (this.#shared > 0) return;
        this.#exclusive = true;
      } else {
        this.#shared++;
      }
      this.#waiters.shift();
      next.wake();
    }
  }
}

/**
 * The one error a cancelled lock wait rejects with. Shared: a mutex is made
 * for every uncontended block lock, and building an Error (with its stack)
 * each time was a quarter of the CPU of a copy-on-write rewrite.
 */
const LOCK_CANCELLED = new BlockDeviceError('ECLOSED', 'lock wait cancelled');

/** async-mutex rejects with its own singletons; callers only ever see BlockDeviceError. */
async function acquireMapped(mutex: Mutex): Promise<Release> {
  try {
    return await mutex.acquire();
  } catch (err) {
    if (err === E_CANCELED || BlockDeviceError.is(err)) {
      throw new BlockDeviceError('ECLOSED', 'lock wait cancelled', { cause: err });
    }
    throw err;
  }
}
