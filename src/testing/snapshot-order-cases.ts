/**
 * The snapshot suite's call-order cases: snapshot operations and snapshot
 * handle I/O take effect in the order they are called, as writes do
 * (docs/ARCHITECTURE.md, Snapshot rules). An operation called after
 * `deleteSnapshot(id)` sees the snapshot gone; one called before it
 * completes; a restore holds what its snapshot held when `restore()` was
 * called, and writes called after it land after it.
 */
import assert from 'node:assert/strict';
import { type DescribeFn, expectCode, pattern } from './conformance-support.js';
import type { SnapshotSupport, SnapshotTestFn } from './snapshot-conformance.js';
import type { SnapshotHarness, TakenSnapshot } from './snapshot-harness.js';

/** Registers the call-order cases `supports` allows, on snapshots as taken and, if the subject settles them, settled. */
export function registerCallOrderCases(
  describe: DescribeFn,
  test: SnapshotTestFn,
  supports: SnapshotSupport,
): void {
  describe('call order', () => {
    for (const settled of [false, true]) {
      const when = settled ? ' (settled snapshots)' : '';
      /** Takes a snapshot; settles it when the case runs on settled ones (and skips it otherwise). */
      const take = async (h: SnapshotHarness, writable: boolean): Promise<TakenSnapshot> => {
        const snap = await h.snapshot({ writable });
        if (settled) await h.settle();
        return snap;
      };
      const runs = (h: SnapshotHarness): boolean => !settled || h.settles;

      test(`a read through a handle called after deleteSnapshot() fails ENOENT${when}`, async (h) => {
        if (!runs(h)) return;
        await h.write(0, pattern(h.size, 130));
        const snap = await take(h, false);
        const deleted = h.device.deleteSnapshot(snap.handle.id);
        const read = snap.handle.read(0, h.bs);
        read.catch(() => {}); // judged below, after the delete
        await deleted;
        await expectCode(() => read, ['ENOENT'], 'a read called after deleteSnapshot()');
        await h.checkLive('after the delete');
      });

      if (supports.restore) {
        test(`restore(id) called after deleteSnapshot(id) fails ENOENT and changes nothing${when}`, async (h) => {
          if (!runs(h)) return;
          await h.write(0, pattern(h.size, 131));
          const snap = await take(h, false);
          await h.write(0, pattern(2 * h.bs, 132));
          const deleted = h.device.deleteSnapshot(snap.handle.id);
          const restored = h.device.restore(snap.handle.id);
          restored.catch(() => {}); // judged below, after the delete
          await deleted;
          await expectCode(() => restored, ['ENOENT'], 'restore of a snapshot being deleted');
          await h.checkLive('after the refused restore');
        });
      }

      if (supports.writable) {
        test(`a clone write called before deleteSnapshot() completes${when}`, async (h) => {
          if (!runs(h)) return;
          await h.write(0, pattern(h.size, 133));
          const clone = await take(h, true);
          const wrote = clone.handle.write(h.bs, pattern(h.bs, 134));
          const deleted = h.device.deleteSnapshot(clone.handle.id);
          await wrote;
          await deleted;
          assert.deepEqual(h.device.listSnapshots(), [], 'the clone is gone');
          await h.checkLive('after the delete');
        });
      }

      if (supports.writable && supports.restore) {
        test(`restore(clone) holds the clone's writes called before it, not those called after${when}`, async (h) => {
          if (!runs(h)) return;
          const { bs } = h;
          await h.write(0, pattern(h.size, 135));
          const clone = await take(h, true);
          const before = clone.handle.write(bs, pattern(bs, 136));
          const restored = h.device.restore(clone.handle.id);
          const after = clone.handle.write(2 * bs, pattern(bs, 137));
          await Promise.all([before, restored, after]);
          clone.content.set(pattern(bs, 136), bs);
          h.live.set(clone.content);
          clone.content.set(pattern(bs, 137), 2 * bs);
          await h.checkLive('the restored device: the write called before restore, not after');
          await h.checkSnapshot(clone, 'the clone: both writes');
        });
      }
    }
  });
}
