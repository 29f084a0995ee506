import { describe, expect, it } from 'vitest';
import {
  type BlockDevice,
  CowSnapshotDevice,
  JournalDevice,
  MemoryDevice,
  SelectiveSnapshotDevice,
  SnapshotCopyJob,
} from '../../src/index.js';
import { SUPERBLOCK_SLOT } from '../../src/store/index.js';
import { expectBytes, fill } from '../support/bytes.js';
import { expectCode } from '../support/error-code.js';

/*
 * Issue 21: create() over a store that already holds a blocksnap format
 * erased it without a word (every snapshot, every journaled write). Now it
 * refuses with EBUSY and changes nothing, unless { force: true }.
 */

const BS = 512;
const SIZE = 64 * BS;

const memory = (size: number) => MemoryDevice.create({ size, blockSize: BS });

/** Each way of formatting a store, over a fresh origin. */
const FORMATTERS: Record<
  string,
  (store: BlockDevice, force?: boolean) => Promise<{ close(): Promise<void> }>
> = {
  CowSnapshotDevice: async (store, force) =>
    CowSnapshotDevice.create(await memory(SIZE), store, { maxSnapshots: 4, force }),
  SelectiveSnapshotDevice: async (store, force) =>
    SelectiveSnapshotDevice.create(await memory(SIZE), store, { maxSnapshots: 4, force }),
  JournalDevice: async (store, force) =>
    JournalDevice.create(await memory(SIZE), store, { maxSnapshots: 0, force }),
  'SnapshotCopyJob map store': async (mapStore, force) => {
    const source = await memory(SIZE);
    const job = await SnapshotCopyJob.start({
      source,
      destination: await memory(SIZE),
      chunkSize: BS,
      mapStore,
      force,
    });
    await job.done;
    return job.device;
  },
};

/** A store of 256 KiB formatted by `kind`, closed. */
async function formattedBy(kind: string): Promise<MemoryDevice> {
  const store = await memory(256 * 1024);
  const device = await FORMATTERS[kind]!(store.reopen());
  await device.close();
  return store;
}

describe('create() does not reformat a blocksnap store', () => {
  for (const existing of ['CowSnapshotDevice', 'SelectiveSnapshotDevice', 'JournalDevice']) {
    for (const creator of Object.keys(FORMATTERS)) {
      it(`${creator} over a store ${existing} formatted: EBUSY, store untouched; with force it formats`, async () => {
        const store = await formattedBy(existing);
        const before = await store.read(0, store.size);
        const err = await expectCode(FORMATTERS[creator]!(store.reopen()), 'EBUSY');
        expect(err.message).toMatch(/already holds a blocksnap store/);
        expect(err.message).toMatch(/force: true/);
        expectBytes('the store after the refused create', await store.read(0, store.size), before);
        const device = await FORMATTERS[creator]!(store.reopen(), true);
        await device.close();
      });
    }
  }

  it('a COW store in use by an open device is refused too, and the device goes on', async () => {
    const origin = await memory(SIZE);
    const store = await memory(256 * 1024);
    const cow = await CowSnapshotDevice.create(origin, store, { maxSnapshots: 4 });
    await cow.write(0, fill(BS, 1));
    const snap = await cow.snapshot({ name: 'keep' });
    await cow.write(0, fill(BS, 2));
    await expectCode(
      CowSnapshotDevice.create(await memory(SIZE), store.reopen(), { maxSnapshots: 4 }),
      'EBUSY',
    );
    expectBytes('the snapshot', await snap.read(0, BS), fill(BS, 1));
    await cow.close();
    const again = await CowSnapshotDevice.open(origin.reopen(), store.reopen());
    expect(again.listSnapshots().map((s) => s.name)).toEqual(['keep']);
    await again.close();
  });

  it('a damaged superblock still counts: only its magic is looked at', async () => {
    const store = await formattedBy('CowSnapshotDevice');
    // Break both slots' checksums, keep the magic.
    for (const at of [0, SUPERBLOCK_SLOT]) await store.write(at + 100, fill(8, 0xee));
    await expectCode(FORMATTERS.JournalDevice!(store.reopen()), 'EBUSY');
  });

  it('a copy job may reuse a map store holding an earlier job’s map, and nothing else', async () => {
    const store = await formattedBy('SnapshotCopyJob map store');
    const device = await FORMATTERS['SnapshotCopyJob map store']!(store.reopen());
    await device.close();
    // But a COW store over it is refused.
    await expectCode(FORMATTERS.CowSnapshotDevice!(store.reopen()), 'EBUSY');
  });

  it('stores of zeros or of foreign bytes format as before', async () => {
    for (const creator of Object.keys(FORMATTERS)) {
      const zeros = await memory(256 * 1024);
      await (await FORMATTERS[creator]!(zeros)).close();
      const foreign = await memory(256 * 1024);
      await foreign.write(0, fill(16 * 1024, 0x5a));
      await (await FORMATTERS[creator]!(foreign)).close();
    }
  });

  it('force must be a boolean (EINVAL, nothing read or written)', async () => {
    const store = await formattedBy('CowSnapshotDevice');
    const before = await store.read(0, store.size);
    const options = { force: 'yes' } as unknown as { force: boolean };
    await expectCode(
      CowSnapshotDevice.create(await memory(SIZE), store.reopen(), options),
      'EINVAL',
    );
    await expectCode(JournalDevice.create(await memory(SIZE), store.reopen(), options), 'EINVAL');
    expectBytes('the store', await store.read(0, store.size), before);
  });
});
