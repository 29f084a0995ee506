import { WRITE_OWNED } from '../base/index.js';
import { CowSnapshotDevice } from '../cow/index.js';
import type { BlockDevice, Extent, Snapshot, SnapshotInfo } from '../device.js';
import { SnapshotHandle } from '../snapshot/index.js';
import { type DeviceSource, isSpec, openSpec } from './device-spec.js';

/*
 * One partition as its processor runs it: a CowSnapshotDevice over the
 * partition's origin and store, with its change log and lock table, and the
 * handles on its snapshots that overall snapshot reads go through. The same
 * class runs in this thread (processors: 0, or a partition given as device
 * objects) and in a worker (src/volume/volume-worker.ts), so both answer
 * alike (docs/ARCHITECTURE.md, "VirtualVolume").
 */

/** What a partition's snapshot is, as the volume catalog records it. */
export interface PartitionSnapshotMade {
  readonly id: string;
  readonly sequence: number;
  readonly createdAt: number;
}

/** How a partition is opened: its devices, and at create, how to format its store. */
export interface PartitionOpening {
  readonly origin: DeviceSource;
  readonly store: DeviceSource;
  /** Present at `VirtualVolume.create`: the partition's store is formatted. */
  readonly format?: { readonly maxSnapshots: number; readonly force: boolean } | undefined;
}

/** A partition's COW device and its snapshot handles. */
export class PartitionEngine {
  readonly device: CowSnapshotDevice;
  /** Handles on partition snapshots, opened on the first read of each. */
  readonly #handles = new Map<string, Promise<Snapshot>>();

  private constructor(device: CowSnapshotDevice) {
    this.device = device;
  }

  /**
   * Opens (or at create, formats) the partition in the calling thread.
   * Devices it opened from specs are closed again if that fails.
   */
  static async open(opening: PartitionOpening): Promise<PartitionEngine> {
    const create = opening.format !== undefined;
    const opened: BlockDevice[] = [];
    const open = async (source: DeviceSource): Promise<BlockDevice> => {
      if (!isSpec(source)) return source;
      const device = await openSpec(source, create);
      opened.push(device);
      return device;
    };
    try {
      const origin = await open(opening.origin);
      const store = await open(opening.store);
      const device =
        opening.format === undefined
          ? await CowSnapshotDevice.open(origin, store)
          : await CowSnapshotDevice.create(origin, store, opening.format);
      return new PartitionEngine(device);
    } catch (err) {
      await Promise.allSettled(opened.map((d) => d.close()));
      throw err;
    }
  }

  /**
   * Writes `data` as `device.write` does, without the private copy `write`
   * takes: for bytes nobody changes until the write settles — a worker's
   * ring slab (the volume reuses it only once the completion is settled),
   * a posted batch's arena (moved to the worker, never reused).
   */
  writeUncopied(offset: number, data: Uint8Array): Promise<void> {
    return this.device[WRITE_OWNED](offset, [data]);
  }

  /** Geometry, for the volume to check and map. */
  get geometry(): { size: number; blockSize: number } {
    return { size: this.device.size, blockSize: this.device.blockSize };
  }

  /**
   * Takes the partition's snapshot for an overall snapshot. Called in the
   * order the volume's `snapshot()` was, relative to the partition's writes:
   * the COW device registers its hold synchronously, so this is the cut.
   */
  async snapshot(name: string): Promise<PartitionSnapshotMade> {
    const snap = await this.device.snapshot({ name });
    const made = {
      id: snap.id,
      sequence: snap instanceof SnapshotHandle ? snap.seq : 0,
      createdAt: snap.createdAt.getTime(),
    };
    // The handle is kept: the first read of the overall snapshot uses it.
    this.#handles.set(snap.id, Promise.resolve(snap));
    return made;
  }

  /** Deletes a partition snapshot, closing the handle on it first. */
  async deleteSnapshot(id: string): Promise<void> {
    await this.#dropHandle(id);
    await this.device.deleteSnapshot(id);
  }

  /** Reads a partition snapshot through its kept handle. */
  readSnapshot(id: string, offset: number, length: number): Promise<Uint8Array> {
    let handle = this.#handles.get(id);
    if (handle === undefined) {
      handle = this.device.openSnapshot(id);
      this.#handles.set(id, handle);
      handle.catch(() => this.#handles.delete(id));
    }
    return handle.then((h) => h.read(offset, length));
  }

  /** The partition's snapshots, oldest first. */
  listSnapshots(): SnapshotInfo[] {
    return this.device.listSnapshots();
  }

  /** The partition's changed extents between two of its snapshots (or to live). */
  changedExtents(from: string, to: string | 'live'): Extent[] {
    return this.device.changedExtents(from, to);
  }

  /** Closes the handles and the COW device (which closes its origin and store). */
  async close(): Promise<void> {
    await Promise.allSettled([...this.#handles.keys()].map((id) => this.#dropHandle(id)));
    await this.device.close();
  }

  async #dropHandle(id: string): Promise<void> {
    const handle = this.#handles.get(id);
    if (handle === undefined) return;
    this.#handles.delete(id);
    await handle.then(
      (h) => h.close(),
      () => {},
    );
  }
}
