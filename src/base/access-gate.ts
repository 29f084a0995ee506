import type { Release } from './lock-table.js';

/**
 * A shared/exclusive gate in FIFO order: ordinary I/O enters shared; an
 * operation that needs a consistent cut (taking a snapshot, restore, delete)
 * enters exclusive, which first drains the shared holders already inside and
 * holds back everyone who arrives after it (snapshot rule 1 of docs/ARCHITECTURE.md: "drains
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
