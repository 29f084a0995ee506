import { describe, expect, it } from 'vitest';
import type { MemoryDevice } from '../../src/index.js';
import { encodeSuperblock, SUPERBLOCK_SLOT } from '../../src/store/superblock.js';
import { expectBytes } from '../support/bytes.js';
import {
  BS,
  flipBit,
  fresh,
  lastFrameChunk,
  old,
  type Subject,
  storeLog,
  subjects,
} from '../support/cow-log-damage.js';
import { expectCode } from '../support/error-code.js';
import { newestSuperblock } from '../support/superblock.js';

/*
 * After flush() resolves, damage to the last log frame or to the chunks it
 * names is ECORRUPT at open even though the process died without close():
 * the flush left a superblock counting the durable frames. A preserved
 * block is damage even without that count when the origin block has moved
 * on (the origin is written only after its preserve is durable). The window
 * that remains — a power cut loses the count and the damaged chunk is a
 * writable snapshot's own — is in docs/ARCHITECTURE.md "Crash ordering".
 */

/** Old content, a snapshot, first writes to blocks 0–1 (the last frame preserves them), a flush; the process dies. */
async function preservedThenFlushed(make: () => Promise<Subject>): Promise<Subject> {
  const subject = await make();
  await subject.rig.device.write(0, old);
  await subject.snapshot();
  await subject.rig.device.write(0, fresh.subarray(0, 2 * BS));
  await subject.rig.device.flush();
  subject.rig.abandon();
  return subject;
}

/** Puts the superblock of the generation before the newest back on top: what a power cut losing the count leaves. */
async function loseNewestSuperblock(disk: MemoryDevice): Promise<void> {
  const { sb, slot } = await newestSuperblock(disk);
  expect(sb.attestedFrames).toBeGreaterThan(0);
  await disk.write(
    slot * SUPERBLOCK_SLOT,
    encodeSuperblock({ ...sb, attestedFrames: undefined, generation: sb.generation - 1 }),
  );
  await disk.write((1 - slot) * SUPERBLOCK_SLOT, new Uint8Array(SUPERBLOCK_SLOT));
}

describe.each(subjects)('$device after flush() and no close', ({ make }) => {
  it('the flush leaves a superblock counting every log frame', async () => {
    const subject = await preservedThenFlushed(make);
    const disk = subject.rig.disk('store');
    const { sb } = await newestSuperblock(disk);
    expect(sb.closedFrames).toBeUndefined();
    expect(sb.attestedFrames).toBe((await storeLog(disk)).frames.length);
  });

  it("a flipped bit in the last frame's preserved chunk is ECORRUPT", async () => {
    const subject = await preservedThenFlushed(make);
    const disk = subject.rig.disk('store');
    const { at } = await lastFrameChunk(disk, 'preserve');
    await flipBit(disk, at + 100);
    const err = await expectCode(subject.rig.open(), 'ECORRUPT');
    expect(err.message).toMatch(/a flush attested \d+ log frames/);
  });

  it('…and still ECORRUPT when a power cut lost the count: the origin has moved on', async () => {
    const subject = await preservedThenFlushed(make);
    const disk = subject.rig.disk('store');
    await loseNewestSuperblock(disk);
    const { at } = await lastFrameChunk(disk, 'preserve');
    await flipBit(disk, at + 100);
    const err = await expectCode(subject.rig.open(), 'ECORRUPT');
    expect(err.message).toMatch(/origin block \d+ no longer holds the data preserved from it/);
  });

  it("a flipped bit in a writable snapshot's own chunk named by the last frame is ECORRUPT", async () => {
    const subject = await make();
    await subject.rig.device.write(0, old);
    const snap = await subject.snapshot({ writable: true });
    await snap.write(BS, fresh.subarray(0, BS));
    await subject.rig.device.flush();
    subject.rig.abandon();
    const disk = subject.rig.disk('store');
    const { at } = await lastFrameChunk(disk, 'private');
    await flipBit(disk, at + 7);
    await expectCode(subject.rig.open(), 'ECORRUPT');
  });

  it('a flipped bit in the last log frame itself is ECORRUPT, not a torn tail', async () => {
    const subject = await preservedThenFlushed(make);
    const disk = subject.rig.disk('store');
    const { frames } = await storeLog(disk);
    await flipBit(disk, frames.at(-1)!.offset + 9);
    const err = await expectCode(subject.rig.open(), 'ECORRUPT');
    expect(err.message).toContain(`log frame ${frames.length - 1} at store offset`);
  });

  it('a last frame that looks torn (origin not yet written) is still dropped when no flush counted it', async () => {
    const subject = await preservedThenFlushed(make);
    const disk = subject.rig.disk('store');
    await loseNewestSuperblock(disk);
    const { frames } = await storeLog(disk);
    const { at } = await lastFrameChunk(disk, 'preserve');
    await flipBit(disk, at + 100);
    await subject.rig.disk('origin').write(0, old.subarray(0, 2 * BS));
    const device = await subject.rig.open();
    expect((await storeLog(disk)).frames).toHaveLength(frames.length - 1);
    expectBytes(
      'origin as the torn tail left it',
      await device.read(0, 2 * BS),
      old.subarray(0, 2 * BS),
    );
    await device.close();
  });

  it('opens undamaged with every snapshot, and flushing again writes no superblock when nothing changed', async () => {
    const subject = await preservedThenFlushed(make);
    const device = await subject.rig.open();
    const [info] = device.listSnapshots();
    expectBytes(
      'snapshot',
      await (await device.openSnapshot(info!.id)).read(0, 8 * BS),
      old.subarray(0, 8 * BS),
    );
    const disk = subject.rig.disk('store');
    await device.write(2 * BS, fresh.subarray(0, BS));
    await device.flush();
    const { sb } = await newestSuperblock(disk);
    await device.flush();
    expect((await newestSuperblock(disk)).sb.generation).toBe(sb.generation);
    await device.close();
  });
});

describe.each(subjects)(
  '$device: power cuts after a flush left its count unflushed',
  ({ make }) => {
    // The count is written without a flush; the superblock written next goes
    // to the other slot, the one holding the only durable generation. A cut
    // at each I/O of what follows (more first writes, a flush, a clean close)
    // must always leave a valid superblock and every flushed write.
    it('opens at every cut with every flushed write and the snapshot exact', async () => {
      let positions = 0;
      for (let cut = 0; ; cut++) {
        let finished = false;
        for (let seed = 0; seed < 6; seed++) {
          const subject = await make();
          const { rig } = subject;
          await rig.device.write(0, old);
          const snap = await subject.snapshot();
          await rig.device.write(0, fresh.subarray(0, BS));
          await rig.device.flush();
          rig.power.cutAfter(cut);
          const flushed = await rig.device
            .write(BS, fresh.subarray(0, BS))
            .then(() => rig.device.flush())
            .then(() => rig.device.close())
            .then(
              () => true,
              () => false,
            );
          finished ||= rig.power.isOn;
          const device = rig.power.isOn ? await rig.open() : await rig.crashAndReopen(seed);
          const what = `cut ${cut} seed ${seed}`;
          expectBytes(
            `${what}: snapshot`,
            await (await device.openSnapshot(snap.id)).read(0, 8 * BS),
            old.subarray(0, 8 * BS),
          );
          const origin = await device.read(0, 2 * BS);
          expectBytes(`${what}: flushed block 0`, origin.subarray(0, BS), fresh.subarray(0, BS));
          if (flushed) expectBytes(`${what}: block 1`, origin.subarray(BS), fresh.subarray(0, BS));
          await device.close();
        }
        positions++;
        if (finished) break;
      }
      expect(positions).toBeGreaterThanOrEqual(6);
    });
  },
);
