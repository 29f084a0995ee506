import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { MemoryDevice, SelectiveSnapshotDevice } from '../../src/index.js';
import { watch } from '../support/async.js';
import { expectBytes, pattern } from '../support/bytes.js';
import { GatedDevice, resolutionOrder } from '../support/gated-device.js';
import { extentsOfBlocks } from '../support/selective-rig.js';
import { assertProperty, SOAK_TIMEOUT as TIMEOUT, writeSoakReport } from '../support/soak.js';
import { heldBlocks, masked } from './selective-harness.js';

const BS = 512;
const BLOCKS = 16;
const SIZE = BS * BLOCKS;

interface PlannedWrite {
  block: number;
  within: number;
  length: number;
  seed: number;
}

/** Writes to distinct blocks, so their order among themselves cannot matter. */
const distinctWrites = fc.uniqueArray(
  fc.record({
    block: fc.nat(BLOCKS - 1),
    within: fc.nat(BS - 1),
    length: fc.integer({ min: 1, max: BS }),
    seed: fc.nat(250),
  }),
  { maxLength: 6, selector: (w) => w.block },
);

const extent = fc
  .tuple(fc.nat(SIZE - 1), fc.integer({ min: 1, max: 6 * BS }))
  .map(([offset, length]) => ({ offset, length: Math.min(length, SIZE - offset) }));

/** A designation, some writes called before snapshot() and some after, reads after it. */
const plan = fc.record({
  include: fc.array(extent, { minLength: 1, maxLength: 3 }),
  exclude: fc.array(extent, { maxLength: 2 }),
  before: distinctWrites,
  after: distinctWrites,
  reads: fc.array(extent, { maxLength: 3 }),
  older: fc.boolean(),
  writable: fc.boolean(),
});

function dataOf(w: PlannedWrite): Uint8Array {
  return pattern(Math.min(w.length, BS - w.within), w.seed);
}

describe('SelectiveSnapshotDevice consistent point under a random schedule (claims 24–25, 33, 41)', () => {
  it(
    'holds exactly the writes into its blocks called before it; while it is cut, only writes into them wait',
    async () => {
      await assertProperty(
        'selective point-in-time cut',
        fc.asyncProperty(fc.scheduler(), plan, async (s, p) => {
          const held = heldBlocks(p, BS, BLOCKS);
          fc.pre(held.includes(true));
          const origin = new GatedDevice(await MemoryDevice.create({ size: SIZE, blockSize: BS }));
          const store = new GatedDevice(
            await MemoryDevice.create({ size: 256 * 1024, blockSize: BS }),
          );
          const device = await SelectiveSnapshotDevice.create(origin, store, {
            maxSnapshots: 4,
            maxRuns: 16,
          });
          const base = pattern(SIZE, 99);
          await device.write(0, base);
          // An older snapshot makes first writes preserve, so COW races the cut too.
          if (p.older) await device.snapshot();
          origin.scheduler = s;
          store.scheduler = s;
          // The cut stops at its origin flush until the checks below are done.
          const cut = origin.gate('flush');

          const expectedSnapshot = base.slice();
          const expectedOrigin = base.slice();
          const issue = (w: PlannedWrite) =>
            watch(device.write(w.block * BS + w.within, dataOf(w)));
          const before = p.before.map(issue);
          for (const w of p.before) {
            expectedSnapshot.set(dataOf(w), w.block * BS + w.within);
            expectedOrigin.set(dataOf(w), w.block * BS + w.within);
          }
          const { order, log: logged } = resolutionOrder();
          const snap = logged(
            'snapshot',
            device.snapshot({ include: p.include, exclude: p.exclude, writable: p.writable }),
          );
          // Outside the snapshot's blocks nothing orders a write called after
          // it behind one called before: keep those to other blocks.
          const after = p.after.filter(
            (w) => held[w.block] || !p.before.some((b) => b.block === w.block),
          );
          const inA = after.filter((w) => held[w.block]);
          const outside = after.filter((w) => !held[w.block]).map(issue);
          const waiting = inA.map((w) =>
            logged(`write ${w.block}`, device.write(w.block * BS + w.within, dataOf(w))),
          );
          for (const w of after) expectedOrigin.set(dataOf(w), w.block * BS + w.within);
          const reads = p.reads.map((e) => watch(device.read(e.offset, e.length)));

          // Run every scheduled I/O: the cut reaches its flush, and everything
          // but the writes into its blocks completes around it.
          await s.waitIdle();
          expect(cut.isReached, 'the snapshot reached its flush').toBe(true);
          expect(
            before.every((w) => w.settled),
            'writes called before',
          ).toBe(true);
          expect(
            outside.every((w) => w.settled),
            'writes outside, called after',
          ).toBe(true);
          expect(
            reads.every((r) => r.settled),
            'reads called after',
          ).toBe(true);
          expect(
            waiting.some((w) => w.settled),
            'a write into the blocks went through',
          ).toBe(false);
          expect(snap.settled).toBe(false);

          cut.open();
          const all = [...before, ...outside, ...waiting, ...reads, snap].map((w) => w.promise);
          await s.waitFor(Promise.all(all));
          origin.scheduler = undefined;
          store.scheduler = undefined;
          expect(order[0]).toBe('snapshot');

          const taken = await snap.promise;
          const want = masked(expectedSnapshot, held);
          const got = new Uint8Array(SIZE);
          const heldList = held.flatMap((h, b) => (h ? [b] : []));
          for (const e of extentsOfBlocks(heldList, BS)) {
            got.set(await taken.read(e.offset, e.length), e.offset);
          }
          expectBytes('snapshot', got, want);
          expectBytes('origin', await device.read(0, SIZE), expectedOrigin);
          await device.close();
        }),
        { numRuns: 120, soakRuns: 3000, seed: 0x5c07 },
      );
    },
    TIMEOUT,
  );

  afterAll(() => writeSoakReport('selective-cut'));
});
