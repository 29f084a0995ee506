/**
 * Each block's first (oldest) preserve record — its epoch, chunk and CRC-32 —
 * in one open-addressing hash table over a Float64Array: what a snapshot read
 * looks up per block (src/cow/cow-state.ts `locate`). A JavaScript Map of
 * record lists costs a snapshot read several cache misses (the Map's bucket,
 * its entry, the list, the list's elements: about 0.3 µs on the bench machine
 * with the reads' own copies churning the caches); here the block's number
 * and its record share one 32-byte slot, so a lookup usually touches one
 * cache line. Memory follows the number of blocks with records (32 bytes a
 * slot, at most half the slots used), not the device size.
 *
 * Linear probing; deletion shifts the entries after the hole back (no
 * tombstones), so a lookup stops at the first empty slot.
 */
export class FirstRecords {
  /** Slots of {@link SLOT} numbers: block + 1 (0: empty), epoch, chunk, crc. */
  #slots: Float64Array;
  /** Slot count − 1 (a power of two). */
  #mask: number;
  /** 32 − log2(slot count): the shift that takes a hash to a slot. */
  #shift: number;
  #size = 0;

  constructor() {
    this.#slots = new Float64Array(MIN_SLOTS * SLOT);
    this.#mask = MIN_SLOTS - 1;
    this.#shift = 32 - Math.log2(MIN_SLOTS);
  }

  /** Number of blocks with a record. */
  get size(): number {
    return this.#size;
  }

  /**
   * Where `block`'s record is: an index for {@link epochAt}, {@link chunkAt}
   * and {@link crcAt}, valid until the next {@link set} or {@link delete};
   * -1 if it has none.
   */
  find(block: number): number {
    const slots = this.#slots;
    const mask = this.#mask;
    const key = block + 1;
    for (let i = this.#home(block); ; i = (i + 1) & mask) {
      const at = i * SLOT;
      const k = slots[at]!;
      if (k === key) return at;
      if (k === 0) return -1;
    }
  }

  /** The epoch of the record at `at` (from {@link find}). */
  epochAt(at: number): number {
    return this.#slots[at + 1]!;
  }

  /** The chunk of the record at `at` (from {@link find}). */
  chunkAt(at: number): number {
    return this.#slots[at + 2]!;
  }

  /** The CRC-32 of the record at `at` (from {@link find}). */
  crcAt(at: number): number {
    return this.#slots[at + 3]!;
  }

  /** Makes `block`'s record (epoch, chunk, crc), replacing any it had. */
  set(block: number, epoch: number, chunk: number, crc: number): void {
    let at = this.find(block);
    if (at < 0) {
      if ((this.#size + 1) * 2 > this.#mask + 1) this.#resize((this.#mask + 1) * 2);
      const slots = this.#slots;
      let i = this.#home(block);
      while (slots[i * SLOT] !== 0) i = (i + 1) & this.#mask;
      at = i * SLOT;
      slots[at] = block + 1;
      this.#size++;
    }
    const slots = this.#slots;
    slots[at + 1] = epoch;
    slots[at + 2] = chunk;
    slots[at + 3] = crc;
  }

  /** Forgets `block`'s record, if it has one. */
  delete(block: number): void {
    const at = this.find(block);
    if (at < 0) return;
    const slots = this.#slots;
    const mask = this.#mask;
    // Backward shift: each later entry of the run that may sit in the hole
    // (its home is not cyclically after the hole) moves into it, leaving a
    // new hole, so every entry stays reachable from its home without a gap.
    let hole = at / SLOT;
    for (let i = (hole + 1) & mask; slots[i * SLOT] !== 0; i = (i + 1) & mask) {
      const home = this.#home(slots[i * SLOT]! - 1);
      if (((i - home) & mask) >= ((i - hole) & mask)) {
        slots.copyWithin(hole * SLOT, i * SLOT, i * SLOT + SLOT);
        hole = i;
      }
    }
    slots.fill(0, hole * SLOT, hole * SLOT + SLOT);
    this.#size--;
    const count = mask + 1;
    if (count > MIN_SLOTS && this.#size * 8 < count) this.#resize(count / 2);
  }

  /** `block`'s first slot to probe: a multiplicative hash of its 53 bits. */
  #home(block: number): number {
    const high = (block / 0x1_0000_0000) | 0;
    return Math.imul((block | 0) ^ Math.imul(high, 0x85eb_ca6b), 0x9e37_79b1) >>> this.#shift;
  }

  #resize(count: number): void {
    const old = this.#slots;
    this.#slots = new Float64Array(count * SLOT);
    this.#mask = count - 1;
    this.#shift = 32 - Math.log2(count);
    this.#size = 0;
    for (let at = 0; at < old.length; at += SLOT) {
      const key = old[at]!;
      if (key !== 0) this.set(key - 1, old[at + 1]!, old[at + 2]!, old[at + 3]!);
    }
  }
}

/** Numbers per slot: block + 1, epoch, chunk, crc. */
const SLOT = 4;
/** Slots of an empty table (a power of two). */
const MIN_SLOTS = 64;
