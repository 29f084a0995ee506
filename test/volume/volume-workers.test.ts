import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryDevice, VirtualVolume } from '../../src/index.js';
import { PROCESSOR } from '../../src/volume/processor-host.js';
import { expectSameBytes, seededBytes } from '../support/bytes.js';
import { expectCode } from '../support/error-code.js';
import { fileVolume, useBundledWorker } from '../support/volume-rig.js';

/*
 * Worker processors: the worker started from source through tsx (as
 * examples and tests run), and a worker that dies — an uncaught exception,
 * process.exit inside it, terminate() as an out-of-memory kill would — with
 * its partitions failing EIO, the others going on, snapshot() failing
 * cleanly, and restartProcessor bringing back everything flushed.
 */

const shape = { partitions: 4, partitionSize: 64 * 1024, stripeUnit: 4096 };

describe('VirtualVolume worker started from the TypeScript source', () => {
  it('runs partitions in workers loaded through tsx', async () => {
    const store = await MemoryDevice.create({ size: 1 << 20, blockSize: 4096 });
    const volume = await VirtualVolume.create({
      store,
      processors: 2,
      partitions: [0, 1].map(() => ({
        origin: { memory: { size: 32 * 1024 } },
        store: { memory: { size: 1 << 20 } },
      })),
    });
    expect(volume.placement).toEqual([0, 1]);
    const data = seededBytes(volume.size, 3);
    await volume.write(0, data);
    const snap = await volume.snapshot();
    expectSameBytes('snapshot', await snap.read(0, volume.size), data);
    await volume.close();
  }, 30_000);
});

describe('VirtualVolume worker death', () => {
  let stopBundle: () => Promise<void>;
  beforeAll(async () => {
    stopBundle = await useBundledWorker();
  });
  afterAll(() => stopBundle());

  for (const how of ['throw', 'exit', 'terminate'] as const) {
    it(`a worker that dies (${how}) fails its partitions' I/O with EIO; restartProcessor brings back what was flushed`, async () => {
      const { volume, reopen, cleanup } = await fileVolume(shape, 2);
      try {
        const exits: number[] = [];
        volume.on('processor-exit', (i) => exits.push(i));
        volume.on('error', () => {});
        const data = seededBytes(volume.size, 11);
        await volume.write(0, data);
        const before = await volume.snapshot({ name: 'before' });
        await volume.flush();

        await expectCode(volume.crashProcessor(2), 'EINVAL', 'a processor that does not exist');
        const worker = volume[PROCESSOR](1);
        if (how === 'terminate') await volume.crashProcessor(1);
        else {
          worker.fault(how);
          await new Promise<void>((resolve) => worker.worker.once('exit', () => resolve()));
        }
        expect(exits).toEqual([1]);

        // Partitions 1 and 3 ran in processor 1: stripe units 1, 3, 5, ...
        await expectCode(volume.read(4096, 4096), 'EIO', 'a read of a dead partition');
        await expectCode(volume.write(3 * 4096, new Uint8Array(4096)), 'EIO', 'a write to it');
        await expectCode(before.read(4096, 4096), 'EIO', 'a snapshot read from it');
        // The others go on.
        expectSameBytes('partition 0', await volume.read(0, 4096), data.subarray(0, 4096));
        await volume.write(0, new Uint8Array(4096).fill(9));
        data.fill(9, 0, 4096);
        await expectCode(volume.snapshot(), 'EIO', 'a snapshot while a processor is dead');

        await volume.restartProcessor(1);
        expectSameBytes('after the restart', await volume.read(0, volume.size), data);
        expect(volume.listSnapshots().map((s) => s.name)).toEqual(['before']);
        const after = await volume.snapshot({ name: 'after' });
        expectSameBytes('a snapshot after the restart', await after.read(0, volume.size), data);
        await volume.close();

        const again = await reopen();
        expect(again.listSnapshots().map((s) => s.name)).toEqual(['before', 'after']);
        expectSameBytes('reopened', await again.read(0, again.size), data);
        await again.close();
      } finally {
        await cleanup();
      }
    }, 30_000);
  }

  it('a snapshot whose processor dies midway leaves no partition snapshot behind', async () => {
    const { volume, reopen, cleanup } = await fileVolume(shape, 2);
    try {
      volume.on('error', () => {});
      await volume.write(0, seededBytes(volume.size, 12));
      const taking = volume.snapshot({ name: 'cut short' });
      await volume.crashProcessor(0);
      await expectCode(taking, 'EIO', 'the snapshot');
      expect(volume.listSnapshots()).toEqual([]);
      await volume.restartProcessor(0);
      expect(volume.listSnapshots()).toEqual([]);
      await volume.close();
      // Each partition holds no snapshot: the restart and the rollback deleted them.
      const again = await reopen(0);
      expect(again.listSnapshots()).toEqual([]);
      await again.close();
    } finally {
      await cleanup();
    }
  }, 30_000);
});
