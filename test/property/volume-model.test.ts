import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { expectAllowed, expectBytes, pattern } from '../support/bytes.js';
import {
  assertProperty,
  countPowerCuts,
  SOAK,
  SOAK_TIMEOUT,
  writeSoakReport,
} from '../support/soak.js';
import { VolumeRig } from '../support/volume-disk-rig.js';

/*
 * VirtualVolume against a byte model, every partition in this thread over
 * FaultyDevices on one power switch: writes, flushes, overall snapshots,
 * deletes, restores, reopens, power cuts between operations, and power cuts
 * armed to land a chosen number of disk operations into a snapshot, a
 * delete, a restore or a write — so at every step of the group-snapshot
 * protocol. After each cut the volume must hold every write acknowledged
 * before the last durability point, nothing but unflushed writes beyond
 * it, every completed overall snapshot whole, a cut-short one whole or
 * absent, and a cut-short restore done on every partition or on none. At
 * the end no partition holds a snapshot the catalog does not name.
 */

const BS = 512;
const BLOCKS = 24;
const MAX_SNAPSHOTS = 4;

type Cuttable = 'snapshot' | 'delete' | 'restore' | 'write';

type Step =
  | { kind: 'write'; block: number; blocks: number; seed: number }
  | { kind: 'flush' }
  | { kind: 'snapshot' }
  | { kind: 'delete'; pick: number }
  | { kind: 'restore'; pick: number }
  | { kind: 'reopen' }
  | { kind: 'crash'; seed: number }
  | { kind: 'cut'; during: Cuttable; afterOps: number; seed: number; pick: number; block: number };

const step: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant('write' as const),
      block: fc.nat(BLOCKS - 3),
      blocks: fc.integer({ min: 1, max: 3 }),
      seed: fc.nat(250),
    }),
  },
  { weight: 2, arbitrary: fc.constant({ kind: 'flush' as const }) },
  { weight: 3, arbitrary: fc.constant({ kind: 'snapshot' as const }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('delete' as const), pick: fc.nat(7) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('restore' as const), pick: fc.nat(7) }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'reopen' as const }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('crash' as const), seed: fc.nat() }) },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('cut' as const),
      during: fc.constantFrom<Cuttable>('snapshot', 'delete', 'restore', 'write'),
      afterOps: fc.nat(40),
      seed: fc.nat(),
      pick: fc.nat(7),
      block: fc.nat(BLOCKS - 3),
    }),
  },
);

/** What the volume must hold: live bytes, what survives a cut, and the overall snapshots. */
class VolumeModel {
  live: Uint8Array;
  durable: Uint8Array;
  pending: { offset: number; data: Uint8Array }[] = [];
  snapshots: { id: string; content: Uint8Array }[] = [];

  constructor(size: number) {
    this.live = new Uint8Array(size);
    this.durable = new Uint8Array(size);
  }

  write(offset: number, data: Uint8Array): void {
    this.live.set(data, offset);
    this.pending.push({ offset, data });
  }

  /** A flush or a durability point. */
  settle(): void {
    this.durable = this.live.slice();
    this.pending = [];
  }

  pick(n: number): { id: string; content: Uint8Array } | undefined {
    return this.snapshots.length === 0 ? undefined : this.snapshots[n % this.snapshots.length];
  }
}

let cuts = 0;

async function expectSnapshots(rig: VolumeRig, model: VolumeModel): Promise<void> {
  expect(rig.device.listSnapshots().map((s) => s.id)).toEqual(model.snapshots.map((s) => s.id));
  for (const s of model.snapshots) {
    expectBytes(`snapshot ${s.id}`, await (await rig.handle(s.id)).read(0, rig.size), s.content);
  }
}

/** After a cut: the live bytes are allowed; the model takes them as its new durable state. */
async function resync(
  rig: VolumeRig,
  model: VolumeModel,
  extra: { offset: number; data: Uint8Array }[] = [],
  alternative?: Uint8Array,
): Promise<void> {
  const live = await rig.device.read(0, rig.size);
  if (alternative === undefined || !Buffer.from(live).equals(alternative)) {
    expectAllowed('live volume after the cut', live, model.durable, [...model.pending, ...extra]);
  }
  model.live = live;
  model.settle();
}

async function run(rig: VolumeRig, model: VolumeModel, s: Step): Promise<void> {
  const size = rig.size;
  switch (s.kind) {
    case 'write': {
      const data = pattern(s.blocks * BS, s.seed);
      await rig.device.write(s.block * BS, data);
      model.write(s.block * BS, data);
      return;
    }
    case 'flush':
      await rig.device.flush();
      model.settle();
      return;
    case 'snapshot': {
      if (model.snapshots.length >= MAX_SNAPSHOTS) return;
      const snap = await rig.device.snapshot();
      model.snapshots.push({ id: snap.id, content: model.live.slice() });
      model.settle();
      return;
    }
    case 'delete': {
      const target = model.pick(s.pick);
      if (target === undefined) return;
      await rig.device.deleteSnapshot(target.id);
      model.snapshots = model.snapshots.filter((x) => x !== target);
      model.settle();
      return;
    }
    case 'restore': {
      const target = model.pick(s.pick);
      if (target === undefined) return;
      await rig.device.restore(target.id);
      model.live = target.content.slice();
      model.settle();
      return;
    }
    case 'reopen':
      await rig.reopen();
      model.settle();
      return;
    case 'crash':
      cuts++;
      await rig.crashAndReopen(s.seed);
      await expectSnapshots(rig, model);
      await resync(rig, model);
      return;
    case 'cut':
      await cutDuring(rig, model, s, size);
      return;
  }
}

/** Arms a power cut `afterOps` disk operations into one operation, then crashes, reopens and checks. */
async function cutDuring(
  rig: VolumeRig,
  model: VolumeModel,
  s: Extract<Step, { kind: 'cut' }>,
  size: number,
): Promise<void> {
  const target = model.pick(s.pick);
  if (s.during === 'snapshot' && model.snapshots.length >= MAX_SNAPSHOTS) return;
  if ((s.during === 'delete' || s.during === 'restore') && target === undefined) return;
  cuts++;
  const before = model.live.slice();
  const data = pattern(2 * BS, s.seed & 0xff);
  rig.power.cutAfter(s.afterOps);
  let made: string | undefined;
  let done = false;
  try {
    if (s.during === 'snapshot') made = (await rig.device.snapshot()).id;
    else if (s.during === 'delete') await rig.device.deleteSnapshot(target!.id);
    else if (s.during === 'restore') await rig.device.restore(target!.id);
    else await rig.device.write(s.block * BS, data);
    done = true;
  } catch (err) {
    if (rig.power.isOn) throw err; // only the cut may make it fail
  }
  await rig.crashAndReopen(s.seed);
  const ids = rig.device.listSnapshots().map((x) => x.id);
  const known = model.snapshots.map((x) => x.id);
  if (s.during === 'snapshot') {
    if (done) model.settle();
    const added = ids.filter((id) => !known.includes(id));
    expect(ids.slice(0, known.length), 'the snapshots before the cut').toEqual(known);
    expect(added.length, `a cut-short snapshot is whole or absent: ${ids}`).toBeLessThanOrEqual(1);
    if (done) expect(added, 'a snapshot that resolved survives').toEqual([made]);
    if (added.length === 1) model.snapshots.push({ id: added[0]!, content: before });
  } else if (s.during === 'delete') {
    if (done) expect(ids).not.toContain(target!.id);
    if (!ids.includes(target!.id)) model.snapshots = model.snapshots.filter((x) => x !== target);
    if (done) model.settle();
  }
  await expectSnapshots(rig, model);
  if (s.during === 'restore') {
    const live = await rig.device.read(0, size);
    if (done) expectBytes('a restore that resolved', live, target!.content);
    // All partitions or none: the snapshot's content, or the content before.
    await resync(rig, model, [], target!.content);
    return;
  }
  await resync(rig, model, s.during === 'write' ? [{ offset: s.block * BS, data }] : []);
}

describe('VirtualVolume against the reference model', () => {
  it(
    'matches the model through snapshots, deletes, restores, reopens and power cuts at every step of the protocol',
    async () => {
      await assertProperty(
        'volume model',
        fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 25 }), async (steps) => {
          const rig = await VolumeRig.create({ maxSnapshots: MAX_SNAPSHOTS });
          const model = new VolumeModel(rig.size);
          try {
            for (const s of steps) {
              await run(rig, model, s);
              expectBytes('live volume', await rig.device.read(0, rig.size), model.live);
            }
            await expectSnapshots(rig, model);
            const catalog = rig.device.listSnapshots().length;
            await rig.device.close();
            // No orphans: every partition holds the catalog's snapshots and no others.
            expect(await rig.partitionSnapshotCounts()).toEqual(
              Array.from({ length: rig.partitions }, () => catalog),
            );
          } finally {
            await rig.dispose().catch(() => {});
          }
        }),
        { numRuns: 250, soakRuns: 3000, seed: 0x70131 },
      );
    },
    SOAK_TIMEOUT,
  );

  afterAll(() => {
    countPowerCuts('VirtualVolume', cuts);
    writeSoakReport('volume-model');
    if (!SOAK) expect(cuts).toBeGreaterThanOrEqual(100);
  });
});
