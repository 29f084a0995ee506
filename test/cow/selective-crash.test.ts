import { describe, expect, it } from 'vitest';
import { expectAllowed, expectBytes, fill, pattern } from '../support/bytes.js';
import { blocksOf, SelectiveRig } from '../support/selective-rig.js';

const BS = 512;
const BLOCKS = 16;
const SIZE = BS * BLOCKS;
const old = pattern(SIZE, 11);
const fresh = fill(SIZE, 0xee);

async function rig(): Promise<SelectiveRig> {
  const r = await SelectiveRig.create({
    blockSize: BS,
    blocks: BLOCKS,
    maxSnapshots: 4,
    maxRuns: 8,
  });
  await r.device.write(0, old);
  return r;
}

/** Blocks whose bytes differ between `a` and `b`. */
function differing(a: Uint8Array, b: Uint8Array): number[] {
  const out: number[] = [];
  for (let blk = 0; blk < BLOCKS; blk++) {
    const x = a.subarray(blk * BS, (blk + 1) * BS);
    if (!Buffer.from(x).equals(b.subarray(blk * BS, (blk + 1) * BS))) out.push(blk);
  }
  return out;
}

/** Runs `body` with the power cut after each count of device operations in turn, until it runs through. */
async function everyCut(
  body: (cut: number) => Promise<boolean>,
  minimumPositions: number,
): Promise<void> {
  let cut = 0;
  while (!(await body(cut))) cut++;
  expect(cut + 1, 'I/O positions the cut landed on').toBeGreaterThanOrEqual(minimumPositions);
}

describe('SelectiveSnapshotDevice power cuts', () => {
  it('keeps a selective snapshot exact, and its change table complete, whichever I/O of first writes the cut lands on', async () => {
    await everyCut(async (cut) => {
      let finished = false;
      for (let seed = 0; seed < 4; seed++) {
        const r = await rig();
        const snap = await r.device.snapshot({ include: [{ offset: BS, length: 6 * BS }] });
        r.power.cutAfter(cut);
        await Promise.allSettled(
          [0, 1, 2, 5, 6, 9].map((b) => r.device.write(b * BS, fresh.subarray(0, BS))),
        );
        finished = r.power.isOn;
        const again = await r.crashAndReopen(seed);
        const s = await again.openSnapshot(snap.id);
        const what = `cut ${cut} seed ${seed}`;
        expectBytes(`${what}: snapshot`, await s.read(BS, 6 * BS), old.slice(BS, 7 * BS));
        const live = await again.read(0, SIZE);
        expectAllowed(`${what}: origin`, live, old, [{ offset: 0, data: fresh }]);
        // Every held block that really differs is reported: no forced full backup.
        const changed = blocksOf(again.changedExtents(snap.id, 'live'), BS);
        const differs = differing(old, live).filter((b) => b >= 1 && b <= 6);
        expect(changed, `${what}: changedExtents`).toEqual(expect.arrayContaining(differs));
        expect(
          changed.every((b) => [1, 2, 5, 6].includes(b)),
          `${what}: ${changed}`,
        ).toBe(true);
        await again.close();
      }
      return finished;
    }, 12);
  });

  it('finishes a partial restore cut short by the power, or leaves it unbegun: never half, never beyond its ranges', async () => {
    const ranges = [
      { offset: BS + 100, length: 2 * BS },
      { offset: 5 * BS + 3, length: 10 },
      { offset: 5 * BS + 40, length: 10 },
      { offset: 12 * BS, length: BS },
    ];
    await everyCut(async (cut) => {
      let finished = false;
      for (const seed of [cut * 7 + 1]) {
        const r = await rig();
        const snap = await r.device.snapshot({ exclude: [{ offset: 12 * BS, length: 4 * BS }] });
        await r.device.write(0, fresh);
        const later = await r.device.snapshot({ include: [{ offset: 0, length: 8 * BS }] });
        await r.device.write(BS, fill(4 * BS, 0x77));
        await r.device.flush();
        const before = await r.device.read(0, SIZE);
        const restored = before.slice();
        for (const e of ranges) {
          // Block 12 and on are not held: the range is left alone there.
          const end = Math.min(e.offset + e.length, 12 * BS);
          if (end > e.offset) restored.set(old.subarray(e.offset, end), e.offset);
        }
        r.power.cutAfter(cut);
        await r.device.restore(snap.id, { ranges }).catch(() => {});
        finished = r.power.isOn;
        const again = await r.crashAndReopen(seed);
        const live = await again.read(0, SIZE);
        const all = Buffer.from(live).equals(restored);
        const none = Buffer.from(live).equals(before);
        expect(all || none, `cut ${cut} seed ${seed}: half a restore`).toBe(true);
        expect(
          await (await again.openSnapshot(later.id)).read(0, 8 * BS),
          `cut ${cut} seed ${seed}: the newer snapshot`,
        ).toEqual(fresh.slice(0, 8 * BS));
        expect(await (await again.openSnapshot(snap.id)).read(0, 12 * BS)).toEqual(
          old.slice(0, 12 * BS),
        );
        await again.close();
      }
      return finished;
    }, 10);
  });

  it('a snapshot cut short either never was, or holds exactly every write called before it', async () => {
    await everyCut(async (cut) => {
      let finished = false;
      for (let seed = 0; seed < 4; seed++) {
        const r = await rig();
        const writes = [0, 3, 4, 9].map((b) => r.device.write(b * BS, fill(BS, b + 1)));
        const expected = old.slice();
        for (const b of [0, 3, 4, 9]) expected.fill(b + 1, b * BS, (b + 1) * BS);
        r.power.cutAfter(cut);
        const taking = r.device.snapshot({ include: [{ offset: 2 * BS, length: 3 * BS }] });
        await Promise.allSettled([...writes, taking]);
        finished = r.power.isOn;
        const again = await r.crashAndReopen(seed);
        const infos = again.listSnapshots();
        expect(infos.length, `cut ${cut}`).toBeLessThanOrEqual(1);
        if (infos.length === 1) {
          const s = await again.openSnapshot(infos[0]!.id);
          expectBytes(
            `cut ${cut} seed ${seed}`,
            await s.read(2 * BS, 3 * BS),
            expected.slice(2 * BS, 5 * BS),
          );
          expect(again.snapshotExtents(infos[0]!.id)).toEqual([{ offset: 2 * BS, length: 3 * BS }]);
        }
        await again.close();
      }
      return finished;
    }, 3);
  });
});
