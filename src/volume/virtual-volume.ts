import {
  AbstractBlockDevice,
  checkCheckOptions,
  type InFlightCounter,
  inFlightCounter,
  withClaimed,
} from '../base/index.js';
import type {
  ChangeTracking,
  CheckOptions,
  Extent,
  Snapshot,
  SnapshotCapable,
  SnapshotOptions,
} from '../device.js';
import { BlockDeviceError } from '../errors.js';
import { checkSnapshotOptions } from '../snapshot/index.js';
import { GroupSnapshots } from './group-snapshots.js';
import type { Partition } from './partition.js';
import { type PartitionMap, readPieces, writePieces } from './partition-map.js';
import { PROCESSOR, type WorkerProcessor } from './processor-host.js';
import type { Placement, Processors } from './volume-assembly.js';
import { checkVolume, type VolumeCheckReport } from './volume-check.js';
import type { VirtualVolumeEvents } from './volume-events.js';
import { VolumeGate } from './volume-gate.js';
import {
  checkAlive,
  closeAll,
  createParts,
  openParts,
  type Parts,
  processorAt,
  restartWorker,
  snapshotInfoOf,
} from './volume-open.js';
import {
  checkCommonOptions,
  checkCreateOptions,
  type PartitionSpec,
  type VirtualVolumeOpenOptions,
  type VirtualVolumeOptions,
  type VolumeSnapshotInfo,
} from './volume-options.js';
import { type ScheduleOptions, SnapshotSchedule } from './volume-schedule.js';
import type { OverallSnapshotRecord, VolumeStore } from './volume-store.js';

/**
 * A block device made of partitions, each a
 * CowSnapshotDevice over its own origin and store, spread over worker
 * threads (processors), with snapshots of the whole volume.
 *
 * Guarantees: the volume's address space maps onto the partitions,
 * contiguous or striped; each partition's COW device, change log and lock
 * table run in the processor that owns it. An overall snapshot holds
 * exactly the writes called before `snapshot()`, on every partition, and
 * none called after (snapshot rule 1 across threads), with no write held
 * at the volume level; it is a set of immutable partition snapshots plus a
 * catalog record, all or nothing — after a failure, a time-out or a power
 * cut at any point of the protocol, the volume holds the whole overall
 * snapshot or nothing of it. `restore` is all partitions or none, across a
 * power cut too. A dead worker fails its partitions' I/O with `EIO` and
 * leaves the others running; {@link VirtualVolume.restartProcessor} reopens
 * its partitions from their stores (memory specs excepted: their memory
 * died with the worker). See docs/ARCHITECTURE.md, "VirtualVolume".
 */
export class VirtualVolume
  extends AbstractBlockDevice<VirtualVolumeEvents>
  implements SnapshotCapable, ChangeTracking
{
  readonly #store: VolumeStore;
  readonly #map: PartitionMap;
  readonly #sources: readonly PartitionSpec[];
  readonly #placement: Placement;
  readonly #processors: Processors;
  readonly #partitions: Partition[];
  readonly #gate = new VolumeGate();
  readonly #snapshots: GroupSnapshots;
  readonly #schedules = new Set<SnapshotSchedule>();
  readonly #inFlight: InFlightCounter = inFlightCounter(this);

  private constructor(parts: Parts) {
    const blockSize = parts.partitions[0]!.blockSize;
    super('VirtualVolume', parts.map.size, blockSize, false);
    this.#store = parts.store;
    this.#map = parts.map;
    this.#sources = parts.sources;
    this.#placement = parts.placement;
    this.#processors = parts.processors;
    this.#partitions = parts.partitions;
    this.#snapshots = new GroupSnapshots(
      parts.store,
      parts.map,
      () => this.#partitions,
      this.#gate,
      parts.snapshotTimeout,
      (err) => this.reportError(err),
    );
    this.#processors.onDeath = (i, err) => {
      this.reportError(err);
      this.emit('processor-exit', i, err);
    };
  }

  /**
   * Creates a volume: opens (at `create`, formats) every partition in the
   * processor that owns it, then formats the volume store with the
   * partition map. Resolves once all of it is durable. The volume owns the
   * store and the partitions' devices from then on.
   * @throws `EINVAL` for bad options (partitions of different block sizes,
   *   a striped layout over partitions of unequal size, a store too small);
   *   `EBUSY` (nothing written) if the volume store already holds a
   *   blocksnap format, unless `force`; `EIO`.
   */
  static async create(options: VirtualVolumeOptions): Promise<VirtualVolume> {
    checkCreateOptions(options);
    return withClaimed([options.store] as const, 'VirtualVolume', async ([store]) => {
      const parts = await createParts(store, options);
      return new VirtualVolume(parts);
    });
  }

  /**
   * Opens a volume made by {@link VirtualVolume.create}: reads the partition
   * map and catalog, opens every partition in its processor (each COW
   * device recovers on its own), deletes partition snapshots no committed
   * overall snapshot names (a snapshot cut short by a crash), and finishes
   * a restore a crash interrupted.
   * @throws `ECORRUPT` if the volume store is damaged or a partition lost a
   *   snapshot the catalog names; `EINVAL` if a partition's geometry differs
   *   from the map, or one created over device objects is not given; `EIO`.
   */
  static async open(options: VirtualVolumeOpenOptions): Promise<VirtualVolume> {
    checkCommonOptions(options, 'VirtualVolume.open');
    return withClaimed([options.store] as const, 'VirtualVolume', async ([store]) => {
      const parts = await openParts(store, options);
      try {
        const volume = new VirtualVolume(parts);
        await volume.#snapshots.recover(parts.partitions.map((_, i) => i));
        return volume;
      } catch (err) {
        await closeAll(parts.partitions, parts.processors);
        throw err;
      }
    });
  }

  /** How many partitions the volume has. */
  get partitionCount(): number {
    return this.#partitions.length;
  }

  /** The processor running each partition: a worker's index, or -1 for this thread. */
  get placement(): readonly number[] {
    return this.#placement;
  }

  /** The stripe unit in bytes; 0 for a contiguous volume. */
  get stripeUnit(): number {
    return this.#map.stripeUnit;
  }

  protected _read(offset: number, length: number): Promise<Uint8Array> {
    return this.#gate.run(() => {
      this.#checkUsable();
      return readPieces(this.#map, offset, length, (p, at, bytes) =>
        this.#partitions[p]!.read(at, bytes),
      );
    });
  }

  protected override _writeThrough(offset: number, data: Uint8Array): Promise<void> | undefined {
    // Held: the write waits in the gate, so it needs the private copy.
    if (this.#gate.held) return undefined;
    return this.#writeNow(offset, data);
  }

  protected _write(offset: number, data: Uint8Array): Promise<void> {
    return this.#gate.run(() => this.#writeNow(offset, data));
  }

  /** Hands every piece to its partition before returning (each takes its bytes then). */
  #writeNow(offset: number, data: Uint8Array): Promise<void> {
    try {
      this.#checkUsable();
    } catch (err) {
      return Promise.reject(err);
    }
    return writePieces(this.#map, offset, data, (p, at, bytes) =>
      this.#partitions[p]!.write(at, bytes),
    );
  }

  protected async _flush(): Promise<void> {
    await Promise.all(this.#partitions.map((p) => p.flush()));
  }

  protected async _close(): Promise<void> {
    for (const schedule of this.#schedules) schedule.stop();
    await this.#snapshots.admin(async () => {});
    await this.#snapshots.closeHandles();
    // The partitions (their stores hold the data), then the catalog's store.
    await closeAll(this.#partitions, this.#processors).finally(() => this.#store.close());
  }

  /**
   * Takes an overall snapshot: one immutable partition snapshot per
   * partition, each by its processor at one cut, and the catalog record
   * naming them. It holds exactly the writes called before this call and
   * none called after; no write waits for another partition. A durability
   * point. All or nothing: if a partition fails or the `snapshotTimeout`
   * passes, the partition snapshots made for it are removed and it rejects.
   * @throws `EINVAL` for bad options (overall snapshots are read-only:
   *   `writable: true` is refused), `ENOSPC` past `maxSnapshots`, `EIO` if a
   *   processor is dead or a partition fails or times out, `ECLOSED`.
   */
  snapshot(options: SnapshotOptions = {}): Promise<Snapshot> {
    let taking: Promise<OverallSnapshotRecord>;
    try {
      this.checkOpen();
      checkSnapshotOptions(options);
      if (options.writable === true) {
        throw new BlockDeviceError(
          'EINVAL',
          'volume snapshots are read-only: partition snapshots are immutable',
        );
      }
      this.#checkUsable();
      checkAlive(this.#processors);
      taking = this.#snapshots.take(options.name, this.#store.state.maxSnapshots);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#inFlight.track(
      taking.then((record) => {
        const handle = this.#snapshots.openHandle(record, this.size, this.blockSize);
        this.emit('snapshot', this.#info(record));
        return handle;
      }),
    );
  }

  /** The overall snapshots, oldest first, each with its partition snapshots. */
  listSnapshots(): VolumeSnapshotInfo[] {
    this.checkOpen();
    return this.#snapshots.records().map((r) => this.#info(r));
  }

  /**
   * Opens a read-only handle on overall snapshot `id`; each partition's
   * processor serves its part from the partition's snapshot.
   * @throws `ENOENT`, `ECLOSED`.
   */
  async openSnapshot(id: string): Promise<Snapshot> {
    this.checkOpen();
    return this.#snapshots.openHandle(this.#snapshots.find(id), this.size, this.blockSize);
  }

  /**
   * The partition snapshots overall snapshot `id` references, with their
   * state information (partition, id, sequence, time, place in the volume).
   * @throws `ENOENT`, `ECLOSED`.
   */
  partitionSnapshots(id: string): VolumeSnapshotInfo['partitions'] {
    this.checkOpen();
    return this.#info(this.#snapshots.find(id)).partitions;
  }

  /**
   * Deletes overall snapshot `id`: its catalog record (durably), then its
   * partition snapshots. Reads through its handles called from now on fail
   * `ENOENT`; those called before complete first. A partition snapshot
   * whose delete fails is reported by an `error` event and deleted at the
   * next open. A durability point.
   * @throws `ENOENT`, `ECLOSED`, `EIO`.
   */
  deleteSnapshot(id: string): Promise<void> {
    try {
      this.checkOpen();
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#inFlight.track(
      this.#snapshots.delete(id).then(() => {
        this.emit('snapshot-deleted', id);
      }),
    );
  }

  /**
   * Makes the volume's content equal overall snapshot `id`'s, on every
   * partition or none: a restore cut short by a failure or a crash is
   * finished by {@link restartProcessor} or the next `open`, and until then
   * the volume's I/O fails `EIO`. I/O called after this call waits for it.
   * Other snapshots are kept. A durability point.
   * @throws `ENOENT`, `EIO`, `ECLOSED`.
   */
  restore(id: string): Promise<void> {
    try {
      this.checkOpen();
      checkAlive(this.#processors);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#inFlight.track(this.#snapshots.restore(id));
  }

  /**
   * The coalesced byte extents whose content may differ between overall
   * snapshots `fromId` and `toId` (or the live volume), from every
   * partition's change table; no data is read. With worker processors it
   * asks each worker and waits for the answers (a few microseconds each).
   * @throws `ENOENT` for an unknown id, `EIO` if a processor is dead, `ECLOSED`.
   */
  changedExtents(fromId: string, toId: string | 'live'): Extent[] {
    this.checkOpen();
    return this.#snapshots.changedExtents(fromId, toId);
  }

  /**
   * The extents overall snapshot `id` holds: the whole volume.
   * @throws `ENOENT`, `ECLOSED`.
   */
  snapshotExtents(id: string): Extent[] {
    this.checkOpen();
    this.#snapshots.find(id);
    return [{ offset: 0, length: this.size }];
  }

  /**
   * Starts a new worker for processor `index` and reopens its partitions
   * from their stores: everything flushed before the old worker died is
   * there. Partition snapshots left by an overall snapshot the death cut
   * short are deleted, and a restore it interrupted is finished. If the
   * old worker still runs, it is stopped first (its I/O in flight fails
   * `EIO`). Partitions over memory specs cannot come back: their memory
   * died with the worker.
   * @throws `EINVAL` for an index that is not a processor, `ECORRUPT`, `EIO`, `ECLOSED`.
   */
  restartProcessor(index: number): Promise<void> {
    try {
      this.checkOpen();
      this.#processor(index);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#inFlight.track(this.#restart(index));
  }

  async #restart(index: number): Promise<void> {
    const restarted = await restartWorker(
      index,
      this.#placement,
      this.#sources,
      this.#processors,
      this.#partitions,
    );
    await this.#snapshots.recover(restarted);
  }

  /**
   * Walks the whole volume and verifies every checksum, like `qemu-img
   * check`: the volume store (superblock slots and catalog, as `open` reads
   * them), every partition's COW store (its own `check()`, run by the
   * processor that owns it), and the catalog against the partitions (every
   * overall snapshot's partition snapshots are there). Problems name their
   * place (`volume store: …`, `partition 2: …`); counts are summed;
   * `readable` is in volume offsets and overall snapshot ids. Partition
   * snapshots left by an uncommitted snapshot are listed as `orphans`, not
   * problems. Read-only and safe in use: it writes nothing, and catalog
   * changes wait only while the volume store and the snapshot lists are read.
   * `onProgress` gets the sum of the volume store's and the partitions'
   * progress (a worker processor sends its partitions' as they go), from
   * when every part has given its total; a callback that throws fails the
   * check with what it threw once every partition's check has settled.
   * @throws `EINVAL` for bad options, `EIO` if a processor is dead or a read
   *   fails (damage is reported, not thrown), `ECLOSED`.
   */
  check(options: CheckOptions = {}): Promise<VolumeCheckReport> {
    try {
      this.checkOpen();
      checkCheckOptions(options);
      checkAlive(this.#processors);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#inFlight.track(
      checkVolume(this.#store, this.#snapshots, this.#partitions, this.#map, options),
    );
  }

  /**
   * Takes an overall snapshot every `every` milliseconds and deletes the
   * oldest snapshots the schedule made beyond `keep`, emitting its events;
   * stops at `close()`, at `signal`'s abort, or at `stop()`. Its timer runs
   * on this thread's event loop: a caller that never yields to it (a loop of
   * awaited writes to partitions in memory on this thread settles in
   * microtasks alone) holds the snapshots back until it does.
   * @throws `EINVAL` for bad options, `ECLOSED`.
   */
  schedule(options: ScheduleOptions): SnapshotSchedule {
    this.checkOpen();
    const schedule = new SnapshotSchedule(this, options, () => this.#schedules.delete(schedule));
    this.#schedules.add(schedule);
    return schedule;
  }

  /**
   * Kills processor `index`'s worker at once, as the system would on an
   * out-of-memory kill: for recovery drills. Its partitions' I/O in flight
   * and from then on fails `EIO`, a `processor-exit` event follows, and
   * {@link restartProcessor} brings it back.
   * @throws `EINVAL` for an index that is not a processor, `ECLOSED`.
   */
  async crashProcessor(index: number): Promise<void> {
    this.checkOpen();
    await this.#processor(index).crash();
  }

  /** Processor `index`'s worker host, for fault tests. @internal */
  [PROCESSOR](index: number): WorkerProcessor {
    return this.#processor(index);
  }

  #processor(index: number): WorkerProcessor {
    return processorAt(this.#processors, index);
  }

  #checkUsable(): void {
    const broken = this.#snapshots.broken;
    if (broken !== undefined) throw broken;
  }

  #info(record: OverallSnapshotRecord): VolumeSnapshotInfo {
    return snapshotInfoOf(record, this.#map);
  }
}
