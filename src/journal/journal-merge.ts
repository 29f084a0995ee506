import type { JournalWriter } from './journal-writer.js';
import type { PendingRecord } from './record-queue.js';

/**
 * Writes that cover part of a block. Each is merged into the block's current
 * content and journalled as whole blocks, so every record holds whole
 * blocks and the changes table needs one location per block.
 *
 * Ordering rules: a merge takes its queue position (so its sequence number)
 * at the call, like any write; it waits only for earlier merges of the
 * blocks it reads (a map of blocks being merged, empty on the aligned fast
 * path), then takes each of those blocks' newest image from writes queued
 * before it or in flight, or else through the changes table.
 */
export class PartialWrites {
  readonly #writer: JournalWriter;
  readonly #blockSize: number;
  readonly #readLanded: (block: number) => Promise<Uint8Array>;
  /** Blocks being merged, and when the merge's image will be queued. */
  readonly #merging = new Map<number, Promise<void>>();

  /**
   * @param readLanded - reads a block as the changes table shows it, keeping
   *   the location it reads valid meanwhile.
   */
  constructor(
    writer: JournalWriter,
    blockSize: number,
    readLanded: (block: number) => Promise<Uint8Array>,
  ) {
    this.#writer = writer;
    this.#blockSize = blockSize;
    this.#readLanded = readLanded;
  }

  /** Journals the blocks `[offset, offset + data.length)` touches; resolves once landed. */
  async write(offset: number, data: Uint8Array, time: number): Promise<void> {
    const bs = this.#blockSize;
    const end = offset + data.length;
    const first = Math.floor(offset / bs);
    const last = Math.floor((end - 1) / bs);
    const { entry, landed } = this.#writer.reserve(first, last - first + 1, time);
    const readFirst = offset % bs !== 0 || (first === last && end % bs !== 0);
    const readLast = last !== first && end % bs !== 0;
    const prior: Promise<void>[] = [];
    for (const [read, block] of [
      [readFirst, first],
      [readLast, last],
    ] as const) {
      const merging = read ? this.#merging.get(block) : undefined;
      if (merging !== undefined) prior.push(merging);
    }
    let queued!: () => void;
    const mine = new Promise<void>((resolve) => {
      queued = resolve;
    });
    // Every block, not just the edges: a later merge of a middle block reads our image.
    for (let b = first; b <= last; b++) this.#merging.set(b, mine);
    try {
      await Promise.all(prior);
      const image = new Uint8Array((last - first + 1) * bs);
      const [head, tail] = await Promise.all([
        readFirst ? this.#current(entry, first) : undefined,
        readLast ? this.#current(entry, last) : undefined,
      ]);
      if (head !== undefined) image.set(head, 0);
      if (tail !== undefined) image.set(tail, (last - first) * bs);
      image.set(data, offset - first * bs);
      this.#writer.fill(entry, image);
    } catch (err) {
      this.#writer.fail(entry, err);
    } finally {
      for (let b = first; b <= last; b++)
        if (this.#merging.get(b) === mine) this.#merging.delete(b);
      queued();
    }
    return landed;
  }

  /**
   * The content of `block` as of the writes queued before `entry`: the
   * newest of those still queued or in flight, or — if none of them holds
   * the block, none can land later — what the changes table shows.
   */
  #current(entry: PendingRecord, block: number): Promise<Uint8Array> {
    const bs = this.#blockSize;
    for (const e of this.#writer.unlandedBefore(entry)) {
      if (e.data === undefined || block < e.firstBlock || block >= e.firstBlock + e.blocks)
        continue;
      const at = (block - e.firstBlock) * bs;
      return Promise.resolve(e.data.subarray(at, at + bs));
    }
    return this.#readLanded(block);
  }
}
