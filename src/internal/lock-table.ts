import { E_CANCELED, Mutex, Semaphore } from 'async-mutex';
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
      mutex = new Mutex(lockCancelled());
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

/** The heaviest possible hold: every shared slot at once. */
const EXCLUSIVE = 1 << 30;

/**
 * A shared/exclusive gate in FIFO order: ordinary I/O enters shared; an
 * operation that needs a consistent cut (taking a snapshot, restore, delete)
 * enters exclusive, which first drains the shared holders already inside and
 * holds back everyone who arrives after it (DESIGN.md rule 1: "drains
 * in-flight writes and holds new ones for the instant it needs").
 */
export class AccessGate {
  readonly #semaphore = new Semaphore(EXCLUSIVE, lockCancelled());

  /** Enters shared; resolves once no exclusive holder is inside or queued ahead. */
  async shared(): Promise<Release> {
    const [, release] = await acquireMapped(this.#semaphore, 1);
    return release;
  }

  /** Enters exclusive; resolves once every earlier holder has left. */
  async exclusive(): Promise<Release> {
    const [, release] = await acquireMapped(this.#semaphore, EXCLUSIVE);
    return release;
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

  /** Runs `fn` holding the gate shared. */
  async runShared<T>(fn: () => Promise<T>): Promise<T> {
    const release = await this.shared();
    try {
      return await fn();
    } finally {
      release();
    }
  }
}

function lockCancelled(): Error {
  return new BlockDeviceError('ECLOSED', 'lock wait cancelled');
}

/** async-mutex rejects with its own singletons; callers only ever see BlockDeviceError. */
async function acquireMapped(mutex: Mutex): Promise<Release>;
async function acquireMapped(semaphore: Semaphore, weight: number): Promise<[number, Release]>;
async function acquireMapped(
  lock: Mutex | Semaphore,
  weight?: number,
): Promise<Release | [number, Release]> {
  try {
    return lock instanceof Mutex ? await lock.acquire() : await lock.acquire(weight);
  } catch (err) {
    if (err === E_CANCELED || BlockDeviceError.is(err)) {
      throw new BlockDeviceError('ECLOSED', 'lock wait cancelled', { cause: err });
    }
    throw err;
  }
}
