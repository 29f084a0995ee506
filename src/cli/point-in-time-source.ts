import {
  BlockDeviceError,
  type ChangeTracking,
  type Extent,
  type PointInTime,
  type Snapshot,
  type SnapshotInfo,
} from '../index.js';

/**
 * A journal's point-in-time view dressed as a device with one read-only
 * snapshot, so `exportStream` writes it as a full stream that `apply`
 * takes like any other. Only the public `ChangeTracking` surface: listing,
 * the one snapshot's extents (all of the device) and a handle on it.
 * Nothing changes through it; incremental streams are refused (a point in
 * time has no change table of its own).
 */
export class PointInTimeSource implements ChangeTracking {
  readonly size: number;
  readonly blockSize: number;
  readonly #view: PointInTime;
  readonly #info: SnapshotInfo;

  constructor(view: PointInTime) {
    this.#view = view;
    this.size = view.size;
    this.blockSize = view.blockSize;
    this.#info = {
      id: `pit-${view.sequence}`,
      name: `point in time after record ${view.sequence}`,
      createdAt: view.time,
      writable: false,
      privateBytes: 0,
    };
  }

  /** The snapshot id the stream will carry. */
  get id(): string {
    return this.#info.id;
  }

  listSnapshots(): SnapshotInfo[] {
    return [this.#info];
  }

  snapshotExtents(id: string): Extent[] {
    this.#known(id);
    return [{ offset: 0, length: this.size }];
  }

  changedExtents(): Extent[] {
    throw new BlockDeviceError('EINVAL', 'a point in time exports as a full stream only');
  }

  async openSnapshot(id: string): Promise<Snapshot> {
    this.#known(id);
    const view = this.#view;
    const info = this.#info;
    // The handle's close leaves the view open: the command closes it.
    const handle: Snapshot = {
      id: info.id,
      name: info.name,
      createdAt: info.createdAt,
      size: view.size,
      blockSize: view.blockSize,
      readOnly: true,
      read: (offset, length) => view.read(offset, length),
      write: () => Promise.reject(new BlockDeviceError('EROFS', 'a point in time is read-only')),
      flush: () => Promise.resolve(),
      close: () => Promise.resolve(),
      [Symbol.asyncDispose]: () => Promise.resolve(),
    };
    return handle;
  }

  snapshot(): Promise<Snapshot> {
    return Promise.reject(new BlockDeviceError('EROFS', 'a point in time is read-only'));
  }

  deleteSnapshot(): Promise<void> {
    return Promise.reject(new BlockDeviceError('EROFS', 'a point in time is read-only'));
  }

  restore(): Promise<void> {
    return Promise.reject(new BlockDeviceError('EROFS', 'a point in time is read-only'));
  }

  #known(id: string): void {
    if (id !== this.#info.id)
      throw new BlockDeviceError('ENOENT', `no snapshot '${id}' at this point in time`);
  }
}
