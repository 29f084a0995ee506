import { describe, expect, it } from 'vitest';
import { MemoryDevice, SelectiveSnapshotDevice } from '../../src/index.js';
import { settle, watch, within } from '../support/async.js';
import { expectBytes, fill, pattern } from '../support/bytes.js';
import { GatedDevice, resolutionOrder } from '../support/gated-device.js';

const BS = 512;
const BLOCKS = 16;
const SIZE = BS * BLOCKS;
/** The range the snapshot under test designates: blocks 4..7. */
const A = { offset: 4 * BS, length: 4 * BS };

/** Resolves with `p`, or fails the test if `p` takes longer than `ms`: it was made to wait. */
async function gatedDevice() {
  const origin = new GatedDevice(await MemoryDevice.create({ size: SIZE, blockSize: BS }));
  const store = new GatedDevice(await MemoryDevice.create({ size: 256 * 1024, blockSize: BS }));
  const device = await SelectiveSnapshotDevice.create(origin, store, {
    maxSnapshots: 4,
    maxRuns: 8,
  });
  const base = pattern(SIZE, 3);
  await device.write(0, base);
  return { origin, store, device, base };
}

/*
 * Claims 24–25, 33, 41 and rule 1: taking a snapshot of range A drains the
 * writes into A already called, holds the writes into A called after it
 * until the cut is durable, and leaves every other I/O alone. The snapshot
 * is stalled on purpose at each durable step it takes — the origin flush
 * that makes the drained writes durable, and the store's log commit of
 * the snapshot entry — while the test issues I/O around it.
 */
describe('SelectiveSnapshotDevice: the consistent point of a snapshot of some blocks', () => {
  for (const stall of ['origin flush', 'store log commit'] as const) {
    it(`while stalled at the ${stall}: I/O outside A completes, writes into A wait and are not in it`, async () => {
      const { origin, store, device, base } = await gatedDevice();
      // With an older snapshot, first writes preserve: copy-on-write races
      // the cut too. (Not when the store is stalled: they would queue behind
      // the snapshot's log commit, a shared resource, not the hold.)
      const older =
        stall === 'origin flush'
          ? await device.snapshot({ include: [{ offset: 0, length: SIZE }] })
          : undefined;
      const { order, log } = resolutionOrder();

      // A write into A, called before snapshot() and still in flight.
      const inFlight = origin.gate('write', (offset) => offset === 5 * BS);
      const before = log('write into A called before', device.write(5 * BS, fill(BS, 0xb0)));
      await inFlight.reached;

      const cut = stall === 'origin flush' ? origin.gate('flush') : store.gate('flush');
      const snap = log('snapshot', device.snapshot({ include: [A] }));
      await settle();
      expect(snap.settled || cut.isReached, 'the cut waits for the write in flight').toBe(false);
      // Meanwhile, writes outside A and reads anywhere go on.
      await within(device.write(0, fill(BS, 0x01)), 2000, 'a write outside A');
      await within(device.read(4 * BS, 4 * BS), 2000, 'a read of A');

      inFlight.open();
      await within(cut.reached, 2000, `the snapshot's ${stall}`);
      expect(snap.settled).toBe(false);

      // Stalled: writes into A called now wait; I/O elsewhere does not.
      const after = log('write into A called after', device.write(6 * BS + 10, fill(300, 0xaf)));
      const straddling = log(
        'write across A called after',
        device.write(8 * BS - 5, fill(10, 0xa1)),
      );
      await within(device.write(9 * BS + 3, fill(BS, 0x09)), 2000, 'a write outside A');
      await within(device.write(2 * BS, fill(2 * BS, 0x02)), 2000, 'a write up to A');
      // The cut concerns the origin only: an older snapshot reads on inside A (rule 1).
      if (older !== undefined) {
        await within(older.read(4 * BS, 4 * BS), 2000, 'a read of the older snapshot inside A');
      }
      const read = await within(device.read(0, SIZE), 2000, 'a read of the whole device');
      expect(read.subarray(5 * BS, 6 * BS)).toEqual(fill(BS, 0xb0));
      expect(read.subarray(6 * BS + 10, 6 * BS + 310)).toEqual(
        base.subarray(6 * BS + 10, 6 * BS + 310),
      );
      await settle();
      expect([after.settled, straddling.settled, snap.settled]).toEqual([false, false, false]);

      cut.open();
      const taken = await snap.promise;
      await Promise.all([before.promise, after.promise, straddling.promise]);
      expect(order).toEqual([
        'write into A called before',
        'snapshot',
        ...['write into A called after', 'write across A called after'],
      ]);
      const expected = base.slice(4 * BS, 8 * BS);
      expected.fill(0xb0, BS, 2 * BS);
      expectBytes('snapshot of A', await taken.read(4 * BS, 4 * BS), expected);
      const live = await device.read(0, SIZE);
      expect(live.subarray(6 * BS + 10, 6 * BS + 310)).toEqual(fill(300, 0xaf));
      expect(live.subarray(8 * BS - 5, 8 * BS + 5)).toEqual(fill(10, 0xa1));
      await device.close();
    });
  }

  it('a second snapshot of other blocks taken while the first is stalled waits its turn but holds no I/O of A', async () => {
    const { origin, device, base } = await gatedDevice();
    const cut = origin.gate('flush');
    const first = watch(device.snapshot({ include: [A] }));
    await within(cut.reached, 2000, 'the first snapshot flush');
    const second = watch(device.snapshot({ include: [{ offset: 12 * BS, length: BS }] }));
    // Writes to block 12, called after the second snapshot(), wait for it;
    // writes to blocks neither holds go on.
    const into12 = watch(device.write(12 * BS, fill(BS, 0x12)));
    await within(device.write(0, fill(BS, 0x00)), 2000, 'a write outside both');
    await settle();
    expect([first.settled, second.settled, into12.settled]).toEqual([false, false, false]);
    cut.open();
    const [s1, s2] = await Promise.all([first.promise, second.promise]);
    await into12.promise;
    expect(await s1.read(4 * BS, 4 * BS)).toEqual(base.slice(4 * BS, 8 * BS));
    expect(await s2.read(12 * BS, BS)).toEqual(base.slice(12 * BS, 13 * BS));
    await device.close();
  });
});
