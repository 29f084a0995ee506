import { describe, it } from 'vitest';
import {
  type BlockDevice,
  CowSnapshotDevice,
  JournalDevice,
  MemoryDevice,
} from '../../src/index.js';
import {
  FaultyDevice,
  type FaultyOperation,
  runConformanceSuite,
  runSnapshotConformanceSuite,
} from '../../src/testing/index.js';

const size = 64 * 1024;
const blockSize = 4096;

function content(seed: number): Uint8Array {
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i++) out[i] = (i * 151 + seed * 17 + (i >>> 9)) & 0xff;
  return out;
}

/** A journal device over memory; `journalBytes` of ring (small ones force checkpoints). */
async function journalOver(journalBytes: number, checkpointAt?: number): Promise<JournalDevice> {
  const production = await MemoryDevice.create({ size, blockSize });
  const journal = await MemoryDevice.create({ size: 8192 + journalBytes, blockSize: 512 });
  return JournalDevice.create(production, journal, { checkpointAt });
}

runConformanceSuite({
  name: 'JournalDevice',
  create: async () => ({ device: await journalOver(1 << 20) }),
  describe,
  it,
});

runConformanceSuite({
  name: 'JournalDevice with a journal small enough to checkpoint under load',
  // Just over one whole-device write: most tests fill it several times over.
  create: async () => ({ device: await journalOver(80 * 1024, 0.5) }),
  describe,
  it,
});

runConformanceSuite({
  name: 'JournalDevice over a CowSnapshotDevice with a live snapshot',
  create: async () => {
    const origin = await MemoryDevice.create({ size, blockSize });
    const store = await MemoryDevice.create({ size: 1 << 20, blockSize });
    const production = await CowSnapshotDevice.create(origin, store, { maxSnapshots: 4 });
    await production.snapshot();
    const journal = await MemoryDevice.create({ size: 8192 + 96 * 1024, blockSize: 512 });
    return {
      device: await JournalDevice.create(production, journal, {
        checkpointAt: 0.5,
        maxSnapshots: 4,
      }),
    };
  },
  describe,
  it,
});

/** A journal device over a CowSnapshotDevice over memory, so it can take snapshots. */
async function journalOverCow(journalBytes = 1 << 20): Promise<JournalDevice> {
  const origin = await MemoryDevice.create({ size, blockSize });
  const store = await MemoryDevice.create({ size: 2 << 20, blockSize });
  const production = await CowSnapshotDevice.create(origin, store, { maxSnapshots: 16 });
  const journal = await MemoryDevice.create({ size: 8192 + journalBytes, blockSize: 512 });
  return JournalDevice.create(production, journal, { maxSnapshots: 8 });
}

runConformanceSuite({
  name: 'JournalDevice snapshot, pending (reads through the journal)',
  create: async () => {
    const expected = content(3);
    const device = await journalOverCow();
    await device.write(0, content(0));
    await device.checkpoint();
    await device.write(0, expected.subarray(0, size / 2));
    await device.write(size / 2, expected.subarray(size / 2));
    const snap = await device.snapshot({ name: 'pending' });
    await device.write(0, new Uint8Array(size / 2).fill(0x33));
    return { device: snap, expected, cleanup: () => device.close() };
  },
  describe,
  it,
});

runConformanceSuite({
  name: 'JournalDevice snapshot, materialized by a checkpoint',
  create: async () => {
    const expected = content(4);
    const device = await journalOverCow();
    await device.write(0, content(0));
    const snap = await device.snapshot();
    await device.write(0, expected);
    const later = await device.snapshot();
    await device.write(100, new Uint8Array(9000).fill(0x35));
    await device.checkpoint();
    await device.write(8192, new Uint8Array(5000).fill(0x36));
    await device.checkpoint();
    await snap.close();
    if (!device.listSnapshots().every((i) => i.materialized)) throw new Error('not materialized');
    return { device: later, expected, cleanup: () => device.close() };
  },
  describe,
  it,
});

runConformanceSuite({
  name: 'JournalDevice writable snapshot (its first write materializes it)',
  create: async () => {
    const expected = content(5);
    const device = await journalOverCow();
    await device.write(0, expected);
    const snap = await device.snapshot({ writable: true });
    await device.write(0, new Uint8Array(size).fill(0x37));
    return { device: snap, expected, cleanup: () => device.close() };
  },
  describe,
  it,
});

runConformanceSuite({
  name: 'JournalDevice pointInTime view',
  create: async () => {
    const expected = content(1);
    const device = await journalOver(1 << 20);
    await device.write(0, content(0));
    await device.write(0, expected.subarray(0, size / 2));
    await device.write(size / 2, expected.subarray(size / 2));
    const view = await device.pointInTime(device.sequence);
    // Later writes must not show through the view.
    await device.write(0, new Uint8Array(size / 2).fill(0x33));
    await device.write(size - 5000, new Uint8Array(5000).fill(0x34));
    return { device: view, expected, cleanup: () => device.close() };
  },
  describe,
  it,
});

runConformanceSuite({
  name: 'JournalDevice pointInTime view across a checkpoint',
  create: async () => {
    const expected = content(2);
    const device = await journalOver(1 << 20);
    await device.write(0, content(0));
    await device.write(4096, new Uint8Array(3 * 4096).fill(0x44));
    await device.checkpoint();
    await device.write(0, expected);
    const view = await device.pointInTime(device.sequence);
    await view.read(0, size);
    // Applies exactly what the view shows to production: the view now reads
    // production where it read the journal, and must not notice.
    await device.checkpoint();
    await device.write(100, new Uint8Array(300).fill(0x55));
    await device.write(8192, new Uint8Array(9000).fill(0x66));
    return { device: view, expected, cleanup: () => device.close() };
  },
  describe,
  it,
});

/** Milliseconds an operation of the slow disks takes: uneven, so writes in flight finish out of order. */
const uneven = (op: FaultyOperation) => (op.kind === 'flush' ? 1 : op.index % 3);

/**
 * Runs the snapshot suite on a journal device over a CowSnapshotDevice over
 * memory disks (slow ones with `slow`), with `journalBytes` of ring
 * checkpointed at `checkpointAt`.
 */
function snapshotSuite(
  name: string,
  journalBytes: number,
  checkpointAt?: number,
  slow = false,
): void {
  const attach = (disk: MemoryDevice): BlockDevice =>
    slow ? new FaultyDevice(disk.reopen(), { latency: uneven }) : disk.reopen();
  runSnapshotConformanceSuite({
    name,
    create: async () => {
      const origin = await MemoryDevice.create({ size, blockSize });
      const store = await MemoryDevice.create({ size: 2 << 20, blockSize });
      const journal = await MemoryDevice.create({ size: 8192 + journalBytes, blockSize: 512 });
      const options = { maxSnapshots: 16, checkpointAt };
      const production = await CowSnapshotDevice.create(attach(origin), attach(store), {
        maxSnapshots: 32,
      });
      return {
        device: await JournalDevice.create(production, attach(journal), options),
        reopen: async () =>
          JournalDevice.open(
            await CowSnapshotDevice.open(attach(origin), attach(store)),
            attach(journal),
            options,
          ),
        // A checkpoint materializes every pending snapshot into production.
        settle: (device) => (device as JournalDevice).checkpoint(),
      };
    },
    supports: {
      writable: true,
      restore: true,
      pointInTime: true,
      reopen: true,
      selective: false,
      preserveEvents: false,
    },
    describe,
    it,
  });
}

// A 1 MiB journal: snapshots mostly stay pending, read through the journal.
snapshotSuite('JournalDevice over a CowSnapshotDevice: snapshots (1 MiB journal)', 1 << 20);
// Just over two whole-device writes: checkpoints materialize snapshots mid-test.
snapshotSuite(
  'JournalDevice over a CowSnapshotDevice: snapshots (160 KiB journal, checkpointed under load)',
  160 * 1024,
  0.5,
);
snapshotSuite(
  'JournalDevice over a CowSnapshotDevice: snapshots (160 KiB journal, slow disks: writes really in flight)',
  160 * 1024,
  0.5,
  true,
);
