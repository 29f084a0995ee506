import { describe, expect, it } from 'vitest';
import {
  applyStream,
  CowSnapshotDevice,
  exportStream,
  MemoryDevice,
  VirtualVolume,
} from '../../src/index.js';
import { FaultyDevice } from '../../src/testing/index.js';
import { expectSameBytes, seededBytes } from '../support/bytes.js';
import { expectCode } from '../support/error-code.js';
import { GatedDevice } from '../support/gated-device.js';
import { memoryVolume } from '../support/volume-rig.js';

/*
 * VirtualVolume in this thread: create and open checks, the partition map,
 * snapshot state information, a snapshot that fails or times out on one
 * partition (all or nothing), changed extents and incremental streams
 * across partitions.
 */

const BS = 4096;

async function disks(n: number, size = 16 * BS) {
  return Promise.all(
    Array.from({ length: n }, async () => ({
      origin: await MemoryDevice.create({ size, blockSize: BS }),
      store: await MemoryDevice.create({ size: 1 << 20, blockSize: BS }),
    })),
  );
}

describe('VirtualVolume.create and open', () => {
  it('refuses a store that holds a blocksnap format, unless force', async () => {
    const store = await MemoryDevice.create({ size: 1 << 20, blockSize: BS });
    const first = await VirtualVolume.create({ store, partitions: await disks(2) });
    await first.close();
    await expectCode(
      VirtualVolume.create({ store: store.reopen(), partitions: await disks(2) }),
      'EBUSY',
      'a second create',
    );
    const forced = await VirtualVolume.create({
      store: store.reopen(),
      partitions: await disks(2),
      force: true,
    });
    await forced.close();
  });

  it('checks its options before touching anything', async () => {
    const store = await MemoryDevice.create({ size: 1 << 20, blockSize: BS });
    const parts = await disks(2);
    await expectCode(VirtualVolume.create({ store, partitions: [] }), 'EINVAL', 'no partitions');
    await expectCode(
      VirtualVolume.create({ store, partitions: parts, processors: -1 }),
      'EINVAL',
      'processors',
    );
    await expectCode(
      VirtualVolume.create({
        store,
        partitions: [{ origin: { disk: 'x' }, store: parts[0]!.store }] as never,
      }),
      'EINVAL',
      'an unknown spec',
    );
    await expectCode(
      VirtualVolume.create({ store, partitions: parts, stripeUnit: 1000 }),
      'EINVAL',
      'a stripe unit that is not a multiple of the block size',
    );
    const uneven = [...(await disks(1, 8 * BS)), ...(await disks(1, 16 * BS))];
    await expectCode(
      VirtualVolume.create({ store, partitions: uneven, stripeUnit: BS }),
      'EINVAL',
      'striping partitions of unequal size',
    );
    // Nothing was formatted: a create over the same store goes through.
    const volume = await VirtualVolume.create({ store, partitions: await disks(2) });
    await volume.close();
  });

  it('open needs the device objects a partition was created over, and checks their geometry', async () => {
    const store = await MemoryDevice.create({ size: 1 << 20, blockSize: BS });
    const parts = await disks(2);
    const volume = await VirtualVolume.create({ store, partitions: parts });
    await volume.close();
    await expectCode(
      VirtualVolume.open({ store: store.reopen() }),
      'EINVAL',
      'no partitions given',
    );
    const other = await disks(2, 8 * BS);
    await expectCode(
      VirtualVolume.open({
        store: store.reopen(),
        partitions: [
          { origin: parts[0]!.origin.reopen(), store: parts[0]!.store.reopen() },
          { origin: other[1]!.origin, store: parts[1]!.store.reopen() },
        ],
      }),
      'EINVAL',
      'a partition of another size',
    );
  });

  it('maps a striped volume onto its partitions unit by unit', async () => {
    const parts = await disks(3, 4 * BS);
    const volume = await VirtualVolume.create({
      store: await MemoryDevice.create({ size: 1 << 20, blockSize: BS }),
      partitions: parts,
      stripeUnit: 2 * BS,
    });
    const data = seededBytes(volume.size, 4);
    await volume.write(0, data);
    await volume.close();
    // Unit u of the volume is unit floor(u / 3) of partition u mod 3.
    for (let u = 0; u < 6; u++) {
      const cow = parts[u % 3]!;
      const got = await cow.origin.reopen().read(Math.floor(u / 3) * 2 * BS, 2 * BS);
      expectSameBytes(`unit ${u}`, got, data.subarray(u * 2 * BS, (u + 1) * 2 * BS));
    }
  });
});

describe('VirtualVolume snapshots', () => {
  it('record the state of each partition snapshot and of the whole', async () => {
    const { volume } = await memoryVolume({ partitions: 3, partitionSize: 8 * BS });
    const t0 = Date.now();
    const a = await volume.snapshot({ name: 'a' });
    const b = await volume.snapshot({ name: 'b' });
    const [ia, ib] = volume.listSnapshots();
    expect([ia!.id, ib!.id]).toEqual([a.id, b.id]);
    expect(ib!.sequence).toBeGreaterThan(ia!.sequence);
    expect(ia!.createdAt.getTime()).toBeGreaterThanOrEqual(t0);
    const parts = volume.partitionSnapshots(b.id);
    expect(parts.map((p) => [p.partition, p.offset, p.length])).toEqual([
      [0, 0, 8 * BS],
      [1, 8 * BS, 8 * BS],
      [2, 16 * BS, 8 * BS],
    ]);
    for (const [i, p] of parts.entries()) {
      expect(p.sequence).toBeGreaterThan(volume.partitionSnapshots(a.id)[i]!.sequence);
    }
    await expectCode(volume.snapshot({ writable: true }), 'EINVAL', 'a writable overall snapshot');
    await volume.close();
  });

  it('a partition that fails its snapshot leaves no partition snapshot anywhere', async () => {
    const parts = await disks(3);
    let failStore = false;
    const faulty = parts.map((p, i) => ({
      origin: p.origin,
      store: new FaultyDevice(p.store, {
        failures: (op) => failStore && i === 2 && op.kind === 'write',
      }),
    }));
    const store = await MemoryDevice.create({ size: 1 << 20, blockSize: BS });
    const volume = await VirtualVolume.create({ store, partitions: faulty });
    volume.on('error', () => {});
    failStore = true;
    await expectCode(volume.snapshot(), 'EIO', 'the snapshot');
    failStore = false;
    expect(volume.listSnapshots()).toEqual([]);
    await volume.close();
    for (const [i, p] of parts.entries()) {
      const cow = await CowSnapshotDevice.open(p.origin.reopen(), p.store.reopen());
      expect(cow.listSnapshots(), `partition ${i}`).toEqual([]);
      await cow.close();
    }
  });

  it('a partition that does not answer in time: snapshot() rejects EIO, and its late snapshot is removed', async () => {
    const parts = await disks(2);
    const gated = new GatedDevice(parts[1]!.origin);
    const store = await MemoryDevice.create({ size: 1 << 20, blockSize: BS });
    const volume = await VirtualVolume.create({
      store,
      partitions: [parts[0]!, { origin: gated, store: parts[1]!.store }],
      snapshotTimeout: 50,
    });
    // The COW device flushes its origin before it records a snapshot.
    const gate = gated.gate('flush');
    await expectCode(volume.snapshot(), 'EIO', 'the snapshot');
    expect(volume.listSnapshots()).toEqual([]);
    gate.open();
    const next = await volume.snapshot({ name: 'next' });
    expect(volume.listSnapshots().map((s) => s.id)).toEqual([next.id]);
    await volume.close();
    for (const p of [parts[0]!, { origin: parts[1]!.origin, store: parts[1]!.store }]) {
      const cow = await CowSnapshotDevice.open(p.origin.reopen(), p.store.reopen());
      expect(cow.listSnapshots().length, 'only the next snapshot').toBe(1);
      await cow.close();
    }
  });
});

describe('VirtualVolume snapshot operations in call order', () => {
  it('restore(id) called before deleteSnapshot(id) restores, then the delete removes it', async () => {
    const { volume } = await memoryVolume({ partitions: 2, partitionSize: 4 * BS });
    const before = seededBytes(volume.size, 51);
    await volume.write(0, before);
    const snap = await volume.snapshot();
    await volume.write(0, seededBytes(volume.size, 52));
    const restored = volume.restore(snap.id);
    const deleted = volume.deleteSnapshot(snap.id);
    await restored;
    await deleted;
    expectSameBytes('restored', await volume.read(0, volume.size), before);
    expect(volume.listSnapshots()).toEqual([]);
    await volume.close();
  });
});

describe('VirtualVolume changed extents and streams', () => {
  it('changedExtents spans partitions, and an incremental stream between two overall snapshots applies', async () => {
    const { volume } = await memoryVolume({
      partitions: 4,
      partitionSize: 8 * BS,
      stripeUnit: 2 * BS,
    });
    const base = seededBytes(volume.size, 21);
    await volume.write(0, base);
    const a = await volume.snapshot();
    // Units 1 and 2 (partitions 1 and 2) and the last block of the volume.
    await volume.write(3 * BS, new Uint8Array(2 * BS).fill(1));
    await volume.write(volume.size - BS, new Uint8Array(BS).fill(2));
    const b = await volume.snapshot();
    expect(volume.changedExtents(a.id, b.id)).toEqual([
      { offset: 3 * BS, length: 2 * BS },
      { offset: volume.size - BS, length: BS },
    ]);
    await volume.write(0, new Uint8Array(BS).fill(3));
    expect(volume.changedExtents(b.id, 'live')).toEqual([{ offset: 0, length: BS }]);
    expect(volume.snapshotExtents(a.id)).toEqual([{ offset: 0, length: volume.size }]);

    const replica = await MemoryDevice.create({ size: volume.size, blockSize: BS });
    await applyStream(exportStream(volume, { to: a.id }), replica);
    expectSameBytes('full stream', await replica.read(0, volume.size), base);
    await applyStream(exportStream(volume, { from: a.id, to: b.id }), replica);
    expectSameBytes(
      'after the increment',
      await replica.read(0, volume.size),
      await b.read(0, volume.size),
    );
    await volume.close();
  });
});
