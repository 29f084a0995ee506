import { describe, expect, it } from 'vitest';
import { checksum } from '../../src/checksum/index.js';
import { FRAME_HEADER } from '../../src/cow/log-format.js';
import type { MemoryDevice } from '../../src/index.js';
import { encodeSuperblock, SUPERBLOCK_BYTES, SUPERBLOCK_SLOT } from '../../src/store/superblock.js';
import { expectAllowed, expectBytes } from '../support/bytes.js';
import {
  BS,
  cowSubject,
  flipBit,
  fresh,
  lastFrameChunk,
  lastFrameTorn,
  old,
  SIZE,
  type Subject,
  storeLog,
  subjects,
} from '../support/cow-log-damage.js';
import { expectCode } from '../support/error-code.js';
import { newestSuperblock } from '../support/superblock.js';

/*
 * After a clean close() there is no torn tail: damage to the last log frame,
 * or to the data it names, is ECORRUPT, never dropped as "never landed"
 * (docs/ARCHITECTURE.md, "Crash ordering"). After a power cut, and after a
 * reopen, the torn-tail rule holds as before.
 */

/** Old content, a snapshot, then first writes to blocks 0–1: the last frame preserves them. Closed cleanly. */
async function preservedThenClosed(
  make: () => Promise<Subject>,
): Promise<{ subject: Subject; snap: string }> {
  const subject = await make();
  await subject.rig.device.write(0, old);
  const snap = await subject.snapshot();
  await subject.rig.device.write(0, fresh.subarray(0, 2 * BS));
  await subject.rig.device.close();
  return { subject, snap: snap.id };
}

describe.each(subjects)('$device after a clean close', ({ make }) => {
  it('the store carries the mark, and opens undamaged with every snapshot exact', async () => {
    const { subject, snap } = await preservedThenClosed(make);
    const { sb } = await newestSuperblock(subject.rig.disk('store'));
    const { frames } = await storeLog(subject.rig.disk('store'));
    expect(sb.closedFrames).toBe(frames.length);
    const device = await subject.rig.open();
    expectBytes(
      'snapshot',
      await (await device.openSnapshot(snap)).read(0, 8 * BS),
      old.subarray(0, 8 * BS),
    );
    await device.close();
  });

  it("a flipped bit in the last frame's preserved chunk is ECORRUPT naming its offset, not a dropped frame", async () => {
    const { subject } = await preservedThenClosed(make);
    const disk = subject.rig.disk('store');
    const { at } = await lastFrameChunk(disk, 'preserve');
    await flipBit(disk, at + 100);
    const err = await expectCode(subject.rig.open(), 'ECORRUPT');
    expect(err.message).toContain(`at store offset ${at} fails its checksum`);
  });

  it("a flipped bit in a writable snapshot's own chunk named by the last frame is ECORRUPT", async () => {
    const subject = await make();
    await subject.rig.device.write(0, old);
    const snap = await subject.snapshot({ writable: true });
    await snap.write(BS, fresh.subarray(0, BS));
    await subject.rig.device.close();
    const disk = subject.rig.disk('store');
    const { at } = await lastFrameChunk(disk, 'private');
    await flipBit(disk, at + 7);
    const err = await expectCode(subject.rig.open(), 'ECORRUPT');
    expect(err.message).toContain(`at store offset ${at} fails its checksum`);
  });

  for (const [where, within] of [
    ['entries', FRAME_HEADER + 3],
    ['header', 9],
  ] as const) {
    it(`a flipped bit in the last log frame's ${where} is ECORRUPT naming the frame, not a torn tail`, async () => {
      const { subject } = await preservedThenClosed(make);
      const disk = subject.rig.disk('store');
      const { frames } = await storeLog(disk);
      const last = frames.at(-1)!;
      await flipBit(disk, last.offset + within);
      const err = await expectCode(subject.rig.open(), 'ECORRUPT');
      expect(err.message).toContain(
        `log frame ${frames.length - 1} at store offset ${last.offset} is missing or fails its checksum`,
      );
    });
  }
});

describe.each(subjects)('$device: power cuts around a clean close', ({ make }) => {
  // Cut at every I/O from the first write on, with several crash images
  // each: one write (block 3) and its flush, then a burst of first writes.
  // With `reopened` the device was closed cleanly and opened again first, so
  // the cut lands on a store that was marked: the mark must be gone before
  // any frame a power cut can tear.
  for (const reopened of [false, true]) {
    it(`drops a torn last frame silently and keeps every acknowledged write${reopened ? ' after a clean close and reopen' : ''}`, async () => {
      let torn = 0;
      for (let cut = 0; ; cut++) {
        let finished = false;
        for (let seed = 0; seed < 8; seed++) {
          const subject = await make();
          const { rig } = subject;
          await rig.device.write(0, old);
          const snap = await subject.snapshot();
          if (reopened) await rig.reopen();
          rig.power.cutAfter(cut);
          const acknowledged = await rig.device
            .write(3 * BS, fresh.subarray(0, BS))
            .then(() => rig.device.flush())
            .then(
              () => true,
              () => false,
            );
          await Promise.allSettled(
            [0, 1, 5].map((b) => rig.device.write(b * BS, fresh.subarray(0, BS))),
          );
          finished = rig.power.isOn;
          await rig.crash(seed);
          if (await lastFrameTorn(rig.disk('store'))) torn++;
          const device = await rig.openAttached();
          const what = `cut ${cut} seed ${seed}`;
          const held = await (await device.openSnapshot(snap.id)).read(0, 8 * BS);
          expectBytes(`${what}: snapshot`, held, old.subarray(0, 8 * BS));
          const origin = await device.read(0, SIZE);
          expectAllowed(`${what}: origin`, origin, old, [{ offset: 0, data: fresh }]);
          if (acknowledged) {
            expectBytes(
              `${what}: acknowledged write`,
              origin.subarray(3 * BS, 4 * BS),
              fresh.subarray(0, BS),
            );
          }
          await device.close();
        }
        if (finished) break;
      }
      // The cuts must have produced torn tails, or the case proves nothing.
      expect(torn).toBeGreaterThan(0);
    });
  }

  it('the first new frame after a reopen is written only once the mark is durably gone', async () => {
    const subject = await make();
    const { rig } = subject;
    await subject.snapshot();
    await rig.device.write(0, fresh.subarray(0, BS));
    await rig.reopen();
    const disk = rig.disk('store');
    expect((await newestSuperblock(disk)).sb.closedFrames).toBeDefined();
    // Reads, and a write to a block already preserved, leave the mark: the
    // log has not changed.
    await rig.device.read(0, SIZE);
    await rig.device.write(0, old.subarray(0, BS));
    expect((await newestSuperblock(disk)).sb.closedFrames).toBeDefined();
    await rig.device.write(BS, fresh.subarray(0, BS));
    expect((await newestSuperblock(disk)).sb.closedFrames).toBeUndefined();
    await rig.device.close();
  });
});

describe('stores written before the clean-close mark', () => {
  /** Rewrites the newest superblock as the library wrote it before the mark: those bytes zero. */
  async function unmark(disk: MemoryDevice): Promise<void> {
    const { slot } = await newestSuperblock(disk);
    const bytes = await disk.read(slot * SUPERBLOCK_SLOT, SUPERBLOCK_BYTES);
    bytes[37] = 0;
    bytes.fill(0, 60, 64);
    new DataView(bytes.buffer).setUint32(
      SUPERBLOCK_BYTES - 4,
      checksum(bytes.subarray(0, SUPERBLOCK_BYTES - 4)),
      true,
    );
    await disk.write(slot * SUPERBLOCK_SLOT, bytes);
    const { sb } = await newestSuperblock(disk);
    expect(sb.closedFrames).toBeUndefined();
  }

  it.each(subjects)(
    '$device opens as before: every snapshot back, a damaged last frame a torn tail',
    async ({ make }) => {
      const { subject, snap } = await preservedThenClosed(make);
      const disk = subject.rig.disk('store');
      await unmark(disk);
      let device = await subject.rig.open();
      expectBytes(
        'snapshot',
        await (await device.openSnapshot(snap)).read(0, 8 * BS),
        old.subarray(0, 8 * BS),
      );
      await device.write(2 * BS, fresh.subarray(0, BS));
      await device.close();
      await unmark(disk);
      // Without the mark nothing says the store was closed cleanly: the last
      // frame (block 2's preserve) fails its data and is dropped, as before —
      // when it looks torn: the origin write that follows a durable frame
      // never happened (else the moved origin proves the frame durable).
      const { at } = await lastFrameChunk(disk, 'preserve');
      await flipBit(disk, at);
      await subject.rig.disk('origin').write(2 * BS, old.subarray(2 * BS, 3 * BS));
      device = await subject.rig.open();
      expect((await newestSuperblock(disk)).sb.closedFrames).toBeUndefined();
      await device.close();
    },
  );

  it('a mark counting fewer frames than the log holds is stale: a writer that did not know it appended', async () => {
    const { subject } = await preservedThenClosed(cowSubject);
    const disk = subject.rig.disk('store');
    const { sb, slot } = await newestSuperblock(disk);
    const frames = sb.closedFrames!;
    await disk.write(slot * SUPERBLOCK_SLOT, encodeSuperblock({ ...sb, closedFrames: frames - 1 }));
    // The last frame may then be the unmarked writer's torn tail (its origin
    // writes never happened): dropped.
    const { at } = await lastFrameChunk(disk, 'preserve');
    await flipBit(disk, at);
    await subject.rig.disk('origin').write(0, old.subarray(0, 2 * BS));
    const device = await subject.rig.open();
    expect((await storeLog(disk)).frames).toHaveLength(frames - 1);
    await device.close();
  });
});
