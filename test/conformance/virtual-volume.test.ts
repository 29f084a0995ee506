import { describe, it } from 'vitest';
import { runConformanceSuite, runSnapshotConformanceSuite } from '../../src/testing/index.js';
import { seededBytes } from '../support/bytes.js';
import { memoryVolume, type VolumeShape, volumeSupports } from '../support/volume-rig.js';

/*
 * VirtualVolume with every partition in this thread (processors: 0), over
 * MemoryDevices: the block suite on the volume and on its overall
 * snapshots, and the snapshot suite, contiguous and striped. The same
 * suites with worker processors are in virtual-volume-workers.test.ts.
 */

const layouts: [string, VolumeShape][] = [
  [
    'contiguous, 4 partitions of unequal size',
    { partitions: 4, partitionSize: 0, sizes: [8192, 24576, 4096, 28672] },
  ],
  [
    'striped, 4 partitions, 8 KiB unit',
    { partitions: 4, partitionSize: 16 * 1024, stripeUnit: 8192 },
  ],
];

for (const [layout, shape] of layouts) {
  runConformanceSuite({
    name: `VirtualVolume in this thread (${layout})`,
    create: async () => ({ device: (await memoryVolume(shape)).volume }),
    describe,
    it,
  });

  runConformanceSuite({
    name: `VirtualVolume overall snapshot in this thread (${layout})`,
    create: async () => {
      const { volume } = await memoryVolume(shape);
      const expected = seededBytes(volume.size, 7);
      await volume.write(0, expected);
      const snap = await volume.snapshot({ name: 'conformance' });
      // Later writes to the volume must not show through the snapshot.
      await volume.write(0, seededBytes(volume.size / 2, 8));
      await volume.write(volume.size - 5000, seededBytes(5000, 9));
      return { device: snap, expected, cleanup: () => volume.close() };
    },
    describe,
    it,
  });

  runSnapshotConformanceSuite({
    name: `VirtualVolume snapshots in this thread (${layout})`,
    create: async () => {
      const { volume, reopen } = await memoryVolume(shape);
      return { device: volume, reopen };
    },
    supports: volumeSupports,
    describe,
    it,
  });
}
