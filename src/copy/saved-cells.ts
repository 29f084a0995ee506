/** Bytes per cell: a saved piece takes whole cells (a 4 KiB write's old bytes, one). */
export const CELL_BYTES = 4096;
/** Cells per slab: slabs of 1 MiB, allocated as cells are first needed. */
const SLAB_CELLS = 256;
/** Bytes of a whole slab. */
const SLAB_BYTES = SLAB_CELLS * CELL_BYTES;
/** The most slabs kept for later stores (64 MiB: one job's default budget). */
const SPARE_SLABS = 64;
/** End of a list (of free cells, a chunk's pieces, a piece's cells). */
const NONE = -1;

/**
 * Whole slabs of cleared stores, for the next store's cells (fewer fresh
 * pages to fault in). Held only through a WeakRef: the next full garbage
 * collection frees the slabs no store took, as it would have freed them
 * unpooled, so an ended job keeps no memory for long.
 */
let spareSlabs: WeakRef<Uint8Array[]> | undefined;

/**
 * The storage behind `saved-old-bytes.ts`: pieces of old bytes, each the
 * bytes of range `[from, from + length)` within one chunk, kept in 4 KiB
 * cells of a few 1 MiB slabs and listed per chunk in ascending order. Its
 * bookkeeping lives in typed arrays sized once for the cell budget, so a
 * saved piece costs no JavaScript object and no ArrayBuffer of its own:
 * one fresh buffer per saved write, held until the copier reached its
 * chunk, kept the garbage collector marking tens of thousands of them
 * (docs/ARCHITECTURE.md, "Copy job pacing").
 *
 * Cells are taken from a budget: {@link reserve} sets aside the most a
 * save can need before its read, so adding its pieces never runs out.
 * Slabs stay allocated (at most the budget's bytes) until {@link clear},
 * which leaves them to the next store (`spareSlabs`) unless a read may
 * still be writing into one of its cells.
 */
export class SavedCells {
  /** The budget, in cells. */
  readonly #capacity: number;
  #slabs: Uint8Array[] = [];
  /** Free cells, a stack; cells never made are past `#made`. */
  readonly #freeCells: Int32Array;
  #freeTop = 0;
  #made = 0;
  /** Per cell: the next cell of its piece. */
  readonly #cellNext: Int32Array;
  /** Cells held by pieces, and set aside by {@link reserve}. */
  #used = 0;
  /** Cells {@link take}n and not yet added or freed: a read may be writing into them. */
  #taken = 0;
  #reserved = 0;
  /** Per piece (a piece has a cell of its own, so a cell's index names it): */
  readonly #pieceFrom: Float64Array;
  readonly #pieceLength: Int32Array;
  /** The next piece of the same chunk, in ascending order. */
  readonly #pieceNext: Int32Array;
  /** Per chunk with pieces: its first piece. */
  readonly #heads = new Map<number, number>();

  /** @param limit - the most bytes of cells held at once. */
  constructor(limit: number) {
    const capacity = Math.max(1, Math.floor(limit / CELL_BYTES));
    this.#capacity = capacity;
    this.#freeCells = new Int32Array(capacity);
    this.#cellNext = new Int32Array(capacity);
    this.#pieceFrom = new Float64Array(capacity);
    this.#pieceLength = new Int32Array(capacity);
    this.#pieceNext = new Int32Array(capacity);
  }

  /** Bytes of cells held by pieces or set aside. */
  get bytes(): number {
    return (this.#used + this.#reserved) * CELL_BYTES;
  }

  /** Whether any chunk has pieces. */
  get empty(): boolean {
    return this.#heads.size === 0;
  }

  /** Sets aside `cells` cells for pieces about to be added; false, setting none aside, past the budget. */
  reserve(cells: number): boolean {
    if (this.#used + this.#reserved + cells > this.#capacity) return false;
    this.#reserved += cells;
    return true;
  }

  /** Returns `cells` set aside and not used. */
  unreserve(cells: number): void {
    this.#reserved -= cells;
  }

  /** Takes one set-aside cell for a caller's read: {@link view} it, then {@link add} it as a piece or {@link free} it. */
  take(): number {
    this.#reserved--;
    this.#used++;
    this.#taken++;
    return this.#newCell();
  }

  /** The bytes of cell `cell` (a view of its slab). */
  view(cell: number, length = CELL_BYTES): Uint8Array {
    const slab = this.#slabs[Math.floor(cell / SLAB_CELLS)]!;
    const at = (cell % SLAB_CELLS) * CELL_BYTES;
    return slab.subarray(at, at + length);
  }

  /** Frees a cell taken by {@link take} that became no piece. */
  free(cell: number): void {
    this.#freeCells[this.#freeTop++] = cell;
    this.#used--;
    this.#taken--;
  }

  /** The first piece of `chunk`, or -1. */
  first(chunk: number): number {
    return this.#heads.get(chunk) ?? NONE;
  }

  /** The piece after `piece` in its chunk, or -1. */
  next(piece: number): number {
    return this.#pieceNext[piece]!;
  }

  /** Range offset of a piece's first byte. */
  from(piece: number): number {
    return this.#pieceFrom[piece]!;
  }

  /** Range offset just past a piece's last byte. */
  end(piece: number): number {
    return this.#pieceFrom[piece]! + this.#pieceLength[piece]!;
  }

  /**
   * Adds `bytes` as the piece of range bytes from `from` of `chunk`, right
   * after piece `after` (-1: first), in set-aside cells: `cell`, a taken
   * cell `bytes` is already a view of, or copies into new cells. Returns
   * the piece, so the next one of the same chunk can follow it.
   */
  add(chunk: number, after: number, from: number, bytes: Uint8Array, cell = NONE): number {
    let piece: number;
    if (cell !== NONE) {
      piece = cell;
      this.#cellNext[cell] = NONE;
      this.#taken--;
    } else {
      const cells = Math.ceil(bytes.length / CELL_BYTES);
      this.#reserved -= cells;
      this.#used += cells;
      piece = NONE;
      let last = NONE;
      for (let at = 0; at < bytes.length; at += CELL_BYTES) {
        const c = this.#newCell();
        const part = bytes.subarray(at, Math.min(bytes.length, at + CELL_BYTES));
        this.view(c, part.length).set(part);
        this.#cellNext[c] = NONE;
        if (last === NONE) piece = c;
        else this.#cellNext[last] = c;
        last = c;
      }
    }
    this.#pieceFrom[piece] = from;
    this.#pieceLength[piece] = bytes.length;
    if (after === NONE) {
      this.#pieceNext[piece] = this.first(chunk);
      this.#heads.set(chunk, piece);
    } else {
      this.#pieceNext[piece] = this.#pieceNext[after]!;
      this.#pieceNext[after] = piece;
    }
    return piece;
  }

  /** Lays every piece of `chunk` over `run` (range bytes from `start`), then frees them. */
  restore(chunk: number, start: number, run: Uint8Array): void {
    let piece = this.first(chunk);
    if (piece === NONE) return;
    this.#heads.delete(chunk);
    while (piece !== NONE) {
      let left = this.#pieceLength[piece]!;
      let at = this.#pieceFrom[piece]! - start;
      for (let c = piece; c !== NONE; ) {
        const n = Math.min(left, CELL_BYTES);
        run.set(this.view(c, n), at);
        at += n;
        left -= n;
        const following = this.#cellNext[c]!;
        this.#freeCells[this.#freeTop++] = c;
        this.#used--;
        c = following;
      }
      piece = this.#pieceNext[piece]!;
    }
  }

  /**
   * Drops every piece, every cell set aside and the slabs: the store is not
   * used again. Its whole slabs go to the next store, unless a cell is still
   * taken: its read may land after this, in memory another store would own.
   */
  clear(): void {
    if (this.#taken === 0) {
      let spares = spareSlabs?.deref();
      if (spares === undefined) {
        spares = [];
        spareSlabs = new WeakRef(spares);
      }
      for (const slab of this.#slabs) {
        if (slab.length === SLAB_BYTES && spares.length < SPARE_SLABS) spares.push(slab);
      }
    }
    this.#heads.clear();
    this.#slabs = [];
    this.#made = 0;
    this.#freeTop = 0;
    this.#used = 0;
    this.#reserved = 0;
  }

  #newCell(): number {
    if (this.#freeTop > 0) return this.#freeCells[--this.#freeTop]!;
    const cell = this.#made++;
    if (cell % SLAB_CELLS === 0) {
      const bytes = Math.min(SLAB_CELLS, this.#capacity - cell) * CELL_BYTES;
      // A spare holds an ended job's bytes: every cell is written before it is read.
      const spare = bytes === SLAB_BYTES ? spareSlabs?.deref()?.pop() : undefined;
      // A SharedArrayBuffer, not an ArrayBuffer: V8 counts a fresh
      // ArrayBuffer as external memory, and a job's first second of saves
      // (up to its whole budget) set off collections for "external memory
      // pressure" that free nothing, the slabs being live, while their
      // marking held the event loop for tens of milliseconds on a large
      // heap (docs/ARCHITECTURE.md, "Copy job pacing").
      this.#slabs.push(spare ?? new Uint8Array(new SharedArrayBuffer(bytes)));
    }
    return cell;
  }
}
