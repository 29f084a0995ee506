import { afterAll, beforeAll, describe, it } from 'vitest';
import { runSnapshotConformanceSuite } from '../../src/testing/index.js';
import { fileVolume, useBundledWorker, volumeSupports } from '../support/volume-rig.js';

/*
 * The snapshot suite, reopen included, on a striped VirtualVolume whose
 * partitions are files run by 2 worker processors: each reopen starts new
 * workers that open the partitions from their stores.
 */

let stopBundle: () => Promise<void>;
beforeAll(async () => {
  stopBundle = await useBundledWorker();
});
afterAll(() => stopBundle());

runSnapshotConformanceSuite({
  name: 'VirtualVolume snapshots on 2 workers over files (striped, reopened)',
  create: async () => {
    const { volume, reopen, cleanup } = await fileVolume(
      { partitions: 4, partitionSize: 16 * 1024, stripeUnit: 8192 },
      2,
    );
    return { device: volume, reopen: () => reopen(), cleanup };
  },
  supports: volumeSupports,
  describe,
  it,
});
