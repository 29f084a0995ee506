import { AbstractBlockDevice, type InFlightCounter, inFlightCounter } from '../base/index.js';
import type { Snapshot } from '../device.js';
import { BlockDeviceError } from '../errors.js';

/** What a snapshot handle needs from the device that owns the snapshot. */
export interface SnapshotHost {
  /** Reads from snapshot `seq`; `ENOENT` if it was deleted. */
  readSnapshot(seq: number, offset: number, length: number): Promise<Uint8Array>;
  /**
   * {@link readSnapshot}, calling `settled` exactly once, just before the
   * returned promise settles, however the read ends; never throws. The
   * handle counts the read in flight on it (close waits for it) instead of
   * on a promise reaction of its own, so a read costs one promise. A host
   * without it has its reads counted by the handle.
   */
  readSnapshotCounted?(
    seq: number,
    offset: number,
    length: number,
    settled: () => void,
  ): Promise<Uint8Array>;
  /**
   * Reads from snapshot `seq` into `target` (a handle's `readInto`), as
   * `readSnapshot` would read `target.length` bytes; hosts that cannot read
   * into a caller's buffer leave it out, and the handle reads and copies.
   */
  readSnapshotInto?(seq: number, offset: number, target: Uint8Array): Promise<Uint8Array>;
  /**
   * {@link readSnapshotInto} with `settled` as in {@link readSnapshotCounted}:
   * a host with `readSnapshotCounted` gives this instead (its handle counts
   * reads itself, so an uncounted `readSnapshotInto` would let close run
   * under a read); without it, such a host's handle reads and copies.
   */
  readSnapshotIntoCounted?(
    seq: number,
    offset: number,
    target: Uint8Array,
    settled: () => void,
  ): Promise<Uint8Array>;
  /** Writes to writable snapshot `seq`; `ENOENT` if it was deleted. */
  writeSnapshot(seq: number, offset: number, data: Uint8Array): Promise<void>;
  /** Makes writes made through handles durable. */
  flushSnapshots(): Promise<void>;
  /** Forgets a closed handle. */
  releaseHandle(handle: SnapshotHandle): void;
  /** See {@link STORED_CHECKSUM}; hosts that keep no per-block CRCs leave it out. */
  storedChecksum?(seq: number, offset: number, length: number): number | undefined;
}

/**
 * Internal method of a snapshot handle: the CRC-32 of `length` bytes at
 * `offset` as the snapshot holds them, when the host knows it without
 * reading (every block of the extent lives in its store, whose records carry
 * each block's CRC), else `undefined`. Keyed by a symbol so it stays off the
 * public surface; an export uses it to prove a base without reading it.
 * @throws `ENOENT` if the snapshot was deleted.
 */
export const STORED_CHECKSUM: unique symbol = Symbol('blocksnap.storedChecksum');

/** Identity of the snapshot a handle shows. */
export interface SnapshotIdentity {
  seq: number;
  id: string;
  name: string | undefined;
  createdAt: number;
  writable: boolean;
}

/**
 * A handle on one snapshot: a BlockDevice whose I/O the owning device serves.
 * Closing it closes only the handle, never the device or the snapshot.
 */
export class SnapshotHandle extends AbstractBlockDevice implements Snapshot {
  readonly id: string;
  readonly name: string | undefined;
  readonly createdAt: Date;
  /** The owner's sequence number of the snapshot. */
  readonly seq: number;
  readonly #host: SnapshotHost;
  /** Counts reads itself where the host takes a `settled` callback (readSnapshotCounted). */
  readonly #inFlight: InFlightCounter = inFlightCounter(this);

  constructor(host: SnapshotHost, identity: SnapshotIdentity, size: number, blockSize: number) {
    super('Snapshot', size, blockSize, !identity.writable);
    this.#host = host;
    this.#inFlight.ownReads = host.readSnapshotCounted !== undefined;
    this.seq = identity.seq;
    this.id = identity.id;
    this.name = identity.name;
    this.createdAt = new Date(identity.createdAt);
  }

  protected override checkWritable(): void {
    if (this.readOnly) {
      throw new BlockDeviceError('EROFS', `snapshot ${this.id} is read-only`);
    }
  }

  /** See {@link STORED_CHECKSUM}. */
  [STORED_CHECKSUM](offset: number, length: number): number | undefined {
    this.checkOpen();
    return this.#host.storedChecksum?.(this.seq, offset, length);
  }

  protected _read(offset: number, length: number): Promise<Uint8Array> {
    const host = this.#host;
    if (host.readSnapshotCounted === undefined) return host.readSnapshot(this.seq, offset, length);
    this.#inFlight.started();
    return host.readSnapshotCounted(this.seq, offset, length, this.#inFlight.settled);
  }

  /**
   * The host's read into the caller's buffer where it has one, else `_read`
   * and a copy; counted in flight as `_read` counts (close waits for it).
   */
  protected override _readInto(offset: number, target: Uint8Array): Promise<Uint8Array> {
    const host = this.#host;
    if (this.#inFlight.ownReads) {
      if (host.readSnapshotIntoCounted === undefined) return super._readInto(offset, target);
      this.#inFlight.started();
      return host.readSnapshotIntoCounted(this.seq, offset, target, this.#inFlight.settled);
    }
    return host.readSnapshotInto === undefined
      ? super._readInto(offset, target)
      : host.readSnapshotInto(this.seq, offset, target);
  }

  protected _write(offset: number, data: Uint8Array): Promise<void> {
    return this.#host.writeSnapshot(this.seq, offset, data);
  }

  protected _flush(): Promise<void> {
    return this.readOnly ? Promise.resolve() : this.#host.flushSnapshots();
  }

  protected async _close(): Promise<void> {
    this.#host.releaseHandle(this);
  }
}
