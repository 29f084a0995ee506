import { describe, expect, it } from 'vitest';
import { SECTOR } from '../../src/base/index.js';
import { DURABLE_MARK_AT } from '../../src/journal/durable-mark.js';
import { JOURNAL_FRAME_MAGIC, RING_START } from '../../src/journal/journal-format.js';
import { settle } from '../support/async.js';
import { expectBytes, fill } from '../support/bytes.js';
import { expectCode } from '../support/error-code.js';
import { JournalRig } from '../support/journal-rig.js';

/*
 * After a power cut, an intact frame header anywhere in the free ring whose
 * durableSeq reaches a damaged record makes it ECORRUPT, not a torn tail
 * (journal-scan.ts; docs/ARCHITECTURE.md, Crash ordering), however open
 * splits the ring into pieces to search it: these move the one attesting
 * header to each part of the free ring, with the durable mark wiped, so
 * that nothing else attests the record.
 */

/** The one journal offset holding a 512-byte run of `value`. */
async function onlyAt(rig: JournalRig, value: number): Promise<number> {
  const at = await rig.find(value);
  expect(at, `runs of ${value} in the journal`).toHaveLength(1);
  return at[0]!;
}

/** The `bytes` of frame header at store offset `at`, checked to be one of `count` records, then wiped there. */
async function takeHeader(
  rig: JournalRig,
  at: number,
  count: number,
  bytes: number,
): Promise<Uint8Array> {
  const disk = rig.journalDisk.reopen();
  const header = await disk.read(at, bytes);
  const view = new DataView(header.buffer, header.byteOffset, header.byteLength);
  expect(view.getUint32(0, true), 'frame magic').toBe(JOURNAL_FRAME_MAGIC);
  expect(view.getUint32(12, true), 'records in the frame').toBe(count);
  await disk.write(at, new Uint8Array(bytes));
  return header;
}

/**
 * A journal whose head is `headBlocks` records in (a checkpoint moved it),
 * then record 0xa1, a flush, record 0xa2, a flush and the empty frame
 * attesting it; after the power cut the record is damaged, and the empty
 * frame's header and the durable mark are wiped: `header` is that header.
 */
async function attestedRecord(
  ringBytes: number,
  headBlocks: number,
): Promise<{ rig: JournalRig; header: Uint8Array; damagedAt: number; headAt: number }> {
  const rig = await JournalRig.create({ ringBytes, checkpointAt: 1 });
  const d = rig.device;
  for (let i = 0; i < headBlocks; i++) await d.write(2048 + i * 512, fill(512, 0x10 + i));
  if (headBlocks > 0) await d.checkpoint();
  await d.write(0, fill(512, 0xa1));
  await d.flush();
  await d.write(512, fill(512, 0xa2));
  await d.flush();
  await settle();
  const used = d.journalUsed;
  rig.abandon();
  const damagedAt = await onlyAt(rig, 0xa2);
  // The ring runs from the head to just past the empty frame (no wrap here).
  const headAt = damagedAt + 2 * SECTOR - used;
  // The flush left an empty frame right after the record's, and the durable mark.
  const header = await takeHeader(rig, damagedAt + 512, 0, SECTOR);
  await rig.journalDisk.reopen().write(DURABLE_MARK_AT, new Uint8Array(SECTOR));
  await rig.corrupt(damagedAt + 7);
  return { rig, header, damagedAt, headAt };
}

/** Opens, expecting the record ECORRUPT on the strength of the header at store offset `at`. */
async function expectAttestedBy(rig: JournalRig, at: number): Promise<void> {
  const err = await expectCode(rig.open(), 'ECORRUPT');
  expect(err.message).toMatch(/journal record \d+ at store offset \d+ is damaged/);
  expect(err.message).toContain(`the frame at store offset ${at} shows`);
}

describe('JournalDevice open after a power cut: an attesting header anywhere in the free ring', () => {
  it('without one, the damaged record is a torn tail and dropped', async () => {
    const { rig } = await attestedRecord(64 << 10, 8);
    const again = await rig.open();
    expect(again.sequence).toBe(9);
    expectBytes(
      'content',
      await again.read(0, 1024),
      Uint8Array.from([...fill(512, 0xa1), ...fill(512, 0)]),
    );
    await again.close();
  });

  const c = 64 << 10;
  const places: [string, (damagedAt: number, headAt: number) => number][] = [
    ['right after the damaged frame (near the tail)', (damagedAt) => damagedAt + 512],
    ['in the middle of the free ring', (damagedAt) => damagedAt + 16 * SECTOR],
    ['in the ring’s last sector', () => RING_START + c - SECTOR],
    ['in the ring’s first sector (across the wrap)', () => RING_START],
    ['in the sector just before the head', (_d, headAt) => headAt - SECTOR],
  ];
  for (const [where, place] of places) {
    it(`is ECORRUPT when it lies ${where}`, async () => {
      const { rig, header, damagedAt, headAt } = await attestedRecord(c, 8);
      const at = place(damagedAt, headAt);
      expect(at > damagedAt || at < headAt, 'a place in the free ring').toBe(true);
      await rig.journalDisk.reopen().write(at, header);
      await expectAttestedBy(rig, at);
    });
  }

  it('is ECORRUPT when it lies in the ring’s end the first frame skipped (the head wrapped)', async () => {
    const c = 64 << 10;
    const rig = await JournalRig.create({ ringBytes: c, checkpointAt: 1, blocks: 128 });
    const d = rig.device;
    // Frames of 3 and 2 sectors and two empty ones: the checkpoint leaves the
    // head one sector short of the ring's end, so the next frame starts the
    // next lap and open moves the head there.
    await d.write(2048, fill(1024, 0x20));
    for (let i = 0; i < 61; i++) await d.write((8 + i) * 512, fill(512, 0x10));
    await d.flush();
    await settle();
    expect(d.journalUsed).toBe(c - SECTOR);
    await d.checkpoint();
    expect(d.journalUsed).toBe(0);
    await d.write(0, fill(512, 0xa1));
    expect(await onlyAt(rig, 0xa1)).toBe(RING_START + SECTOR);
    await d.write(512, fill(512, 0xa2));
    await d.flush();
    await settle();
    rig.abandon();
    const damagedAt = await onlyAt(rig, 0xa2);
    const header = await takeHeader(rig, damagedAt + 512, 0, SECTOR);
    await rig.journalDisk.reopen().write(DURABLE_MARK_AT, new Uint8Array(SECTOR));
    await rig.corrupt(damagedAt + 7);
    const skipped = RING_START + c - SECTOR;
    await rig.journalDisk.reopen().write(skipped, header);
    await expectAttestedBy(rig, skipped);
  });

  it('finds a header of two sectors lying across the 4 MiB pieces the search reads', async () => {
    const ring = (9 << 20) + 3 * SECTOR;
    const { rig, header: empty, damagedAt } = await attestedRecord(ring, 0);
    expect(empty.length).toBe(SECTOR);
    // A frame of 12 records written after the flush: it attests too, and its header takes two sectors.
    const rig2 = await JournalRig.create({ ringBytes: ring, checkpointAt: 1 });
    const d = rig2.device;
    await d.write(0, fill(512, 0xa1));
    await d.flush();
    await d.write(512, fill(512, 0xa2));
    await d.flush();
    await settle();
    await Promise.all(
      Array.from({ length: 12 }, (_, i) => d.write(2048 + i * 512, fill(512, 0x30 + i))),
    );
    rig2.abandon();
    const at2 = await onlyAt(rig2, 0xa2);
    const header = await takeHeader(rig2, (await onlyAt(rig2, 0x30)) - 2 * SECTOR, 12, 2 * SECTOR);
    await takeHeader(rig2, at2 + 512, 0, SECTOR);
    await rig2.journalDisk.reopen().write(DURABLE_MARK_AT, new Uint8Array(SECTOR));
    await rig2.corrupt(at2 + 7);
    const boundary = RING_START + ring - (4 << 20);
    await rig2.journalDisk.reopen().write(boundary - SECTOR, header);
    await expectAttestedBy(rig2, boundary - SECTOR);
    // And the one-sector header in the last piece read, the one nearest the tail.
    const at = damagedAt + (64 << 10);
    await rig.journalDisk.reopen().write(at, empty);
    await expectAttestedBy(rig, at);
  });
});
