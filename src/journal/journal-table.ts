/** Marks a free slot; block numbers are never negative. */
const EMPTY = -1;

/** The table grows (doubles) once more than this fraction of its slots is used. */
const MAX_LOAD = 0.75;

/**
 * log2 of the blocks that share a group: eight adjacent blocks have adjacent
 * home slots, so their eight 8-byte keys fill one 64-byte cache line.
 */
const GROUP_BITS = 3;
const GROUP_MASK = (1 << GROUP_BITS) - 1;

/**
 * The journal's changes table (seed 000, claim 51): block number → a 32-bit value
 * (where the block's newest image sits in the journal, in 512-byte sectors),
 * in two typed arrays with open addressing and linear probing.
 *
 * Adjacent blocks are placed in adjacent slots: a key's home slot is a hash
 * of its group (the key without its low {@link GROUP_BITS} bits) plus its
 * place in the group. A read of several blocks — 4 KiB over 1 KiB blocks is
 * four lookups — then touches a line or two of keys and one of values,
 * not a pair of lines per block: with a million entries the table is
 * 24 MiB, and each line a lookup touches is a cache (and TLB) miss, which
 * was most of what a lookup cost. Groups still spread uniformly, so lone
 * blocks hash as well as before.
 *
 * Memory is 12 bytes a slot and the load stays in (0.375, 0.75] once the
 * table has grown, so an entry costs 16–32 bytes (about 25 at 1 M entries),
 * against well over 80 for a `Map<number, number>`. Keys are integers in
 * `[0, 2^53)`; deleting shifts later entries back, so no tombstones build up
 * and a lookup never walks more than the cluster it lands in.
 */
export class ChangesTable {
  #keys: Float64Array;
  #values: Uint32Array;
  #mask: number;
  #size = 0;

  /** @param capacity - initial slots; rounded up to a power of two (at least 16). */
  constructor(capacity = 1024) {
    let slots = 16;
    while (slots < capacity) slots *= 2;
    this.#keys = new Float64Array(slots).fill(EMPTY);
    this.#values = new Uint32Array(slots);
    this.#mask = slots - 1;
  }

  /** Number of entries. */
  get size(): number {
    return this.#size;
  }

  /** Bytes of memory the table holds. */
  get byteLength(): number {
    return this.#keys.byteLength + this.#values.byteLength;
  }

  /** The value of `key`, or -1 if it has none. */
  get(key: number): number {
    const keys = this.#keys;
    const mask = this.#mask;
    let i = slotOf(key, mask);
    for (;;) {
      const k = keys[i]!;
      if (k === key) return this.#values[i]!;
      if (k === EMPTY) return -1;
      i = (i + 1) & mask;
    }
  }

  /** Sets the value of `key` (an integer in [0, 2^53)) to `value` (a uint32). */
  set(key: number, value: number): void {
    const keys = this.#keys;
    const mask = this.#mask;
    let i = slotOf(key, mask);
    for (;;) {
      const k = keys[i]!;
      if (k === key) {
        this.#values[i] = value;
        return;
      }
      if (k === EMPTY) break;
      i = (i + 1) & mask;
    }
    keys[i] = key;
    this.#values[i] = value;
    if (++this.#size > (mask + 1) * MAX_LOAD) this.#grow();
  }

  /** Removes `key` if its value is `value` (or any value when `value` is omitted); whether it did. */
  delete(key: number, value?: number): boolean {
    const keys = this.#keys;
    const mask = this.#mask;
    let i = slotOf(key, mask);
    for (;;) {
      const k = keys[i]!;
      if (k === EMPTY) return false;
      if (k === key) break;
      i = (i + 1) & mask;
    }
    if (value !== undefined && this.#values[i] !== value) return false;
    // Backward-shift deletion: move each later entry of the cluster into the
    // hole unless its home slot lies cyclically in (hole, entry].
    let j = i;
    for (;;) {
      j = (j + 1) & mask;
      const k = keys[j]!;
      if (k === EMPTY) break;
      const home = slotOf(k, mask);
      const stays = i <= j ? i < home && home <= j : i < home || home <= j;
      if (stays) continue;
      keys[i] = k;
      this.#values[i] = this.#values[j]!;
      i = j;
    }
    keys[i] = EMPTY;
    this.#size--;
    return true;
  }

  /** Calls `fn` for every entry, in no particular order. The table must not change meanwhile. */
  forEach(fn: (key: number, value: number) => void): void {
    const keys = this.#keys;
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i]!;
      if (k !== EMPTY) fn(k, this.#values[i]!);
    }
  }

  /** Every key, ascending, in a new array. */
  sortedKeys(): Float64Array {
    const out = new Float64Array(this.#size);
    let n = 0;
    const keys = this.#keys;
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i]!;
      if (k !== EMPTY) out[n++] = k;
    }
    return out.sort();
  }

  /** An independent copy (two array copies, no rehashing). */
  clone(): ChangesTable {
    const copy = new ChangesTable(16);
    copy.#keys = this.#keys.slice();
    copy.#values = this.#values.slice();
    copy.#mask = this.#mask;
    copy.#size = this.#size;
    return copy;
  }

  #grow(): void {
    const oldKeys = this.#keys;
    const oldValues = this.#values;
    const slots = oldKeys.length * 2;
    const keys = new Float64Array(slots).fill(EMPTY);
    const values = new Uint32Array(slots);
    const mask = slots - 1;
    for (let j = 0; j < oldKeys.length; j++) {
      const k = oldKeys[j]!;
      if (k === EMPTY) continue;
      let i = slotOf(k, mask);
      while (keys[i] !== EMPTY) i = (i + 1) & mask;
      keys[i] = k;
      values[i] = oldValues[j]!;
    }
    this.#keys = keys;
    this.#values = values;
    this.#mask = mask;
  }
}

/**
 * Home slot of `key`: murmur3's finalizer over its group (both 32-bit
 * halves), times the group size, plus the key's place in its group; masked.
 * `>>> 0` takes the low 32 bits of a key up to 2^53 exactly, so the group
 * and the place come out with integer operations only.
 */
function slotOf(key: number, mask: number): number {
  const low = key >>> 0;
  let h = (low >>> GROUP_BITS) ^ Math.imul((key / 0x1_0000_0000) >>> 0, 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (((h ^ (h >>> 16)) << GROUP_BITS) | (low & GROUP_MASK)) & mask;
}
