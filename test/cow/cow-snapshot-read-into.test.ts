import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CowSnapshotDevice, MemoryDevice, SelectiveSnapshotDevice } from '../../src/index.js';
import { settle, watch } from '../support/async.js';
import { expectSameBytes, fill, flipBit } from '../support/bytes.js';
import { CallbackReadDevice } from '../support/callback-read-device.js';
import { expectCode } from '../support/error-code.js';
import { ScheduledDevice } from '../support/scheduled-device.js';

/*
 * A snapshot handle's readInto hot path (src/cow/cow-snapshot-io.ts
 * `readInto`, src/cow/block-view-reads.ts `read` given a target): the block
 * read straight into the caller's buffer, under the gate and the block lock that
 * `read` takes. The conformance suites check what readInto returns; these
 * check what the hot path must keep on top: it writes nothing outside the
 * target, checks a preserved block in it, counts itself in flight, and
 * never interleaves with a copy-on-write of its block.
 */

const BS = 4096;
/** What the bytes of a larger buffer around a target hold, so a stray write shows. */
const OUTSIDE = 0xee;

type Kind = 'cow' | 'selective';

async function rig(kind: Kind) {
  const originDisk = await MemoryDevice.create({ size: 64 * BS, blockSize: BS });
  const origin = new CallbackReadDevice(originDisk);
  const storeDisk = await MemoryDevice.create({ size: 4 << 20, blockSize: BS });
  const store = new CallbackReadDevice(storeDisk);
  const cow =
    kind === 'cow'
      ? await CowSnapshotDevice.create(origin, store, { maxSnapshots: 4 })
      : await SelectiveSnapshotDevice.create(origin, store, { maxSnapshots: 4 });
  // Block 0 is preserved for the snapshot (read from the store), block 1 is not (the origin).
  await cow.write(0, fill(BS, 1));
  await cow.write(BS, fill(BS, 2));
  const snap =
    cow instanceof SelectiveSnapshotDevice
      ? await cow.snapshot({ include: [{ offset: 0, length: 2 * BS }] })
      : await cow.snapshot();
  await cow.write(0, fill(BS, 3));
  return { originDisk, origin, storeDisk, store, cow, snap };
}

/** A view of `length` bytes at `at` into a larger buffer of OUTSIDE bytes. */
function viewInto(at: number, length: number): { whole: Uint8Array; target: Uint8Array } {
  const whole = fill(at + length + 3 * BS, OUTSIDE);
  return { whole, target: whole.subarray(at, at + length) };
}

/** Expects every byte of `whole` outside `[at, at+length)` to be untouched. */
function expectOutsideUntouched(whole: Uint8Array, at: number, length: number): void {
  expectSameBytes('bytes before the target', whole.subarray(0, at), fill(at, OUTSIDE));
  const after = whole.length - at - length;
  expectSameBytes('bytes after the target', whole.subarray(at + length), fill(after, OUTSIDE));
}

describe.each<Kind>(['cow', 'selective'])(
  '%s snapshot readInto: the one-block hot path',
  (kind) => {
    it('reads into a view of a larger buffer through the devices’ READ_CALLBACK, touching nothing outside it', async () => {
      const { origin, store, cow, snap } = await rig(kind);
      origin.readCalls = 0;
      store.readCalls = 0;
      // A preserved block, whole: the store chunk is read straight into the target.
      let { whole, target } = viewInto(BS + 100, BS);
      expect(await snap.readInto!(0, target)).toBe(target);
      expectSameBytes('bytes read', target, fill(BS, 1));
      expectOutsideUntouched(whole, BS + 100, BS);
      expect(store.lastInto).toBe(target);
      // An origin block: the origin reads straight into the target.
      ({ whole, target } = viewInto(7, BS));
      expect(await snap.readInto!(BS, target)).toBe(target);
      expectSameBytes('bytes read', target, fill(BS, 2));
      expectOutsideUntouched(whole, 7, BS);
      expect(origin.lastInto).toBe(target);
      // Part of each: the preserved chunk is read whole elsewhere, checked, and its part copied.
      ({ whole, target } = viewInto(BS + 5, 200));
      expect(await snap.readInto!(100, target)).toBe(target);
      expectSameBytes('bytes read', target, fill(200, 1));
      expectOutsideUntouched(whole, BS + 5, 200);
      ({ whole, target } = viewInto(3, 300));
      expect(await snap.readInto!(BS + 1000, target)).toBe(target);
      expectSameBytes('bytes read', target, fill(300, 2));
      expectOutsideUntouched(whole, 3, 300);
      expect([store.readCalls, origin.readCalls]).toEqual([0, 0]);
      await cow.close();
    });

    it('copies into the target when the device below answers with a buffer of its own', async () => {
      const { origin, store, cow, snap } = await rig(kind);
      origin.ignoreInto = true;
      store.ignoreInto = true;
      for (const [offset, length, value] of [
        [0, BS, 1],
        [BS, BS, 2],
        [300, 50, 1],
      ] as const) {
        const { whole, target } = viewInto(11, length);
        expect(await snap.readInto!(offset, target)).toBe(target);
        expectSameBytes('bytes read', target, fill(length, value));
        expectOutsideUntouched(whole, 11, length);
      }
      await cow.close();
    });

    it('reports a damaged preserved chunk as ECORRUPT, writing nothing outside the target', async () => {
      const { storeDisk, cow, snap } = await rig(kind);
      // Damage every chunk past the metadata: the preserved one is among them.
      for (let at = storeDisk.size - BS * cow.totalChunks; at < storeDisk.size; at += BS) {
        await flipBit(storeDisk, at + 7);
      }
      let { whole, target } = viewInto(BS, BS);
      await expectCode(snap.readInto!(0, target), 'ECORRUPT');
      expectOutsideUntouched(whole, BS, BS);
      ({ whole, target } = viewInto(9, 16));
      await expectCode(snap.readInto!(2048, target), 'ECORRUPT');
      expectOutsideUntouched(whole, 9, 16);
      // Nothing of the damaged chunk reaches a partial target: it is copied only once checked.
      expectSameBytes('partial target', target, fill(16, OUTSIDE));
      // The origin block the snapshot reads directly is not affected.
      ({ whole, target } = viewInto(BS, BS));
      expectSameBytes('bytes read', await snap.readInto!(BS, target), fill(BS, 2));
      await cow.close();
    });

    it.runIf(kind === 'selective')(
      'fails EEXCLUDED on a block the snapshot does not hold, target untouched',
      async () => {
        const { cow, snap } = await rig(kind);
        const { whole, target } = viewInto(5, BS);
        await expectCode(snap.readInto!(2 * BS, target), 'EEXCLUDED');
        expectSameBytes('target and around it', whole, fill(whole.length, OUTSIDE));
        await cow.close();
      },
    );

    it('keeps the handle’s and the device’s close waiting while a readInto is held below', async () => {
      const { origin, store, cow, snap } = await rig(kind);
      const releaseChunk = store.hold();
      const fromStore = snap.readInto!(0, new Uint8Array(BS));
      const closingHandle = watch(snap.close());
      await settle();
      expect(closingHandle.settled).toBe(false);
      releaseChunk();
      expectSameBytes('bytes read', await fromStore, fill(BS, 1));
      await closingHandle.promise;

      const other = await cow.openSnapshot(snap.id);
      const releaseOrigin = origin.hold(BS);
      const fromOrigin = other.readInto!(BS, new Uint8Array(BS));
      const closingDevice = watch(cow.close());
      await settle();
      expect(closingDevice.settled).toBe(false);
      releaseOrigin();
      expectSameBytes('bytes read', await fromOrigin, fill(BS, 2));
      await closingDevice.promise;
    });
  },
);

describe.each<Kind>(['cow', 'selective'])(
  '%s snapshot reads: the hot path’s one lookup of the snapshot',
  (kind) => {
    it('reads a writable snapshot’s own blocks, and no other snapshot sees them', async () => {
      const { cow, snap } = await rig(kind);
      const writable =
        cow instanceof SelectiveSnapshotDevice
          ? await cow.snapshot({ include: [{ offset: 0, length: 2 * BS }], writable: true })
          : await cow.snapshot({ writable: true });
      // Block 1 becomes the writable snapshot's own; block 0 it shares with `snap`'s record.
      await writable.write(BS, fill(BS, 7));
      await cow.write(0, fill(BS, 4));
      for (const read of [
        (offset: number) => writable.readInto!(offset, new Uint8Array(BS)),
        (offset: number) => writable.read(offset, BS),
      ]) {
        expectSameBytes('own block', await read(BS), fill(BS, 7));
        expectSameBytes('preserved block', await read(0), fill(BS, 3));
      }
      // The older snapshot reads its own preserved block and the origin, never the writable one's.
      expectSameBytes('older, block 0', await snap.readInto!(0, new Uint8Array(BS)), fill(BS, 1));
      expectSameBytes('older, block 1', await snap.readInto!(BS, new Uint8Array(BS)), fill(BS, 2));
      expectSameBytes('origin, block 1', await cow.read(BS, BS), fill(BS, 2));
      await cow.close();
    });

    it('fails ENOENT for a deleted snapshot, target untouched, and keeps nothing held', async () => {
      const { cow, snap } = await rig(kind);
      const other = await cow.openSnapshot(snap.id);
      await cow.deleteSnapshot(snap.id);
      const { whole, target } = viewInto(3, BS);
      await expectCode(other.readInto!(0, target), 'ENOENT');
      await expectCode(other.read(BS, BS), 'ENOENT');
      expectSameBytes('target and around it', whole, fill(whole.length, OUTSIDE));
      // Neither read left its block locked nor stayed in flight: a write to the block and close go through.
      await cow.write(0, fill(BS, 6));
      expectSameBytes('origin', await cow.read(0, BS), fill(BS, 6));
      await cow.close();
    });
  },
);

describe('snapshot readInto racing a first write to the same block', () => {
  /** Origin and store whose every I/O starts when fast-check's scheduler says. */
  async function scheduledRig(kind: Kind) {
    const origin = new ScheduledDevice(
      await MemoryDevice.create({ size: 8 * BS, blockSize: BS }),
      'origin',
    );
    const store = new ScheduledDevice(
      await MemoryDevice.create({ size: 1 << 20, blockSize: BS }),
      'store',
    );
    const cow =
      kind === 'cow'
        ? await CowSnapshotDevice.create(origin, store, { maxSnapshots: 4 })
        : await SelectiveSnapshotDevice.create(origin, store, { maxSnapshots: 4 });
    await cow.write(0, fill(8 * BS, 5));
    const snap =
      cow instanceof SelectiveSnapshotDevice
        ? await cow.snapshot({ include: [{ offset: 0, length: 4 * BS }] })
        : await cow.snapshot();
    return { origin, store, cow, snap };
  }

  it.each<Kind>(['cow', 'selective'])(
    '%s: returns the bytes the snapshot holds, whatever the order',
    async (kind) => {
      await fc.assert(
        fc.asyncProperty(
          fc.scheduler(),
          fc.constantFrom(0, 2 * BS),
          fc.constantFrom(BS, 100),
          async (s, offset, length) => {
            const { origin, store, cow, snap } = await scheduledRig(kind);
            origin.scheduler = s;
            store.scheduler = s;
            const { whole, target } = viewInto(BS, length);
            // The write's first write to the block preserves it, then overwrites the origin.
            const writing = cow.write(offset - (offset % BS), fill(BS, 9));
            const reading = snap.readInto!(offset, target);
            const racing = Promise.all([reading, writing]);
            await s.waitFor(racing);
            expectSameBytes('bytes read', await reading, fill(length, 5));
            expectOutsideUntouched(whole, BS, length);
            origin.scheduler = undefined;
            store.scheduler = undefined;
            expectSameBytes(
              'bytes read after',
              await snap.readInto!(offset, target),
              fill(length, 5),
            );
            await cow.close();
          },
        ),
        { numRuns: 60 },
      );
    },
  );
});
