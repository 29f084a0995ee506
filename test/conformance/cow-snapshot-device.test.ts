import { describe, it } from 'vitest';
import { CowSnapshotDevice, MemoryDevice } from '../../src/index.js';
import {
  FaultyDevice,
  type FaultyOperation,
  runConformanceSuite,
  runSnapshotConformanceSuite,
  type SnapshotSupport,
} from '../../src/testing/index.js';

const size = 64 * 1024;
const blockSize = 4096;

function content(seed: number): Uint8Array {
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i++) out[i] = (i * 167 + seed * 13 + (i >>> 10)) & 0xff;
  return out;
}

/** A COW device over memory whose origin starts with `initial`, with history behind it. */
async function cowWith(initial: Uint8Array): Promise<CowSnapshotDevice> {
  const origin = await MemoryDevice.create({ size, blockSize });
  await origin.write(0, initial);
  const store = await MemoryDevice.create({ size: 1 << 20, blockSize });
  return CowSnapshotDevice.create(origin, store, { maxSnapshots: 8 });
}

runConformanceSuite({
  name: 'CowSnapshotDevice (no snapshots)',
  create: async () => ({ device: await cowWith(new Uint8Array(size)) }),
  describe,
  it,
});

runConformanceSuite({
  name: 'CowSnapshotDevice (with live snapshots: every write preserves)',
  create: async () => {
    const expected = content(1);
    const device = await cowWith(expected);
    await device.snapshot();
    await device.snapshot({ writable: true });
    return { device, expected };
  },
  describe,
  it,
});

runConformanceSuite({
  name: 'CowSnapshotDevice read-only snapshot',
  create: async () => {
    const expected = content(2);
    const device = await cowWith(expected);
    const snap = await device.snapshot({ name: 'ro' });
    // Later origin writes must not show through the snapshot.
    await device.write(0, new Uint8Array(size / 2).fill(0x33));
    await device.write(size - 5000, new Uint8Array(5000).fill(0x34));
    return { device: snap, expected, cleanup: () => device.close() };
  },
  describe,
  it,
});

runConformanceSuite({
  name: 'CowSnapshotDevice writable snapshot',
  create: async () => {
    const expected = content(3);
    const device = await cowWith(expected);
    const snap = await device.snapshot({ writable: true });
    await device.write(4096, new Uint8Array(3 * 4096).fill(0x44));
    return { device: snap, expected, cleanup: () => device.close() };
  },
  describe,
  it,
});

runConformanceSuite({
  name: 'CowSnapshotDevice stacked on a CowSnapshotDevice',
  create: async () => {
    const expected = content(4);
    const lower = await cowWith(expected);
    await lower.snapshot();
    const upperStore = await MemoryDevice.create({ size: 1 << 20, blockSize });
    const device = await CowSnapshotDevice.create(lower, upperStore, { maxSnapshots: 8 });
    await device.snapshot();
    return { device, expected };
  },
  describe,
  it,
});

/** What a CowSnapshotDevice does of the snapshot contract: all of it but selective snapshots. */
const cowSupports: SnapshotSupport = {
  writable: true,
  restore: true,
  pointInTime: true,
  reopen: true,
  selective: false,
  preserveEvents: true,
};

runSnapshotConformanceSuite({
  name: 'CowSnapshotDevice snapshots',
  create: async () => {
    const origin = await MemoryDevice.create({ size, blockSize });
    const store = await MemoryDevice.create({ size: 1 << 20, blockSize });
    return {
      device: await CowSnapshotDevice.create(origin, store, { maxSnapshots: 16 }),
      reopen: () => CowSnapshotDevice.open(origin.reopen(), store.reopen()),
    };
  },
  supports: cowSupports,
  describe,
  it,
});

/** Milliseconds an operation of the slow disks takes: uneven, so writes in flight finish out of order. */
const uneven = (op: FaultyOperation) => (op.kind === 'flush' ? 1 : op.index % 3);

runSnapshotConformanceSuite({
  name: 'CowSnapshotDevice snapshots over slow disks (writes really in flight)',
  create: async () => {
    const origin = await MemoryDevice.create({ size, blockSize });
    const store = await MemoryDevice.create({ size: 1 << 20, blockSize });
    const slow = (disk: MemoryDevice) => new FaultyDevice(disk.reopen(), { latency: uneven });
    return {
      device: await CowSnapshotDevice.create(slow(origin), slow(store), { maxSnapshots: 16 }),
      reopen: () => CowSnapshotDevice.open(slow(origin), slow(store)),
    };
  },
  supports: cowSupports,
  describe,
  it,
});
