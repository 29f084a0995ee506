import type { CheckOptions, CheckReport, Extent, SnapshotInfo } from '../device.js';
import type { PartitionEngine, PartitionSnapshotMade } from './partition-engine.js';

/*
 * A partition as the volume sees it, wherever its processor runs
 * (docs/ARCHITECTURE.md, "VirtualVolume"): the volume calls these in its own
 * call order and every implementation starts the work before returning, so
 * the partition's COW device sees the same order.
 */

/** One partition of a volume, in this thread or in a worker. */
export interface Partition {
  /** Partition size in bytes. */
  readonly size: number;
  /** Partition block size in bytes. */
  readonly blockSize: number;
  /** Reads a range; a buffer the caller owns. */
  read(offset: number, length: number): Promise<Uint8Array>;
  /** Writes a range; `data` is taken before this returns. */
  write(offset: number, data: Uint8Array): Promise<void>;
  flush(): Promise<void>;
  /** Takes the partition's snapshot for an overall snapshot (named `name`). */
  snapshot(name: string): Promise<PartitionSnapshotMade>;
  deleteSnapshot(id: string): Promise<void>;
  restore(id: string): Promise<void>;
  readSnapshot(id: string, offset: number, length: number): Promise<Uint8Array>;
  listSnapshots(): Promise<SnapshotInfo[]>;
  /** Synchronous, as ChangeTracking is. */
  changedExtents(from: string, to: string | 'live'): Extent[];
  /** The partition COW device's `check()`, run by the processor that owns it. */
  check(options: CheckOptions): Promise<CheckReport>;
  close(): Promise<void>;
}

/** A partition whose COW device runs in this thread. */
export class LocalPartition implements Partition {
  readonly #engine: PartitionEngine;
  readonly size: number;
  readonly blockSize: number;

  constructor(engine: PartitionEngine) {
    this.#engine = engine;
    this.size = engine.geometry.size;
    this.blockSize = engine.geometry.blockSize;
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    return this.#engine.device.read(offset, length);
  }
  write(offset: number, data: Uint8Array): Promise<void> {
    return this.#engine.device.write(offset, data);
  }
  flush(): Promise<void> {
    return this.#engine.device.flush();
  }
  snapshot(name: string): Promise<PartitionSnapshotMade> {
    return this.#engine.snapshot(name);
  }
  deleteSnapshot(id: string): Promise<void> {
    return this.#engine.deleteSnapshot(id);
  }
  restore(id: string): Promise<void> {
    return this.#engine.device.restore(id);
  }
  readSnapshot(id: string, offset: number, length: number): Promise<Uint8Array> {
    return this.#engine.readSnapshot(id, offset, length);
  }
  async listSnapshots(): Promise<SnapshotInfo[]> {
    return this.#engine.listSnapshots();
  }
  changedExtents(from: string, to: string | 'live'): Extent[] {
    return this.#engine.changedExtents(from, to);
  }
  check(options: CheckOptions): Promise<CheckReport> {
    return this.#engine.device.check(options);
  }
  close(): Promise<void> {
    return this.#engine.close();
  }
}
