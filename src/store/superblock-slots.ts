import { io } from '../base/index.js';
import type { BlockDevice } from '../device.js';
import { encodeSuperblock, SUPERBLOCK_SLOT, type Superblock } from './superblock.js';

/**
 * The newest superblock of a store and how the next ones are written: each
 * generation to its own slot (`generation % 2`), over the generation before
 * the newest.
 *
 * Why a write needs no flush before it, even over a slot whose content was
 * never flushed (an attestation is written unflushed): a superblock is one
 * sector, which a disk writes whole or not at all. After a power cut each
 * slot holds some generation it was given, every one of them valid, and
 * the newest valid one wins; a generation lost that way only changed marks
 * and counts, never the table (a checkpoint flushes its table, and with it
 * every earlier write, before its superblock).
 */
export class SuperblockSlots {
  readonly #store: BlockDevice;
  #current: Superblock;

  constructor(store: BlockDevice, current: Superblock) {
    this.#store = store;
    this.#current = current;
  }

  /** The newest superblock written (or read at open). */
  get current(): Superblock {
    return this.#current;
  }

  /**
   * Writes `changes` over the current superblock as the next generation;
   * with `flush` (the default) it is durable when this resolves.
   * @throws `EIO` naming `what`; the current superblock is then unchanged.
   */
  async update(changes: Partial<Superblock>, what: string, flush = true): Promise<void> {
    const next: Superblock = {
      ...this.#current,
      ...changes,
      generation: this.#current.generation + 1,
    };
    const slot = (next.generation % 2) * SUPERBLOCK_SLOT;
    await io(what, this.#store.write(slot, encodeSuperblock(next)));
    if (flush) await io(what, this.#store.flush());
    this.#current = next;
  }

  /** Flushes the store. */
  async flush(what: string): Promise<void> {
    await io(what, this.#store.flush());
  }
}
