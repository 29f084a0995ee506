import { describe, expect, it } from 'vitest';
import type { JournalDevice } from '../../src/index.js';
import { JOURNAL_FRAME_MAGIC } from '../../src/journal/journal-format.js';
import { encodeSuperblock, SUPERBLOCK_SLOT } from '../../src/store/superblock.js';
import { settle } from '../support/async.js';
import { expectBytes, fill } from '../support/bytes.js';
import { expectCode } from '../support/error-code.js';
import { JournalRig } from '../support/journal-rig.js';
import { newestSuperblock } from '../support/superblock.js';

/*
 * After a clean close() nothing in the journal is a torn tail: damage to any
 * record or frame up to where the close left the last frame is ECORRUPT at
 * open, never dropped with a lower `sequence`. After a power cut, and after
 * a reopen, the torn-tail rule holds as before (docs/ARCHITECTURE.md,
 * "Crash ordering").
 */

const BS = 512;
/** Production blocks these tests write, one value each (block b holds 0xa0 + b). */
const WRITTEN = [1, 2, 3, 4] as const;

/** The one journal offset holding a 512-byte run of `value`. */
async function onlyAt(rig: JournalRig, value: number): Promise<number> {
  const at = await rig.find(value);
  expect(at, `runs of ${value} in the journal`).toHaveLength(1);
  return at[0]!;
}

/** Whether a frame header starts at journal offset `at`. */
async function isFrameHeader(rig: JournalRig, at: number): Promise<boolean> {
  const sector = await rig.journalDisk.reopen().read(at, BS);
  return new DataView(sector.buffer, sector.byteOffset).getUint32(0, true) === JOURNAL_FRAME_MAGIC;
}

/**
 * Block 0 flushed alone, then WRITTEN as one group (one frame, concurrent
 * writes) and flushed; `settle` lets the idle journal append its attestation.
 */
async function writeAll(d: JournalDevice): Promise<void> {
  await d.write(0, fill(BS, 0xa0));
  await d.flush();
  await Promise.all(WRITTEN.map((b) => d.write(b * BS, fill(BS, 0xa0 + b))));
  await d.flush();
  await settle();
}

async function expectAllWritten(d: JournalDevice, what: string): Promise<void> {
  expect(d.sequence, `${what}: sequence`).toBe(1 + WRITTEN.length);
  const got = await d.read(0, (WRITTEN.length + 1) * BS);
  for (let b = 0; b <= WRITTEN.length; b++) {
    expectBytes(`${what}: block ${b}`, got.subarray(b * BS, (b + 1) * BS), fill(BS, 0xa0 + b));
  }
}

/** A cleanly closed journal holding writeAll's records. */
async function closedRig(): Promise<JournalRig> {
  const rig = await JournalRig.create();
  await writeAll(rig.device);
  await rig.device.close();
  return rig;
}

describe('JournalDevice after a clean close: no torn tail', () => {
  const damages: [string, (rig: JournalRig) => Promise<number>][] = [
    ["the last record's data", async (rig) => (await onlyAt(rig, 0xa4)) + 300],
    ['the second-to-last record of the last group', async (rig) => (await onlyAt(rig, 0xa3)) + 7],
    [
      "the last group's frame header",
      async (rig) => {
        // One header sector, then the group's records back to back.
        const header = (await onlyAt(rig, 0xa1)) - BS;
        expect(await isFrameHeader(rig, header)).toBe(true);
        return header + 20;
      },
    ],
    [
      'the header of the last frame, an attestation that holds no record',
      async (rig) => {
        const header = (await onlyAt(rig, 0xa4)) + BS;
        expect(await isFrameHeader(rig, header)).toBe(true);
        return header + 28;
      },
    ],
  ];

  for (const [what, where] of damages) {
    it(`is ECORRUPT at open, naming the store offset, for a bit flipped in ${what}`, async () => {
      const rig = await closedRig();
      await rig.corrupt(await where(rig));
      const err = await expectCode(rig.open(), 'ECORRUPT', what);
      expect(err.message).toMatch(/store offset \d+ is damaged .*closed cleanly/);
    });
  }

  it('opens with every record after a clean close, and again after closing again', async () => {
    const rig = await closedRig();
    await expectAllWritten(await rig.open(), 'first reopen');
    await expectAllWritten(await rig.reopen(), 'second reopen');
    await rig.device.close();
  });

  it('survives a power cut at every I/O of a close that follows an unflushed attestation', async () => {
    // writeAll's settle lets the attestation land after the last flush: the
    // mark names where that frame ends, so close must make it durable first
    // (else a cut keeping the mark but tearing the frame reads as damage).
    let positions = 0;
    for (let cut = 0; ; cut++) {
      let finished = false;
      for (let seed = 0; seed < 8; seed++) {
        const rig = await JournalRig.create();
        await writeAll(rig.device);
        rig.power.cutAfter(cut);
        await rig.device.close().catch(() => {});
        finished ||= rig.power.isOn;
        if (rig.power.isOn) {
          await expectAllWritten(await rig.open(), `cut ${cut} seed ${seed}, closed`);
        } else {
          await expectAllWritten(await rig.crashAndReopen(seed), `cut ${cut} seed ${seed}`);
        }
        await rig.device.close();
      }
      positions++;
      if (finished) break;
    }
    expect(positions).toBeGreaterThanOrEqual(3);
  });

  it('survives a power cut at every I/O of the reopen after a clean close', async () => {
    // The reopen clears the mark and writes its seal frame past the clean
    // tail; a cut between them must not leave the mark naming a tail the
    // seal then continues (the next open would call that ECORRUPT).
    let positions = 0;
    for (let cut = 0; ; cut++) {
      let finished = false;
      for (let seed = 0; seed < 4; seed++) {
        const rig = await closedRig();
        rig.attach();
        rig.power.cutAfter(cut);
        let again: JournalDevice;
        try {
          again = await rig.openAttached();
          finished = rig.power.isOn;
        } catch (err) {
          if (rig.power.isOn) throw err;
          again = await rig.crashAndReopen(seed);
        }
        if (finished) rig.power.cutAfter(Number.MAX_SAFE_INTEGER);
        await expectAllWritten(again, `cut ${cut} seed ${seed}`);
        await again.close();
      }
      positions++;
      if (finished) break;
    }
    // Superblock reads, the replay, the mark's write and flush, the seal, a flush.
    expect(positions).toBeGreaterThanOrEqual(5);
  });
});

describe('JournalDevice without a clean close: the torn tail rule holds', () => {
  /** A journal in use with every WRITTEN block flushed, never cleanly closed since it was opened. */
  const inUse: [string, () => Promise<{ rig: JournalRig; d: JournalDevice }>][] = [
    [
      'drops a torn tail after a power cut and loses nothing flushed',
      async () => {
        const rig = await JournalRig.create();
        await writeAll(rig.device);
        return { rig, d: rig.device };
      },
    ],
    [
      'drops a torn tail again after a reopen that followed a clean close',
      async () => {
        const rig = await closedRig();
        return { rig, d: await rig.open() };
      },
    ],
  ];

  it.each(inUse)('%s', async (_title, start) => {
    const { rig, d } = await start();
    await d.write(6 * BS, fill(BS, 0xb6));
    rig.abandon();
    await rig.corrupt((await onlyAt(rig, 0xb6)) + 7);
    const again = await rig.open();
    await expectAllWritten(again, 'after the cut');
    expectBytes('the torn write', await again.read(6 * BS, BS), fill(BS, 0));
    await again.close();
  });
});

describe('JournalDevice: a store closed before the clean tail position existed', () => {
  /** Rewrites the newest superblock as the previous version did: 64 bytes of params. */
  async function asWrittenBefore(rig: JournalRig): Promise<void> {
    const disk = rig.journalDisk.reopen();
    const newest = await newestSuperblock(disk);
    expect(newest.sb.params.length).toBeGreaterThan(64);
    await disk.write(
      newest.slot * SUPERBLOCK_SLOT,
      encodeSuperblock({ ...newest.sb, params: newest.sb.params.slice(0, 64) }),
    );
  }

  it('still opens with every record, and keeps ECORRUPT for a damaged record', async () => {
    const rig = await closedRig();
    await asWrittenBefore(rig);
    await expectAllWritten(await rig.open(), 'old store');
    await rig.device.close();

    const damaged = await closedRig();
    await asWrittenBefore(damaged);
    await damaged.corrupt((await onlyAt(damaged, 0xa3)) + 7);
    expect((await expectCode(damaged.open(), 'ECORRUPT')).message).toMatch(
      /closed cleanly through record 5/,
    );
  });
});
