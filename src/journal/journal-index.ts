import { ChangesTable } from './journal-table.js';

/**
 * Every record still in the journal, by sequence number, in four typed
 * columns (24 bytes a record): which blocks it holds, where its data starts
 * in the ring, and when its write was called. It is what `pointInTime`
 * views are built from; the changes table only knows the newest image.
 *
 * Invariants: sequence numbers are consecutive from `firstSeq` to `lastSeq`;
 * times never decrease (the writer clamps them), so a time maps to a
 * sequence number by binary search.
 */
export class RecordIndex {
  #firstBlock = new Float64Array(64);
  #blocks = new Uint32Array(64);
  #sector = new Uint32Array(64);
  #time = new Float64Array(64);
  /** Sequence number of array slot 0. */
  #base: number;
  /** First live slot. */
  #start = 0;
  /** One past the last live slot. */
  #end = 0;

  /** @param firstSeq - the sequence number the next pushed record will have. */
  constructor(firstSeq: number) {
    this.#base = firstSeq;
  }

  /** The oldest record held (greater than `lastSeq` when empty). */
  get firstSeq(): number {
    return this.#base + this.#start;
  }

  /** The newest record held (`firstSeq - 1` when empty). */
  get lastSeq(): number {
    return this.#base + this.#end - 1;
  }

  /** Appends record `lastSeq + 1`. */
  push(firstBlock: number, blocks: number, sector: number, time: number): void {
    if (this.#end === this.#time.length) this.#makeRoom();
    const i = this.#end++;
    this.#firstBlock[i] = firstBlock;
    this.#blocks[i] = blocks;
    this.#sector[i] = sector;
    this.#time[i] = time;
  }

  /** Forgets every record up to and including `seq`. */
  dropThrough(seq: number): void {
    this.#start = Math.min(this.#end, Math.max(this.#start, seq - this.#base + 1));
  }

  /** When record `seq` (held) was written. */
  timeOf(seq: number): number {
    return this.#time[seq - this.#base]!;
  }

  /** The newest record whose time is at or before `time`, or `firstSeq - 1` if none is. */
  seqAt(time: number): number {
    let lo = this.#start;
    let hi = this.#end;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.#time[mid]! <= time) lo = mid + 1;
      else hi = mid;
    }
    return this.#base + lo - 1;
  }

  /**
   * The changes table as of record `seq`: each block written by a held record
   * up to `seq`, mapped to the sector of its newest image.
   */
  tableAt(seq: number, sectorsPerBlock: number): ChangesTable {
    return this.tableBetween(this.firstSeq, seq, sectorsPerBlock);
  }

  /**
   * What records `from..to` (held ones) changed: each block they write,
   * mapped to the sector of its newest image among them.
   */
  tableBetween(from: number, to: number, sectorsPerBlock: number): ChangesTable {
    const table = new ChangesTable();
    const last = Math.min(this.#end, to - this.#base + 1);
    for (let i = Math.max(this.#start, from - this.#base); i < last; i++) {
      const first = this.#firstBlock[i]!;
      const sector = this.#sector[i]!;
      const n = this.#blocks[i]!;
      for (let b = 0; b < n; b++) table.set(first + b, sector + b * sectorsPerBlock);
    }
    return table;
  }

  /** Drops the dead front, or doubles the columns if more than half is live. */
  #makeRoom(): void {
    const live = this.#end - this.#start;
    const capacity = live * 2 > this.#time.length ? this.#time.length * 2 : this.#time.length;
    const move = <T extends Float64Array | Uint32Array>(column: T, make: (n: number) => T): T => {
      const next = make(capacity);
      next.set(column.subarray(this.#start, this.#end));
      return next;
    };
    this.#firstBlock = move(this.#firstBlock, (n) => new Float64Array(n));
    this.#blocks = move(this.#blocks, (n) => new Uint32Array(n));
    this.#sector = move(this.#sector, (n) => new Uint32Array(n));
    this.#time = move(this.#time, (n) => new Float64Array(n));
    this.#base += this.#start;
    this.#start = 0;
    this.#end = live;
  }
}

/**
 * A record reached the journal (or was replayed): index it, and point the
 * table entries of its `blocks` blocks from `firstBlock` at it (a note has
 * none). Numbers, not a record object, so replay allocates nothing per record.
 */
export function addRecord(
  index: RecordIndex,
  table: ChangesTable,
  sectorsPerBlock: number,
  firstBlock: number,
  blocks: number,
  sector: number,
  time: number,
): void {
  index.push(firstBlock, blocks, sector, time);
  for (let b = 0; b < blocks; b++) table.set(firstBlock + b, sector + b * sectorsPerBlock);
}
