/** A foreground write waiting for the copier (the `'queue'` policy, seed 004 claims 31, 47–49). */
export interface HeldWrite {
  readonly offset: number;
  readonly data: Uint8Array;
  /** Chunks of the copy range it touches: it waits until all are in the destination. */
  readonly firstChunk: number;
  readonly lastChunk: number;
  /** Set once its source write has been issued. */
  applying: boolean;
  /**
   * Whether the old bytes it overwrites are saved in memory (no map store,
   * `saved-old-bytes.ts`): then it may go before its chunks are copied.
   */
  preserved: 'no' | 'reading' | 'yes';
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
}

/**
 * The FIFO of writes held back by the `'queue'` policy. A write leaves in
 * arrival order among the writes it overlaps: it is released only when its
 * old data is preserved (its chunks copied, or its old bytes saved) and no
 * earlier write still queued overlaps it. Reads
 * overlay the queue on the source, so they always see the newest data.
 */
export class HeldWrites {
  readonly #entries: HeldWrite[] = [];
  /** Wakes `drained()` callers when the last entry leaves. */
  #onEmpty: (() => void)[] = [];

  get length(): number {
    return this.#entries.length;
  }

  /** Bytes of the queued writes (what they hold in memory). */
  get bytes(): number {
    let n = 0;
    for (const e of this.#entries) n += e.data.length;
    return n;
  }

  push(entry: HeldWrite): void {
    this.#entries.push(entry);
  }

  /** Whether a write of `[offset, offset + length)` overlaps a queued one (so must queue behind it). */
  overlaps(offset: number, length: number): boolean {
    return this.#entries.some((e) => overlap(e, offset, length));
  }

  /**
   * The first chunk, in arrival order, that a queued write waits for and
   * `pending` accepts, with the last chunk of that write: what the copier
   * takes first. A write whose old bytes are being saved waits for no copy;
   * with `saving` (no map store), nor does one behind an earlier write it
   * overlaps: it saves its own once that one has left.
   */
  firstAwaited(
    pending: (chunk: number) => boolean,
    saving: boolean,
  ): { first: number; last: number } | undefined {
    for (let i = 0; i < this.#entries.length; i++) {
      const e = this.#entries[i]!;
      if (e.preserved !== 'no' || (saving && this.#blocked(i))) continue;
      for (let c = e.firstChunk; c <= e.lastChunk; c++) {
        if (pending(c)) return { first: c, last: e.lastChunk };
      }
    }
    return undefined;
  }

  /** Every chunk a queued write waits for (repeats included). */
  *awaitedChunks(): Generator<number> {
    for (const e of this.#entries) {
      for (let c = e.firstChunk; c <= e.lastChunk; c++) yield c;
    }
  }

  /**
   * Takes the writes that may go now: not yet applying, which `ready`
   * accepts (all of them, with `force`), and which no earlier entry still in
   * the queue overlaps.
   */
  release(ready: (entry: HeldWrite) => boolean, force = false): readonly HeldWrite[] {
    const out = this.unblocked(force ? always : ready);
    for (const e of out) e.applying = true;
    return out;
  }

  /** The writes not yet applying that `accept` takes and no earlier entry still in the queue overlaps, in order. */
  unblocked(accept: (entry: HeldWrite) => boolean): readonly HeldWrite[] {
    // An array only when some write qualifies: most calls find none.
    let out: HeldWrite[] | undefined;
    for (let i = 0; i < this.#entries.length; i++) {
      const e = this.#entries[i]!;
      if (e.applying || !accept(e) || this.#blocked(i)) continue;
      if (out === undefined) out = [];
      out.push(e);
    }
    return out ?? NONE;
  }

  /** Whether an earlier entry still in the queue overlaps entry `i`. */
  #blocked(i: number): boolean {
    const e = this.#entries[i]!;
    for (let k = 0; k < i; k++) {
      if (overlap(this.#entries[k]!, e.offset, e.data.length)) return true;
    }
    return false;
  }

  /**
   * Removes and returns the writes not yet applying whose chunks `waiting`
   * says are still to be copied, in arrival order (for the caller to fail).
   */
  take(waiting: (first: number, last: number) => boolean): HeldWrite[] {
    const out = this.#entries.filter((e) => !e.applying && waiting(e.firstChunk, e.lastChunk));
    for (const e of out) this.remove(e);
    return out;
  }

  /** Drops a write whose source write settled. */
  remove(entry: HeldWrite): void {
    const i = this.#entries.indexOf(entry);
    if (i >= 0) this.#entries.splice(i, 1);
    if (this.#entries.length === 0 && this.#onEmpty.length > 0) {
      const wake = this.#onEmpty;
      this.#onEmpty = [];
      for (const w of wake) w();
    }
  }

  /** Resolves once the queue is empty. */
  drained(): Promise<void> {
    if (this.#entries.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.#onEmpty.push(resolve));
  }

  /** The queued writes overlapping `[offset, offset + length)`, in arrival order. */
  overlapping(offset: number, length: number): HeldWrite[] {
    return this.#entries.filter((e) => overlap(e, offset, length));
  }

  /** Copies the bytes of `entries` over `out`, which holds `[offset, offset + out.length)`, in their order. */
  static overlay(entries: readonly HeldWrite[], offset: number, out: Uint8Array): void {
    const end = offset + out.length;
    for (const e of entries) {
      const from = Math.max(offset, e.offset);
      const to = Math.min(end, e.offset + e.data.length);
      if (from < to) out.set(e.data.subarray(from - e.offset, to - e.offset), from - offset);
    }
  }
}

function overlap(e: HeldWrite, offset: number, length: number): boolean {
  return e.offset < offset + length && offset < e.offset + e.data.length;
}

const NONE: readonly HeldWrite[] = [];
const always = (): boolean => true;
