/** Blocks per group of the table: one Map entry stands for this many consecutive blocks. */
const GROUP = 256;
/** Bytes of one arena new blocks are cut from (at least one block). */
const ARENA_BYTES = 256 * 1024;

/**
 * The written blocks of a MemoryDevice, by block index: a Map of groups of
 * {@link GROUP} consecutive block slots (docs/ARCHITECTURE.md, "NBD",
 * "Performance"). A device stays sparse (a group exists only once one of its blocks
 * was written, and only written blocks hold a block's bytes), while a large
 * read or write looks the Map up once per group instead of once per block:
 * with a Map of 4 KiB blocks, a 256 KiB NBD read spent as long finding its
 * 64 blocks in a 262,144-entry Map as copying them.
 *
 * New blocks are cut from zeroed arenas of {@link ARENA_BYTES}, in the order
 * they are first written, so a full 1 GiB device of 4 KiB blocks is 4,096
 * ArrayBuffers, not 262,144: every major garbage collection marks and
 * sweeps each ArrayBuffer, and with one per block that was a third of the
 * CPU of a 1 GiB nbdcopy. The device stays sparse: at most one arena is
 * partly used, and a block, once written, is never freed.
 */
export class BlockTable {
  readonly #groups = new Map<number, (Uint8Array | undefined)[]>();
  readonly #blockSize: number;
  #count = 0;
  #arena: Uint8Array | undefined;
  #arenaUsed = 0;

  /** A table of blocks of `blockSize` bytes. */
  constructor(blockSize: number) {
    this.#blockSize = blockSize;
  }

  /** Blocks held. */
  get size(): number {
    return this.#count;
  }

  /** The group holding block `index`'s slot (index within it: `index % GROUP`), if any block of it was written. */
  group(index: number): (Uint8Array | undefined)[] | undefined {
    return this.#groups.get(Math.floor(index / GROUP));
  }

  /** The group holding block `index`'s slot, made (every slot empty) if it did not exist. */
  groupFor(index: number): (Uint8Array | undefined)[] {
    const key = Math.floor(index / GROUP);
    let group = this.#groups.get(key);
    if (group === undefined) {
      // Filled with undefined, not holey: the slots stay one packed elements kind.
      group = new Array<Uint8Array | undefined>(GROUP).fill(undefined);
      this.#groups.set(key, group);
    }
    return group;
  }

  /**
   * Makes block `index`, which held none before, a new all-zero block (its
   * slot in `group`, from {@link groupFor}), and returns it.
   */
  add(group: (Uint8Array | undefined)[], index: number): Uint8Array {
    const bs = this.#blockSize;
    let arena = this.#arena;
    if (arena === undefined || this.#arenaUsed + bs > arena.length) {
      arena = new Uint8Array(Math.max(ARENA_BYTES, bs));
      this.#arena = arena;
      this.#arenaUsed = 0;
    }
    const block = arena.subarray(this.#arenaUsed, this.#arenaUsed + bs);
    this.#arenaUsed += bs;
    group[index % GROUP] = block;
    this.#count++;
    return block;
  }

  /** Every block held, with its index, in no particular order. */
  *entries(): IterableIterator<[number, Uint8Array]> {
    for (const [key, group] of this.#groups) {
      for (let i = 0; i < GROUP; i++) {
        const block = group[i];
        if (block !== undefined) yield [key * GROUP + i, block];
      }
    }
  }
}

/** Slot of block `index` within its group (see {@link BlockTable.group}). */
export function slotOf(index: number): number {
  return index % GROUP;
}

/** Blocks in one group of a {@link BlockTable}. */
export const BLOCKS_PER_GROUP = GROUP;
