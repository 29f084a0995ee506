import fc from 'fast-check';
import { afterAll, describe, it } from 'vitest';
import { MemoryDevice, VirtualVolume } from '../../src/index.js';
import { expectBytes, pattern } from '../support/bytes.js';
import { ScheduledDevice } from '../support/scheduled-device.js';
import { assertProperty, SOAK_TIMEOUT, writeSoakReport } from '../support/soak.js';

/*
 * Rule 1 across partitions: writes racing two overall snapshots of a
 * striped volume, with every disk operation of every partition (and of the
 * volume store) started when fast-check's scheduler says. Each snapshot
 * must hold exactly the writes called before its snapshot() call, on every
 * partition, and none called after — whatever order the partitions' I/O
 * completes in.
 */

const BS = 512;
const PARTITIONS = 3;
const PARTITION_BLOCKS = 8;
const UNIT = 2 * BS;
const SIZE = PARTITIONS * PARTITION_BLOCKS * BS;
const BLOCKS = SIZE / BS;

interface PlannedWrite {
  block: number;
  /** 1 or 2 blocks: a write over two blocks crosses a stripe unit (two partitions) at odd blocks. */
  blocks: number;
  seed: number;
}

const writes = fc.array(
  fc.record({
    block: fc.nat(BLOCKS - 2),
    blocks: fc.integer({ min: 1, max: 2 }),
    seed: fc.nat(250),
  }),
  { maxLength: 6 },
);

/** Writes called before the first snapshot, between the two, and after the second. */
const plan = fc.record({ before: writes, between: writes, after: writes });

/** `planned` without writes that overlap an earlier one: writes in flight together may land in any order. */
function disjoint(planned: readonly PlannedWrite[][]): PlannedWrite[][] {
  const used = new Set<number>();
  return planned.map((group) =>
    group.filter((w) => {
      const blocks = Array.from({ length: w.blocks }, (_, k) => w.block + k);
      if (blocks.some((b) => used.has(b))) return false;
      for (const b of blocks) used.add(b);
      return true;
    }),
  );
}

describe('VirtualVolume point-in-time cut across partitions under a random schedule', () => {
  it(
    'each overall snapshot holds exactly the writes called before it, on every partition',
    async () => {
      await assertProperty(
        'volume point-in-time cut',
        fc.asyncProperty(fc.scheduler(), plan, async (s, p) => {
          const disks: ScheduledDevice[] = [];
          const disk = async (size: number, name: string) => {
            const d = new ScheduledDevice(await MemoryDevice.create({ size, blockSize: BS }), name);
            disks.push(d);
            return d;
          };
          const partitions = [];
          for (let i = 0; i < PARTITIONS; i++) {
            partitions.push({
              origin: await disk(PARTITION_BLOCKS * BS, `origin${i}`),
              store: await disk(128 * 1024, `store${i}`),
            });
          }
          const volume = await VirtualVolume.create({
            store: await disk(64 * 1024, 'volume-store'),
            partitions,
            stripeUnit: UNIT,
            maxSnapshots: 4,
          });
          const base = pattern(SIZE, 99);
          await volume.write(0, base);
          // An older snapshot makes later writes preserve, so COW races the cut too.
          await volume.snapshot();
          for (const d of disks) d.scheduler = s;

          const [before, between, after] = disjoint([p.before, p.between, p.after]);
          const live = base.slice();
          const pending: Promise<unknown>[] = [];
          const write = (w: PlannedWrite) => {
            const data = pattern(w.blocks * BS, w.seed);
            pending.push(volume.write(w.block * BS, data));
            live.set(data, w.block * BS);
          };
          before!.forEach(write);
          const first = volume.snapshot({ name: 'first' });
          const atFirst = live.slice();
          between!.forEach(write);
          const second = volume.snapshot({ name: 'second' });
          const atSecond = live.slice();
          after!.forEach(write);
          pending.push(first, second);
          await s.waitFor(Promise.all(pending));
          for (const d of disks) d.scheduler = undefined;

          expectBytes('first snapshot', await (await first).read(0, SIZE), atFirst);
          expectBytes('second snapshot', await (await second).read(0, SIZE), atSecond);
          expectBytes('live volume', await volume.read(0, SIZE), live);
          await volume.close();
        }),
        { numRuns: 100, soakRuns: 3000, seed: 0x701 },
      );
    },
    SOAK_TIMEOUT,
  );

  afterAll(() => writeSoakReport('volume-cut'));
});
