/** Bytes of spare block buffers one {@link SpareBlocks} keeps at most. */
const SPARE_BYTES = 512 * 1024;

/**
 * Block-sized buffers a COW device reuses for the data of its first writes
 * (the old block read from the origin, the private copy of the new one),
 * instead of a fresh buffer per first write: each is handed out to one
 * write at a time and given back only once nothing can still read or write
 * it — the append or origin write it went to has settled. In the steady
 * state (a few dozen first writes in flight) every one reuses a buffer, so
 * a first write makes no ArrayBuffer and no garbage for its data. A buffer
 * a failed read went into is not given back: a device that failed a read
 * is not trusted to have stopped writing into it.
 */
export class SpareBlocks {
  readonly #blockSize: number;
  readonly #max: number;
  readonly #spare: Uint8Array[] = [];

  /** Spare buffers of `blockSize` bytes, up to 512 KiB of them (at least one). */
  constructor(blockSize: number) {
    this.#blockSize = blockSize;
    this.#max = Math.max(1, Math.floor(SPARE_BYTES / blockSize));
  }

  /** Bytes of each buffer. */
  get blockSize(): number {
    return this.#blockSize;
  }

  /** A block buffer, its content undefined: a spare one, or a new one. */
  take(): Uint8Array {
    return this.#spare.pop() ?? new Uint8Array(this.#blockSize);
  }

  /** Gives back a buffer from {@link take} that nothing uses any more; kept if there is room. */
  give(buffer: Uint8Array): void {
    if (this.#spare.length < this.#max) this.#spare.push(buffer);
  }
}
