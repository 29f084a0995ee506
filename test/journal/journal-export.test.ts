import { describe, expect, it } from 'vitest';
import {
  applyStream,
  CowSnapshotDevice,
  exportStream,
  JournalDevice,
  MemoryDevice,
} from '../../src/index.js';
import { expectBytes, fill } from '../support/bytes.js';
import { expectCode } from '../support/error-code.js';
import { collect } from '../support/stream-bytes.js';

/*
 * Issue 21: `exportStream(journal, …)` did not type-check (no
 * changedExtents), and on the COW layer the journal's snapshots had other
 * ids, `journal:<uuid>` names and the materialization time, and an export
 * first needed a checkpoint(). A JournalDevice now tracks changes itself,
 * with its own ids, materializing what it must.
 */

const BS = 512;
const SIZE = 64 * BS;
const memory = (size: number) => MemoryDevice.create({ size, blockSize: BS });

async function journalOverCow() {
  const cow = await CowSnapshotDevice.create(await memory(SIZE), await memory(1 << 20), {
    maxSnapshots: 16,
  });
  return JournalDevice.create(cow, await memory(256 * 1024), { checkpointAt: 1 });
}

async function* once(bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  yield bytes;
}

describe('JournalDevice: change tracking and export', () => {
  it('full and incremental exports of its own snapshots, still in the journal, apply exactly', async () => {
    const journal = await journalOverCow();
    await journal.write(0, fill(4 * BS, 1));
    const a = await journal.snapshot({ name: 'nightly' });
    await journal.write(2 * BS, fill(BS, 2));
    await journal.write(40 * BS + 7, fill(100, 3));
    const b = await journal.snapshot({ name: 'next' });
    await journal.write(0, fill(BS, 4)); // after b: in neither stream
    // Both are still in the journal: a direct call says so.
    await expectCode(
      Promise.resolve().then(() => journal.changedExtents(a.id, b.id)),
      'EBUSY',
    );
    const wantA = await a.read(0, SIZE);
    const wantB = await b.read(0, SIZE);

    const full = await collect(exportStream(journal, { to: a.id }));
    const target = await memory(SIZE);
    await applyStream(once(full), target);
    expectBytes('full of a', await target.read(0, SIZE), wantA);

    const incremental = await collect(exportStream(journal, { from: a.id, to: b.id }));
    // Only what changed: blocks 2 and 40, in the journal's own terms.
    expect(journal.changedExtents(a.id, b.id)).toEqual([
      { offset: 2 * BS, length: BS },
      { offset: 40 * BS, length: BS },
    ]);
    expect(incremental.length).toBeLessThan(full.length);
    await applyStream(once(incremental), target);
    expectBytes('a + (b - a)', await target.read(0, SIZE), wantB);
    // The snapshots keep their names and the time they were taken.
    expect(journal.listSnapshots().map((s) => [s.id, s.name])).toEqual([
      [a.id, 'nightly'],
      [b.id, 'next'],
    ]);
    await journal.close();
  });

  it('changedExtents to the live device adds what the journal holds unapplied', async () => {
    const journal = await journalOverCow();
    const a = await journal.snapshot();
    await journal.checkpoint();
    await journal.write(3 * BS, fill(BS, 1)); // applied by the next checkpoint
    await journal.checkpoint();
    await journal.write(4 * BS, fill(BS, 2)); // still in the journal
    await journal.write(9 * BS, fill(BS, 3));
    expect(journal.changedExtents(a.id, 'live')).toEqual([
      { offset: 3 * BS, length: 2 * BS },
      { offset: 9 * BS, length: BS },
    ]);
    expect(journal.snapshotExtents(a.id)).toEqual([{ offset: 0, length: SIZE }]);
    expect(() => journal.changedExtents('nope', 'live')).toThrow(
      expect.objectContaining({ code: 'ENOENT' }),
    );
    await journal.close();
  });

  it('a writable journal snapshot is frozen while it is exported', async () => {
    const journal = await journalOverCow();
    await journal.write(0, fill(BS, 1));
    const w = await journal.snapshot({ writable: true });
    await w.write(BS, fill(BS, 2));
    const want = await w.read(0, SIZE);
    const reader = exportStream(journal, { to: w.id }).getReader();
    await expectCode(w.write(5 * BS, fill(BS, 9)), 'EBUSY');
    const chunks: Uint8Array[] = [];
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
    }
    const target = await memory(SIZE);
    await applyStream(once(Buffer.concat(chunks)), target);
    expectBytes('the clone as it was', await target.read(0, SIZE), want);
    await w.write(5 * BS, fill(BS, 9));
    await journal.close();
  });

  it('over a production device that takes no snapshots, every snapshot id is unknown (ENOENT)', async () => {
    const journal = await JournalDevice.create(await memory(SIZE), await memory(256 * 1024));
    expect(() => journal.snapshotExtents('x')).toThrow(expect.objectContaining({ code: 'ENOENT' }));
    await journal.close();
  });
});
