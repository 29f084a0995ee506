import { describe, expect, it } from 'vitest';
import { CowSnapshotDevice, JournalDevice, MemoryDevice } from '../../src/index.js';
import { expectBytes, fill } from '../support/bytes.js';
import { expectCode } from '../support/error-code.js';

/*
 * Issue 21: `JournalDevice.open(rawVolume, journal)` — the COW layer it was
 * created over forgotten — was accepted, and later snapshots read wrong
 * data. Every store now records the kind and id of the layer it was created
 * over, and `open` over another refuses with EINVAL before it reads or
 * writes anything of it.
 */

const BS = 512;
const SIZE = 64 * BS;
const memory = (size: number) => MemoryDevice.create({ size, blockSize: BS });

/** Disks of a JournalDevice over a CowSnapshotDevice, with some history, closed. */
async function closedJournalOverCow() {
  const disks = { origin: await memory(SIZE), store: await memory(512 * 1024) };
  const journalDisk = await memory(256 * 1024);
  const cow = await CowSnapshotDevice.create(disks.origin.reopen(), disks.store.reopen(), {
    maxSnapshots: 8,
  });
  const journal = await JournalDevice.create(cow, journalDisk.reopen(), { checkpointAt: 1 });
  await journal.write(0, fill(BS, 1));
  await journal.checkpoint();
  await journal.snapshot({ name: 'a' });
  await journal.write(0, fill(BS, 2));
  await journal.close();
  return { ...disks, journalDisk };
}

async function contentOf(...devices: MemoryDevice[]): Promise<Uint8Array[]> {
  return Promise.all(devices.map((d) => d.read(0, d.size)));
}

describe('a store knows what it was created over', () => {
  it('a journal created over a COW device refuses the raw volume under it, naming both, and touches nothing', async () => {
    const { origin, store, journalDisk } = await closedJournalOverCow();
    const before = await contentOf(origin, journalDisk);
    const err = await expectCode(
      JournalDevice.open(origin.reopen(), journalDisk.reopen()),
      'EINVAL',
    );
    expect(err.message).toMatch(
      /the journal was created over a CowSnapshotDevice \(id [0-9a-f]{8}\), but was given a device that is not a blocksnap layer/,
    );
    const after = await contentOf(origin, journalDisk);
    expectBytes('origin', after[0]!, before[0]!);
    expectBytes('journal', after[1]!, before[1]!);
    // Opened as created, it is all there.
    const cow = await CowSnapshotDevice.open(origin.reopen(), store.reopen());
    const journal = await JournalDevice.open(cow, journalDisk.reopen());
    expect(journal.listSnapshots().map((s) => s.name)).toEqual(['a']);
    expectBytes('block 0', await journal.read(0, BS), fill(BS, 2));
    await journal.close();
  });

  it('a journal refuses another COW device of the same geometry', async () => {
    const { journalDisk } = await closedJournalOverCow();
    const other = await CowSnapshotDevice.create(await memory(SIZE), await memory(512 * 1024), {
      maxSnapshots: 8,
    });
    const err = await expectCode(JournalDevice.open(other, journalDisk.reopen()), 'EINVAL');
    expect(err.message).toMatch(
      /created over a CowSnapshotDevice \(id \w+\), but was given a CowSnapshotDevice \(id \w+\)/,
    );
    // The refused open let go of `other`.
    await other.close();
  });

  it('a journal created over a plain device refuses a COW device', async () => {
    const production = await memory(SIZE);
    const journalDisk = await memory(256 * 1024);
    await (await JournalDevice.create(production.reopen(), journalDisk.reopen())).close();
    const cow = await CowSnapshotDevice.create(production.reopen(), await memory(512 * 1024), {
      maxSnapshots: 4,
    });
    await expectCode(JournalDevice.open(cow, journalDisk.reopen()), 'EINVAL');
    await cow.close();
    await (await JournalDevice.open(production.reopen(), journalDisk.reopen())).close();
  });

  it('the upper of two COW devices refuses the raw origin (the lower layer forgotten)', async () => {
    const origin = await memory(SIZE);
    const lowerStore = await memory(512 * 1024);
    const upperStore = await memory(512 * 1024);
    const lower = await CowSnapshotDevice.create(origin.reopen(), lowerStore.reopen(), {
      maxSnapshots: 4,
    });
    const upper = await CowSnapshotDevice.create(lower, upperStore.reopen(), { maxSnapshots: 4 });
    await upper.write(0, fill(BS, 1));
    await upper.snapshot();
    await upper.write(0, fill(BS, 2));
    await upper.close();
    const err = await expectCode(
      CowSnapshotDevice.open(origin.reopen(), upperStore.reopen()),
      'EINVAL',
    );
    expect(err.message).toMatch(/the COW store was created over a CowSnapshotDevice/);
    const again = await CowSnapshotDevice.open(
      await CowSnapshotDevice.open(origin.reopen(), lowerStore.reopen()),
      upperStore.reopen(),
    );
    const [snap] = again.listSnapshots();
    expectBytes('snapshot', await (await again.openSnapshot(snap!.id)).read(0, BS), fill(BS, 1));
    await again.close();
  });
});

describe('repairing a stack whose lower snapshot was removed', () => {
  it('open fails ECORRUPT pointing at repair; { repair: true } drops the lost snapshot only, durably, and lists it', async () => {
    const { origin, store, journalDisk } = await closedJournalOverCow();
    // Another snapshot the repair must keep, then the COW device alone.
    let cow = await CowSnapshotDevice.open(origin.reopen(), store.reopen());
    let journal = await JournalDevice.open(cow, journalDisk.reopen(), { checkpointAt: 1 });
    await journal.checkpoint();
    const kept = await journal.snapshot({ name: 'kept' });
    await journal.write(BS, fill(BS, 3));
    await journal.checkpoint();
    const lost = journal.listSnapshots().find((s) => s.name === 'a')!;
    await journal.close();
    cow = await CowSnapshotDevice.open(origin.reopen(), store.reopen());
    const production = cow.listSnapshots().find((s) => s.name === `journal:${lost.id}`)!;
    await cow.deleteSnapshot(production.id);
    await cow.close();

    cow = await CowSnapshotDevice.open(origin.reopen(), store.reopen());
    const err = await expectCode(JournalDevice.open(cow, journalDisk.reopen()), 'ECORRUPT');
    expect(err.message).toMatch(/repair: true/);
    journal = await JournalDevice.open(cow, journalDisk.reopen(), { repair: true });
    expect(journal.repairs.map((r) => [r.snapshot, r.name])).toEqual([[lost.id, 'a']]);
    expect(journal.listSnapshots().map((s) => s.name)).toEqual(['kept']);
    expectBytes('kept', await (await journal.openSnapshot(kept.id)).read(0, BS), fill(BS, 2));
    expectBytes(
      'live',
      await journal.read(0, 2 * BS),
      new Uint8Array([...fill(BS, 2), ...fill(BS, 3)]),
    );
    await journal.close();
    // Durable: the next plain open finds nothing to repair.
    cow = await CowSnapshotDevice.open(origin.reopen(), store.reopen());
    journal = await JournalDevice.open(cow, journalDisk.reopen());
    expect(journal.repairs).toEqual([]);
    expect(journal.listSnapshots().map((s) => s.name)).toEqual(['kept']);
    await journal.close();
  });
});
