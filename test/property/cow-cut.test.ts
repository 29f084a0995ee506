import fc from 'fast-check';
import { afterAll, describe, it } from 'vitest';
import { CowSnapshotDevice, MemoryDevice } from '../../src/index.js';
import { expectBytes, pattern } from '../support/bytes.js';
import { ScheduledDevice } from '../support/scheduled-device.js';
import { assertProperty, SOAK_TIMEOUT, writeSoakReport } from '../support/soak.js';

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
  { maxLength: 8, selector: (w) => w.block },
);

/** Some writes called before the snapshot, some after. */
const plan = fc.record({ before: distinctWrites, after: distinctWrites, writable: fc.boolean() });

function applyTo(content: Uint8Array, w: PlannedWrite): void {
  const at = w.block * BS + w.within;
  content.set(pattern(Math.min(w.length, BS - w.within), w.seed), at);
}

describe('CowSnapshotDevice point-in-time cut (rule 1) under a random schedule', () => {
  it(
    'holds exactly the writes called before snapshot(), in flight or not, and none after',
    async () => {
      await assertProperty(
        'cow point-in-time cut',
        fc.asyncProperty(fc.scheduler(), plan, async (s, p) => {
          const origin = new ScheduledDevice(
            await MemoryDevice.create({ size: SIZE, blockSize: BS }),
          );
          const store = new ScheduledDevice(
            await MemoryDevice.create({ size: 256 * 1024, blockSize: BS }),
          );
          const device = await CowSnapshotDevice.create(origin, store, { maxSnapshots: 4 });
          const base = pattern(SIZE, 99);
          await device.write(0, base);
          // An older snapshot makes the later writes preserve, so COW races the cut too.
          await device.snapshot();
          origin.scheduler = s;
          store.scheduler = s;

          const expectedSnapshot = base.slice();
          const expectedOrigin = base.slice();
          const pending: Promise<unknown>[] = [];
          for (const w of p.before) {
            pending.push(
              device.write(
                w.block * BS + w.within,
                pattern(Math.min(w.length, BS - w.within), w.seed),
              ),
            );
            applyTo(expectedSnapshot, w);
            applyTo(expectedOrigin, w);
          }
          const taken = device.snapshot({ writable: p.writable });
          for (const w of p.after) {
            pending.push(
              device.write(
                w.block * BS + w.within,
                pattern(Math.min(w.length, BS - w.within), w.seed),
              ),
            );
            applyTo(expectedOrigin, w);
          }
          pending.push(taken);
          await s.waitFor(Promise.all(pending));
          origin.scheduler = undefined;
          store.scheduler = undefined;

          const snap = await taken;
          expectBytes('snapshot', await snap.read(0, SIZE), expectedSnapshot);
          expectBytes('origin', await device.read(0, SIZE), expectedOrigin);
          await device.close();
        }),
        { numRuns: 150, soakRuns: 3000, seed: 0xc07 },
      );
    },
    SOAK_TIMEOUT,
  );

  afterAll(() => writeSoakReport('cow-cut'));
});
