/**
 * The foreground writes a copy job holds back (waiting for their old bytes
 * to be saved or copied, or for an earlier held write they overlap) until
 * their source write has completed: a later write overlapping one waits
 * for that, so overlapping writes reach the source in call order, and no
 * source write lands on bytes whose old value is still being read.
 */
export class WriteOrder {
  readonly #held = new Set<{ offset: number; end: number; issued: Promise<void> }>();

  /** Writes held now. */
  get size(): number {
    return this.#held.size;
  }

  /** What a write of `[offset, end)` called now waits for: the end of each held write it overlaps. */
  ahead(offset: number, end: number): Promise<void>[] {
    const out: Promise<void>[] = [];
    for (const w of this.#held) {
      if (w.offset < end && offset < w.end) out.push(w.issued);
    }
    return out;
  }

  /** Holds a write of `[offset, end)`; returns what ends its hold (once its source write settled). */
  hold(offset: number, end: number): () => void {
    let issue!: () => void;
    const entry = {
      offset,
      end,
      issued: new Promise<void>((resolve) => {
        issue = resolve;
      }),
    };
    this.#held.add(entry);
    return () => {
      this.#held.delete(entry);
      issue();
    };
  }
}
