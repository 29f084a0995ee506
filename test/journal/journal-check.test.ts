import { describe, expect, it } from 'vitest';
import { SECTOR } from '../../src/base/index.js';
import { checksum } from '../../src/checksum/index.js';
import { type CheckReport, JournalDevice, MemoryDevice, type Snapshot } from '../../src/index.js';
import { RING_START } from '../../src/journal/index.js';
import { catalogOffset, readJournalSuper } from '../../src/journal/journal-format.js';
import { replayJournal } from '../../src/journal/journal-scan.js';
import type { RecordContent } from '../../src/journal/record-queue.js';
import { SUPERBLOCK_SLOT } from '../../src/store/index.js';
import { sleep, within } from '../support/async.js';
import { fill, flipBit, pattern } from '../support/bytes.js';
import { expectCode } from '../support/error-code.js';
import { GatedDevice } from '../support/gated-device.js';
import { JournalRig } from '../support/journal-rig.js';
import { recordProgress } from '../support/progress.js';

/*
 * check() on a JournalDevice (docs/ARCHITECTURE.md, "check()"): a clean
 * journal reports nothing; one flipped bit in the superblock, the catalog, a
 * frame header, a write record or a note is reported with that structure and
 * its store offset, and with the bytes the live device and the pending
 * snapshot can no longer read; check writes nothing, and writes,
 * snapshots and checkpoints running through it are never reported as
 * damage.
 */

const BS = 512;

/** Where each record's data is on the journal store, by sequence number. */
async function ringMap(
  disk: MemoryDevice,
): Promise<{ slot: number; catalogAt: number; records: Map<number, RecordAt> }> {
  const sb = await readJournalSuper(disk);
  const records = new Map<number, RecordAt>();
  await replayJournal(disk, sb, (seq, firstBlock, blocks, note, sector) => {
    records.set(seq, { firstBlock, blocks, note, at: RING_START + sector * SECTOR });
  });
  return {
    slot: sb.generation % 2,
    catalogAt: catalogOffset(sb, sb.catalogActive),
    records,
  };
}

interface RecordAt extends RecordContent {
  /** Store offset of its data. */
  at: number;
}

/**
 * A journal over a COW device: one materialized snapshot (in the catalog),
 * then each write its own frame (so a record's header is the sector before
 * its data): blocks 1, 2 and 3, a pending snapshot's note, and block 2
 * again.
 */
async function workload(): Promise<{
  rig: JournalRig;
  materialized: Snapshot;
  pending: Snapshot;
  seq: Record<'block1' | 'block2' | 'block3' | 'note' | 'block2again', number>;
}> {
  const rig = await JournalRig.create({ cow: true, checkpointAt: 1, maxSnapshots: 4 });
  const d = rig.device;
  await d.write(0, pattern(8 * BS, 1));
  const materialized = await d.snapshot({ name: 'materialized' });
  await d.checkpoint();
  await d.write(1 * BS, fill(BS, 0x11));
  const block1 = d.sequence;
  await d.write(2 * BS, fill(BS, 0x22));
  const block2 = d.sequence;
  await d.write(3 * BS, fill(BS, 0x33));
  const block3 = d.sequence;
  const pending = await d.snapshot({ name: 'pending' });
  const note = d.sequence;
  await d.write(2 * BS, fill(BS, 0x44));
  const block2again = d.sequence;
  await d.flush();
  // The attestation frame an idle journal appends after a flush lands now, not during a check.
  await sleep(5);
  expect(d.listSnapshots().map((s) => s.materialized)).toEqual([true, false]);
  return { rig, materialized, pending, seq: { block1, block2, block3, note, block2again } };
}

function found(report: CheckReport): [string, number][] {
  return report.problems.map((p) => [p.structure, p.offset]);
}

interface DamageCase {
  what: string;
  where(
    map: Awaited<ReturnType<typeof ringMap>>,
    seq: Awaited<ReturnType<typeof workload>>['seq'],
  ): { flip: number; structure: string; offset: number };
  reopens: boolean;
  /** The block the live device, and the pending snapshot, can no longer read. */
  liveLoses?: number;
  pendingLoses?: number;
}

const at = (map: Awaited<ReturnType<typeof ringMap>>, seq: number): number => {
  const record = map.records.get(seq);
  if (record === undefined) throw new Error(`record ${seq} is not in the journal`);
  return record.at;
};

const cases: DamageCase[] = [
  {
    what: 'the superblock slot in use',
    where: ({ slot }) => ({
      flip: slot * SUPERBLOCK_SLOT + 13,
      structure: 'superblock',
      offset: slot * SUPERBLOCK_SLOT,
    }),
    reopens: false,
  },
  {
    what: 'the snapshot catalog',
    where: ({ catalogAt }) => ({ flip: catalogAt + 3, structure: 'catalog', offset: catalogAt }),
    reopens: false,
  },
  {
    what: 'a frame header',
    where: (map, seq) => ({
      flip: at(map, seq.block1) - SECTOR + 16,
      structure: 'journal-frame',
      offset: at(map, seq.block1) - SECTOR,
    }),
    reopens: false,
  },
  {
    what: 'the newest write record of a block',
    where: (map, seq) => ({
      flip: at(map, seq.block3) + 100,
      structure: 'journal-record',
      offset: at(map, seq.block3),
    }),
    reopens: false,
    liveLoses: 3,
    pendingLoses: 3,
  },
  {
    what: 'a write record a later write overwrote',
    where: (map, seq) => ({
      flip: at(map, seq.block2) + 100,
      structure: 'journal-record',
      offset: at(map, seq.block2),
    }),
    reopens: false,
    pendingLoses: 2,
  },
  {
    what: "a pending snapshot's note",
    where: (map, seq) => ({
      flip: at(map, seq.note) + 3,
      structure: 'journal-note',
      offset: at(map, seq.note),
    }),
    reopens: false,
  },
];

const lost = (block: number | undefined): unknown =>
  block === undefined ? [] : [{ offset: block * BS, length: BS }];

describe('JournalDevice check()', () => {
  it('reports nothing on an undamaged journal, after walking all of it', async () => {
    const { rig, materialized, pending, seq } = await workload();
    const report = await rig.device.check();
    expect(report.problems).toEqual([]);
    expect(report.readable).toEqual({
      reopens: true,
      live: [],
      snapshots: [
        { id: materialized.id, damaged: [] },
        { id: pending.id, damaged: [] },
      ],
    });
    expect(report.checked).toMatchObject({ superblocks: 2, tables: 1 });
    // Every record since the checkpoint, and the catalog's entry.
    expect(report.checked.records).toBeGreaterThanOrEqual(seq.block2again - seq.block1 + 1 + 1);
    expect(report.checked.frames).toBeGreaterThanOrEqual(5);
    await rig.device.close();
  });

  it.each(cases)(
    'reports a flipped bit in $what with its structure and store offset',
    async (c) => {
      const { rig, pending, materialized, seq } = await workload();
      const disk = rig.journalDisk;
      const { flip, structure, offset } = c.where(await ringMap(disk), seq);
      await flipBit(disk, flip);
      const progress = recordProgress();
      const report = await rig.device.check({ onProgress: progress.onProgress });
      expect(found(report)).toEqual([[structure, offset]]);
      // A damaged frame is walked over, not verified: counted in the total only.
      expect(progress.expectWellFormed('check')).toBeGreaterThanOrEqual(report.checked.bytes);
      expect(report.problems[0]!.message).toContain(`store offset ${offset}`);
      expect(report.readable.reopens).toBe(c.reopens);
      expect(report.readable.live).toEqual(lost(c.liveLoses));
      expect(report.readable.snapshots).toEqual([
        { id: materialized.id, damaged: [] },
        { id: pending.id, damaged: lost(c.pendingLoses) },
      ]);
      await rig.device.close();
    },
  );

  it('reports progress in bytes walked, at least every MiB of ring, ending at checked.bytes', async () => {
    const rig = await JournalRig.create({ blocks: 4096, ringBytes: 4 << 20, checkpointAt: 1 });
    const d = rig.device;
    for (let i = 0; i < 48; i++) await d.write((i % 32) * 64 * 1024, fill(64 * 1024, i));
    await d.flush();
    await sleep(5);
    const progress = recordProgress();
    const report = await d.check({ onProgress: progress.onProgress });
    expect(report.problems).toEqual([]);
    expect(report.checked.bytes).toBeGreaterThan(3 << 20);
    expect(progress.expectWellFormed('check')).toBe(report.checked.bytes);
    const dones = progress.events.map((e) => e.done);
    for (let i = 1; i < dones.length; i++) expect(dones[i]! - dones[i - 1]!).toBeLessThan(2 << 20);
    expect(dones.length).toBeGreaterThanOrEqual(4);
    await d.close();
  });

  it('a throwing onProgress ends the check with what it threw, and the device is unharmed', async () => {
    const { rig } = await workload();
    const thrown = new Error('stop the check');
    await expect(
      rig.device.check({
        onProgress: () => {
          throw thrown;
        },
      }),
    ).rejects.toBe(thrown);
    await rig.device.write(0, fill(BS, 9));
    await rig.device.checkpoint();
    expect((await rig.device.check()).problems).toEqual([]);
    await rig.device.close();
  });

  it('reports a note whose checksum holds but which does not decode', async () => {
    // A forged record: its data, its CRC in the header and the header's own
    // CRC all rewritten, as no flipped bit could do. The header's CRC is the
    // next frame's link, so that frame no longer follows it: reported too.
    const { rig, seq } = await workload();
    const disk = rig.journalDisk;
    const note = at(await ringMap(disk), seq.note);
    const header = note - SECTOR;
    const data = fill(SECTOR, 0xc8);
    await disk.write(note, data);
    const head = await disk.read(header, SECTOR);
    const view = new DataView(head.buffer, head.byteOffset, SECTOR);
    view.setUint32(48 + 32, checksum(data), true);
    view.setUint32(40, checksum(head.subarray(44, 48 + 40), checksum(head.subarray(0, 40))), true);
    await disk.write(header, head);
    const report = await rig.device.check();
    expect(found(report)).toEqual([
      ['journal-note', note],
      ['journal-frame', note + SECTOR],
    ]);
    expect(report.problems[0]!.message).toContain('does not decode');
    await rig.device.close();
  });

  it('writes and flushes nothing, on the journal, production or the COW store', async () => {
    const { rig } = await workload();
    const disks = [rig.journal, rig.production, rig.store!];
    for (const disk of disks) disk.resetStats();
    expect((await rig.device.check()).problems).toEqual([]);
    for (const disk of disks) {
      expect(disk.stats).toMatchObject({ writes: 0, flushes: 0, bytesWritten: 0 });
    }
    expect(rig.journal.stats.reads).toBeGreaterThan(0);
    await rig.device.close();
  });

  it('a failing journal read is EIO with the cause kept, not damage', async () => {
    const { rig } = await workload();
    rig.journal.failNext('read');
    const err = await expectCode(rig.device.check(), 'EIO');
    expect(err.cause).toBeInstanceOf(Error);
    expect((await rig.device.check()).problems).toEqual([]);
    await rig.device.close();
  });

  it('is ECLOSED after close, and EINVAL for bad options', async () => {
    const { rig } = await workload();
    await expectCode(rig.device.check({ verifyData: 1 as unknown as boolean }), 'EINVAL');
    await expectCode(rig.device.check({ onProgress: 'bar' as unknown as () => void }), 'EINVAL');
    await rig.device.close();
    await expectCode(rig.device.check(), 'ECLOSED');
  });

  it('reports nothing while writes, snapshots and checkpoints lap the ring through it', async () => {
    const rig = await JournalRig.create({
      cow: true,
      maxSnapshots: 4,
      ringBytes: 16 * 1024,
      checkpointAt: 0.5,
      latency: (op) => (op.kind === 'read' ? 1 : 0),
    });
    const d = rig.device;
    let running = true;
    const work = (async () => {
      for (let i = 0; i < 60; i++) {
        await Promise.all([
          d.write((i % 16) * BS, fill(BS, i)),
          d.write(((i + 5) % 16) * BS, fill(2 * BS, i)),
        ]);
        if (i % 10 === 3) {
          const snap = await d.snapshot();
          if (i % 20 === 3) await d.deleteSnapshot(snap.id);
        }
        if (i % 7 === 0) await d.flush();
      }
    })().finally(() => {
      running = false;
    });
    const reports: CheckReport[] = [];
    while (running) reports.push(await d.check());
    await work;
    expect(reports.flatMap((r) => r.problems)).toEqual([]);
    expect(reports.length).toBeGreaterThan(1);
    await d.close();
  });

  it('skips frames a checkpoint freed and the ring reused while the check read them', async () => {
    const production = await MemoryDevice.create({ size: 16 * BS, blockSize: BS });
    const disk = await MemoryDevice.create({ size: RING_START + 16 * 1024, blockSize: SECTOR });
    const store = new GatedDevice(disk);
    const d = await JournalDevice.create(production, store, { checkpointAt: 1 });
    for (let i = 0; i < 4; i++) await d.write(i * BS, fill(BS, i + 1));
    await d.flush();
    await sleep(5);
    const head = RING_START + ((await readJournalSuper(disk)).headAbs % (16 * 1024));
    const ringRead = store.gate(
      'read',
      (offset, length) => offset <= head && head < offset + length,
    );
    const checking = d.check();
    await within(ringRead.reached, 5000, 'the check reading the ring');
    // The frames the check is about to read are applied, freed, and written over.
    await d.checkpoint();
    for (let i = 0; i < 12; i++) await d.write((i % 16) * BS, fill(BS, 0x80 + i));
    ringRead.open();
    const report = await checking;
    expect(report.problems).toEqual([]);
    expect(report.skipped).toBe(1);
    expect((await d.check()).problems).toEqual([]);
    await d.close();
  });
});
