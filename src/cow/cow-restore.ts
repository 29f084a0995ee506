import type { LockTable } from '../base/index.js';
import { io } from '../base/index.js';
import type { Extent } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import type { CowStore } from './cow-store.js';
import { restorePieces } from './restore-pieces.js';

/** Blocks restored concurrently: enough to keep the devices busy, few enough to bound memory. */
const RESTORE_BATCH = 64;

/**
 * Restoring a snapshot over the origin of a copy-on-write device. The
 * device runs it with every block held and origin reads shut out, so no one
 * sees it half done; a begin record makes it atomic across a power cut
 * (`open` runs {@link CowRestore.finish} again).
 */
export class CowRestore {
  readonly #cow: CowStore;
  readonly #locks: LockTable;
  readonly #blockSize: number;
  readonly #preserve: (first: number, last: number) => Promise<void>;
  readonly #progress: (done: number, total: number) => void;

  /**
   * @param preserve - preserves what live snapshots need of `first..last`
   *   (block locks held) and reports each copy.
   * @param progress - reports restored pieces after each batch.
   */
  constructor(
    cow: CowStore,
    locks: LockTable,
    blockSize: number,
    preserve: (first: number, last: number) => Promise<void>,
    progress: (done: number, total: number) => void,
  ) {
    this.#cow = cow;
    this.#locks = locks;
    this.#blockSize = blockSize;
    this.#preserve = preserve;
    this.#progress = progress;
  }

  /**
   * Restores snapshot `id` (within `extents` if given); the caller holds
   * every block and the read gate. Fails with `ENOSPC`, before changing
   * anything, if the store lacks room to preserve what the restore
   * overwrites; else durably records the begin and runs {@link finish}.
   */
  async run(id: string, extents: readonly Extent[] | undefined): Promise<void> {
    const state = this.#cow.state;
    const seq = state.byId(id).seq;
    const pieces = restorePieces(state, seq, extents, this.#blockSize);
    const blocks = new Set(pieces.map((p) => p.block));
    const needed = [...blocks].filter((b) => state.needsPreserve(b)).length;
    if (needed > state.allocator.free) {
      throw new BlockDeviceError(
        'ENOSPC',
        `restore of ${id} must preserve ${needed} block(s); the store has ${state.allocator.free} free`,
      );
    }
    await this.#cow.log.append([{ kind: 'restore-begin', seq, extents }]);
    try {
      await this.finish(seq, extents);
    } catch (err) {
      // Half done, with its begin durable: the next open finishes it. A write
      // acknowledged meanwhile would be overwritten then, so the device
      // refuses writes and snapshot operations until reopened (fail-stop).
      this.#cow.log.stop(
        new BlockDeviceError(
          'EIO',
          `restore of ${id} failed part way; the device refuses writes until reopened, and open finishes the restore`,
          { cause: err },
        ),
      );
      throw err;
    }
  }

  /** Finishes a restore a power cut interrupted (its begin record is durable, its end not). */
  async recover(): Promise<void> {
    const { restoring, restoringExtents } = this.#cow.state;
    // The caller may have been told nothing yet, but the origin may be half
    // restored: finish it.
    if (restoring !== undefined) await this.finish(restoring, restoringExtents);
  }

  /**
   * Writes snapshot `seq`'s content over every byte it holds (within
   * `extents`) where the origin may differ, through the ordinary
   * preserve-then-write path, so other snapshots stay intact; then makes it
   * durable and records the end. Idempotent, which is what lets `open`
   * simply run it again after a power cut.
   */
  async finish(seq: number, extents: readonly Extent[] | undefined): Promise<void> {
    const cow = this.#cow;
    const pieces = restorePieces(cow.state, seq, extents, this.#blockSize);
    for (let i = 0; i < pieces.length; i += RESTORE_BATCH) {
      const batch = pieces.slice(i, i + RESTORE_BATCH);
      await Promise.all(
        batch.map(async ({ block, offset, length }) => {
          // Two pieces of one block (a partial restore's ranges) must not
          // both preserve it: the second waits and finds it preserved.
          const unlock = await this.#locks.acquire(block, block);
          try {
            const content = await cow.readView(seq, offset, length);
            await this.#preserve(block, block);
            await io('origin write', cow.origin.write(offset, content));
          } finally {
            unlock();
          }
        }),
      );
      this.#progress(i + batch.length, pieces.length);
    }
    await io('origin flush', cow.origin.flush());
    await cow.log.append([{ kind: 'restore-end', seq }]);
  }
}
