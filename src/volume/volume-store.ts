import { type CheckReportBuilder, io } from '../base/index.js';
import { checksum } from '../checksum/index.js';
import type { BlockDevice } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import {
  alignUp,
  checkSuperblocks,
  readSuperblock,
  SUPERBLOCK_SLOT,
  type Superblock,
  SuperblockSlots,
  tableOffset,
} from '../store/index.js';
import type { SpecRecord } from './device-spec.js';

/*
 * The volume's own store (docs/ARCHITECTURE.md, "VirtualVolume", store
 * format): the shared two-slot superblock (kind "BSVV"), then two table
 * slots each holding a whole volume state — partition map, snapshot
 * catalog, restore intent — as UTF-8 JSON whose length, entry count and
 * CRC-32 the superblock names. An update writes the slot the superblock
 * does not name and flushes it, then writes the next superblock generation
 * and flushes: until that superblock is durable the old slot is the state,
 * so a power cut at any point leaves one whole state or the other.
 */

/** The superblock kind of a volume store: "BSVV" little-endian. */
export const VOLUME_KIND = 0x56565342;
const STATE_VERSION = 1;

/** A partition's snapshot, made for an overall snapshot, with its state information. */
export interface PartitionSnapshotRecord {
  /** The partition's own snapshot id. */
  readonly id: string;
  /** The partition's sequence number of that snapshot (its COW log's). */
  readonly sequence: number;
  /** When the partition took it (ms since the epoch). */
  readonly createdAt: number;
}

/** An overall snapshot in the catalog. */
export interface OverallSnapshotRecord {
  readonly id: string;
  readonly name: string | undefined;
  /** When `snapshot()` was called (ms since the epoch). */
  readonly createdAt: number;
  /** The volume's sequence number of the snapshot: one more than the one before. */
  readonly sequence: number;
  /** One per partition, in partition order. */
  readonly partitions: readonly PartitionSnapshotRecord[];
}

/** A partition as the store records it. */
export interface PartitionRecord {
  readonly size: number;
  readonly origin: SpecRecord;
  readonly store: SpecRecord;
}

/** Everything the volume store holds. */
export interface VolumeState {
  readonly size: number;
  readonly blockSize: number;
  readonly stripeUnit: number;
  readonly maxSnapshots: number;
  readonly partitions: readonly PartitionRecord[];
  /** The sequence number the next overall snapshot gets. */
  readonly nextSequence: number;
  readonly snapshots: readonly OverallSnapshotRecord[];
  /** Set while a restore runs: `open` finishes it on every partition. */
  readonly restoring: string | undefined;
}

/** Bytes a table slot needs for `partitions` partitions and `maxSnapshots` snapshots. */
export function tableCapacityFor(
  partitions: readonly PartitionRecord[],
  maxSnapshots: number,
): number {
  const map = new TextEncoder().encode(JSON.stringify(partitions)).length;
  // An overall snapshot: a UUID, a name of at most 255 UTF-8 bytes (JSON may
  // escape it to 6 bytes per byte), numbers; per partition a UUID and numbers.
  const perSnapshot = 2048 + partitions.length * 160;
  return alignUp(4096 + map + maxSnapshots * perSnapshot, 4096);
}

/** The state's table, written and read through the shared superblock. */
export class VolumeStore {
  readonly #store: BlockDevice;
  readonly #slots: SuperblockSlots;
  #state: VolumeState;

  private constructor(store: BlockDevice, slots: SuperblockSlots, state: VolumeState) {
    this.#store = store;
    this.#slots = slots;
    this.#state = state;
  }

  /** The state last made durable. */
  get state(): VolumeState {
    return this.#state;
  }

  /**
   * Formats `store` with `state`; durable when it resolves.
   * @throws `EINVAL` if the store is too small, `EIO`.
   */
  static async format(store: BlockDevice, state: VolumeState): Promise<VolumeStore> {
    const tableCapacity = tableCapacityFor(state.partitions, state.maxSnapshots);
    const needed = 2 * SUPERBLOCK_SLOT + 2 * tableCapacity;
    if (store.size < needed) {
      throw new BlockDeviceError(
        'EINVAL',
        `volume store of ${store.size} bytes is too small: ${state.partitions.length} partitions and maxSnapshots ${state.maxSnapshots} need ${needed}`,
      );
    }
    const empty: Superblock = {
      kind: VOLUME_KIND,
      generation: 0,
      tableCapacity,
      logCapacity: 0,
      active: 1,
      tableBytes: 0,
      tableCount: 0,
      tableCrc: 0,
      epoch: 0,
      params: new Uint8Array(0),
    };
    const volume = new VolumeStore(store, new SuperblockSlots(store, empty), state);
    // Both superblock slots are written, so no older format's slot survives.
    await io('volume store format', store.write(0, new Uint8Array(2 * SUPERBLOCK_SLOT)));
    await volume.write(state);
    return volume;
  }

  /**
   * Reads the state the newest valid superblock names.
   * @throws `ECORRUPT` if it is damaged or does not parse, `EINVAL` if the
   *   store holds another kind of device, `EIO`.
   */
  static async open(store: BlockDevice): Promise<VolumeStore> {
    const sb = await readSuperblock(store, VOLUME_KIND);
    if (sb.tableBytes === 0) {
      throw new BlockDeviceError('ECORRUPT', 'volume store superblock names no state');
    }
    const at = tableOffset(sb, sb.active);
    const bytes = await io('volume store read', store.read(at, sb.tableBytes));
    if (checksum(bytes) !== sb.tableCrc) {
      throw new BlockDeviceError(
        'ECORRUPT',
        `volume state at store offset ${at}: checksum mismatch`,
      );
    }
    const state = decodeState(bytes, at);
    if (state.snapshots.length !== sb.tableCount) {
      throw new BlockDeviceError('ECORRUPT', `volume state at store offset ${at}: entry count`);
    }
    return new VolumeStore(store, new SuperblockSlots(store, sb), state);
  }

  /**
   * Reads the store back as `open` does, reporting into `report` what it
   * finds instead of throwing: both superblock slots against the one this
   * volume last wrote, and the state that superblock names against its
   * CRC-32, its JSON and its entry count. Writes nothing; the caller runs it
   * between catalog writes (the admin queue), so the store stands still.
   * Returns the store offset of the state, where catalog problems point.
   * @throws `EIO` (with `cause`) if a store read fails.
   */
  async check(report: CheckReportBuilder): Promise<number> {
    const sb = this.#slots.current;
    await checkSuperblocks(this.#store, sb, report);
    const at = tableOffset(sb, sb.active);
    const name = `volume state ${sb.active} at store offset ${at}`;
    const bytes = report.read(await io('volume store read', this.#store.read(at, sb.tableBytes)));
    report.counts.tables++;
    if (checksum(bytes) !== sb.tableCrc) {
      report.problem('table', at, `${name} fails its checksum`, true);
      return at;
    }
    let state: VolumeState;
    try {
      state = decodeState(bytes, at);
    } catch (err) {
      if (!BlockDeviceError.is(err, 'ECORRUPT')) throw err;
      report.problem('catalog', at, err.message, true);
      return at;
    }
    report.counts.records += state.snapshots.length;
    if (state.snapshots.length !== sb.tableCount) {
      report.problem(
        'catalog',
        at,
        `${name} holds ${state.snapshots.length} snapshots, its superblock says ${sb.tableCount}`,
        true,
      );
    }
    return at;
  }

  /** Closes the store device. */
  close(): Promise<void> {
    return this.#store.close();
  }

  /**
   * Makes `state` the durable state: the free slot, a flush, the superblock
   * naming it, a flush. On failure the previous state stays in force.
   * @throws `ENOSPC` if it does not fit a slot, `EIO`.
   */
  async write(state: VolumeState): Promise<void> {
    const sb = this.#slots.current;
    const bytes = new TextEncoder().encode(JSON.stringify({ version: STATE_VERSION, state }));
    if (bytes.length > sb.tableCapacity) {
      throw new BlockDeviceError(
        'ENOSPC',
        `volume state needs ${bytes.length} bytes, a store slot holds ${sb.tableCapacity}`,
      );
    }
    const which = 1 - sb.active;
    await io('volume store write', this.#store.write(tableOffset(sb, which), bytes));
    await io('volume store flush', this.#store.flush());
    await this.#slots.update(
      {
        active: which,
        tableBytes: bytes.length,
        tableCount: state.snapshots.length,
        tableCrc: checksum(bytes),
      },
      'volume store superblock',
    );
    this.#state = state;
  }
}

/**
 * The state in a table slot's bytes (their CRC-32 already checked).
 * @throws `ECORRUPT` if they do not parse as this version's state.
 */
function decodeState(bytes: Uint8Array, at: number): VolumeState {
  try {
    const parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes)) as {
      version: number;
      state: VolumeState;
    };
    if (parsed.version !== STATE_VERSION) throw new Error(`version ${parsed.version}`);
    return { ...parsed.state, restoring: parsed.state.restoring ?? undefined };
  } catch (err) {
    throw new BlockDeviceError('ECORRUPT', `volume state at store offset ${at} does not parse`, {
      cause: err,
    });
  }
}
