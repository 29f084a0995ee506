import type { CopyGeometry } from './copy-map.js';

/** Not copied, and no copy of it started: its source bytes are the snapshot's. */
const PENDING = 0;
/** Being copied: its old bytes are still being read from the source. */
const BUSY = 1;
/** Being copied: its old bytes are read (in the copy's buffer), their destination write not yet done. */
const CAPTURED = 2;
/** Durably in the map (in the destination, without a map store): the source may change there. */
const DONE = 3;

/** The byte range of a copy job that its chunks cover (source offset of range byte 0, length, chunk size). */
export type ChunkGeometry = Pick<CopyGeometry, 'offset' | 'length' | 'chunkSize'>;

/**
 * The state of every chunk of a copy job's range (PENDING → BUSY →
 * CAPTURED → DONE; back to PENDING if its copy fails), and, per chunk being
 * copied, when its old bytes are read and when its copy ends. The copy
 * engine changes the states; the copier and the foreground write path wait
 * on them.
 *
 * Guarantee: a chunk is {@link writable} only once its old bytes are out of
 * the source's way — DONE, or CAPTURED when the engine allows that (no map
 * store: nothing durable can call the chunk uncopied, and the copy's buffer,
 * which its reader owns, holds the old bytes until they reach the
 * destination).
 */
export class ChunkStates {
  readonly #geometry: ChunkGeometry;
  readonly #state: Uint8Array;
  /** Per chunk being copied: settles when its copy ends (DONE, or failed). */
  readonly #ended = new Map<number, Promise<void>>();
  /** Per chunk being copied: resolves once its old bytes are read (or its copy ended). */
  readonly #captured = new Map<number, { promise: Promise<void>; resolve: () => void }>();
  #done = 0;

  /** @param copied - whether chunk `i` is in the destination already (a resumed map). */
  constructor(geometry: ChunkGeometry, count: number, copied: (i: number) => boolean) {
    this.#geometry = geometry;
    this.#state = new Uint8Array(count);
    for (let i = 0; i < count; i++) {
      if (copied(i)) {
        this.#state[i] = DONE;
        this.#done++;
      }
    }
  }

  /** Chunks in the range. */
  get count(): number {
    return this.#state.length;
  }

  /** Whether every chunk is DONE. */
  get complete(): boolean {
    return this.#done === this.#state.length;
  }

  /** Whether no copy of chunk `c` has started and it is not DONE. */
  isPending(c: number): boolean {
    return this.#state[c] === PENDING;
  }

  /** Whether no copy has read chunk `c`'s old bytes yet (PENDING or BUSY): a source write there needs them saved first. */
  isUncaptured(c: number): boolean {
    return this.#state[c]! < CAPTURED;
  }

  /** Whether chunks `first..last` are all DONE. */
  allDone(first: number, last: number): boolean {
    for (let c = first; c <= last; c++) if (this.#state[c] !== DONE) return false;
    return true;
  }

  /**
   * Whether a source write may touch chunks `first..last` now: each is
   * DONE, or, with `early`, CAPTURED (its old bytes read).
   */
  writable(first: number, last: number, early: boolean): boolean {
    for (let c = first; c <= last; c++) {
      const s = this.#state[c];
      if (s !== DONE && !(early && s === CAPTURED)) return false;
    }
    return true;
  }

  /**
   * What a write into chunk `c` (being copied) waits for: its old bytes read
   * (`early`) or its copy ended; undefined if `c` is not being copied.
   */
  waitFor(c: number, early: boolean): Promise<void> | undefined {
    return early ? this.#captured.get(c)?.promise : this.#ended.get(c);
  }

  /** One promise per chunk being copied, settling when its copy ends. */
  copiesInFlight(): Promise<void>[] {
    return [...this.#ended.values()];
  }

  /** Marks chunks `first..first+count-1` (all PENDING) BUSY; `ended` settles when their copy ends. */
  begin(first: number, count: number, ended: Promise<void>): void {
    for (let c = first; c < first + count; c++) {
      this.#state[c] = BUSY;
      this.#ended.set(c, ended);
      let resolve!: () => void;
      const promise = new Promise<void>((r) => {
        resolve = r;
      });
      this.#captured.set(c, { promise, resolve });
    }
  }

  /** Their old bytes are read: BUSY → CAPTURED. */
  capture(first: number, count: number): void {
    for (let c = first; c < first + count; c++) {
      this.#state[c] = CAPTURED;
      this.#captured.get(c)?.resolve();
    }
  }

  /** Their copy ended: DONE when `copied`, else PENDING again. */
  end(first: number, count: number, copied: boolean): void {
    for (let c = first; c < first + count; c++) {
      this.#state[c] = copied ? DONE : PENDING;
      // A write waiting for the bytes of a failed copy is let go to see the failure.
      this.#captured.get(c)?.resolve();
      this.#captured.delete(c);
      this.#ended.delete(c);
    }
    if (copied) this.#done += count;
  }

  /** The chunks a source byte range touches, or undefined if it misses the copy range. */
  chunksOf(offset: number, length: number): { first: number; last: number } | undefined {
    const { offset: start, length: size, chunkSize } = this.#geometry;
    const from = Math.max(offset, start);
    const to = Math.min(offset + length, start + size);
    if (from >= to) return undefined;
    return {
      first: Math.floor((from - start) / chunkSize),
      last: Math.floor((to - 1 - start) / chunkSize),
    };
  }
}
