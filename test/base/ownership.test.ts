import { describe, expect, it } from 'vitest';
import {
  CowSnapshotDevice,
  JournalDevice,
  MemoryDevice,
  SelectiveSnapshotDevice,
  SnapshotCopyJob,
} from '../../src/index.js';
import { expectBytes, fill } from '../support/bytes.js';
import { expectCode } from '../support/error-code.js';
import { PassThroughDevice } from '../support/pass-through-device.js';

/*
 * Issue 21: a layer owns the devices below it, and they refuse what would
 * break it — writes, close, snapshot, restore, delete called on them
 * directly — with EBUSY naming the owner (src/base/ownership.ts).
 */

const BS = 512;
const SIZE = 64 * BS;

const memory = (size: number) => MemoryDevice.create({ size, blockSize: BS });

async function journalOverCow() {
  const origin = await memory(SIZE);
  const store = await memory(512 * 1024);
  const journalStore = await memory(256 * 1024);
  const cow = await CowSnapshotDevice.create(origin, store, { maxSnapshots: 8 });
  const journal = await JournalDevice.create(cow, journalStore, {
    maxSnapshots: 4,
    checkpointAt: 1,
  });
  return { origin, store, journalStore, cow, journal };
}

describe('an owned device refuses what would break its owner', () => {
  it('the COW device under a JournalDevice: snapshot, restore, delete, write and close are EBUSY naming the journal; the journal goes on', async () => {
    const { cow, journal } = await journalOverCow();
    await journal.write(0, fill(BS, 1));
    const snap = await journal.snapshot({ name: 'a' });
    await journal.write(0, fill(BS, 2));
    await journal.checkpoint(); // materializes `a` on the COW device
    const [materialized] = cow.listSnapshots();
    expect(materialized).toBeDefined();

    for (const [what, call] of [
      ['snapshot', () => cow.snapshot()],
      ['restore', () => cow.restore(materialized!.id)],
      ['deleteSnapshot', () => cow.deleteSnapshot(materialized!.id)],
      ['write', () => cow.write(0, fill(BS, 9))],
      ['close', () => cow.close()],
    ] as const) {
      const err = await expectCode((call as () => Promise<unknown>)(), 'EBUSY');
      expect(err.message, what).toMatch(/owned by a JournalDevice/);
    }
    // Nothing of it happened: the COW device still holds what the journal put there.
    expect(cow.listSnapshots()).toHaveLength(1);
    expectBytes('cow block 0', await cow.read(0, BS), fill(BS, 2));
    expect(cow.closed).toBe(false);
    // Reads and flushes are never refused.
    await cow.flush();

    // The journal's own use of it goes on: write, checkpoint, snapshot ops.
    await journal.write(BS, fill(BS, 3));
    await journal.checkpoint();
    const b = await journal.snapshot({ name: 'b' });
    await journal.restore(snap.id);
    expectBytes('restored', await journal.read(0, BS), fill(BS, 1));
    await journal.deleteSnapshot(b.id);
    await journal.close();
    // The journal closed it, and with that let go of it.
    expect(cow.closed).toBe(true);
    await expectCode(cow.write(0, fill(BS, 4)), 'ECLOSED');
  });

  it('the origin and store under a COW device: writes and close are EBUSY, reads and flushes go through', async () => {
    for (const kind of ['cow', 'selective'] as const) {
      const origin = await memory(SIZE);
      const store = await memory(512 * 1024);
      const device =
        kind === 'cow'
          ? await CowSnapshotDevice.create(origin, store, { maxSnapshots: 4 })
          : await SelectiveSnapshotDevice.create(origin, store, { maxSnapshots: 4 });
      await device.write(0, fill(BS, 1));
      const snap = await device.snapshot();
      const owner = kind === 'cow' ? 'CowSnapshotDevice' : 'SelectiveSnapshotDevice';
      for (const disk of [origin, store]) {
        const err = await expectCode(disk.write(0, fill(BS, 9)), 'EBUSY');
        expect(err.message).toContain(`owned by a ${owner}`);
        await expectCode(disk.close(), 'EBUSY');
        await disk.read(0, BS);
        await disk.flush();
      }
      // The snapshot is intact: the refused origin write never landed.
      expectBytes(`${kind}: snapshot`, await snap.read(0, BS), fill(BS, 1));
      await device.close();
      expect(origin.closed && store.closed).toBe(true);
    }
  });

  it('a copy job’s source refuses direct writes while the job owns it; job.device writes go through', async () => {
    const source = await memory(SIZE);
    const destination = await memory(SIZE);
    const job = await SnapshotCopyJob.start({ source, destination, chunkSize: BS });
    await expectCode(source.write(0, fill(BS, 9)), 'EBUSY');
    await job.device.write(BS, fill(BS, 5));
    await job.done;
    expectBytes('the copy holds the snapshot', await destination.read(0, BS), fill(BS, 0));
    await job.device.close();
    expect(source.closed).toBe(true);
  });

  it('one layer at a time: a second layer over an owned device is EBUSY and writes nothing', async () => {
    const origin = await memory(SIZE);
    const first = await CowSnapshotDevice.create(origin, await memory(512 * 1024), {
      maxSnapshots: 4,
    });
    const store = await memory(512 * 1024);
    const err = await expectCode(
      CowSnapshotDevice.create(origin, store, { maxSnapshots: 4 }),
      'EBUSY',
    );
    expect(err.message).toMatch(/already owned by a CowSnapshotDevice/);
    expectBytes('the second store', await store.read(0, store.size), new Uint8Array(store.size));
    // Nor may a journal take the COW device's store.
    await expectCode(JournalDevice.create(await memory(SIZE), origin), 'EBUSY');
    await first.close();
  });

  it('a failed create or open lets go of the devices, so they can be opened again', async () => {
    const origin = await memory(SIZE);
    const store = await memory(512 * 1024);
    // Not a COW store: open fails, and the devices are free again.
    await expectCode(CowSnapshotDevice.open(origin, store), 'ECORRUPT');
    await origin.write(0, fill(BS, 1));
    // Too small a store: create fails after claiming.
    await expectCode(CowSnapshotDevice.create(origin, await memory(8 * 1024)), 'EINVAL');
    await origin.write(0, fill(BS, 2));
    const device = await CowSnapshotDevice.create(origin, store, { maxSnapshots: 4 });
    expectBytes('block 0', await device.read(0, BS), fill(BS, 2));
    await device.close();
  });

  it('a device of another library is used as it is: it cannot be guarded', async () => {
    const inner = await memory(SIZE);
    const origin = new PassThroughDevice(inner);
    const device = await CowSnapshotDevice.create(origin, await memory(512 * 1024), {
      maxSnapshots: 4,
    });
    await device.write(0, fill(BS, 1));
    // The wrapper forwards to a device nobody claimed.
    await origin.write(BS, fill(BS, 2));
    expectBytes('block 1', await device.read(BS, BS), fill(BS, 2));
    await device.close();
  });
});
