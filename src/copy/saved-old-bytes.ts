import { io } from '../base/index.js';
import type { BlockDevice } from '../device.js';
import type { ChunkStates } from './chunk-states.js';
import type { CopyPacer } from './copy-pacer.js';

/**
 * The most old bytes a job holds in memory at once, saved or being read:
 * past it a write into a chunk not yet copied copies the whole chunk first
 * (copy-first) or waits for the copier (queue), as it would with a map store.
 */
export const SAVED_BYTES_LIMIT = 64 << 20;

/** Old bytes of range bytes `[from, from + data.length)`. */
interface Extent {
  readonly from: number;
  readonly data: Uint8Array;
}

/**
 * The old bytes of parts of chunks no copy has read yet, saved just before
 * a foreground write overwrites them (no map store only: a crash loses
 * them, so with a map store a chunk is copied whole before the write,
 * docs/ARCHITECTURE.md "Crash ordering"). A 4 KiB write into an uncopied
 * 64 KiB chunk then costs a 4 KiB read instead of the chunk's read and
 * destination write, and the copier, when it reads the chunk, lays the
 * saved bytes back over what it read ({@link restore}), so the destination
 * still gets the range as it was at `start()`.
 *
 * Invariant: every byte of an uncaptured chunk (PENDING or BUSY) either
 * still holds its `start()` value on the source or is saved here. It holds
 * because the engine issues a source write into such bytes only after
 * {@link save} has resolved for them, and no source write into them is
 * issued while their save reads; a byte is saved once (a second write to
 * it finds it saved and reads nothing), so the saved value is the first,
 * the `start()` one.
 */
export class SavedOldBytes {
  readonly #source: BlockDevice;
  /** Source offset of range byte 0. */
  readonly #offset: number;
  readonly #chunkSize: number;
  readonly #states: ChunkStates;
  readonly #pacer: CopyPacer;
  readonly #limit: number;
  /** Per uncaptured chunk: its saved extents, disjoint. */
  readonly #byChunk = new Map<number, Extent[]>();
  /** Bytes held: saved, and being read. */
  #bytes = 0;
  /** Set by {@link clear}: no copy will lay saved bytes back any more, so none are kept. */
  #cleared = false;

  constructor(
    source: BlockDevice,
    offset: number,
    chunkSize: number,
    states: ChunkStates,
    pacer: CopyPacer,
    limit = SAVED_BYTES_LIMIT,
  ) {
    this.#source = source;
    this.#offset = offset;
    this.#chunkSize = chunkSize;
    this.#states = states;
    this.#pacer = pacer;
    this.#limit = limit;
  }

  /** Bytes held in memory now (saved, or being read). */
  get bytes(): number {
    return this.#bytes;
  }

  /**
   * Saves the old bytes of range bytes `[from, to)` that lie in uncaptured
   * chunks and are not saved yet: one source read of `[from, to)`, none if
   * there are no such bytes. Resolves
   * `true` once they are held (a source write may then go there), `false`
   * at once, reading nothing, if they would take the bytes held past the
   * limit. The caller issues no source write into `[from, to)` until it
   * settles, and none is in flight when it is called.
   */
  async save(from: number, to: number): Promise<boolean> {
    // A rewrite of bytes already saved (or of captured chunks) reads nothing.
    if (this.#cleared || !this.#needs(from, to)) return true;
    const length = to - from;
    if (this.#bytes + length > this.#limit) return false;
    this.#bytes += length;
    // Copy work, so it counts toward the rate budget (it is never paced: it is the write's latency).
    this.#pacer.spend(length);
    let data: Uint8Array;
    try {
      data = await io('source read', this.#source.read(this.#offset + from, length));
    } finally {
      this.#bytes -= length;
    }
    if (this.#cleared) return true;
    const cs = this.#chunkSize;
    for (let c = Math.floor(from / cs); c * cs < to; c++) {
      // Captured meanwhile (or DONE): the copy read its old bytes before this write can land.
      if (!this.#states.isUncaptured(c)) continue;
      const extents = this.#byChunk.get(c) ?? [];
      if (extents.length === 0) this.#byChunk.set(c, extents);
      for (const [a, b] of missing(extents, Math.max(from, c * cs), Math.min(to, (c + 1) * cs))) {
        // A piece of its own (a copy even when a device reads into Buffers, whose
        // slice is a view), so a partly saved read holds no more memory than it saves.
        const piece =
          a === from && b === to ? data : new Uint8Array(data.subarray(a - from, b - from));
        extents.push({ from: a, data: piece });
        this.#bytes += piece.length;
      }
    }
    return true;
  }

  /** Whether some byte of `[from, to)` lies in an uncaptured chunk and is not saved. */
  #needs(from: number, to: number): boolean {
    const cs = this.#chunkSize;
    for (let c = Math.floor(from / cs); c * cs < to; c++) {
      if (!this.#states.isUncaptured(c)) continue;
      const extents = this.#byChunk.get(c);
      const lo = Math.max(from, c * cs);
      const hi = Math.min(to, (c + 1) * cs);
      if (extents === undefined || missing(extents, lo, hi).length > 0) return true;
    }
    return false;
  }

  /**
   * Lays the saved bytes of chunks `first..first+count-1` over `run`, a
   * copy's read of range bytes from `start`, and forgets them: called as
   * the copy captures those chunks, so no later save adds to them.
   */
  restore(first: number, count: number, start: number, run: Uint8Array): void {
    if (this.#byChunk.size === 0) return;
    for (let c = first; c < first + count; c++) {
      const extents = this.#byChunk.get(c);
      if (extents === undefined) continue;
      for (const e of extents) {
        run.set(e.data, e.from - start);
        this.#bytes -= e.data.length;
      }
      this.#byChunk.delete(c);
    }
  }

  /** Drops every saved byte: the job no longer copies (stopped or failed without a map store). */
  clear(): void {
    this.#cleared = true;
    for (const extents of this.#byChunk.values()) {
      for (const e of extents) this.#bytes -= e.data.length;
    }
    this.#byChunk.clear();
  }
}

/** The parts of `[from, to)` no extent of `extents` (disjoint) covers, in order. */
function missing(extents: readonly Extent[], from: number, to: number): [number, number][] {
  const covering = extents
    .filter((e) => e.from < to && from < e.from + e.data.length)
    .sort((x, y) => x.from - y.from);
  const out: [number, number][] = [];
  let at = from;
  for (const e of covering) {
    if (e.from > at) out.push([at, e.from]);
    at = Math.max(at, e.from + e.data.length);
  }
  if (at < to) out.push([at, to]);
  return out;
}
