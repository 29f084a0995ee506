import { AbstractBlockDevice, checkGeometry, isBytes } from '../base/index.js';
import type {
  BlockDeviceEvents,
  Snapshot,
  SnapshotCapable,
  SnapshotInfo,
  SnapshotOptions,
} from '../device.js';
import { BlockDeviceError } from '../errors.js';
import { checkSnapshotOptions } from '../snapshot/index.js';

/** Options for {@link ModelDevice.create}. */
export interface ModelDeviceOptions {
  /** Size in bytes; a multiple of `blockSize`. */
  size: number;
  /** Block size in bytes: a power of two from 512 to 1 MiB. @default 4096 */
  blockSize?: number | undefined;
  /** Whether writes and `restore()` fail with `EROFS`. @default false */
  readOnly?: boolean | undefined;
  /** Initial content, exactly `size` bytes; copied. @default all zeros */
  content?: Uint8Array | undefined;
}

/** One snapshot's state: a full private copy of the bytes, shared by all its handles. */
interface SnapshotRecord {
  readonly id: string;
  readonly name: string | undefined;
  readonly createdAt: Date;
  readonly writable: boolean;
  readonly bytes: Uint8Array;
  /** Indexes of the blocks written through the snapshot's handles. */
  readonly written: Set<number>;
  deleted: boolean;
}

/**
 * The reference model the property tests check every device against: the
 * device is one plain `Uint8Array` of `size` bytes and each snapshot a full
 * copy of it. Nothing is clever, so nothing can be subtly wrong.
 *
 * Every mutation (a write, `snapshot()`, `restore()`, `deleteSnapshot()`)
 * takes effect synchronously when the method is *called*, before its promise
 * exists. The model's history is therefore exactly the call order, which is
 * the point-in-time cut snapshot rule 1 asks of real devices. Content
 * survives `close()`, so a test can still inspect it with {@link bytes}.
 */
export class ModelDevice extends AbstractBlockDevice<BlockDeviceEvents> implements SnapshotCapable {
  readonly #bytes: Uint8Array;
  readonly #snapshots = new Map<string, SnapshotRecord>();
  #nextId = 1;

  private constructor(size: number, blockSize: number, readOnly: boolean, content: Uint8Array) {
    super('ModelDevice', size, blockSize, readOnly);
    this.#bytes = content;
  }

  /**
   * Creates a model device, all zeros unless `content` is given.
   * @throws `EINVAL` for a bad size, block size, or `content` that is not a
   *   Uint8Array of exactly `size` bytes.
   */
  static async create(options: ModelDeviceOptions): Promise<ModelDevice> {
    const blockSize = options?.blockSize ?? 4096;
    checkGeometry('ModelDevice', options?.size, blockSize);
    const bytes = new Uint8Array(options.size);
    if (options.content !== undefined) {
      if (!isBytes(options.content) || options.content.length !== options.size) {
        throw new BlockDeviceError(
          'EINVAL',
          `ModelDevice: content must be a Uint8Array of ${options.size} bytes`,
        );
      }
      bytes.set(options.content);
    }
    return new ModelDevice(options.size, blockSize, options.readOnly ?? false, bytes);
  }

  /**
   * A copy of the device's current content. Synchronous, and allowed after
   * `close()`; the copy never changes when the device does.
   */
  bytes(): Uint8Array {
    return this.#bytes.slice();
  }

  /**
   * A copy of a snapshot's current content (including a writable snapshot's
   * own writes). Synchronous, and allowed after `close()`.
   * @throws `ENOENT` for an unknown or deleted id, `EINVAL` for a non-string id.
   */
  snapshotBytes(id: string): Uint8Array {
    return this.record(id).bytes.slice();
  }

  /**
   * Takes a snapshot: a full copy of the content at the moment of the call, so
   * it holds every write called before and none called after.
   * @throws `EINVAL` for bad options, `ECLOSED` after close.
   */
  async snapshot(options?: SnapshotOptions): Promise<Snapshot> {
    this.checkOpen();
    const settings = options === undefined ? {} : options;
    checkSnapshotOptions(settings);
    const { name, writable = false } = settings;
    const record: SnapshotRecord = {
      id: String(this.#nextId++),
      name,
      createdAt: new Date(),
      writable,
      bytes: this.#bytes.slice(),
      written: new Set(),
      deleted: false,
    };
    this.#snapshots.set(record.id, record);
    this.emit('snapshot', infoOf(record, this.blockSize));
    return new ModelSnapshot(this, record);
  }

  /**
   * The live snapshots, oldest first. `privateBytes` counts the blocks written
   * through the snapshot's handles, times the block size.
   * @throws `ECLOSED` after close.
   */
  listSnapshots(): SnapshotInfo[] {
    this.checkOpen();
    return [...this.#snapshots.values()].map((record) => infoOf(record, this.blockSize));
  }

  /**
   * Opens another handle on a snapshot; all handles of one snapshot share its
   * content.
   * @throws `ENOENT` for an unknown or deleted id, `EINVAL` for a non-string
   *   id, `ECLOSED` after close.
   */
  async openSnapshot(id: string): Promise<Snapshot> {
    this.checkOpen();
    return new ModelSnapshot(this, this.record(id));
  }

  /**
   * Deletes a snapshot; its ids are never reused and its open handles fail
   * with `ENOENT` from then on.
   * @throws `ENOENT` for an unknown or deleted id, `EINVAL` for a non-string
   *   id, `ECLOSED` after close.
   */
  async deleteSnapshot(id: string): Promise<void> {
    this.checkOpen();
    const record = this.record(id);
    record.deleted = true;
    this.#snapshots.delete(id);
    this.emit('snapshot-deleted', id);
  }

  /**
   * Copies a snapshot's current content over the device's; the snapshot is
   * left as it was.
   * @throws `ENOENT` for an unknown or deleted id, `EINVAL` for a non-string
   *   id, `EROFS` on a read-only device, `ECLOSED` after close.
   */
  async restore(id: string): Promise<void> {
    this.checkOpen();
    const record = this.record(id);
    this.checkWritable();
    this.#bytes.set(record.bytes);
  }

  protected async _read(offset: number, length: number): Promise<Uint8Array> {
    return this.#bytes.slice(offset, offset + length);
  }

  protected async _write(offset: number, data: Uint8Array): Promise<void> {
    this.#bytes.set(data, offset);
  }

  protected async _flush(): Promise<void> {}

  protected async _close(): Promise<void> {}

  private record(id: string): SnapshotRecord {
    if (typeof id !== 'string') {
      throw new BlockDeviceError('EINVAL', `snapshot id must be a string, got ${typeof id}`);
    }
    const record = this.#snapshots.get(id);
    if (record === undefined) {
      throw new BlockDeviceError('ENOENT', `no snapshot with id ${JSON.stringify(id)}`);
    }
    return record;
  }
}

/**
 * A handle on one snapshot of a {@link ModelDevice}. Closing it closes only
 * the handle; once its device is closed it fails with `ECLOSED`, and once its
 * snapshot is deleted, with `ENOENT`.
 */
class ModelSnapshot extends AbstractBlockDevice implements Snapshot {
  /** The snapshot's id, as listed by {@link ModelDevice.listSnapshots}. */
  readonly id: string;
  /** The name given when the snapshot was taken, if any. */
  readonly name: string | undefined;
  /** When `snapshot()` was called. */
  readonly createdAt: Date;
  readonly #owner: ModelDevice;
  readonly #record: SnapshotRecord;

  constructor(owner: ModelDevice, record: SnapshotRecord) {
    super('ModelSnapshot', owner.size, owner.blockSize, !record.writable);
    this.id = record.id;
    this.name = record.name;
    this.createdAt = record.createdAt;
    this.#owner = owner;
    this.#record = record;
  }

  protected override checkOpen(): void {
    super.checkOpen();
    if (this.#owner.closed) {
      throw new BlockDeviceError('ECLOSED', `the device of snapshot ${this.id} is closed`);
    }
    if (this.#record.deleted) {
      throw new BlockDeviceError('ENOENT', `snapshot ${this.id} was deleted`);
    }
  }

  protected async _read(offset: number, length: number): Promise<Uint8Array> {
    return this.#record.bytes.slice(offset, offset + length);
  }

  protected async _write(offset: number, data: Uint8Array): Promise<void> {
    this.#record.bytes.set(data, offset);
    const first = Math.floor(offset / this.blockSize);
    const last = Math.floor((offset + data.length - 1) / this.blockSize);
    for (let block = first; block <= last; block++) this.#record.written.add(block);
  }

  protected async _flush(): Promise<void> {}

  protected async _close(): Promise<void> {}
}

function infoOf(record: SnapshotRecord, blockSize: number): SnapshotInfo {
  return {
    id: record.id,
    name: record.name,
    createdAt: new Date(record.createdAt.getTime()),
    writable: record.writable,
    privateBytes: record.written.size * blockSize,
  };
}
