import { checkOptions, withClaimed } from '../base/index.js';
import type { BlockDevice, Snapshot, SnapshotOptions } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import { checkSnapshotOptions } from '../snapshot/index.js';
import { CowDeviceBase } from './cow-device-base.js';
import { CowStore, checkCowDevices } from './cow-store.js';

/** Options for {@link CowSnapshotDevice.create}. */
export interface CowSnapshotDeviceOptions {
  /**
   * Most snapshots that may exist at once; sizes the metadata reserved on the
   * store. `snapshot()` beyond it fails with `ENOSPC`. @default 1024
   */
  maxSnapshots?: number | undefined;
  /**
   * Format the store even if it already holds a blocksnap format (a COW
   * store, a journal or a copy map), erasing it. Without it `create` refuses
   * such a store with `EBUSY` and changes nothing. @default false
   */
  force?: boolean | undefined;
}

/**
 * Copy-on-write snapshots of an origin device. The origin always
 * holds the live content; the store holds the old content of blocks
 * overwritten since a snapshot (its lookup table says which),
 * writable snapshots' own blocks, and checksummed, crash-safe metadata.
 *
 * Guarantees (the snapshot rules 1–5): a snapshot holds exactly the writes called
 * before `snapshot()` (in flight ones included) and none after; snapshots and
 * the origin never change each other; a block overwritten after several
 * snapshots is preserved once and shared, at a cost independent of the
 * number of snapshots; preserved data and its lookup entry are durable before
 * the origin write that overwrites the block is issued, with concurrent
 * first-writes sharing one store flush; `snapshot`, `deleteSnapshot` and
 * `restore` are durability points, and `open` after a power cut recovers every
 * write acknowledged before the last completed `flush()`. `changedExtents`
 * tells what changed between two points from the lookup table alone.
 */
export class CowSnapshotDevice extends CowDeviceBase {
  private constructor(cow: CowStore) {
    super('CowSnapshotDevice', cow);
  }

  /**
   * Formats `store` for copy-on-write snapshots of `origin` and opens the
   * device. Resolves only once the format is durable. The device owns both
   * devices from then on: its `close()` flushes and closes them.
   * @throws `EINVAL` for bad options, a read-only store, or a store too small
   *   to hold metadata and at least one chunk; `EBUSY` (nothing written) if
   *   the store already holds a blocksnap format, unless `force`; `EIO` if
   *   the store fails.
   */
  static async create(
    origin: BlockDevice,
    store: BlockDevice,
    options: CowSnapshotDeviceOptions = {},
  ): Promise<CowSnapshotDevice> {
    checkCowDevices(origin, store);
    checkOptions(options, { maxSnapshots: 'number', force: 'boolean' }, 'CowSnapshotDevice.create');
    const maxSnapshots = options.maxSnapshots ?? 1024;
    if (!Number.isSafeInteger(maxSnapshots) || maxSnapshots < 1 || maxSnapshots > 65536) {
      throw new BlockDeviceError(
        'EINVAL',
        `maxSnapshots ${maxSnapshots} is not an integer from 1 to 65536`,
      );
    }
    return withClaimed([origin, store] as const, 'CowSnapshotDevice', async ([o, s]) => {
      await CowStore.format(o, s, maxSnapshots, 0, options.force);
      return CowSnapshotDevice.#openOwned(o, s);
    });
  }

  /**
   * Opens a store formatted by {@link CowSnapshotDevice.create}: reads the
   * metadata back, drops a torn tail left by a power cut, and finishes a
   * restore that a power cut interrupted.
   * @throws `ECORRUPT` (naming the damaged structure) if the metadata is
   *   damaged, `EINVAL` if the store belongs to a different origin geometry
   *   or holds selective snapshots.
   */
  static async open(origin: BlockDevice, store: BlockDevice): Promise<CowSnapshotDevice> {
    checkCowDevices(origin, store);
    return withClaimed([origin, store] as const, 'CowSnapshotDevice', ([o, s]) =>
      CowSnapshotDevice.#openOwned(o, s),
    );
  }

  /** `open` over the views of the claimed origin and store. */
  static async #openOwned(origin: BlockDevice, store: BlockDevice): Promise<CowSnapshotDevice> {
    const cow = await CowStore.recover(origin, store);
    if (cow.layout.maxRuns !== 0) {
      throw new BlockDeviceError(
        'EINVAL',
        'store was formatted by SelectiveSnapshotDevice: open it with SelectiveSnapshotDevice.open',
      );
    }
    const device = new CowSnapshotDevice(cow);
    await device.recoverRestore();
    return device;
  }

  /**
   * Takes a snapshot holding exactly the writes called before this call —
   * those still in flight included — and none called after. Writes are held
   * only while in-flight ones drain and the cut is made durable; reads go on.
   * A durability point: when it resolves, the snapshot and every write called
   * before it survive a power cut.
   * @throws `EINVAL` for bad options, `ENOSPC` past `maxSnapshots`, `ECLOSED`.
   */
  snapshot(options: SnapshotOptions = {}): Promise<Snapshot> {
    try {
      checkSnapshotOptions(options);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.takeSnapshot(options, undefined);
  }

  /**
   * Makes the device's content equal the snapshot's. Other snapshots (and this
   * one) are kept intact. All I/O waits while it runs. A durability point, and
   * atomic across a power cut: `open` finishes a restore that was cut short.
   * @throws `ENOENT` for an unknown id, `ENOSPC` if the store cannot preserve
   *   what the restore overwrites (checked before anything changes), `EROFS`.
   */
  restore(id: string): Promise<void> {
    return this.restoreSnapshot(id, undefined);
  }
}
