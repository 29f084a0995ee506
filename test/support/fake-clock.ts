import type { CopyClock } from '../../src/copy/copy-pacer.js';
import { settle } from './async.js';

/**
 * A clock that moves only when the test says: `now()` is what
 * {@link FakeClock.advance} has reached, and timers fire in time order as it
 * passes them, each followed by a few event-loop turns so the work it woke
 * runs before the clock moves on. Decisions made on it are the code's, not
 * the machine's load.
 */
export class FakeClock implements CopyClock {
  #now = 0;
  readonly #timers = new Set<{ at: number; fn: () => void }>();

  now(): number {
    return this.#now;
  }

  after(ms: number, fn: () => void): () => void {
    const timer = { at: this.#now + ms, fn };
    this.#timers.add(timer);
    return () => this.#timers.delete(timer);
  }

  /** Timers not yet fired nor cancelled. */
  get pending(): number {
    return this.#timers.size;
  }

  /** Moves the clock `ms` ahead, firing every timer due on the way. */
  async advance(ms: number): Promise<void> {
    const end = this.#now + ms;
    await settle();
    for (;;) {
      let next: { at: number; fn: () => void } | undefined;
      for (const t of this.#timers)
        if (t.at <= end && (next === undefined || t.at < next.at)) next = t;
      if (next === undefined) break;
      this.#timers.delete(next);
      this.#now = next.at;
      next.fn();
      await settle();
    }
    this.#now = end;
    await settle();
  }
}
