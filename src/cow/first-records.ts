import { IntegerKeyTable } from '../base/index.js';
import type { ChunkRef } from './cow-state.js';

/**
 * Each block's first (oldest) preserve record — its epoch, chunk and CRC-32 —
 * where a snapshot read looks it up per block (src/cow/cow-state.ts
 * `locate`): in an {@link IntegerKeyTable}, whose slot holds the block and
 * its record together, a lookup costs about one cache miss; a Map of record
 * lists cost several (its bucket, its entry, the list, the list's elements:
 * about 0.3 µs on the bench machine with the reads' own copies churning the
 * caches). CowState keeps it equal to the head of each block's list.
 */
export class FirstRecords {
  readonly #table = new IntegerKeyTable(3);

  /** Number of blocks with a record. */
  get size(): number {
    return this.#table.size;
  }

  /**
   * Makes `record` the first of `block`, which had none, and returns the
   * block's new list: `[epoch, chunk, crc]`.
   */
  start(block: number, record: { epoch: number; chunk: number; crc: number }): number[] {
    const list = [record.epoch, record.chunk, record.crc];
    this.follow(block, list);
    return list;
  }

  /**
   * Makes `block`'s record the head of `list` (flattened `[epoch, chunk,
   * crc, ...]`), or forgets it if `list` is empty.
   */
  follow(block: number, list: readonly number[]): void {
    const table = this.#table;
    if (list.length === 0) {
      table.delete(block);
      return;
    }
    const at = table.insert(block);
    table.setValue(at, 0, list[0]!);
    table.setValue(at, 1, list[1]!);
    table.setValue(at, 2, list[2]!);
  }

  /**
   * `block`'s first record if it serves snapshot `seq` (its epoch is `seq`
   * or later: it serves every snapshot up to its epoch); undefined if the
   * block has no record (the origin holds it); null if the record is older
   * than `seq`, so a later record of the block's list is the answer.
   */
  serving(block: number, seq: number): ChunkRef | undefined | null {
    const table = this.#table;
    const at = table.find(block);
    if (at < 0) return undefined;
    if (table.value(at, 0) < seq) return null;
    return { chunk: table.value(at, 1), crc: table.value(at, 2) };
  }
}
