import { IntegerKeyTable } from '../base/index.js';

/**
 * Each block's first (oldest) preserve record — its epoch, chunk and CRC-32 —
 * where a snapshot read looks it up per block (src/cow/cow-state.ts
 * `locate`): in an {@link IntegerKeyTable}, whose slot holds the block and
 * its record together, a lookup costs about one cache miss; a Map of record
 * lists cost several (its bucket, its entry, the list, the list's elements:
 * about 0.3 µs on the bench machine with the reads' own copies churning the
 * caches).
 */
export class FirstRecords {
  readonly #table = new IntegerKeyTable(3);

  /** Number of blocks with a record. */
  get size(): number {
    return this.#table.size;
  }

  /**
   * Where `block`'s record is: an index for {@link epochAt}, {@link chunkAt}
   * and {@link crcAt}, valid until the next {@link set} or {@link delete};
   * -1 if it has none.
   */
  find(block: number): number {
    return this.#table.find(block);
  }

  /** The epoch of the record at `at` (from {@link find}). */
  epochAt(at: number): number {
    return this.#table.value(at, 0);
  }

  /** The chunk of the record at `at` (from {@link find}). */
  chunkAt(at: number): number {
    return this.#table.value(at, 1);
  }

  /** The CRC-32 of the record at `at` (from {@link find}). */
  crcAt(at: number): number {
    return this.#table.value(at, 2);
  }

  /** Makes `block`'s record (epoch, chunk, crc), replacing any it had. */
  set(block: number, epoch: number, chunk: number, crc: number): void {
    const table = this.#table;
    const at = table.insert(block);
    table.setValue(at, 0, epoch);
    table.setValue(at, 1, chunk);
    table.setValue(at, 2, crc);
  }

  /** Forgets `block`'s record, if it has one. */
  delete(block: number): void {
    this.#table.delete(block);
  }
}
