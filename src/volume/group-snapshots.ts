import { randomUUID } from 'node:crypto';
import type { Extent } from '../device.js';
import { BlockDeviceError, wrapIO } from '../errors.js';
import { SnapshotHandle, type SnapshotHost } from '../snapshot/index.js';
import type { Partition } from './partition.js';
import type { PartitionSnapshotMade } from './partition-engine.js';
import { coalesce, type PartitionMap, readPieces } from './partition-map.js';
import type { VolumeGate } from './volume-gate.js';
import type { OverallSnapshotRecord, VolumeState, VolumeStore } from './volume-store.js';

/*
 * Group snapshots of a volume (docs/ARCHITECTURE.md, "VirtualVolume",
 * group-snapshot protocol). An overall snapshot is a set of partition
 * snapshots, one per partition, each taken by the partition's processor,
 * plus a record in the volume store's catalog naming them.
 *
 * Phase 1, the cut: `snapshot()` asks every partition for its snapshot
 * synchronously, in the volume's call order, each named with the overall
 * snapshot's id (the pending mark, durable with the partition snapshot).
 * A partition orders its snapshot by call against its writes, so each
 * holds exactly the writes called before `snapshot()`; no write anywhere
 * waits for another partition. Phase 2, the commit: when every partition
 * answered, within the time limit, the catalog record is made durable.
 * The record is the commit point: a partition snapshot whose id has no
 * record is an orphan — of a snapshot that failed, timed out, or was cut
 * by a crash before its record — and is deleted (at once on failure, and
 * by `recover` at open and at a processor restart). So after any crash
 * an overall snapshot is whole or absent.
 *
 * Delete removes the record first, then the partition snapshots (orphans
 * if it stops between). Restore writes a restore intent first, restores
 * every partition, then clears the intent; `recover` finishes an intent it
 * finds, and until a failed restore is finished the volume's I/O fails.
 */

/** Prefix of a partition snapshot's name: the overall snapshot id follows. */
export const PARTITION_SNAPSHOT_TAG = 'volume-snapshot:';

/** The catalog, the snapshot protocol, and reads of overall snapshots. */
export class GroupSnapshots {
  readonly #store: VolumeStore;
  readonly #map: PartitionMap;
  readonly #partitions: () => readonly Partition[];
  readonly #gate: VolumeGate;
  readonly #timeoutMs: number;
  readonly #onError: (err: Error) => void;
  /** The admin queue: catalog changes run one at a time, in call order. */
  #admin: Promise<unknown> = Promise.resolve();
  /** Overall snapshots taken and not yet committed or rolled back. */
  readonly #pending = new Set<string>();
  /** Ids whose delete was called: gone for every call made from then on. */
  readonly #deleting = new Set<string>();
  /** Reads of each overall snapshot in flight; a delete waits for them. */
  readonly #reads = new Map<string, Set<Promise<unknown>>>();
  #nextSequence: number;
  /** A restore that failed part way: until finished, the volume's content is mixed. */
  #broken: BlockDeviceError | undefined;
  /** Open handles on overall snapshots, closed with the volume. */
  readonly #handles = new Set<SnapshotHandle>();
  readonly #host: SnapshotHost = {
    readSnapshot: (seq, offset, length) => this.read(seq, offset, length),
    writeSnapshot: () =>
      Promise.reject(new BlockDeviceError('EROFS', 'volume snapshots are read-only')),
    flushSnapshots: () => Promise.resolve(),
    releaseHandle: (handle) => this.#handles.delete(handle),
  };

  constructor(
    store: VolumeStore,
    map: PartitionMap,
    partitions: () => readonly Partition[],
    gate: VolumeGate,
    timeoutMs: number,
    onError: (err: Error) => void,
  ) {
    this.#store = store;
    this.#map = map;
    this.#partitions = partitions;
    this.#gate = gate;
    this.#timeoutMs = timeoutMs;
    this.#onError = onError;
    this.#nextSequence = store.state.nextSequence;
  }

  /** Why the volume's I/O fails, while a failed restore is unfinished. */
  get broken(): BlockDeviceError | undefined {
    return this.#broken;
  }

  /** The committed overall snapshots not being deleted, oldest first. */
  records(): OverallSnapshotRecord[] {
    return this.#store.state.snapshots.filter((r) => !this.#deleting.has(r.id));
  }

  /** The live record of `id`. @throws `ENOENT`. */
  find(id: string): OverallSnapshotRecord {
    const found = this.#store.state.snapshots.find((r) => r.id === id);
    if (found === undefined || this.#deleting.has(id)) {
      throw new BlockDeviceError('ENOENT', `no snapshot ${JSON.stringify(id)} on this volume`);
    }
    return found;
  }

  /** Whether overall snapshot `id` was taken and is not yet committed or rolled back. */
  isPending(id: string): boolean {
    return this.#pending.has(id);
  }

  /** Runs `fn` after every catalog change called before it. */
  admin<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#admin.then(fn);
    this.#admin = run.catch(() => {});
    return run;
  }

  /**
   * Takes an overall snapshot (phase 1 at this call, phase 2 when every
   * partition answered). Rejects, leaving no partition snapshot behind once
   * the rollback settles, if a partition fails or the time limit passes.
   */
  take(name: string | undefined, maxSnapshots: number): Promise<OverallSnapshotRecord> {
    if (this.records().length + this.#pending.size >= maxSnapshots) {
      return Promise.reject(
        new BlockDeviceError('ENOSPC', `already ${maxSnapshots} snapshots (maxSnapshots)`),
      );
    }
    const id = randomUUID();
    const createdAt = Date.now();
    const sequence = this.#nextSequence++;
    this.#pending.add(id);
    // The cut: every partition's snapshot is asked for now, in call order
    // (or, behind a restore holding the gate, right after it).
    const asked = this.#gate.run(async () =>
      this.#partitions().map((p) => p.snapshot(PARTITION_SNAPSHOT_TAG + id)),
    );
    return (async () => {
      const calls = await asked;
      let made: PartitionSnapshotMade[];
      try {
        made = await this.#withinLimit(Promise.all(calls));
      } catch (err) {
        this.#rollBack(id, calls);
        throw wrapIO('volume snapshot', err);
      }
      const record: OverallSnapshotRecord = { id, name, createdAt, sequence, partitions: made };
      try {
        await this.admin(() => {
          const state = this.#store.state;
          const snapshots = [...state.snapshots, record].sort((a, b) => a.sequence - b.sequence);
          return this.#store.write({
            ...state,
            nextSequence: Math.max(state.nextSequence, sequence + 1),
            snapshots,
          });
        });
      } catch (err) {
        this.#rollBack(id, calls);
        throw err;
      }
      this.#pending.delete(id);
      return record;
    })();
  }

  /** Deletes overall snapshot `id`: its record, then its partition snapshots. */
  delete(id: string): Promise<void> {
    let record: OverallSnapshotRecord;
    try {
      record = this.find(id);
    } catch (err) {
      return Promise.reject(err);
    }
    this.#deleting.add(id);
    return this.admin(async () => {
      try {
        await Promise.allSettled(this.#reads.get(id) ?? []);
        const state = this.#store.state;
        await this.#store.write({
          ...state,
          snapshots: state.snapshots.filter((r) => r.id !== id),
        });
      } finally {
        this.#deleting.delete(id);
      }
      // Committed: what follows only frees space. A partition snapshot left
      // by a failure here is an orphan `recover` deletes.
      const partitions = this.#partitions();
      const results = await Promise.allSettled(
        partitions.map((p, i) => p.deleteSnapshot(record.partitions[i]!.id)),
      );
      for (const r of results) {
        if (r.status === 'rejected') this.#onError(wrapIO('volume snapshot delete', r.reason));
      }
    });
  }

  /**
   * Restores every partition to overall snapshot `id`, all or none: the
   * intent is durable first, so a crash or a failure part way is finished
   * by `recover`. Holds the volume's I/O from this call until it is done.
   */
  restore(id: string): Promise<void> {
    let record: OverallSnapshotRecord;
    try {
      if (this.#broken !== undefined) throw this.#broken;
      record = this.find(id);
    } catch (err) {
      return Promise.reject(err);
    }
    const release = this.#gate.hold();
    return this.admin(async () => {
      try {
        // No second lookup: a delete of `id` called after this restore runs
        // after it in the admin queue, and one called before failed the
        // lookup at the call.
        await this.#write({ restoring: id });
        await this.#restoreAll(record);
      } finally {
        release();
      }
    });
  }

  /**
   * After open or a processor restart: deletes the orphans of partitions
   * `indexes` (partition snapshots no record names), checks every record's
   * partition snapshots are there, and finishes an unfinished restore.
   * @throws `ECORRUPT` if a partition lost a snapshot a record names.
   */
  recover(indexes: readonly number[]): Promise<void> {
    return this.admin(async () => {
      const partitions = this.#partitions();
      const state = this.#store.state;
      const committed = new Set(state.snapshots.map((r) => r.id));
      for (const i of indexes) {
        const infos = await partitions[i]!.listSnapshots();
        const held = new Set(infos.map((s) => s.id));
        for (const record of state.snapshots) {
          if (!held.has(record.partitions[i]!.id)) {
            throw new BlockDeviceError(
              'ECORRUPT',
              `partition ${i} has lost snapshot ${record.partitions[i]!.id} of volume snapshot ${record.id}`,
            );
          }
        }
        for (const info of infos) {
          const owner = info.name?.startsWith(PARTITION_SNAPSHOT_TAG)
            ? info.name.slice(PARTITION_SNAPSHOT_TAG.length)
            : undefined;
          if (owner !== undefined && !committed.has(owner) && !this.#pending.has(owner)) {
            await partitions[i]!.deleteSnapshot(info.id);
          }
        }
      }
      if (state.restoring !== undefined) {
        const record = state.snapshots.find((r) => r.id === state.restoring);
        if (record === undefined) {
          throw new BlockDeviceError(
            'ECORRUPT',
            `volume store names restore of snapshot ${state.restoring}, which it does not hold`,
          );
        }
        await this.#restoreAll(record);
      }
    });
  }

  /**
   * Reads `length` bytes at `offset` of overall snapshot `sequence`, each
   * piece from its partition's snapshot by the partition's processor.
   * @throws `ENOENT` once the snapshot's delete was called.
   */
  read(sequence: number, offset: number, length: number): Promise<Uint8Array> {
    const record = this.#store.state.snapshots.find((r) => r.sequence === sequence);
    if (record === undefined || this.#deleting.has(record.id)) {
      return Promise.reject(
        new BlockDeviceError('ENOENT', `volume snapshot ${record?.id ?? sequence} was deleted`),
      );
    }
    const partitions = this.#partitions();
    const op = readPieces(this.#map, offset, length, (p, at, bytes) =>
      partitions[p]!.readSnapshot(record.partitions[p]!.id, at, bytes),
    );
    const reads = this.#reads.get(record.id) ?? new Set<Promise<unknown>>();
    this.#reads.set(record.id, reads);
    const tracked = op.catch(() => {});
    reads.add(tracked);
    tracked.then(() => {
      reads.delete(tracked);
      if (reads.size === 0 && this.#reads.get(record.id) === reads) this.#reads.delete(record.id);
    });
    return op;
  }

  /** A read-only handle on overall snapshot `record`, its reads served by {@link read}. */
  openHandle(record: OverallSnapshotRecord, size: number, blockSize: number): SnapshotHandle {
    const identity = {
      seq: record.sequence,
      id: record.id,
      name: record.name,
      createdAt: record.createdAt,
      writable: false,
    };
    const handle = new SnapshotHandle(this.#host, identity, size, blockSize);
    this.#handles.add(handle);
    return handle;
  }

  /** Closes every open handle (the volume is closing). */
  async closeHandles(): Promise<void> {
    await Promise.allSettled([...this.#handles].map((h) => h.close()));
  }

  /**
   * The volume extents that may differ between overall snapshots `fromId`
   * and `toId` (or live): each partition's changed extents between its two
   * partition snapshots, mapped to the volume, coalesced.
   * @throws `ENOENT`, `EIO` (a dead processor).
   */
  changedExtents(fromId: string, toId: string | 'live'): Extent[] {
    const from = this.find(fromId);
    const to = toId === 'live' ? undefined : this.find(toId);
    const out: Extent[] = [];
    for (const [i, p] of this.#partitions().entries()) {
      const extents = p.changedExtents(
        from.partitions[i]!.id,
        to === undefined ? 'live' : to.partitions[i]!.id,
      );
      out.push(...this.#map.toVolume(i, extents));
    }
    return coalesce(out);
  }

  /** Restores every partition, then clears the intent; a failure leaves the volume broken. */
  async #restoreAll(record: OverallSnapshotRecord): Promise<void> {
    try {
      const partitions = this.#partitions();
      await Promise.all(partitions.map((p, i) => p.restore(record.partitions[i]!.id)));
      await this.#write({ restoring: undefined });
      this.#broken = undefined;
    } catch (err) {
      this.#broken = new BlockDeviceError(
        'EIO',
        `restore of volume snapshot ${record.id} failed part way: I/O fails until it is finished (restartProcessor, or open the volume again)`,
        { cause: err },
      );
      throw wrapIO('volume restore', err);
    }
  }

  #write(changes: Partial<VolumeState>): Promise<void> {
    return this.#store.write({ ...this.#store.state, ...changes });
  }

  /** `op`, or `EIO` once the snapshot time limit passes. */
  #withinLimit<T>(op: Promise<T>): Promise<T> {
    op.catch(() => {}); // judged below, or by the rollback
    let timer: NodeJS.Timeout | undefined;
    const limit = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new BlockDeviceError(
              'EIO',
              `partition snapshots did not all finish within ${this.#timeoutMs} ms (snapshotTimeout)`,
            ),
          ),
        this.#timeoutMs,
      );
    });
    return Promise.race([op, limit]).finally(() => clearTimeout(timer));
  }

  /** Deletes every partition snapshot made for `id`, as each one lands. */
  #rollBack(id: string, calls: readonly Promise<PartitionSnapshotMade>[]): void {
    const partitions = this.#partitions();
    const undone = calls.map((call, i) =>
      call.then(
        (made) =>
          partitions[i]!.deleteSnapshot(made.id).catch((err: unknown) => {
            // Left as an orphan: `recover` deletes it at the next open.
            this.#onError(wrapIO('volume snapshot rollback', err));
          }),
        () => {},
      ),
    );
    Promise.all(undone).then(() => this.#pending.delete(id));
  }
}
