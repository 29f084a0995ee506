import { type CallbackReader, callbackReaderOrRead } from '../base/index.js';
import type { BlockDevice } from '../device.js';
import { wrapIO } from '../errors.js';
import type { ChunkStates } from './chunk-states.js';
import type { CopyPacer } from './copy-pacer.js';
import { CELL_BYTES, SavedCells } from './saved-cells.js';

/**
 * The most old bytes a job holds in memory at once, saved or being read
 * (saved bytes counted in whole 4 KiB cells, `saved-cells.ts`): past it a
 * write into a chunk not yet copied copies the whole chunk first
 * (copy-first) or waits for the copier (queue), as it would with a map
 * store. The cells' slabs, once allocated, are kept until the copy ends
 * or stops: at most this many bytes; then they wait for the next job's
 * saves until the next full garbage collection (`saved-cells.ts`).
 */
export const SAVED_BYTES_LIMIT = 64 << 20;

const SAVED = Promise.resolve(true);
const REFUSED = Promise.resolve(false);

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
 *
 * The bytes are kept in {@link SavedCells}, not in a buffer per save: a
 * save of up to 4 KiB reads straight into its cell.
 */
export class SavedOldBytes {
  /**
   * The source's READ_CALLBACK (else its `read`/`readInto` in that shape):
   * a save settles its one promise from the read's callback, with no
   * promise of the read's own and none for wrapping its error.
   */
  readonly #readSource: CallbackReader;
  /** Source offset of range byte 0. */
  readonly #offset: number;
  readonly #chunkSize: number;
  readonly #states: ChunkStates;
  readonly #pacer: CopyPacer;
  readonly #limit: number;
  /**
   * The saved pieces, per uncaptured chunk, disjoint and in ascending
   * order; made at the first save (a job with a map store never saves).
   */
  #cells: SavedCells | undefined;
  /** Bytes being read by saves too long to read straight into a cell. */
  #reading = 0;
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
    this.#readSource = callbackReaderOrRead(source);
    this.#offset = offset;
    this.#chunkSize = chunkSize;
    this.#states = states;
    this.#pacer = pacer;
    this.#limit = limit;
  }

  /** Bytes held in memory now (cells saved or set aside for saves, and longer saves being read). */
  get bytes(): number {
    return (this.#cells?.bytes ?? 0) + this.#reading;
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
  save(from: number, to: number): Promise<boolean> {
    // Settled promises made once: a save that reads nothing allocates nothing.
    if (this.#cleared) return SAVED;
    this.#cells ??= new SavedCells(this.#limit);
    const cells = this.#cells;
    // A rewrite of bytes already saved (or of captured chunks) reads nothing.
    const needed = this.#cellsNeeded(cells, from, to);
    if (needed === 0) return SAVED;
    const length = to - from;
    // A read of a cell or less goes straight into a cell (no buffer of its
    // own), which is the piece itself when the whole read is to be saved.
    const direct = length <= CELL_BYTES;
    const reserved = direct ? needed + 1 : needed;
    if (!direct && this.bytes + length + needed * CELL_BYTES > this.#limit) return REFUSED;
    // Set aside before the read: whatever is still missing after it fits.
    if (!cells.reserve(reserved)) return REFUSED;
    // Copy work, so it counts toward the rate budget (it is never paced: it is the write's latency).
    this.#pacer.spend(length);
    const at = this.#offset + from;
    if (direct) {
      const cell = cells.take();
      const view = cells.view(cell, length);
      return new Promise((resolve, reject) => {
        this.#readSource(
          at,
          length,
          (err, data) => {
            if (err === null) {
              if (data !== view) view.set(data!);
              this.#settle(resolve, reject, cells, from, to, data!, cell, reserved - 1);
              return;
            }
            if (!this.#cleared) {
              cells.free(cell);
              cells.unreserve(reserved - 1);
            }
            reject(wrapIO('source read', err));
          },
          view,
        );
      });
    }
    this.#reading += length;
    return new Promise((resolve, reject) => {
      this.#readSource(at, length, (err, data) => {
        this.#reading -= length;
        if (err === null) {
          this.#settle(resolve, reject, cells, from, to, data!, -1, reserved);
          return;
        }
        if (!this.#cleared) cells.unreserve(reserved);
        reject(wrapIO('source read', err));
      });
    });
  }

  /**
   * Settles a save whose read returned `data` with what `#keep` kept. It
   * runs in the read's callback, so a fault in the bookkeeping rejects the
   * save rather than escaping into the device's I/O callback.
   */
  #settle(
    resolve: (saved: boolean) => void,
    reject: (err: unknown) => void,
    cells: SavedCells,
    from: number,
    to: number,
    data: Uint8Array,
    cell: number,
    unused: number,
  ): void {
    try {
      resolve(this.#keep(cells, from, to, data, cell, unused));
    } catch (err) {
      reject(err);
    }
  }

  /**
   * Keeps what a save read of `[from, to)` (`data`) still has to: the
   * bytes of uncaptured chunks not saved yet, in the cells set aside for
   * it (`cell`: the taken cell `data` was read into, or -1; `unused`:
   * those not used yet, returned at the end).
   */
  #keep(
    cells: SavedCells,
    from: number,
    to: number,
    data: Uint8Array,
    cell: number,
    unused: number,
  ): boolean {
    if (this.#cleared) return true;
    const direct = cell !== -1;
    let cellKept = false;
    const cs = this.#chunkSize;
    for (let c = Math.floor(from / cs); c * cs < to; c++) {
      // Captured meanwhile (or DONE): the copy read its old bytes before this write can land.
      if (!this.#states.isUncaptured(c)) continue;
      const lo = Math.max(from, c * cs);
      const hi = Math.min(to, (c + 1) * cs);
      // The chunk's pieces are disjoint and in order: add the gaps of [lo, hi) between them.
      let before = -1;
      let piece = cells.first(c);
      let gap = lo;
      while (gap < hi) {
        while (piece !== -1 && cells.end(piece) <= gap) {
          before = piece;
          piece = cells.next(piece);
        }
        const gapEnd = piece === -1 ? hi : Math.min(hi, cells.from(piece));
        if (gapEnd > gap) {
          if (direct && gap === from && gapEnd === to) {
            before = cells.add(c, before, gap, data, cell);
            cellKept = true;
          } else {
            unused -= Math.ceil((gapEnd - gap) / CELL_BYTES);
            before = cells.add(c, before, gap, data.subarray(gap - from, gapEnd - from));
          }
        }
        if (piece === -1) break;
        gap = Math.max(gap, cells.end(piece));
        before = piece;
        piece = cells.next(piece);
      }
    }
    if (direct && !cellKept) cells.free(cell);
    cells.unreserve(unused);
    return true;
  }

  /** Cells the bytes of `[from, to)` in uncaptured chunks not saved yet would take (0: nothing to save). */
  #cellsNeeded(cells: SavedCells, from: number, to: number): number {
    const cs = this.#chunkSize;
    let needed = 0;
    for (let c = Math.floor(from / cs); c * cs < to; c++) {
      if (!this.#states.isUncaptured(c)) continue;
      const hi = Math.min(to, (c + 1) * cs);
      let gap = Math.max(from, c * cs);
      for (let piece = cells.first(c); gap < hi; piece = cells.next(piece)) {
        if (piece === -1) {
          needed += Math.ceil((hi - gap) / CELL_BYTES);
          break;
        }
        if (cells.end(piece) <= gap) continue;
        const gapEnd = Math.min(hi, cells.from(piece));
        if (gapEnd > gap) needed += Math.ceil((gapEnd - gap) / CELL_BYTES);
        gap = Math.max(gap, cells.end(piece));
      }
    }
    return needed;
  }

  /**
   * Lays the saved bytes of chunks `first..first+count-1` over `run`, a
   * copy's read of range bytes from `start`, and forgets them: called as
   * the copy captures those chunks, so no later save adds to them.
   */
  restore(first: number, count: number, start: number, run: Uint8Array): void {
    const cells = this.#cells;
    if (cells === undefined || cells.empty) return;
    for (let c = first; c < first + count; c++) cells.restore(c, start, run);
  }

  /** Drops every saved byte: the job no longer copies (stopped or failed without a map store). */
  clear(): void {
    this.#cleared = true;
    this.#cells?.clear();
    this.#cells = undefined;
  }
}
