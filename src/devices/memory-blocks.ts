import type { LentBytes } from '../base/index.js';

/** Blocks per group of the table: one Map entry stands for this many consecutive blocks. */
const GROUP = 256;
/** Bytes of one arena new blocks are cut from (at least one block). */
const ARENA_BYTES = 256 * 1024;

/**
 * The written blocks of a MemoryDevice, by block index (docs/ARCHITECTURE.md,
 * "NBD", "Performance"): a Map of groups of {@link GROUP} consecutive block
 * slots. A device stays sparse (a group exists only once one of its blocks
 * was written, and only written blocks hold a block's bytes), while a large
 * read or write looks the Map up once per group instead of once per block:
 * with a Map of 4 KiB blocks, a 256 KiB NBD read spent as long finding its
 * 64 blocks in a 262,144-entry Map as copying them.
 *
 * New blocks are cut from zeroed arenas of {@link ARENA_BYTES}, in the order
 * they are first written, so a full 1 GiB device of 4 KiB blocks is 4,096
 * ArrayBuffers, not 262,144: every major garbage collection marks and
 * sweeps each ArrayBuffer, and with one per block that was a third of the
 * CPU of a 1 GiB nbdcopy. A slot holds the block's place in that order as
 * a number (0: never written), not a view object per block: a full 1 GiB
 * device kept 262,144 views, about 26 MB of heap for the collector to mark,
 * against 1 MiB of slots outside the heap. A block, once written, is never
 * freed (it may move to another place while lent, below).
 *
 * Blocks written in order sit next to each other in their arena, so a read
 * or write copies each run of such blocks at once (one copy, one view).
 *
 * A run may be lent ({@link lend}): a read-only view of its arena, which
 * stays pinned until the view is released. A write to a block of a pinned
 * arena never changes the lent bytes: the block moves to a new place (its
 * other bytes copied along) and the old place is freed for reuse only once
 * its arena has no pin left. What lending can hold beyond the blocks is
 * thus at most the pinned arenas, each bounded by the reads lent at once.
 */
export class BlockTable {
  /** Group number → the places of its blocks (1 + the block's rank in {@link #arenas}; 0: none). */
  readonly #groups = new Map<number, Uint32Array>();
  readonly #arenas: Uint8Array[] = [];
  /** Per arena, how many lent views of it are out ({@link lend}): writes to a pinned arena move the block. */
  readonly #pins: number[] = [];
  /** Per pinned arena, the places its blocks moved out of, freed once its pins are all released. */
  readonly #retired = new Map<number, number[]>();
  /** Places no block holds, reused before a new one is cut. */
  readonly #free: number[] = [];
  readonly #blockSize: number;
  /** log2 of the blocks one arena holds. */
  readonly #arenaShift: number;
  /** Blocks held. */
  #count = 0;
  /** Places cut from arenas so far (held, retired or free). */
  #places = 0;

  /** A table of blocks of `blockSize` bytes (a power of two). */
  constructor(blockSize: number) {
    this.#blockSize = blockSize;
    this.#arenaShift = Math.log2(Math.max(1, ARENA_BYTES / blockSize));
  }

  /** Blocks held. */
  get size(): number {
    return this.#count;
  }

  /** Places cut from arenas so far: blocks held, and places retired or free after a block moved. */
  get places(): number {
    return this.#places;
  }

  /** Fills `out` with the `out.length` bytes at byte `offset`: every byte, from its block or a zero. */
  read(offset: number, out: Uint8Array): void {
    const bs = this.#blockSize;
    const end = offset + out.length;
    let index = Math.floor(offset / bs);
    let group = this.#groups.get(Math.floor(index / GROUP));
    let slot = index % GROUP;
    let pos = offset;
    // The run being gathered: `runLength` bytes of out from `runOut`, taken
    // from `runArena` at `runAt` (or zeros while runArena is undefined).
    let runArena: Uint8Array | undefined;
    let runAt = 0;
    let runOut = 0;
    let runLength = 0;
    while (pos < end) {
      const within = pos - index * bs;
      const n = Math.min(bs - within, end - pos);
      const place = group === undefined ? 0 : (group[slot] as number);
      let arena: Uint8Array | undefined;
      let at = 0;
      if (place !== 0) {
        arena = this.#arenas[(place - 1) >>> this.#arenaShift];
        at = ((place - 1) & ((1 << this.#arenaShift) - 1)) * bs + within;
      }
      if (
        runLength > 0 &&
        arena === runArena &&
        (arena === undefined || at === runAt + runLength)
      ) {
        runLength += n;
      } else {
        if (runLength > 0) copyOut(out, runOut, runArena, runAt, runLength);
        runArena = arena;
        runAt = at;
        runOut = pos - offset;
        runLength = n;
      }
      pos += n;
      index++;
      if (++slot === GROUP && pos < end) {
        group = this.#groups.get(index / GROUP);
        slot = 0;
      }
    }
    copyOut(out, runOut, runArena, runAt, runLength);
  }

  /**
   * The `length` bytes at byte `offset` as a view of the arena that holds
   * them, if they lie in one run of written blocks of one arena (else
   * undefined: the caller reads them). The arena stays pinned until the
   * returned `release()`: until then no write changes the view's bytes.
   */
  lend(offset: number, length: number): LentBytes | undefined {
    if (length === 0) return undefined;
    const bs = this.#blockSize;
    const first = Math.floor(offset / bs);
    const last = Math.floor((offset + length - 1) / bs);
    const key = Math.floor(first / GROUP);
    if (Math.floor(last / GROUP) !== key) return undefined;
    const group = this.#groups.get(key);
    if (group === undefined) return undefined;
    const place = group[first % GROUP] as number;
    if (place === 0) return undefined;
    const arenaIndex = (place - 1) >>> this.#arenaShift;
    // Places of one arena are consecutive numbers: a run is consecutive places in one arena.
    if ((place - 1 + last - first) >>> this.#arenaShift !== arenaIndex) return undefined;
    for (let i = 1; i <= last - first; i++) {
      if (group[(first + i) % GROUP] !== place + i) return undefined;
    }
    const arena = this.#arenas[arenaIndex] as Uint8Array;
    const at = ((place - 1) & ((1 << this.#arenaShift) - 1)) * bs + (offset - first * bs);
    this.#pins[arenaIndex] = (this.#pins[arenaIndex] as number) + 1;
    let released = false;
    return {
      bytes: arena.subarray(at, at + length),
      release: () => {
        if (released) return;
        released = true;
        this.#unpin(arenaIndex);
      },
    };
  }

  /** Copies `data` to byte `offset`, making (all-zero) every block it touches that held none. */
  write(offset: number, data: Uint8Array): void {
    const bs = this.#blockSize;
    const end = offset + data.length;
    let index = Math.floor(offset / bs);
    let group = this.#groupFor(index);
    let slot = index % GROUP;
    let pos = offset;
    let runArena: Uint8Array | undefined;
    let runAt = 0;
    let runFrom = 0;
    let runLength = 0;
    while (pos < end) {
      const within = pos - index * bs;
      const n = Math.min(bs - within, end - pos);
      let place = group[slot] as number;
      if (place === 0) {
        place = this.#add();
        group[slot] = place;
      } else if ((this.#pins[(place - 1) >>> this.#arenaShift] as number) > 0) {
        // The block is lent: its bytes go on being sent as they are, so the
        // write lands in a copy of it at a new place (whole: no copy needed).
        place = this.#move(place, n < bs);
        group[slot] = place;
      }
      const arena = this.#arenas[(place - 1) >>> this.#arenaShift] as Uint8Array;
      const at = ((place - 1) & ((1 << this.#arenaShift) - 1)) * bs + within;
      if (runLength > 0 && arena === runArena && at === runAt + runLength) {
        runLength += n;
      } else {
        if (runArena !== undefined) copyIn(runArena, runAt, data, runFrom, runLength);
        runArena = arena;
        runAt = at;
        runFrom = pos - offset;
        runLength = n;
      }
      pos += n;
      index++;
      if (++slot === GROUP && pos < end) {
        group = this.#groupFor(index);
        slot = 0;
      }
    }
    if (runArena !== undefined) copyIn(runArena, runAt, data, runFrom, runLength);
  }

  /** Every block held, with its index, in no particular order (a view of each, made here). */
  *entries(): IterableIterator<[number, Uint8Array]> {
    const bs = this.#blockSize;
    const mask = (1 << this.#arenaShift) - 1;
    for (const [key, group] of this.#groups) {
      for (let i = 0; i < GROUP; i++) {
        const place = group[i] as number;
        if (place === 0) continue;
        const arena = this.#arenas[(place - 1) >>> this.#arenaShift] as Uint8Array;
        const at = ((place - 1) & mask) * bs;
        yield [key * GROUP + i, arena.subarray(at, at + bs)];
      }
    }
  }

  /** The group holding block `index`'s slot, made (every slot empty) if it did not exist. */
  #groupFor(index: number): Uint32Array {
    const key = Math.floor(index / GROUP);
    let group = this.#groups.get(key);
    if (group === undefined) {
      group = new Uint32Array(GROUP);
      this.#groups.set(key, group);
    }
    return group;
  }

  /** Makes a new all-zero block and returns its place. */
  #add(): number {
    this.#count++;
    const reused = this.#free.pop();
    if (reused === undefined) return this.#cut();
    const [arena, at] = this.#locate(reused);
    arena.fill(0, at, at + this.#blockSize);
    return reused;
  }

  /**
   * Moves the block at `place` (in a pinned arena) to a free place, its
   * bytes copied along if `keep` (the write covers it only in part), and
   * retires `place` until its arena's pins are all released.
   */
  #move(place: number, keep: boolean): number {
    const moved = this.#free.pop() ?? this.#cut();
    if (keep) {
      const [from, fromAt] = this.#locate(place);
      const [to, toAt] = this.#locate(moved);
      to.set(from.subarray(fromAt, fromAt + this.#blockSize), toAt);
    }
    const arenaIndex = (place - 1) >>> this.#arenaShift;
    const retired = this.#retired.get(arenaIndex);
    if (retired === undefined) this.#retired.set(arenaIndex, [place]);
    else retired.push(place);
    return moved;
  }

  /** A lent view of arena `arenaIndex` was released; with the last, its retired places are free. */
  #unpin(arenaIndex: number): void {
    const pins = (this.#pins[arenaIndex] as number) - 1;
    this.#pins[arenaIndex] = pins;
    if (pins > 0) return;
    const retired = this.#retired.get(arenaIndex);
    if (retired === undefined) return;
    this.#retired.delete(arenaIndex);
    for (const place of retired) this.#free.push(place);
  }

  /** The arena holding `place` and the block's byte offset in it. */
  #locate(place: number): [Uint8Array, number] {
    const arena = this.#arenas[(place - 1) >>> this.#arenaShift] as Uint8Array;
    return [arena, ((place - 1) & ((1 << this.#arenaShift) - 1)) * this.#blockSize];
  }

  /**
   * Cuts a new (all-zero) place from the current arena, or a new arena. A
   * place is a Uint32: 2^32 - 1 blocks of the smallest size (512 bytes)
   * are 2 TiB of memory, past what a process holds.
   */
  #cut(): number {
    const place = ++this.#places;
    if (((place - 1) & ((1 << this.#arenaShift) - 1)) === 0) {
      this.#arenas.push(new Uint8Array(Math.max(ARENA_BYTES, this.#blockSize)));
      this.#pins.push(0);
    }
    return place;
  }
}

/** Copies `length` bytes from `arena` at `at` (zeros if undefined) into `out` at `outAt`. */
function copyOut(
  out: Uint8Array,
  outAt: number,
  arena: Uint8Array | undefined,
  at: number,
  length: number,
): void {
  if (arena === undefined) out.fill(0, outAt, outAt + length);
  else out.set(arena.subarray(at, at + length), outAt);
}

/** Copies `length` bytes of `data` from `from` into `arena` at `at`; the whole of `data` without a view. */
function copyIn(
  arena: Uint8Array,
  at: number,
  data: Uint8Array,
  from: number,
  length: number,
): void {
  if (length === data.length) arena.set(data, at);
  else arena.set(data.subarray(from, from + length), at);
}

/** Blocks in one group of a {@link BlockTable}. */
export const BLOCKS_PER_GROUP = GROUP;
