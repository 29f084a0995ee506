import { BlockDeviceError } from '../errors.js';

/** The time source a {@link CopyPacer} runs on: the real clock, or a test's. */
export interface CopyClock {
  /** Milliseconds since an arbitrary origin, never decreasing. */
  now(): number;
  /** Calls `fn` once after `ms` milliseconds; returns what cancels the call. */
  after(ms: number, fn: () => void): () => void;
}

/** The real clock: `performance.now` and timers. */
export const REAL_CLOCK: CopyClock = {
  now: () => performance.now(),
  after: (ms, fn) => {
    const timer = setTimeout(fn, ms);
    return () => clearTimeout(timer);
  },
};

/** Coalesced source reads: one run covers up to this many bytes of consecutive chunks (seed 004, claim 42). */
export const RUN_BYTES = 1 << 20;
/** Background runs in flight while the application is quiet: the next is read while the last is written (claim 43). */
export const QUIET_RUNS = 4;
/**
 * The largest background run while the application is busy: a foreground
 * I/O queued behind a copier run on the same disk (or thread pool) waits
 * for at most this many bytes to move.
 */
export const BUSY_RUN_BYTES = 256 << 10;
/**
 * How long after its last foreground I/O settled the application still
 * counts as busy: a writer that pauses between writes (a think time, a
 * flush) is not handed the whole disk back between two of its writes.
 */
export const QUIET_MS = 20;
/**
 * A rate-limited run moves at most the bytes of this many milliseconds at
 * the rate (at least one chunk), so a low rate is met smoothly rather than
 * in one long burst and a long pause.
 */
const RATE_SLICE_MS = 100;

/** What the copier may issue next: how many background runs in flight, how big each. */
export interface RunShape {
  readonly runs: number;
  readonly bytes: number;
}

/** Validates a copy rate: a finite number of bytes per second ≥ 0 (0: unlimited). @throws `EINVAL`. */
export function checkRate(rate: unknown, what: string): number {
  if (typeof rate !== 'number' || !Number.isFinite(rate) || rate < 0) {
    throw new BlockDeviceError(
      'EINVAL',
      `${what} must be a finite number of bytes per second ≥ 0, got ${String(rate)}`,
    );
  }
  return rate;
}

/**
 * Decides when the background copier may start its next run, and how big
 * it may be, so that the application's I/O through `job.device` comes
 * first (docs/ARCHITECTURE.md, "Performance notes").
 *
 * Priority: while foreground I/O is in flight, or settled less than
 * {@link QUIET_MS} ago, the copier keeps one run of at most
 * {@link BUSY_RUN_BYTES} in flight; once the application is quiet it goes
 * back to {@link QUIET_RUNS} runs of {@link RUN_BYTES}. It never drops to
 * zero: the copy always makes progress, however busy the application.
 * Copies made for the application (copy-first, and the chunks a queued
 * write waits for) are not paced here at all: they are its latency.
 *
 * Rate: with a rate set, background runs start no faster than the budget
 * allows: a run of `n` bytes moves the time the next may start by
 * `n / rate` (a virtual clock, as a token bucket with no burst beyond one
 * run), so by any time `t` after the rate was set the copier has started
 * at most `rate × t` bytes plus one run. Copies made for the application
 * move the same clock without waiting on it: they count toward the budget.
 */
export class CopyPacer {
  readonly #clock: CopyClock;
  readonly #chunkSize: number;
  /** Bytes per second; 0 is unlimited. */
  #rate = 0;
  /** When the budget lets the next background run start (clock ms). */
  #nextStart = 0;
  /** Foreground I/O in flight through `job.device`. */
  #foreground = 0;
  /** When foreground I/O was last seen (clock ms); -Infinity: never. */
  #lastForeground = Number.NEGATIVE_INFINITY;
  /** Whoever waits in {@link wait}: the copier. */
  readonly #waiters = new Set<() => void>();

  constructor(clock: CopyClock, chunkSize: number, rate: number) {
    this.#clock = clock;
    this.#chunkSize = chunkSize;
    this.#rate = rate;
    this.#nextStart = clock.now();
  }

  /** The rate in bytes per second (0: unlimited). */
  get rate(): number {
    return this.#rate;
  }

  /**
   * Sets the rate; takes effect at the copier's next decision (it is woken
   * if waiting). Bytes already started ahead of the old budget still count,
   * at the new rate.
   */
  setRate(rate: number): void {
    const now = this.#clock.now();
    const owed = this.#rate === 0 ? 0 : Math.max(0, this.#nextStart - now) * this.#rate;
    this.#rate = rate;
    this.#nextStart = rate === 0 ? now : now + owed / rate;
    this.wake();
  }

  /** Whether the application is busy: foreground I/O in flight, or seen within {@link QUIET_MS}. */
  get busy(): boolean {
    return this.#foreground > 0 || this.#clock.now() - this.#lastForeground < QUIET_MS;
  }

  /** Tracks one foreground I/O until `io` settles; returns it. */
  foreground<T>(io: Promise<T>): Promise<T> {
    this.#foreground++;
    this.#lastForeground = this.#clock.now();
    // Handlers made once: a `finally` per write made two closures and a promise more.
    return io.then(this.#settledWith, this.#settledBy);
  }

  readonly #settledWith = <T>(value: T): T => {
    this.#settled();
    return value;
  };

  readonly #settledBy = (err: unknown): never => {
    this.#settled();
    throw err;
  };

  #settled(): void {
    this.#foreground--;
    this.#lastForeground = this.#clock.now();
  }

  /** How many background runs may be in flight now, and the most bytes the next may move. */
  shape(): RunShape {
    const busy = this.busy;
    let bytes = busy ? BUSY_RUN_BYTES : RUN_BYTES;
    if (this.#rate > 0) bytes = Math.min(bytes, (this.#rate * RATE_SLICE_MS) / 1000);
    const chunks = Math.max(1, Math.floor(bytes / this.#chunkSize));
    return { runs: busy ? 1 : QUIET_RUNS, bytes: chunks * this.#chunkSize };
  }

  /** Milliseconds until the budget lets a background run start (0: now). */
  delay(): number {
    if (this.#rate === 0) return 0;
    return Math.max(0, this.#nextStart - this.#clock.now());
  }

  /** Counts `bytes` copied (by the copier or for the application) against the budget. */
  spend(bytes: number): void {
    if (this.#rate === 0) return;
    const now = this.#clock.now();
    this.#nextStart = Math.max(this.#nextStart, now) + (bytes * 1000) / this.#rate;
  }

  /**
   * Resolves after `ms` milliseconds (never, for Infinity), or as soon as
   * {@link wake} is called, whichever comes first; its timer is cancelled
   * either way, so a stopped job leaves none behind.
   */
  wait(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      let cancel: (() => void) | undefined;
      const done = (): void => {
        cancel?.();
        this.#waiters.delete(done);
        resolve();
      };
      this.#waiters.add(done);
      if (Number.isFinite(ms)) cancel = this.#clock.after(ms, done);
    });
  }

  /** Wakes the copier if it is waiting (a write queued, the rate changed, the job stopped). */
  wake(): void {
    for (const done of [...this.#waiters]) done();
  }
}
