/**
 * A hash table keyed by block numbers (integers from 0 to 2^53 − 2), with
 * `width` numbers kept beside each key: open addressing over one
 * Float64Array, so a key and its numbers share a slot and a lookup usually
 * touches one cache line. For the per-read lookups of the hot paths, where
 * a JavaScript Map costs several cache misses (its bucket, its entry, the
 * value it points to), and its upkeep as keys come and go more still.
 * Memory follows the number of keys (at most half the slots used), never
 * the device size.
 *
 * Linear probing; a delete shifts the entries after the hole back (no
 * tombstones), so a lookup stops at the first empty slot.
 */
export class IntegerKeyTable {
  /** Numbers per slot: key + 1 (0: empty), then the key's `width` numbers. */
  readonly #stride: number;
  /** The fewest slots the table has; it never shrinks below them. */
  readonly #minSlots: number;
  #slots: Float64Array;
  /** Slot count − 1 (a power of two). */
  #mask: number;
  /** 32 − log2(slot count): the shift that takes a hash to a slot. */
  #shift: number;
  #size = 0;

  /**
   * @param width numbers kept per key.
   * @param minSlots slots to start with and never shrink below: a power of
   *   two, at least twice the keys usually held, so a table whose keys come
   *   and go (locks) never resizes.
   */
  constructor(width: number, minSlots = 64) {
    this.#stride = 1 + width;
    this.#minSlots = minSlots;
    this.#slots = new Float64Array(minSlots * this.#stride);
    this.#mask = minSlots - 1;
    this.#shift = 32 - Math.log2(minSlots);
  }

  /** Number of keys. */
  get size(): number {
    return this.#size;
  }

  /**
   * Where `key`'s numbers are — `at` for {@link value} and {@link setValue},
   * valid until the next {@link insert} or {@link delete} — or -1 if the
   * table does not hold it.
   */
  find(key: number): number {
    const slots = this.#slots;
    const mask = this.#mask;
    const stride = this.#stride;
    const stored = key + 1;
    for (let i = this.#home(key); ; i = (i + 1) & mask) {
      const k = slots[i * stride]!;
      if (k === stored) return i * stride + 1;
      if (k === 0) return -1;
    }
  }

  /** Number `index` of the key at `at` (from {@link find} or {@link insert}). */
  value(at: number, index: number): number {
    return this.#slots[at + index]!;
  }

  /** Sets number `index` of the key at `at` (from {@link find} or {@link insert}). */
  setValue(at: number, index: number, value: number): void {
    this.#slots[at + index] = value;
  }

  /** Adds `key` if absent (its numbers 0); returns where its numbers are, as {@link find}. */
  insert(key: number): number {
    const found = this.find(key);
    if (found >= 0) return found;
    if ((this.#size + 1) * 2 > this.#mask + 1) this.#resize((this.#mask + 1) * 2);
    return this.#place(key);
  }

  /** Adds `key` (its numbers 0) if absent, returning true; false if the table holds it already. */
  add(key: number): boolean {
    if ((this.#size + 1) * 2 > this.#mask + 1) this.#resize((this.#mask + 1) * 2);
    const slots = this.#slots;
    const stride = this.#stride;
    const stored = key + 1;
    let i = this.#home(key);
    for (; slots[i * stride] !== 0; i = (i + 1) & this.#mask) {
      if (slots[i * stride] === stored) return false;
    }
    slots[i * stride] = stored;
    this.#size++;
    return true;
  }

  /** Removes `key` and its numbers, if the table holds it. */
  delete(key: number): void {
    const found = this.find(key);
    if (found < 0) return;
    const slots = this.#slots;
    const mask = this.#mask;
    const stride = this.#stride;
    // Backward shift: each later entry of the run that may sit in the hole
    // (its home is not cyclically after the hole) moves into it, leaving a
    // new hole, so every entry stays reachable from its home without a gap.
    let hole = (found - 1) / stride;
    for (let i = (hole + 1) & mask; slots[i * stride] !== 0; i = (i + 1) & mask) {
      const home = this.#home(slots[i * stride]! - 1);
      if (((i - home) & mask) >= ((i - hole) & mask)) {
        for (let k = 0; k < stride; k++) slots[hole * stride + k] = slots[i * stride + k]!;
        hole = i;
      }
    }
    for (let k = 0; k < stride; k++) slots[hole * stride + k] = 0;
    this.#size--;
    const count = mask + 1;
    if (count > this.#minSlots && this.#size * 8 < count) this.#resize(count / 2);
  }

  /** `key`'s first slot to probe: a multiplicative hash of its 53 bits. */
  #home(key: number): number {
    const high = (key / 0x1_0000_0000) | 0;
    return Math.imul((key | 0) ^ Math.imul(high, 0x85eb_ca6b), 0x9e37_79b1) >>> this.#shift;
  }

  /** Puts absent `key` in its first free slot (room assured); returns where its numbers are. */
  #place(key: number): number {
    const slots = this.#slots;
    const stride = this.#stride;
    let i = this.#home(key);
    while (slots[i * stride] !== 0) i = (i + 1) & this.#mask;
    slots[i * stride] = key + 1;
    this.#size++;
    return i * stride + 1;
  }

  #resize(count: number): void {
    const old = this.#slots;
    const stride = this.#stride;
    this.#slots = new Float64Array(count * stride);
    this.#mask = count - 1;
    this.#shift = 32 - Math.log2(count);
    this.#size = 0;
    for (let from = 0; from < old.length; from += stride) {
      const stored = old[from]!;
      if (stored === 0) continue;
      const at = this.#place(stored - 1);
      for (let k = 1; k < stride; k++) this.#slots[at + k - 1] = old[from + k]!;
    }
  }
}
