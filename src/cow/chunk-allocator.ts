import { BlockDeviceError } from '../errors.js';

/**
 * Which store chunks are in use, as a bitmap derived from the metadata (never
 * stored itself, so it cannot disagree with it). Allocation is next-fit from
 * a cursor, so chunks taken together tend to be contiguous and their data
 * can be written in long runs.
 */
export class ChunkAllocator {
  readonly count: number;
  readonly #bits: Uint8Array;
  #free: number;
  #cursor = 0;
  /** Sets of chunks released since each running `check()` began (see {@link watchReleases}). */
  readonly #watchers = new Set<Set<number>>();

  constructor(count: number) {
    this.count = count;
    this.#bits = new Uint8Array(Math.ceil(count / 8));
    this.#free = count;
  }

  /** Chunks not in use. */
  get free(): number {
    return this.#free;
  }

  /** Whether `chunk` is in use. */
  isUsed(chunk: number): boolean {
    return (this.#bits[chunk >>> 3]! & (1 << (chunk & 7))) !== 0;
  }

  /** Marks `chunk` used; idempotent, since replay may name a chunk already taken. */
  markUsed(chunk: number): void {
    if (chunk >= this.count) {
      throw new BlockDeviceError('ECORRUPT', `chunk ${chunk} is past the store's ${this.count}`);
    }
    if (this.isUsed(chunk)) return;
    this.#bits[chunk >>> 3]! |= 1 << (chunk & 7);
    this.#free--;
  }

  /** Returns `chunk` to the free pool. */
  release(chunk: number): void {
    if (!this.isUsed(chunk)) return;
    this.#bits[chunk >>> 3]! &= ~(1 << (chunk & 7));
    this.#free++;
    for (const released of this.#watchers) released.add(chunk);
  }

  /**
   * Collects every chunk released from now until `stop()`. A chunk in use
   * is never written (writes go only to chunks just allocated, and only a
   * released chunk is allocated again), so a check that finds a chunk's
   * data changed asks this whether the chunk was freed, and maybe reused,
   * meanwhile — rather than damaged.
   */
  watchReleases(): { released: ReadonlySet<number>; stop: () => void } {
    const released = new Set<number>();
    this.#watchers.add(released);
    return { released, stop: () => this.#watchers.delete(released) };
  }

  /**
   * Takes `n` free chunks (ascending from the cursor where possible).
   * @throws `ENOSPC` when fewer than `n` are free; nothing is taken then.
   */
  allocate(n: number): number[] {
    if (n > this.#free) {
      throw new BlockDeviceError(
        'ENOSPC',
        `store full: ${n} chunk(s) needed, ${this.#free} of ${this.count} free`,
      );
    }
    const out: number[] = [];
    let c = this.#cursor;
    while (out.length < n) {
      if (c >= this.count) c = 0;
      if (!this.isUsed(c)) {
        this.markUsed(c);
        out.push(c);
      }
      c++;
    }
    this.#cursor = c;
    return out;
  }
}
