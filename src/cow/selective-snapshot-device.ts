import { checkOptions, checkRange, withClaimed } from '../base/index.js';
import type { BlockDevice, Extent, Snapshot, SnapshotOptions } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import { checkSnapshotOptions } from '../snapshot/index.js';
import { type BlockRanges, designatedBlocks } from './block-ranges.js';
import { CowDeviceBase, type ExcludedReads } from './cow-device-base.js';
import { CowStore, checkCowDevices } from './cow-store.js';
import { mergeExtents } from './restore-pieces.js';

/** Options for {@link SelectiveSnapshotDevice.open}. */
export interface SelectiveSnapshotDeviceOpenOptions {
  /**
   * What reading bytes a snapshot does not hold does: `'error'` fails with
   * `EEXCLUDED`; `'zero'` returns zeros there, for tools that must read a
   * whole device. @default 'error'
   */
  excludedReads?: 'error' | 'zero' | undefined;
}

/** Options for {@link SelectiveSnapshotDevice.create}. */
export interface SelectiveSnapshotDeviceOptions extends SelectiveSnapshotDeviceOpenOptions {
  /**
   * Most snapshots that may exist at once; sizes the metadata reserved on the
   * store. `snapshot()` beyond it fails with `ENOSPC`. @default 64
   */
  maxSnapshots?: number | undefined;
  /**
   * Most runs of consecutive blocks one snapshot's designation (include minus
   * exclude, merged) or one partial restore's ranges may have; sizes the
   * metadata. Beyond it, `snapshot()` and `restore()` fail with `EINVAL`.
   * @default 256
   */
  maxRuns?: number | undefined;
  /**
   * Format the store even if it already holds a blocksnap format (a COW
   * store, a journal or a copy map), erasing it. Without it `create` refuses
   * such a store with `EBUSY` and changes nothing. @default false
   */
  force?: boolean | undefined;
}

/** Options for {@link SelectiveSnapshotDevice.snapshot}. */
export interface SelectiveSnapshotOptions extends SnapshotOptions {
  /**
   * Byte ranges the snapshot holds. Widened to whole blocks: a
   * block an include range touches is held. @default the whole device
   */
  include?: readonly Extent[] | undefined;
  /**
   * Byte ranges taken back out of `include`. Narrowed to whole blocks: only
   * blocks an exclude range covers entirely are left out, so every included
   * byte stays held. @default none
   */
  exclude?: readonly Extent[] | undefined;
}

/** Options for {@link SelectiveSnapshotDevice.restore}. */
export interface SelectiveRestoreOptions {
  /**
   * Restore only these bytes of what the snapshot holds (exact to the byte);
   * everything outside them is left alone. @default everything it holds
   */
  ranges?: readonly Extent[] | undefined;
}

/**
 * Snapshots of user-designated ranges of an origin device: each
 * snapshot holds only the blocks its `include`/`exclude` ranges designate,
 * preserves only those, only on their first change after it,
 * and keeps a table of its changed blocks — the same
 * copy-on-write store, lookup table and crash-safe metadata as
 * {@link CowSnapshotDevice}, which is this device with every block designated.
 *
 * Guarantees: taking a snapshot drains and briefly holds only the writes
 * that touch its designated blocks; I/O anywhere else never waits.
 * Several snapshots, each with its own ranges and time, read-only or
 * writable; writes to a writable snapshot never reach the origin and origin
 * writes never reach a snapshot. Reading bytes a
 * snapshot does not hold is `EEXCLUDED` (or zeros, with `excludedReads:
 * 'zero'`); writing them through a writable snapshot is `EEXCLUDED`.
 * `restore` puts designated bytes back and leaves all else, snapshots
 * included, intact. Durability and recovery follow
 * snapshot rules 4–5, and `changedExtents` stays exact after a power cut.
 */
export class SelectiveSnapshotDevice extends CowDeviceBase {
  private constructor(cow: CowStore, excludedReads: ExcludedReads) {
    super('SelectiveSnapshotDevice', cow, excludedReads);
  }

  /**
   * Formats `store` for selective snapshots of `origin` and opens the
   * device. Resolves only once the format is durable. The device owns both
   * devices from then on: its `close()` flushes and closes them.
   * @throws `EINVAL` for bad options, a read-only store, or a store too small
   *   to hold metadata and one chunk; `EBUSY` (nothing written) if the store
   *   already holds a blocksnap format, unless `force`; `EIO` if the store
   *   fails.
   */
  static async create(
    origin: BlockDevice,
    store: BlockDevice,
    options: SelectiveSnapshotDeviceOptions = {},
  ): Promise<SelectiveSnapshotDevice> {
    checkCowDevices(origin, store);
    checkOptions(
      options,
      { excludedReads: 'string', maxSnapshots: 'number', maxRuns: 'number', force: 'boolean' },
      'SelectiveSnapshotDevice.create',
    );
    const excludedReads = checkExcludedReads(options);
    const maxSnapshots = checkLimit('maxSnapshots', options.maxSnapshots ?? 64, 65536);
    const maxRuns = checkLimit('maxRuns', options.maxRuns ?? 256, 4000);
    return withClaimed([origin, store] as const, 'SelectiveSnapshotDevice', async ([o, s]) => {
      await CowStore.format(o, s, maxSnapshots, maxRuns, options.force);
      return SelectiveSnapshotDevice.#openOwned(o, s, excludedReads);
    });
  }

  /**
   * Opens a store formatted by {@link SelectiveSnapshotDevice.create}: reads
   * the metadata back, drops a torn tail left by a power cut, and finishes a
   * restore a power cut interrupted.
   * @throws `ECORRUPT` (naming the damaged structure) if the metadata is
   *   damaged, `EINVAL` for bad options, another origin geometry, or a store
   *   formatted by CowSnapshotDevice.
   */
  static async open(
    origin: BlockDevice,
    store: BlockDevice,
    options: SelectiveSnapshotDeviceOpenOptions = {},
  ): Promise<SelectiveSnapshotDevice> {
    checkCowDevices(origin, store);
    const excludedReads = checkExcludedReads(options);
    return withClaimed([origin, store] as const, 'SelectiveSnapshotDevice', ([o, s]) =>
      SelectiveSnapshotDevice.#openOwned(o, s, excludedReads),
    );
  }

  /** `open` over the views of the claimed origin and store. */
  static async #openOwned(
    origin: BlockDevice,
    store: BlockDevice,
    excludedReads: ExcludedReads,
  ): Promise<SelectiveSnapshotDevice> {
    const cow = await CowStore.recover(origin, store);
    if (cow.layout.maxRuns === 0) {
      throw new BlockDeviceError(
        'EINVAL',
        'store was formatted by CowSnapshotDevice: open it with CowSnapshotDevice.open',
      );
    }
    const device = new SelectiveSnapshotDevice(cow, excludedReads);
    await device.recoverRestore();
    return device;
  }

  /**
   * Takes a snapshot of the designated blocks (`include` minus `exclude`;
   * the whole device by default) holding exactly the writes to them called
   * before this call — those in flight included — and none called after.
   * Only writes to the designated blocks wait, and only while the ones in
   * flight drain and the cut is made durable. A durability point.
   * @throws `EINVAL` for bad options or a designation of no blocks or more
   *   than `maxRuns` runs, `ERANGE` for a range outside the device,
   *   `ENOSPC` past `maxSnapshots`, `ECLOSED`.
   */
  snapshot(options: SelectiveSnapshotOptions = {}): Promise<Snapshot> {
    let ranges: BlockRanges;
    try {
      this.checkOpen();
      checkSnapshotOptions(options);
      const include = this.#checkExtents('include', options.include);
      const exclude = this.#checkExtents('exclude', options.exclude);
      ranges = designatedBlocks(include, exclude, this.blockSize, this.size / this.blockSize);
      if (ranges.length === 0) {
        throw new BlockDeviceError('EINVAL', 'the snapshot designates no block');
      }
      if (ranges.length > this.limits.maxRuns) {
        throw new BlockDeviceError(
          'EINVAL',
          `the designation has ${ranges.length} runs of blocks; this store takes at most ${this.limits.maxRuns} (maxRuns)`,
        );
      }
    } catch (err) {
      return Promise.reject(err);
    }
    return this.takeSnapshot(options, ranges);
  }

  /**
   * Puts the blocks snapshot `id` holds — or only the bytes of them inside
   * `options.ranges` — back to the snapshot's content. Every other byte, and
   * every snapshot, is left as it is. All I/O waits while it runs. A
   * durability point, and atomic across a power cut: `open` finishes it.
   * @throws `ENOENT` for an unknown id, `EINVAL`/`ERANGE` for bad ranges,
   *   `ENOSPC` if the store cannot preserve what it overwrites (checked
   *   before anything changes), `EROFS`, `ECLOSED`.
   */
  restore(id: string, options: SelectiveRestoreOptions = {}): Promise<void> {
    let extents: Extent[] | undefined;
    try {
      this.checkOpen();
      if (typeof options !== 'object' || options === null) {
        throw new BlockDeviceError('EINVAL', 'restore options must be an object');
      }
      const ranges = this.#checkExtents('ranges', options.ranges);
      if (ranges !== undefined) {
        extents = mergeExtents(ranges);
        if (extents.length > this.limits.maxRuns) {
          throw new BlockDeviceError(
            'EINVAL',
            `restore ranges merge into ${extents.length} runs; this store takes at most ${this.limits.maxRuns} (maxRuns)`,
          );
        }
      }
    } catch (err) {
      return Promise.reject(err);
    }
    return this.restoreSnapshot(id, extents);
  }

  /** Checks a list of byte ranges; copies it so later changes by the caller do not count. */
  #checkExtents(what: string, extents: unknown): Extent[] | undefined {
    if (extents === undefined) return undefined;
    if (!Array.isArray(extents)) {
      throw new BlockDeviceError('EINVAL', `${what} must be an array of { offset, length }`);
    }
    return extents.map((e: unknown, i) => {
      if (typeof e !== 'object' || e === null) {
        throw new BlockDeviceError('EINVAL', `${what}[${i}] must be an { offset, length } object`);
      }
      const { offset, length } = e as Record<string, unknown>;
      checkRange(this.size, offset, length, `${what}[${i}]`);
      return { offset: offset as number, length: length as number };
    });
  }
}

function checkExcludedReads(options: unknown): ExcludedReads {
  if (typeof options !== 'object' || options === null) {
    throw new BlockDeviceError('EINVAL', 'options must be an object');
  }
  const value = (options as { excludedReads?: unknown }).excludedReads ?? 'error';
  if (value !== 'error' && value !== 'zero') {
    throw new BlockDeviceError(
      'EINVAL',
      `excludedReads must be 'error' or 'zero', got ${String(value)}`,
    );
  }
  return value;
}

function checkLimit(name: string, value: number, max: number): number {
  if (!Number.isSafeInteger(value) || value < 1 || value > max) {
    throw new BlockDeviceError('EINVAL', `${name} ${value} is not an integer from 1 to ${max}`);
  }
  return value;
}
