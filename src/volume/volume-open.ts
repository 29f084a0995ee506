import type { BlockDevice } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import { refuseReformat } from '../store/index.js';
import type { Partition } from './partition.js';
import type { PartitionMap } from './partition-map.js';
import { WorkerProcessor } from './processor-host.js';
import {
  mapOf,
  openPartition,
  openPartitions,
  type Placement,
  type Processors,
  place,
  recordsOf,
  sourcesOf,
  startProcessors,
} from './volume-assembly.js';
import type {
  PartitionSpec,
  VirtualVolumeOpenOptions,
  VirtualVolumeOptions,
  VolumeSnapshotInfo,
} from './volume-options.js';
import { type OverallSnapshotRecord, VolumeStore } from './volume-store.js';

/*
 * `VirtualVolume.create` and `open` up to the volume object
 * (docs/ARCHITECTURE.md, "VirtualVolume"): the processors started, every
 * partition opened (or formatted) by its processor, the volume store
 * formatted or read. On a failure everything opened is closed again.
 */

/** What a volume is made of once assembled. */
export interface Parts {
  readonly store: VolumeStore;
  readonly map: PartitionMap;
  readonly sources: readonly PartitionSpec[];
  readonly placement: Placement;
  readonly processors: Processors;
  readonly partitions: Partition[];
  readonly snapshotTimeout: number;
}

/**
 * Formats a new volume over the claimed `store`: refuses a formatted store
 * unless `force`, formats every partition, then the volume store.
 */
export async function createParts(
  store: BlockDevice,
  options: VirtualVolumeOptions,
): Promise<Parts> {
  const force = options.force ?? false;
  await refuseReformat(store, 'VirtualVolume store', force);
  const sources = options.partitions;
  const count = options.processors ?? 0;
  const placement = place(sources, count);
  const processors = startProcessors(count);
  const maxSnapshots = options.maxSnapshots ?? 64;
  const partitions = await openPartitions(sources, placement, processors, { maxSnapshots, force });
  try {
    const map = mapOf(partitions, options.stripeUnit ?? 0);
    const volumeStore = await VolumeStore.format(store, {
      size: map.size,
      blockSize: partitions[0]!.blockSize,
      stripeUnit: map.stripeUnit,
      maxSnapshots,
      partitions: recordsOf(sources, partitions),
      nextSequence: 1,
      snapshots: [],
      restoring: undefined,
    });
    const snapshotTimeout = options.snapshotTimeout ?? 30_000;
    return { store: volumeStore, map, sources, placement, processors, partitions, snapshotTimeout };
  } catch (err) {
    await closeAll(partitions, processors);
    throw err;
  }
}

/** Reads the volume store and opens every partition where it runs, checking the map. */
export async function openParts(
  store: BlockDevice,
  options: VirtualVolumeOpenOptions,
): Promise<Parts> {
  const volumeStore = await VolumeStore.open(store);
  const state = volumeStore.state;
  const sources = sourcesOf(state, options.partitions);
  const count = options.processors ?? 0;
  const placement = place(sources, count);
  const processors = startProcessors(count);
  const partitions = await openPartitions(sources, placement, processors, undefined);
  try {
    for (const [i, p] of partitions.entries()) {
      const recorded = state.partitions[i]!;
      if (p.size !== recorded.size || p.blockSize !== state.blockSize) {
        throw new BlockDeviceError(
          'EINVAL',
          `partition ${i} is ${p.size} bytes in blocks of ${p.blockSize}; the volume map says ${recorded.size} in blocks of ${state.blockSize}`,
        );
      }
    }
    const map = mapOf(partitions, state.stripeUnit);
    const snapshotTimeout = options.snapshotTimeout ?? 30_000;
    return { store: volumeStore, map, sources, placement, processors, partitions, snapshotTimeout };
  } catch (err) {
    await closeAll(partitions, processors);
    throw err;
  }
}

/** Closes every partition, then stops the workers; the first failure is thrown after all ran. */
export async function closeAll(
  partitions: readonly Partition[],
  processors: Processors,
): Promise<void> {
  const closed = await Promise.allSettled(partitions.map((p) => p.close()));
  await Promise.allSettled(processors.workers.map((w) => w.stop()));
  const failed = closed.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed !== undefined) throw failed.reason;
}

/**
 * Replaces processor `index` with a new worker that opens its partitions
 * from their stores (the old one stopped first if it still runs), and puts
 * them in `partitions` and the worker in `processors`; all or nothing.
 * @returns the indexes of the partitions it reopened.
 */
export async function restartWorker(
  index: number,
  placement: Placement,
  sources: readonly PartitionSpec[],
  processors: Processors,
  partitions: Partition[],
): Promise<number[]> {
  const old = processors.workers[index]!;
  if (!old.dead) await old.stop();
  const processor = new WorkerProcessor(index, (err) => processors.onDeath?.(index, err));
  const mine = placement.flatMap((at, i) => (at === index ? [i] : []));
  const opened = await Promise.allSettled(
    mine.map((i) => openPartition(i, sources[i]!, processor, undefined)),
  );
  const failed = opened.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed !== undefined) {
    await processor.stop();
    throw failed.reason;
  }
  for (const [k, r] of opened.entries()) {
    partitions[mine[k]!] = (r as PromiseFulfilledResult<Partition>).value;
  }
  processors.workers[index] = processor;
  return mine;
}

/** What `listSnapshots` tells of an overall snapshot, with its partitions' places in the volume. */
export function snapshotInfoOf(
  record: OverallSnapshotRecord,
  map: PartitionMap,
): VolumeSnapshotInfo {
  return {
    id: record.id,
    name: record.name,
    createdAt: new Date(record.createdAt),
    writable: false,
    privateBytes: 0,
    sequence: record.sequence,
    partitions: record.partitions.map((p, i) => ({
      partition: i,
      id: p.id,
      sequence: p.sequence,
      createdAt: new Date(p.createdAt),
      ...map.describe(i),
    })),
  };
}

/** Processor `index`. @throws `EINVAL` for an index that is not a processor. */
export function processorAt(processors: Processors, index: number): WorkerProcessor {
  const workers = processors.workers;
  if (!Number.isSafeInteger(index) || index < 0 || index >= workers.length) {
    throw new BlockDeviceError(
      'EINVAL',
      `processor ${index} does not exist (the volume has ${workers.length})`,
    );
  }
  return workers[index]!;
}

/** Throws `EIO` naming a dead processor, if one is: a snapshot or restore needs every one. */
export function checkAlive(processors: Processors): void {
  const dead = processors.workers.find((w) => w.dead);
  if (dead !== undefined) {
    throw new BlockDeviceError(
      'EIO',
      `volume processor ${dead.index} is dead: restartProcessor(${dead.index}) first`,
    );
  }
}
