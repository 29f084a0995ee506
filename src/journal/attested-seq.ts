/**
 * The newest record a landed frame header attests as durable (its
 * `durableSeq`), and the callers waiting for it to reach their record.
 *
 * A waiter is released once a header covering it lands, or once no header
 * can land any more ({@link releaseAll}: the writer failed or is closing) —
 * its records are durable either way; the header only lets replay tell
 * their later damage from a torn tail (see `JournalWriter.syncAttested`).
 */
export class AttestedSeq {
  #seq: number;
  #waiters: { seq: number; resolve: () => void }[] = [];

  /** @param seq Records up to this one are attested already (open's seal covers the replayed ones). */
  constructor(seq: number) {
    this.#seq = seq;
  }

  /** Whether callers are waiting for a header to reach their record. */
  get waiting(): boolean {
    return this.#waiters.length > 0;
  }

  /** Whether a landed header already attests `seq`. */
  covers(seq: number): boolean {
    return this.#seq >= seq;
  }

  /** Resolves once a landed header attests `seq`, or {@link releaseAll}. */
  waitFor(seq: number): Promise<void> {
    if (this.covers(seq)) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ seq, resolve }));
  }

  /** A header carrying `durableSeq` landed: releases the waiters it covers. */
  landed(durableSeq: number): void {
    if (durableSeq <= this.#seq) return;
    this.#seq = durableSeq;
    const waiting = this.#waiters;
    this.#waiters = waiting.filter((w) => w.seq > durableSeq);
    for (const w of waiting) if (w.seq <= durableSeq) w.resolve();
  }

  /** No header can land any more: releases every waiter. */
  releaseAll(): void {
    for (const w of this.#waiters.splice(0)) w.resolve();
  }
}
