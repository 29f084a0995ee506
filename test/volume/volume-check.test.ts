import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { MemoryDevice, VirtualVolume } from '../../src/index.js';
import { tableOffset } from '../../src/store/index.js';
import { FaultyDevice } from '../../src/testing/index.js';
import { flipBit, seededBytes } from '../support/bytes.js';
import { expectCode } from '../support/error-code.js';
import { GatedDevice } from '../support/gated-device.js';
import { recordProgress } from '../support/progress.js';
import { newestSuperblock } from '../support/superblock.js';
import { fileVolume, useBundledWorker } from '../support/volume-rig.js';

/*
 * VirtualVolume.check(): a clean volume, in this thread and on two worker
 * processors, reports nothing after walking every store; one flipped byte
 * in a partition's COW store is reported naming that partition, with the
 * overall snapshot's damaged range in volume offsets, the other partitions
 * clean; damage in the volume store (its state, its superblock in use) is
 * reported as the volume store's; a partition snapshot whose rollback
 * failed is listed as an orphan, not a problem, until open deletes it; a
 * dead processor fails the check with EIO.
 * Every damage is made with the volume open: check() is meant for a volume
 * in use.
 */

const BS = 4096;
const PARTITIONS = 4;
const shape = { partitions: PARTITIONS, partitionSize: 16 * BS, stripeUnit: BS };

let stopBundle: () => Promise<void>;
beforeAll(async () => {
  stopBundle = await useBundledWorker();
});
afterAll(() => stopBundle());

/**
 * A volume whose every block was preserved once: written, snapshot `one`,
 * overwritten, snapshot `two`. So each partition's COW store holds a chunk
 * per block of its share, each the bytes `first` held there.
 */
async function preservedVolume(processors: number) {
  const rig = await fileVolume(shape, processors);
  const { volume } = rig;
  const first = seededBytes(volume.size, 1);
  await volume.write(0, first);
  const one = await volume.snapshot({ name: 'one' });
  await volume.write(0, seededBytes(volume.size, 2));
  const two = await volume.snapshot({ name: 'two' });
  await volume.flush();
  return { ...rig, first, one: one.id, two: two.id };
}

/** Flips a bit in the file at the first place `bytes` are found in it. */
async function flipWhere(file: string, bytes: Uint8Array): Promise<number> {
  const handle = await open(file, 'r+');
  try {
    const content = await handle.readFile();
    const at = content.indexOf(bytes);
    expect(at, `${file} holds the bytes`).toBeGreaterThanOrEqual(0);
    const one = Buffer.alloc(1);
    await handle.read(one, 0, 1, at + 100);
    one[0]! ^= 0x04;
    await handle.write(one, 0, 1, at + 100);
    return at;
  } finally {
    await handle.close();
  }
}

function places(report: Awaited<ReturnType<VirtualVolume['check']>>) {
  return report.problems.map((p) => [p.structure, p.message.split(':')[0]]);
}

describe.each([0, 2])('VirtualVolume.check() on %i processors', (processors) => {
  it('reports nothing on a clean volume, after walking every store', async () => {
    const { volume, cleanup, one, two } = await preservedVolume(processors);
    try {
      const report = await volume.check();
      expect(report.problems).toEqual([]);
      expect(report.orphans).toEqual([]);
      expect(report.skipped).toBe(0);
      expect(report.readable).toEqual({
        reopens: true,
        live: [],
        snapshots: [
          { id: one, damaged: [] },
          { id: two, damaged: [] },
        ],
      });
      // Two superblock slots and one table per store: the volume's and each partition's.
      expect(report.checked).toMatchObject({
        superblocks: 2 * (1 + PARTITIONS),
        tables: 1 + PARTITIONS,
      });
      // Every block was preserved once, and each chunk read back.
      expect(report.checked.chunks).toBe(volume.size / BS);
      expect(report.checked.bytes).toBeGreaterThan(volume.size);
      expect(report.checked.records).toBeGreaterThanOrEqual(2 + volume.size / BS);
      const quick = await volume.check({ verifyData: false });
      expect(quick.problems).toEqual([]);
      expect(quick.checked.chunks).toBe(0);
    } finally {
      await volume.close();
      await cleanup();
    }
  });

  it("reports progress summed over the volume store and every partition's check, ending at checked.bytes", async () => {
    const { volume, cleanup } = await preservedVolume(processors);
    try {
      const progress = recordProgress();
      const report = await volume.check({ onProgress: progress.onProgress });
      expect(progress.expectWellFormed('check')).toBe(report.checked.bytes);
      const quick = recordProgress();
      const metadataOnly = await volume.check({ verifyData: false, onProgress: quick.onProgress });
      expect(quick.expectWellFormed('check')).toBe(metadataOnly.checked.bytes);
    } finally {
      await volume.close();
      await cleanup();
    }
  });

  it('a throwing onProgress fails the check with what it threw, once every part settled', async () => {
    const { volume, cleanup } = await preservedVolume(processors);
    try {
      const thrown = new Error('stop the check');
      let calls = 0;
      await expect(
        volume.check({
          onProgress: () => {
            calls++;
            throw thrown;
          },
        }),
      ).rejects.toBe(thrown);
      expect(calls).toBe(1);
      expect((await volume.check()).problems).toEqual([]);
    } finally {
      await volume.close();
      await cleanup();
    }
  });

  it("reports a flipped byte in a partition's COW store naming that partition; the others are clean", async () => {
    const { volume, cleanup, dir, first, one, two } = await preservedVolume(processors);
    try {
      // Volume block 6 is stripe unit 6: partition 2's block 1 (6 = 1 · 4 + 2).
      const block = 6;
      const chunkAt = await flipWhere(
        join(dir, 'p2.cow'),
        first.subarray(block * BS, (block + 1) * BS),
      );
      const report = await volume.check();
      expect(places(report)).toEqual([['chunk', 'partition 2']]);
      expect(report.problems[0]!.offset).toBe(chunkAt);
      expect(report.readable.reopens).toBe(true);
      expect(report.readable.snapshots).toEqual([
        { id: one, damaged: [{ offset: block * BS, length: BS }] },
        { id: two, damaged: [] },
      ]);
      await expectCode(
        (await volume.openSnapshot(one)).read(block * BS, BS),
        'ECORRUPT',
        'the damaged block of snapshot one',
      );
    } finally {
      await volume.close();
      await cleanup();
    }
  });

  it('reports damage in the volume store as the volume store’s', async () => {
    const { volume, cleanup, store } = await preservedVolume(processors);
    try {
      // Another handle on the same memory: the volume owns (and guards) its own.
      const disk = store.reopen();
      const { sb, slot } = await newestSuperblock(disk);
      const stateAt = tableOffset(sb, sb.active);
      await flipBit(disk, stateAt + 10);
      const state = await volume.check();
      expect(places(state)).toEqual([['table', 'volume store']]);
      expect(state.problems[0]!.offset).toBe(stateAt);
      expect(state.readable.reopens).toBe(false);
      await flipBit(disk, stateAt + 10);
      expect((await volume.check()).problems).toEqual([]);

      await flipBit(disk, slot * 4096 + 13);
      const superblock = await volume.check();
      expect(places(superblock)).toEqual([['superblock', 'volume store']]);
      expect(superblock.problems[0]!.message).toContain('(in use)');
      expect(superblock.readable.reopens).toBe(false);
      await flipBit(disk, slot * 4096 + 13);
    } finally {
      await volume.close();
      await cleanup();
    }
  });
});

describe('VirtualVolume.check() refusals', () => {
  it('fails EIO while a processor is dead, and checks its options first', async () => {
    const { volume, cleanup } = await preservedVolume(2);
    volume.on('error', () => {});
    try {
      await expectCode(
        volume.check({ verifyData: 'yes' as unknown as boolean }),
        'EINVAL',
        'a verifyData that is not a boolean',
      );
      await expectCode(
        volume.check({ onProgress: 'bar' as unknown as () => void }),
        'EINVAL',
        'an onProgress that is not a function',
      );
      await volume.crashProcessor(1);
      await expectCode(volume.check(), 'EIO', 'a check with processor 1 dead');
      await volume.restartProcessor(1);
      expect((await volume.check()).problems).toEqual([]);
    } finally {
      await volume.close();
      await cleanup();
    }
  });
});

describe('VirtualVolume.check() orphans', () => {
  it('lists a partition snapshot whose rollback failed as an orphan, not a problem; open deletes it', async () => {
    const disks = await Promise.all(
      [0, 1].map(async () => ({
        origin: await MemoryDevice.create({ size: 16 * BS, blockSize: BS }),
        store: await MemoryDevice.create({ size: 1 << 20, blockSize: BS }),
      })),
    );
    // Partition 0's store refuses writes once `failing` is set: its rollback
    // delete fails. Partition 1 holds its snapshot at the origin's flush past
    // the time limit, so the snapshot is rolled back.
    let failing = false;
    const store0 = new FaultyDevice(disks[0]!.store, {
      failures: (op) => failing && op.kind === 'write',
    });
    const gated = new GatedDevice(disks[1]!.origin);
    const volumeStore = await MemoryDevice.create({ size: 1 << 20, blockSize: BS });
    const volume = await VirtualVolume.create({
      store: volumeStore,
      partitions: [
        { origin: disks[0]!.origin, store: store0 },
        { origin: gated, store: disks[1]!.store },
      ],
      snapshotTimeout: 300,
    });
    const errors: Error[] = [];
    volume.on('error', (err) => errors.push(err));
    const gate = gated.gate('flush');
    const taking = volume.snapshot({ name: 'cut-short' });
    // Partition 0's snapshot lands at once (memory); then its store fails.
    setTimeout(() => {
      failing = true;
    }, 100);
    await expectCode(taking, 'EIO', 'the snapshot past its time limit');
    await vi.waitFor(() => expect(errors.length, 'the failed rollback on partition 0').toBe(1));
    // Still in progress (partition 1 has not answered): not an orphan yet.
    expect((await volume.check()).orphans).toEqual([]);
    gate.open();
    // Partition 1's late snapshot lands and is deleted: the snapshot is no longer in progress.
    const report = await vi.waitFor(async () => {
      const found = await volume.check();
      expect(found.orphans).toHaveLength(1);
      return found;
    });
    expect(report.problems).toEqual([]);
    expect(report.orphans[0]).toMatchObject({ partition: 0 });
    expect(report.readable.snapshots).toEqual([]);
    failing = false;
    await volume.close().catch(() => {});

    const reopened = await VirtualVolume.open({
      store: volumeStore.reopen(),
      partitions: disks.map((d) => ({ origin: d.origin.reopen(), store: d.store.reopen() })),
    });
    try {
      const after = await reopened.check();
      expect(after.orphans).toEqual([]);
      expect(after.problems).toEqual([]);
    } finally {
      await reopened.close();
    }
  });
});
