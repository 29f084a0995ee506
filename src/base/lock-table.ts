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
