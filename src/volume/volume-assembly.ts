import { BlockDeviceError } from '../errors.js';
import { type DeviceSpec, isSpec, recordOf } from './device-spec.js';
import { LocalPartition, type Partition } from './partition.js';
import { PartitionEngine } from './partition-engine.js';
import { PartitionMap } from './partition-map.js';
import { RemotePartition, WorkerProcessor } from './processor-host.js';
import type { PartitionSpec } from './volume-options.js';
import type { PartitionRecord, VolumeState } from './volume-store.js';

/*
 * Putting a volume together (docs/ARCHITECTURE.md, "VirtualVolume"): which
 * processor runs which partition, the workers, and every partition opened
 * (or formatted) by its processor. All or nothing: if one partition fails
 * to open, the others are closed and the workers stopped again.
 */

/** Where partition `i` runs: a processor index, or -1 for this thread. */
export type Placement = readonly number[];

/** What runs the volume's partitions. */
export interface Processors {
  readonly workers: WorkerProcessor[];
  /** Set by the volume once it exists: a worker died. */
  onDeath: ((processor: number, err: BlockDeviceError) => void) | undefined;
}

/**
 * Round-robin over `count` processors, of the partitions both of whose
 * devices are specs; a partition given a device object stays here.
 */
export function place(sources: readonly PartitionSpec[], count: number): Placement {
  let next = 0;
  return sources.map((s) =>
    count > 0 && isSpec(s.origin) && isSpec(s.store) ? next++ % count : -1,
  );
}

/** Starts `count` workers. */
export function startProcessors(count: number): Processors {
  const processors: Processors = { workers: [], onDeath: undefined };
  for (let i = 0; i < count; i++) {
    processors.workers.push(new WorkerProcessor(i, (err) => processors.onDeath?.(i, err)));
  }
  return processors;
}

/**
 * Opens partition `i` where `placement` puts it.
 * @throws what its COW device's open or create throws, the message starting
 *   `partition i: ` (the code kept, the original as `cause`): a damaged store
 *   of one partition among many must say which.
 */
export async function openPartition(
  i: number,
  source: PartitionSpec,
  processor: WorkerProcessor | undefined,
  format: { maxSnapshots: number; force: boolean } | undefined,
): Promise<Partition> {
  try {
    if (processor === undefined) {
      return new LocalPartition(
        await PartitionEngine.open({ origin: source.origin, store: source.store, format }),
      );
    }
    return await RemotePartition.open(
      processor,
      i,
      source.origin as DeviceSpec,
      source.store as DeviceSpec,
      format,
    );
  } catch (err) {
    if (!BlockDeviceError.is(err)) throw err;
    const detail = err.message.slice(`${err.code}: `.length);
    throw new BlockDeviceError(err.code, `partition ${i}: ${detail}`, { cause: err });
  }
}

/**
 * Opens every partition; on a failure closes those opened, stops the
 * workers and rethrows the first failure.
 */
export async function openPartitions(
  sources: readonly PartitionSpec[],
  placement: Placement,
  processors: Processors,
  format: { maxSnapshots: number; force: boolean } | undefined,
): Promise<Partition[]> {
  const results = await Promise.allSettled(
    sources.map((s, i) =>
      openPartition(
        i,
        s,
        placement[i]! < 0 ? undefined : processors.workers[placement[i]!],
        format,
      ),
    ),
  );
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed === undefined) {
    return results.map((r) => (r as PromiseFulfilledResult<Partition>).value);
  }
  await Promise.allSettled(
    results.map((r) => (r.status === 'fulfilled' ? r.value.close() : undefined)),
  );
  await Promise.allSettled(processors.workers.map((w) => w.stop()));
  throw failed.reason;
}

/**
 * The partition map of opened partitions, checked: one block size.
 * @throws `EINVAL` naming the partition that differs.
 */
export function mapOf(partitions: readonly Partition[], stripeUnit: number): PartitionMap {
  const blockSize = partitions[0]!.blockSize;
  partitions.forEach(({ blockSize: b }, i) => {
    if (b !== blockSize) {
      throw new BlockDeviceError(
        'EINVAL',
        `partition ${i} has block size ${b}, partition 0 has ${blockSize}: a volume has one block size`,
      );
    }
  });
  return new PartitionMap(
    partitions.map((p) => p.size),
    stripeUnit,
    blockSize,
  );
}

/** The partition records a new volume's store keeps. */
export function recordsOf(
  sources: readonly PartitionSpec[],
  partitions: readonly Partition[],
): PartitionRecord[] {
  return sources.map((s, i) => ({
    size: partitions[i]!.size,
    origin: recordOf(s.origin),
    store: recordOf(s.store),
  }));
}

/**
 * The sources to open a volume with: the caller's where given, else the
 * recorded specs.
 * @throws `EINVAL` for a partition recorded as device objects and not given,
 *   or a list of the wrong length.
 */
export function sourcesOf(
  state: VolumeState,
  given: readonly (PartitionSpec | undefined)[] | undefined,
): PartitionSpec[] {
  if (given !== undefined && given.length !== state.partitions.length) {
    throw new BlockDeviceError(
      'EINVAL',
      `VirtualVolume.open: ${given.length} partitions given, the volume has ${state.partitions.length}`,
    );
  }
  return state.partitions.map((record, i) => {
    const supplied = given?.[i];
    if (supplied !== undefined) return supplied;
    const { origin, store } = record;
    if ('object' in origin || 'object' in store) {
      throw new BlockDeviceError(
        'EINVAL',
        `VirtualVolume.open: partition ${i} was created over device objects: pass them in options.partitions[${i}]`,
      );
    }
    return { origin, store };
  });
}
