import { describe, expect, it } from 'vitest';
import { expectBytes, pattern } from '../support/bytes.js';
import { VolumeRig } from '../support/volume-disk-rig.js';

/*
 * Power cuts at every disk operation of a group snapshot, a delete and a
 * restore (docs/ARCHITECTURE.md, "VirtualVolume", crash cases), over every
 * partition in this thread on one power switch: after each cut and reopen,
 * the overall snapshot is whole or absent, the restore done on every
 * partition or none, and no partition keeps a snapshot the catalog does
 * not name. The model test (test/property/volume-model.test.ts) cuts at
 * random points of random histories; this sweeps every point of one.
 */

const SEEDS = [1, 0xdeadbeef];

/** Operations the disks see while `op` runs, counted on a rig of its own. */
async function opsOf(
  prepare: (rig: VolumeRig) => Promise<() => Promise<unknown>>,
): Promise<number> {
  const rig = await VolumeRig.create();
  const op = await prepare(rig);
  const start = rig.power.opsIssued;
  await op();
  const ops = rig.power.opsIssued - start;
  await rig.dispose();
  return ops;
}

/** Runs `op` with a cut after each of its disk operations in turn, on a fresh rig each time. */
async function sweep(
  prepare: (rig: VolumeRig) => Promise<() => Promise<unknown>>,
  check: (rig: VolumeRig, resolved: boolean) => Promise<void>,
): Promise<number> {
  const total = await opsOf(prepare);
  let cuts = 0;
  for (let k = 0; k <= total; k++) {
    for (const seed of SEEDS) {
      const rig = await VolumeRig.create();
      const op = await prepare(rig);
      rig.power.cutAfter(k);
      let resolved = false;
      try {
        await op();
        resolved = true;
      } catch (err) {
        if (rig.power.isOn) throw err;
      }
      await rig.crashAndReopen(seed);
      await check(rig, resolved);
      const catalog = rig.device.listSnapshots().length;
      await rig.device.close();
      expect(await rig.partitionSnapshotCounts(), `cut after ${k} ops: no orphan`).toEqual(
        Array.from({ length: rig.partitions }, () => catalog),
      );
      cuts++;
    }
  }
  return cuts;
}

describe('VirtualVolume power cuts at every step of the protocol', () => {
  it('a group snapshot is whole or absent, and whole once snapshot() resolved', async () => {
    const before = pattern(24 * 512, 5);
    const cuts = await sweep(
      async (rig) => {
        await rig.device.write(0, before);
        await rig.device.flush();
        return () => rig.device.snapshot({ name: 'cut' });
      },
      async (rig, resolved) => {
        const snaps = rig.device.listSnapshots();
        if (resolved) expect(snaps.length).toBe(1);
        expect(snaps.length).toBeLessThanOrEqual(1);
        for (const s of snaps) {
          expect(s.name).toBe('cut');
          expectBytes('the snapshot', await (await rig.handle(s.id)).read(0, rig.size), before);
        }
        expectBytes('live', await rig.device.read(0, rig.size), before);
      },
    );
    expect(cuts).toBeGreaterThan(20);
  });

  it('a restore is done on every partition or on none', async () => {
    const old = pattern(24 * 512, 6);
    const now = pattern(24 * 512, 7);
    const cuts = await sweep(
      async (rig) => {
        await rig.device.write(0, old);
        const snap = await rig.device.snapshot();
        await rig.device.write(0, now);
        await rig.device.flush();
        return () => rig.device.restore(snap.id);
      },
      async (rig, resolved) => {
        const live = await rig.device.read(0, rig.size);
        if (resolved || !Buffer.from(live).equals(now))
          expectBytes('restored on every partition', live, old);
        expect(rig.device.listSnapshots().length).toBe(1);
      },
    );
    expect(cuts).toBeGreaterThan(20);
  });

  it('a deleted snapshot is gone or whole, and gone once deleteSnapshot() resolved', async () => {
    const content = pattern(24 * 512, 8);
    let id = '';
    const cuts = await sweep(
      async (rig) => {
        await rig.device.write(0, content);
        id = (await rig.device.snapshot()).id;
        await rig.device.write(0, pattern(24 * 512, 9));
        return () => rig.device.deleteSnapshot(id);
      },
      async (rig, resolved) => {
        const ids = rig.device.listSnapshots().map((s) => s.id);
        if (resolved) expect(ids).toEqual([]);
        for (const s of ids) {
          expectBytes('the snapshot', await (await rig.handle(s)).read(0, rig.size), content);
        }
      },
    );
    expect(cuts).toBeGreaterThan(20);
  });
});
