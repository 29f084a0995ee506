import { describe, expect, it } from 'vitest';
import type { JournalDevice } from '../../src/index.js';
import { RING_START } from '../../src/journal/index.js';
import { settle } from '../support/async.js';
import { expectBytes, fill } from '../support/bytes.js';
import { expectCode } from '../support/error-code.js';
import { JournalRig } from '../support/journal-rig.js';

/** The one journal offset holding a 512-byte run of `value`. */
async function onlyAt(rig: JournalRig, value: number): Promise<number> {
  const at = await rig.find(value);
  expect(at, `runs of ${value} in the journal`).toHaveLength(1);
  return at[0]!;
}

describe('JournalDevice recovery: torn tail or corruption', () => {
  it('drops a damaged record no completed flush covered (a torn tail)', async () => {
    const rig = await JournalRig.create();
    const d = rig.device;
    await d.write(0, fill(512, 0xa1));
    await d.flush();
    await d.write(512, fill(512, 0xb2));
    rig.abandon();
    await rig.corrupt((await onlyAt(rig, 0xb2)) + 100);
    const again = await rig.open();
    expect(again.sequence).toBe(1);
    expectBytes(
      'content',
      await again.read(0, 1024),
      Uint8Array.from([...fill(512, 0xa1), ...fill(512, 0)]),
    );
    await again.close();
  });

  it('drops a damaged unflushed record even when an intact record follows it', async () => {
    // The disk may have written the later record and not the earlier one; the
    // later one's header says only record 1 was durable when it was written.
    const rig = await JournalRig.create();
    const d = rig.device;
    await d.write(0, fill(512, 0xa1));
    await d.flush();
    await d.write(512, fill(512, 0xb2));
    await d.write(1024, fill(512, 0xc3));
    rig.abandon();
    await rig.corrupt(await onlyAt(rig, 0xb2));
    const again = await rig.open();
    expect(again.sequence).toBe(1);
    expectBytes('block 2', await again.read(1024, 512), fill(512, 0));
    await again.close();
  });

  it('is ECORRUPT, naming the record, when a later frame shows a flush had made it durable', async () => {
    const rig = await JournalRig.create();
    const d = rig.device;
    await d.write(0, fill(512, 0xa1));
    await d.write(512, fill(512, 0xa2));
    await d.flush();
    await d.write(1024, fill(512, 0xb2));
    rig.abandon();
    await rig.corrupt((await onlyAt(rig, 0xa2)) + 511);
    const err = await expectCode(rig.open(), 'ECORRUPT');
    expect(err.message).toMatch(/journal record 2 at store offset \d+ is damaged/);
  });

  it('is ECORRUPT when only the marker a flush leaves behind shows the record was durable', async () => {
    const rig = await JournalRig.create();
    const d = rig.device;
    await d.write(0, fill(512, 0xa1));
    rig.journal.resetStats();
    await d.flush();
    await settle();
    // The flush wrote the durable mark, and the idle journal appended an
    // empty frame recording the flush too.
    expect(rig.journal.stats.writes).toBe(2);
    rig.abandon();
    await rig.corrupt(await onlyAt(rig, 0xa1));
    expect((await expectCode(rig.open(), 'ECORRUPT')).message).toMatch(
      /journal record 1 .* is damaged/,
    );
  });

  // A checkpoint makes its records durable, then writes a superblock saying
  // it is applying them (`applyingSeq`), then writes production in address
  // order, not record order. A power cut in the middle and a damaged record
  // before the cut's end left replay dropping from that record as a torn
  // tail, over a production that already held some later records: content
  // no prefix of the writes ever had (records 2 and 3 without record 1, at
  // cut 7). Found while checking the damage trials' superblock case
  // (test/property/damage-journal.test.ts).
  it('is ECORRUPT when replay stops short of a checkpoint the superblock says had begun', async () => {
    const blocks = [5, 3, 4]; // records 1, 2, 3; applied as blocks 3, 4, 5
    let reported = 0;
    for (let cut = 0; cut < 24; cut++) {
      const rig = await JournalRig.create({ checkpointAt: 1 });
      const d = rig.device;
      for (const [i, b] of blocks.entries()) await d.write(b * 512, fill(512, 0xa1 + i));
      rig.power.cutAfter(cut);
      await d.checkpoint().catch(() => {});
      // Seeds that keep some of the production writes the cut left unflushed.
      await rig.crash(cut * 7 + 8);
      const at = await rig.find(0xa1);
      if (at.length === 0) continue;
      await rig.corrupt(at[0]! + 100);
      const opened = await rig.openAttached().catch((e: unknown) => e);
      if (opened instanceof Error) {
        expect(String(opened)).toContain('ECORRUPT');
        reported++;
        continue;
      }
      // Whatever survived is a prefix of the writes, in record order.
      const got = await (opened as JournalDevice).read(0, 6 * 512);
      const present = blocks.map((b) => got[b * 512] !== 0);
      const prefix = present.filter(Boolean).length;
      expect(present, `cut ${cut}: records present`).toEqual(blocks.map((_, i) => i < prefix));
      await (opened as JournalDevice).close();
    }
    expect(reported).toBeGreaterThan(0);
  });

  it('is ECORRUPT for any damaged record after a clean close', async () => {
    for (const victim of [0xa1, 0xa3]) {
      const rig = await JournalRig.create();
      const d = rig.device;
      for (const v of [0xa1, 0xa2, 0xa3]) await d.write((v & 0xf) * 512, fill(512, v));
      await d.close();
      await rig.corrupt((await onlyAt(rig, victim)) + 3);
      const err = await expectCode(rig.open(), 'ECORRUPT', `victim ${victim}`);
      expect(err.message).toMatch(/closed cleanly through record 3/);
    }
  });

  it('never revives records of a dropped tail once new records take their place', async () => {
    const rig = await JournalRig.create();
    const d = rig.device;
    await d.write(0, fill(512, 0xa1));
    await d.flush();
    for (const v of [0xb2, 0xc3, 0xd4]) await d.write((v & 0xf) * 512, fill(512, v));
    rig.abandon();
    await rig.corrupt(await onlyAt(rig, 0xb2));
    const second = await rig.open();
    expect(second.sequence).toBe(1);
    // Same size as the dropped record 2, so it lands exactly where it was:
    // the stale records 3 and 4 follow it with the very sequence numbers
    // replay expects next. Only the chain link tells them apart.
    await second.write(5 * 512, fill(512, 0xe5));
    rig.abandon();
    const third = await rig.open();
    expect(third.sequence).toBe(2);
    const content = await third.read(0, 6 * 512);
    for (const [block, value] of [
      [0, 0xa1],
      [2, 0],
      [3, 0],
      [4, 0],
      [5, 0xe5],
    ] as const) {
      expectBytes(
        `block ${block}`,
        content.subarray(block * 512, (block + 1) * 512),
        fill(512, value),
      );
    }
    await third.close();
  });
});

describe('JournalDevice recovery: power cuts', () => {
  it('recovers the same content whichever I/O of a checkpoint the power cut lands on', async () => {
    let positions = 0;
    for (let cut = 0; ; cut++) {
      let finished = false;
      for (let seed = 0; seed < 4; seed++) {
        const rig = await JournalRig.create({ ringBytes: 32 * 1024 });
        const d = rig.device;
        for (const b of [3, 4, 5, 9, 0, 31]) await d.write(b * 512, fill(512, b + 1));
        await d.write(4 * 512 + 5, fill(700, 0x99));
        await d.flush();
        const expected = await d.read(0, rig.size);
        // A later, unflushed write may or may not survive; the rest must.
        rig.power.cutAfter(cut);
        await Promise.allSettled([d.checkpoint(), d.write(20 * 512, fill(512, 0x55))]);
        finished = rig.power.isOn;
        const again: JournalDevice = await rig.crashAndReopen(seed);
        const got = await again.read(0, rig.size);
        const block20 = got.slice(20 * 512, 21 * 512);
        expect([0, 0x55], `cut ${cut} seed ${seed}: block 20`).toContain(block20[0]);
        got.set(expected.subarray(20 * 512, 21 * 512), 20 * 512);
        expectBytes(`cut ${cut} seed ${seed}`, got, expected);
        // And it keeps working: a checkpoint now leaves the same content.
        await again.checkpoint();
        expectBytes(
          `cut ${cut} seed ${seed} re-checkpoint`,
          (await again.read(0, rig.size)).fill(0, 20 * 512, 21 * 512),
          expected,
        );
        await again.close();
      }
      positions++;
      if (finished) break;
    }
    // flush, 8 reads and 3 writes of the journal, a production flush, superblock write and flush at least.
    expect(positions).toBeGreaterThanOrEqual(10);
  });

  it('keeps every flushed write, and a prefix of the rest, across power cuts', async () => {
    for (let seed = 0; seed < 24; seed++) {
      const rig = await JournalRig.create({ ringBytes: 16 * 1024, checkpointAt: 0.5 });
      const d = rig.device;
      const states = [await d.read(0, rig.size)];
      const content = states[0]!.slice();
      let durable = 0;
      for (let i = 0; i < 30; i++) {
        const offset = ((i * 733) % (rig.size - 600)) + (i % 3);
        const data = fill(1 + ((i * 97) % 600), i + 1);
        const pending = d.write(offset, data);
        content.set(data, offset);
        states.push(content.slice());
        await pending;
        if (i % 9 === 8) {
          await d.flush();
          durable = i + 1;
        }
      }
      const again = await rig.crashAndReopen(seed);
      expect(again.sequence, `seed ${seed}`).toBeGreaterThanOrEqual(durable);
      expectBytes(
        `seed ${seed}: state after record ${again.sequence}`,
        await again.read(0, rig.size),
        states[again.sequence]!,
      );
      await again.close();
    }
  });
});

describe('JournalDevice recovery: flush', () => {
  it('makes durable the writes called before it, even those still in flight', async () => {
    for (let seed = 0; seed < 8; seed++) {
      const rig = await JournalRig.create();
      const d = rig.device;
      const writes = [d.write(0, fill(512, 1)), d.write(700, fill(100, 2))];
      await d.flush();
      await Promise.all(writes);
      const again = await rig.crashAndReopen(seed);
      expect(again.sequence, `seed ${seed}`).toBe(2);
      await again.close();
    }
  });
});

describe('JournalDevice recovery: a dropped tail stays dropped', () => {
  it('records replay dropped never come back, even when the next frame loses its header in a crash', async () => {
    // Found by the journal model's soak (seed 0x10a5): a frame torn by a
    // power cut is dropped at recovery; the next frame, written where it
    // was, would carry the same sequence number and link; if the crash
    // that follows keeps the old header and not the new one, replay must
    // not take the old frame back (open seals the tail first).
    const r = await JournalRig.create({ blockSize: 512, blocks: 32, ringBytes: 64 * 1024 });
    await Promise.all([r.device.write(0, fill(512, 0x33)), r.device.write(512, fill(512, 0x44))]);
    r.power.cut();
    // The power cut loses block 0's image and keeps the rest of the frame.
    const [imageOfBlock0] = await r.find(0x33);
    expect(imageOfBlock0).toBeDefined();
    const disk = r.journalDisk.reopen();
    await disk.write(imageOfBlock0!, new Uint8Array(512));
    await r.open();
    expectBytes('after the first crash', await r.device.read(0, 1024), new Uint8Array(1024));

    const before = await disk.read(0, disk.size);
    await r.device.write(0, fill(512, 0x33));
    r.power.cut();
    // The second crash loses the new frame's first sector (its header).
    const after = await disk.read(0, disk.size);
    let first = -1;
    for (let at = 0; at < disk.size && first < 0; at += 512) {
      if (Buffer.compare(before.subarray(at, at + 512), after.subarray(at, at + 512)) !== 0)
        first = at;
    }
    expect(first).toBeGreaterThanOrEqual(0);
    await disk.write(first, before.subarray(first, first + 512));
    await r.open();
    const got = await r.device.read(0, 1024);
    expectBytes(
      'block 1, written only before the first crash',
      got.subarray(512),
      new Uint8Array(512),
    );
    expectBytes(
      'block 0, whose new frame lost its header',
      got.subarray(0, 512),
      new Uint8Array(512),
    );
    await r.device.close();
  });
});

describe('JournalDevice recovery: a journal left full', () => {
  it('opens a ring with no room for the tail seal without writing one, and goes on through a checkpoint', async () => {
    // One-sector frame headers: a one-block write is 2 sectors of ring, a
    // two-block write 3. After create's first frame, 14 of the one and one
    // of the other fill the 16 KiB ring to its last byte.
    const r = await JournalRig.create({
      blockSize: 512,
      blocks: 64,
      ringBytes: 16 * 1024,
      checkpointAt: 1,
    });
    const expected = new Uint8Array(64 * 512);
    for (let i = 0; i < 14; i++) {
      const data = fill(512, i + 1);
      await r.device.write(i * 512, data);
      expected.set(data, i * 512);
    }
    const pair = fill(1024, 0x77);
    await r.device.write(40 * 512, pair);
    expected.set(pair, 40 * 512);
    expect(r.device.journalUsed).toBe(r.device.journalCapacity);
    r.power.cut();

    const ringBefore = await r.journalDisk.reopen().read(RING_START, 16 * 1024);
    await r.open();
    // Replay found no torn tail to seal over, and there is no room for a seal.
    expect(r.device.journalUsed).toBe(r.device.journalCapacity);
    expectBytes(
      'the ring after open',
      await r.journalDisk.reopen().read(RING_START, 16 * 1024),
      ringBefore,
    );
    expectBytes('content after open', await r.device.read(0, expected.length), expected);

    // The next write waits for the checkpoint that makes room, then lands.
    const more = fill(512, 0x99);
    await r.device.write(60 * 512, more);
    expected.set(more, 60 * 512);
    await r.device.flush();
    r.power.cut();
    await r.open();
    expectBytes('content after the next crash', await r.device.read(0, expected.length), expected);
    await r.device.close();
  });
});
