/** A held write: its bytes, and what a later write overlapping it waits on (made only if one does). */
interface HeldWrite {
  readonly offset: number;
  readonly end: number;
  issued: Promise<void> | undefined;
  issue: (() => void) | undefined;
}

/**
 * The foreground writes a copy job holds back (waiting for their old bytes
 * to be saved or copied, or for an earlier held write they overlap) until
 * their source write has completed: a later write overlapping one waits
 * for that, so overlapping writes reach the source in call order, and no
 * source write lands on bytes whose old value is still being read.
 */
export class WriteOrder {
  readonly #held = new Set<HeldWrite>();

  /** Writes held now. */
  get size(): number {
    return this.#held.size;
  }

  /** What a write of `[offset, end)` called now waits for: the end of each held write it overlaps. */
  ahead(offset: number, end: number): Promise<void>[] {
    const out: Promise<void>[] = [];
    for (const w of this.#held) {
      if (w.offset < end && offset < w.end) {
        // Made at the first overlapping write: random writes rarely overlap,
        // and a promise per held write was garbage for nearly all of them.
        w.issued ??= new Promise<void>((resolve) => {
          w.issue = resolve;
        });
        out.push(w.issued);
      }
    }
    return out;
  }

  /** Holds a write of `[offset, end)`; returns what ends its hold (once its source write settled). */
  hold(offset: number, end: number): () => void {
    const entry: HeldWrite = { offset, end, issued: undefined, issue: undefined };
    this.#held.add(entry);
    return () => {
      this.#held.delete(entry);
      entry.issue?.();
    };
  }
}

/**
 * `written`, ending a hold (`done`, from {@link WriteOrder.hold}) once it
 * settles: as `written.finally(done)`, with one promise, not three.
 */
export function releasing(written: Promise<void>, done: () => void): Promise<void> {
  return written.then(done, (err: unknown) => {
    done();
    throw err;
  });
}
