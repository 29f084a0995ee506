import { checkOptions } from '../base/index.js';
import type { BlockDevice, SnapshotInfo } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import { checkSpec, type DeviceSource, isSpec } from './device-spec.js';

/** One partition of a volume: the device whose content it presents, and the COW store of its snapshots. */
export interface PartitionSpec {
  /** The partition's data: a spec any processor opens, or a device of this thread. */
  readonly origin: DeviceSource;
  /** Where the partition keeps preserved blocks and its change log. */
  readonly store: DeviceSource;
}

/** Options shared by {@link VirtualVolume.create} and {@link VirtualVolume.open}. */
export interface VirtualVolumeCommonOptions {
  /**
   * The volume's own small store: the partition map and the snapshot
   * catalog. Any BlockDevice; the volume owns it and closes it.
   */
  readonly store: BlockDevice;
  /**
   * Worker threads the partitions are spread over, round-robin; `0` runs
   * every partition in this thread. A partition given as device objects
   * always stays in this thread. @default 0
   */
  readonly processors?: number | undefined;
  /**
   * Milliseconds `snapshot()` waits for every partition to take its
   * snapshot; past it, the partition snapshots made are removed and it
   * rejects `EIO`. @default 30000
   */
  readonly snapshotTimeout?: number | undefined;
}

/** Options for {@link VirtualVolume.create}. */
export interface VirtualVolumeOptions extends VirtualVolumeCommonOptions {
  /** The partitions, in volume order; at least one, all of one block size. */
  readonly partitions: readonly PartitionSpec[];
  /**
   * Stripe unit in bytes (a multiple of the block size): the volume is cut
   * into units dealt round-robin over the partitions, which must then be of
   * one size, a multiple of it. `0`: each partition holds one contiguous
   * range, in order. @default 0
   */
  readonly stripeUnit?: number | undefined;
  /** Most overall snapshots at once; `snapshot()` beyond it fails `ENOSPC`. @default 64 */
  readonly maxSnapshots?: number | undefined;
  /**
   * Format the volume store and the partitions' stores even if they hold a
   * blocksnap format already, erasing it; without it `create` refuses with
   * `EBUSY`. @default false
   */
  readonly force?: boolean | undefined;
}

/** Options for {@link VirtualVolume.open}. */
export interface VirtualVolumeOpenOptions extends VirtualVolumeCommonOptions {
  /**
   * The partitions again, where the store cannot name them: entry `i` is
   * required when partition `i` was created over device objects, and
   * replaces the recorded specs when given. @default the recorded specs
   */
  readonly partitions?: readonly (PartitionSpec | undefined)[] | undefined;
}

/** A partition snapshot that is part of an overall snapshot, with its state information. */
export interface PartitionSnapshotInfo {
  /** Index of the partition. */
  readonly partition: number;
  /** The partition's own snapshot id. */
  readonly id: string;
  /** The partition's sequence number of the snapshot (its change log's). */
  readonly sequence: number;
  /** When the partition took it. */
  readonly createdAt: Date;
  /**
   * The partition's place in the volume: contiguous, the byte range it
   * covers; striped, the offset of its first stripe unit and its size.
   */
  readonly offset: number;
  /** Bytes of the volume the partition holds. */
  readonly length: number;
}

/** What a volume knows about one of its overall snapshots. */
export interface VolumeSnapshotInfo extends SnapshotInfo {
  /** The volume's sequence number of the snapshot: later snapshots have larger ones. */
  readonly sequence: number;
  /** The partition snapshots it references, in partition order. */
  readonly partitions: readonly PartitionSnapshotInfo[];
}

/** Checks the options both `create` and `open` take. @throws `EINVAL`. */
export function checkCommonOptions(options: VirtualVolumeCommonOptions, what: string): void {
  checkOptions(options, { store: 'object', processors: 'number', snapshotTimeout: 'number' }, what);
  const store = options.store as BlockDevice | undefined;
  if (store === undefined || typeof store.read !== 'function') {
    throw new BlockDeviceError('EINVAL', `${what}: store must be a BlockDevice`);
  }
  const processors = options.processors ?? 0;
  if (!Number.isSafeInteger(processors) || processors < 0 || processors > 64) {
    throw new BlockDeviceError(
      'EINVAL',
      `${what}: processors ${processors} is not an integer from 0 to 64`,
    );
  }
  const timeout = options.snapshotTimeout ?? 30_000;
  if (!(timeout > 0) || !Number.isFinite(timeout)) {
    throw new BlockDeviceError(
      'EINVAL',
      `${what}: snapshotTimeout ${timeout} is not a positive number`,
    );
  }
}

/** Checks one partition's sources. @throws `EINVAL`. */
export function checkPartition(spec: PartitionSpec | undefined, i: number, what: string): void {
  if (typeof spec !== 'object' || spec === null) {
    throw new BlockDeviceError('EINVAL', `${what}: partition ${i} must be { origin, store }`);
  }
  for (const side of ['origin', 'store'] as const) {
    const source = spec[side] as DeviceSource | undefined;
    if (source !== undefined && !isSpec(source)) continue;
    checkSpec(source, `${what}: partition ${i} ${side}`);
  }
}

/** Checks `create`'s options. @throws `EINVAL`. */
export function checkCreateOptions(options: VirtualVolumeOptions): void {
  const what = 'VirtualVolume.create';
  checkCommonOptions(options, what);
  checkOptions(
    options,
    {
      store: 'object',
      processors: 'number',
      snapshotTimeout: 'number',
      partitions: 'object',
      stripeUnit: 'number',
      maxSnapshots: 'number',
      force: 'boolean',
    },
    what,
  );
  if (!Array.isArray(options.partitions) || options.partitions.length === 0) {
    throw new BlockDeviceError('EINVAL', `${what}: partitions must be a non-empty array`);
  }
  if (options.partitions.length > 1024) {
    throw new BlockDeviceError('EINVAL', `${what}: at most 1024 partitions`);
  }
  for (const [i, p] of options.partitions.entries()) checkPartition(p, i, what);
  const max = options.maxSnapshots ?? 64;
  if (!Number.isSafeInteger(max) || max < 1 || max > 4096) {
    throw new BlockDeviceError(
      'EINVAL',
      `${what}: maxSnapshots ${max} is not an integer from 1 to 4096`,
    );
  }
}
