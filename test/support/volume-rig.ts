import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { build } from 'esbuild';
import { MemoryDevice, VirtualVolume } from '../../src/index.js';
import type { SnapshotSupport } from '../../src/testing/index.js';
import type { PartitionSpec } from '../../src/volume/index.js';
import { overrideWorkerEntry } from '../../src/volume/worker-entry.js';

/*
 * Volumes for the tests of src/volume/: over memory devices in this thread,
 * or over files run by worker processors. Worker tests run the worker from
 * a bundle built once per test file (useBundledWorker), not through tsx in
 * every worker: a volume then starts in ~50 ms instead of ~500 ms. One test
 * (volume-workers.test.ts) keeps the tsx path that examples use.
 */

/** Builds the worker entry into one file and makes new volumes start their workers on it. */
export async function useBundledWorker(): Promise<() => Promise<void>> {
  const dir = await mkdtemp(join(tmpdir(), 'blocksnap-volume-worker-'));
  const outfile = join(dir, 'volume-worker.mjs');
  await build({
    entryPoints: [join(import.meta.dirname, '../../src/volume/volume-worker.ts')],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    outfile,
    logLevel: 'error',
  });
  overrideWorkerEntry(pathToFileURL(outfile));
  return async () => {
    overrideWorkerEntry(undefined);
    await rm(dir, { recursive: true, force: true });
  };
}

/** What a VirtualVolume does of the snapshot contract: overall snapshots are immutable. */
export const volumeSupports: SnapshotSupport = {
  writable: false,
  restore: true,
  pointInTime: true,
  reopen: true,
  selective: false,
  preserveEvents: false,
};

/** A volume whose partitions are memory specs run by `processors` workers (it cannot be reopened). */
export async function memorySpecVolume(
  shape: VolumeShape,
  processors: number,
): Promise<VirtualVolume> {
  const blockSize = shape.blockSize ?? 4096;
  return VirtualVolume.create({
    store: await MemoryDevice.create({ size: 1 << 20, blockSize }),
    partitions: Array.from({ length: shape.partitions }, (_, i) => ({
      origin: { memory: { size: shape.sizes?.[i] ?? shape.partitionSize, blockSize } },
      store: { memory: { size: shape.storeSize ?? 1 << 20, blockSize } },
    })),
    stripeUnit: shape.stripeUnit,
    processors,
    maxSnapshots: shape.maxSnapshots ?? 16,
  });
}

/** Geometry of a test volume. */
export interface VolumeShape {
  partitions: number;
  partitionSize: number;
  /** Sizes of each partition, overriding partitionSize (contiguous volumes only). */
  sizes?: readonly number[];
  stripeUnit?: number;
  blockSize?: number;
  storeSize?: number;
  maxSnapshots?: number;
}

/** A volume over MemoryDevices of this thread, and how to open it again over the same memory. */
export async function memoryVolume(shape: VolumeShape): Promise<{
  volume: VirtualVolume;
  reopen: () => Promise<VirtualVolume>;
}> {
  const blockSize = shape.blockSize ?? 4096;
  const store = await MemoryDevice.create({ size: 1 << 20, blockSize });
  const disks = await Promise.all(
    Array.from({ length: shape.partitions }, async (_, i) => ({
      origin: await MemoryDevice.create({
        size: shape.sizes?.[i] ?? shape.partitionSize,
        blockSize,
      }),
      store: await MemoryDevice.create({ size: shape.storeSize ?? 1 << 20, blockSize }),
    })),
  );
  const volume = await VirtualVolume.create({
    store,
    partitions: disks,
    stripeUnit: shape.stripeUnit,
    maxSnapshots: shape.maxSnapshots ?? 16,
  });
  const reopen = () =>
    VirtualVolume.open({
      store: store.reopen(),
      partitions: disks.map((d) => ({ origin: d.origin.reopen(), store: d.store.reopen() })),
    });
  return { volume, reopen };
}

/** A volume over files run by `processors` workers, and how to open it again; `cleanup` removes the files. */
export async function fileVolume(
  shape: VolumeShape,
  processors: number,
): Promise<{
  volume: VirtualVolume;
  reopen: (processors?: number) => Promise<VirtualVolume>;
  cleanup: () => Promise<void>;
  dir: string;
  /** The volume store (its memory, shared by every reopened handle). */
  store: MemoryDevice;
}> {
  const dir = await mkdtemp(join(tmpdir(), 'blocksnap-volume-'));
  const blockSize = shape.blockSize ?? 4096;
  const store = await MemoryDevice.create({ size: 1 << 20, blockSize });
  const partitions: PartitionSpec[] = Array.from({ length: shape.partitions }, (_, i) => ({
    origin: {
      file: join(dir, `p${i}.img`),
      size: shape.sizes?.[i] ?? shape.partitionSize,
      blockSize,
    },
    store: { file: join(dir, `p${i}.cow`), size: shape.storeSize ?? 1 << 20, blockSize },
  }));
  const volume = await VirtualVolume.create({
    store,
    partitions,
    stripeUnit: shape.stripeUnit,
    processors,
    maxSnapshots: shape.maxSnapshots ?? 16,
  });
  return {
    volume,
    dir,
    store,
    reopen: (again = processors) =>
      VirtualVolume.open({ store: store.reopen(), processors: again }),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}
