/**
 * Free space of the journal ring, in absolute byte positions since format
 * (ring position = absolute % capacity): frames live between the head — the
 * oldest frame a durable superblock still needs — and the end of the newest
 * landed frame. A frame is placed only in the space between them.
 */
export class RingSpace {
  readonly capacity: number;
  #headAbs: number;
  #landedAbs: number;

  constructor(capacity: number, headAbs: number, landedAbs: number) {
    this.capacity = capacity;
    this.#headAbs = headAbs;
    this.#landedAbs = landedAbs;
  }

  /** Absolute position of the oldest frame still needed. */
  get headAbs(): number {
    return this.#headAbs;
  }

  /** Absolute position just past the newest landed frame. */
  get landedAbs(): number {
    return this.#landedAbs;
  }

  /** Bytes between the head and the newest landed frame (skipped ends of laps included). */
  get used(): number {
    return this.#landedAbs - this.#headAbs;
  }

  /**
   * Where a frame of `bytes` goes, or undefined if the ring lacks the space.
   * Frames never straddle the ring's end: one that does not fit before it
   * starts at the next lap, the skipped bytes counting as used until the
   * head passes them — unless the ring is empty, when the head itself moves
   * there (replay finds the frame by the same rule), so any frame up to the
   * whole ring fits.
   */
  place(bytes: number): number | undefined {
    const c = this.capacity;
    const used = this.used;
    const pos = this.#landedAbs % c;
    if (pos + bytes <= c) return used + bytes <= c ? this.#landedAbs : undefined;
    const next = this.#landedAbs - pos + c;
    if (used + (c - pos) + bytes <= c) return next;
    if (used > 0) return undefined;
    this.#headAbs = next;
    this.#landedAbs = next;
    return next;
  }

  /** A frame placed at `at` landed: it ends at `end`. */
  landed(end: number): void {
    this.#landedAbs = end;
  }

  /** Frees space up to `headAbs`, which a durable superblock now names as the head. */
  release(headAbs: number): void {
    this.#headAbs = Math.max(this.#headAbs, headAbs);
  }
}
