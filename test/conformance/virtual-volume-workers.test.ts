import { afterAll, beforeAll, describe, it } from 'vitest';
import { runConformanceSuite, runSnapshotConformanceSuite } from '../../src/testing/index.js';
import { seededBytes } from '../support/bytes.js';
import { memorySpecVolume, useBundledWorker, volumeSupports } from '../support/volume-rig.js';

/*
 * VirtualVolume with its partitions in 2 worker processors, over memory
 * specs (each worker's own memory): the block suite on the volume and on
 * an overall snapshot, and the snapshot suite without reopen (memory dies
 * with the volume; virtual-volume-reopen.test.ts runs it over files). Each
 * partition's COW device runs in its worker; every byte crosses threads.
 */

let stopBundle: () => Promise<void>;
beforeAll(async () => {
  stopBundle = await useBundledWorker();
});
afterAll(() => stopBundle());

const striped = { partitions: 4, partitionSize: 16 * 1024, stripeUnit: 4096 };
const contiguous = { partitions: 4, partitionSize: 0, sizes: [8192, 24576, 4096, 28672] };

runConformanceSuite({
  name: 'VirtualVolume on 2 workers (striped, 4 KiB unit)',
  create: async () => ({ device: await memorySpecVolume(striped, 2) }),
  describe,
  it,
});

runConformanceSuite({
  name: 'VirtualVolume overall snapshot on 2 workers (contiguous)',
  create: async () => {
    const volume = await memorySpecVolume(contiguous, 2);
    const expected = seededBytes(volume.size, 17);
    await volume.write(0, expected);
    const snap = await volume.snapshot();
    await volume.write(0, seededBytes(volume.size / 2, 18));
    return { device: snap, expected, cleanup: () => volume.close() };
  },
  describe,
  it,
});

runSnapshotConformanceSuite({
  name: 'VirtualVolume snapshots on 2 workers (contiguous)',
  create: async () => ({ device: await memorySpecVolume(contiguous, 2) }),
  supports: { ...volumeSupports, reopen: false },
  describe,
  it,
});
