/**
 * The snapshot suite's cases for what happens to snapshots over time:
 * delete, restore, reopen (rule 5), one copy per block per generation
 * (rule 3) and selective snapshots (docs/ARCHITECTURE.md, Snapshot rules).
 */
import assert from 'node:assert/strict';
import type { Snapshot, SnapshotInfo } from '../device.js';
import { type DescribeFn, expectCode, pattern } from './conformance-support.js';
import { UNKNOWN_ID } from './snapshot-cases.js';
import type { SnapshotSupport, SnapshotTestFn } from './snapshot-conformance.js';
import type { SnapshotHarness, TakenSnapshot } from './snapshot-harness.js';

/** Registers the delete, restore, reopen, rule 3 and selective cases that `supports` allows. */
export function registerLifecycleCases(
  describe: DescribeFn,
  test: SnapshotTestFn,
  supports: SnapshotSupport,
): void {
  describe('delete', () => {
    test('deleting a snapshot keeps what the others need: the middle, the oldest, the newest', async (h) => {
      const { bs } = h;
      await h.write(0, pattern(h.size, 50));
      const s1 = await h.snapshot({ name: 's1' });
      await h.write(0, pattern(4 * bs, 51));
      const s2 = await h.snapshot({ name: 's2' });
      // Blocks 2..5 change again: s1 and s2 need different old copies of 2..3.
      await h.write(2 * bs, pattern(4 * bs, 52));
      const s3 = await h.snapshot({ name: 's3' });
      const clone = supports.writable ? await h.snapshot({ name: 'w', writable: true }) : undefined;
      if (clone) {
        await clone.handle.write(bs, pattern(bs, 53));
        clone.content.set(pattern(bs, 53), bs);
      }
      await h.write(0, pattern(8 * bs, 54));
      const alive = [s1, s2, s3, ...(clone ? [clone] : [])];
      const drop = async (gone: TakenSnapshot, when: string) => {
        await h.device.deleteSnapshot(gone.handle.id);
        alive.splice(alive.indexOf(gone), 1);
        assert.deepEqual(
          h.device.listSnapshots().map((i) => i.id),
          alive.map((s) => s.handle.id),
          `listSnapshots after deleting ${when}`,
        );
        for (const snap of alive) await h.checkSnapshot(snap, `after deleting ${when}`);
        await h.checkLive(`after deleting ${when}`);
      };
      await drop(s2, 'the middle snapshot');
      await drop(s1, 'the oldest snapshot');
      // The device goes on: new writes preserve for the survivors.
      await h.write(bs, pattern(6 * bs, 55));
      const s4 = await h.snapshot({ name: 's4' });
      alive.push(s4);
      await h.write(0, pattern(h.size, 56));
      await drop(s4, 'the newest snapshot');
      for (const snap of alive) await h.checkSnapshot(snap, 'at the end');
    });

    test('a handle of a deleted snapshot fails reads and writes with ENOENT; its id is gone', async (h) => {
      await h.write(0, pattern(h.size, 60));
      const kept = await h.snapshot({ name: 'kept' });
      const gone = await h.snapshot({ name: 'gone' });
      const second = await h.device.openSnapshot(gone.handle.id);
      const clone = supports.writable ? await h.snapshot({ writable: true }) : undefined;
      await h.device.deleteSnapshot(gone.handle.id);
      if (clone) await h.device.deleteSnapshot(clone.handle.id);
      for (const [what, handle] of [
        ['the handle snapshot() gave', gone.handle],
        ['a handle from openSnapshot', second],
      ] as const) {
        await expectCode(() => handle.read(0, h.bs), ['ENOENT'], `read through ${what}`);
        // A read-only handle may refuse any write before looking for its snapshot.
        await expectCode(
          () => handle.write(0, pattern(h.bs, 61)),
          ['ENOENT', 'EROFS'],
          `write through ${what}`,
        );
      }
      if (clone) {
        await expectCode(() => clone.handle.read(0, 10), ['ENOENT'], 'read of a deleted clone');
        await expectCode(
          () => clone.handle.write(0, pattern(10, 62)),
          ['ENOENT'],
          'write to a deleted clone',
        );
      }
      await expectCode(() => h.device.openSnapshot(gone.handle.id), ['ENOENT'], 'openSnapshot');
      await expectCode(() => h.device.deleteSnapshot(gone.handle.id), ['ENOENT'], 'delete again');
      if (supports.restore) {
        await expectCode(() => h.device.restore(gone.handle.id), ['ENOENT'], 'restore');
      }
      assert.deepEqual(
        h.device.listSnapshots().map((i) => i.id),
        [kept.handle.id],
        'only the kept snapshot is listed',
      );
      await gone.handle.close();
      await h.checkSnapshot(kept, 'after the other was deleted');
      await h.checkLive('after deleting snapshots');
    });
  });

  if (supports.restore) {
    describe('restore', () => {
      test("restore makes the live content the snapshot's, and every snapshot stays as it was", async (h) => {
        const { bs } = h;
        await h.write(0, pattern(h.size, 70));
        const s1 = await h.snapshot({ name: 's1' });
        await h.write(bs + 3, pattern(3 * bs, 71));
        const s2 = await h.snapshot({ name: 's2' });
        await h.write(0, pattern(2 * bs, 72));
        await h.write(h.size - bs, pattern(bs, 73));
        await h.device.restore(s1.handle.id);
        h.live.set(s1.content);
        await h.checkLive('after restoring s1');
        for (const snap of [s1, s2]) await h.checkSnapshot(snap, 'after restoring s1');
        // Writes and snapshots go on from the restored content.
        await h.write(2 * bs - 1, pattern(bs + 2, 74));
        const s3 = await h.snapshot({ name: 's3' });
        await h.write(0, pattern(h.size, 75));
        await h.device.restore(s2.handle.id);
        h.live.set(s2.content);
        await h.checkLive('after restoring s2');
        for (const snap of [s1, s2, s3]) await h.checkSnapshot(snap, 'after restoring s2');
        await h.device.restore(s3.handle.id);
        h.live.set(s3.content);
        await h.checkLive('after restoring s3');
        await h.write(bs, pattern(bs, 76));
        for (const snap of [s1, s2, s3]) await h.checkSnapshot(snap, 'at the end');
        await h.checkLive('at the end');
      });

      if (supports.writable) {
        test('restoring a writable snapshot takes its own writes; the clone stays independent', async (h) => {
          const { bs } = h;
          await h.write(0, pattern(h.size, 80));
          const clone = await h.snapshot({ name: 'clone', writable: true });
          await clone.handle.write(bs - 2, pattern(bs + 4, 81));
          clone.content.set(pattern(bs + 4, 81), bs - 2);
          await h.write(0, pattern(4 * bs, 82));
          await h.device.restore(clone.handle.id);
          h.live.set(clone.content);
          await h.checkLive('after restoring the clone');
          await h.checkSnapshot(clone, 'after the restore');
          await clone.handle.write(0, pattern(bs, 83));
          clone.content.set(pattern(bs, 83), 0);
          await h.write(3 * bs, pattern(bs, 84));
          await h.checkSnapshot(clone, 'after writes on both sides');
          await h.checkLive('after writes on both sides');
        });
      }
    });
  }

  if (supports.reopen) {
    describe('reopen (rule 5)', () => {
      test('close and open again: every snapshot (id, name, time, writable) and its content is back, bit for bit', async (h) => {
        const { bs } = h;
        await h.write(0, pattern(h.size, 90));
        const snaps: TakenSnapshot[] = [await h.snapshot({ name: 'nightly' })];
        await h.write(bs, pattern(3 * bs, 91));
        const doomed = await h.snapshot({ name: 'deleted' });
        if (supports.writable) {
          const clone = await h.snapshot({ name: 'clone', writable: true });
          await clone.handle.write(2 * bs + 9, pattern(bs, 92));
          clone.content.set(pattern(bs, 92), 2 * bs + 9);
          snaps.push(clone);
        }
        await h.write(0, pattern(2 * bs, 93));
        snaps.push(await h.snapshot());
        // Holds blocks 1, 2 and 6: its designation must come back too.
        const selective = supports.selective
          ? await h.selectiveSnapshot({ include: [h.extent(1, 2), h.extent(6)] }, [
              h.extent(1, 2),
              h.extent(6),
            ])
          : undefined;
        if (selective) snaps.push(selective);
        await h.device.deleteSnapshot(doomed.handle.id);
        await h.write(4 * bs + 1, pattern(2 * bs, 94));
        if (supports.restore) {
          await h.device.restore(snaps[0]!.handle.id);
          h.live.set(snaps[0]!.content);
        }
        await h.write(h.size - 3, pattern(3, 95));
        const infos = h.device.listSnapshots();
        await reopenAndCheck(h, snaps, infos, 'after the first reopen');
        if (selective) {
          await expectCode(
            () => selective.handle.read(3 * bs, bs),
            ['EEXCLUDED'],
            'a block the selective snapshot does not hold, after reopen',
          );
        }
        // The reopened device goes on, and a second reopen keeps what it did.
        const clone = snaps.find((s) => infoOf(infos, s).writable);
        if (clone) {
          await clone.handle.write(0, pattern(bs, 96));
          clone.content.set(pattern(bs, 96), 0);
        }
        await h.write(bs, pattern(bs, 97));
        snaps.push(await h.snapshot({ name: 'after reopen' }));
        await h.write(0, pattern(h.size, 98));
        await reopenAndCheck(h, snaps, h.device.listSnapshots(), 'after the second reopen');
      });

      test('snapshot(), deleteSnapshot() and restore() called just before close() complete, and open shows them', async (h) => {
        const { bs } = h;
        await h.write(0, pattern(h.size, 120));
        const doomed = await h.snapshot({ name: 'doomed' });
        const base = supports.restore ? await h.snapshot({ name: 'base' }) : undefined;
        await h.write(0, pattern(bs, 121));
        const taken = h.device.snapshot({ name: 'last' });
        const deleted = h.device.deleteSnapshot(doomed.handle.id);
        const restored = base ? h.device.restore(base.handle.id) : undefined;
        const closed = h.device.close();
        const last = await taken;
        await deleted;
        await restored;
        await closed;
        const lastContent = pattern(h.size, 120);
        lastContent.set(pattern(bs, 121), 0);
        if (base) h.live.set(base.content);
        await h.reopen();
        const names = h.device.listSnapshots().map((i) => i.name);
        assert.deepEqual(names, base ? ['base', 'last'] : ['last'], 'snapshots after reopen');
        const handle = await h.device.openSnapshot(last.id);
        assert.deepEqual(
          Buffer.from(await handle.read(0, h.size)),
          Buffer.from(lastContent),
          'the snapshot taken before close()',
        );
        await h.checkLive('after reopen');
      });

      test('names come back byte for byte: a leading U+FEFF, astral and combining characters, the empty name', async (h) => {
        const names = ['\uFEFFbom', '\u{1F4BE} disk', 'e\u0301\u200D', '', ' pad '];
        const snaps: TakenSnapshot[] = [];
        for (const name of names) snaps.push(await h.snapshot({ name }));
        // A lone surrogate has no UTF-8 form: refused, not stored as U+FFFD.
        await expectCode(
          () => h.device.snapshot({ name: 'x\uD800' }),
          ['EINVAL'],
          'lone surrogate',
        );
        await reopenAndCheck(h, snaps, h.device.listSnapshots(), 'after reopen');
        assert.deepEqual(
          h.device.listSnapshots().map((i) => i.name),
          names,
          'names after reopen',
        );
      });
    });
  }

  if (supports.preserveEvents) {
    describe('one copy per block per generation (rule 3)', () => {
      test('a block overwritten after several snapshots is preserved once, shared by all of them', async (h) => {
        const { bs } = h;
        await h.write(0, pattern(h.size, 110));
        const first: TakenSnapshot[] = [];
        for (let i = 0; i < 5; i++) first.push(await h.snapshot());
        const seen = await h.preserves(async () => {
          await h.write(bs, pattern(bs, 111));
          await h.write(bs + 7, pattern(100, 112));
          await h.write(0, pattern(2 * bs, 113));
        });
        assert.deepEqual(numeric(seen), [0, 1], 'blocks 0 and 1 preserved once each');
        const late = await h.snapshot();
        const again = await h.preserves(() => h.write(bs, pattern(bs, 114)));
        assert.deepEqual(again, [1], 'block 1 preserved once more, for the new generation');
        for (const snap of [...first, late]) await h.checkSnapshot(snap, 'after the writes');
      });
    });
  }

  if (supports.selective) {
    describe('selective snapshots', () => {
      test('a read touching a block the snapshot does not hold fails with EEXCLUDED; held blocks keep their point in time', async (h) => {
        const { bs } = h;
        await h.write(0, pattern(h.size, 120));
        // Holds blocks 2, 3, 5 and 9.
        const sel = await h.selectiveSnapshot(
          { include: [h.extent(2, 5), { offset: 9 * bs + 1, length: 1 }], exclude: [h.extent(4)] },
          [h.extent(2, 3), h.extent(5), h.extent(9)],
        );
        await h.write(0, pattern(h.size, 121));
        for (const [offset, length] of [
          [2 * bs, 2 * bs],
          [3 * bs + 5, bs - 10],
          [5 * bs, bs],
          [9 * bs, bs],
        ] as const) {
          await h.checkSnapshotRange(sel, offset, length, 'of held blocks');
        }
        for (const [offset, length] of [
          [0, h.size],
          [0, 1],
          [4 * bs - 1, 2],
          [4 * bs, bs],
          [6 * bs + 17, 3],
          [8 * bs, 2 * bs],
          [h.size - 1, 1],
        ] as const) {
          await expectCode(
            () => sel.handle.read(offset, length),
            ['EEXCLUDED'],
            `read(${offset}, ${length}) of a selective snapshot`,
          );
        }
        const empty = await sel.handle.read(4 * bs, 0);
        assert.equal(empty.length, 0, 'a zero-length read touches no block: it succeeds');
        await h.checkLive('after reading the selective snapshot');
      });

      if (supports.preserveEvents) {
        test('only the blocks a snapshot holds are preserved, each once', async (h) => {
          const { bs } = h;
          await h.write(0, pattern(h.size, 130));
          const sel = await h.selectiveSnapshot(
            { include: [h.extent(1, 6)], exclude: [{ offset: 3 * bs - 1, length: 2 * bs + 2 }] },
            [h.extent(1, 2), h.extent(5, 6)],
          );
          const seen = await h.preserves(async () => {
            for (let b = 0; b < h.blocks; b++) await h.write(b * bs, pattern(bs, 131 + b));
            await h.write(0, pattern(h.size, 132));
          });
          // The exclude covers blocks 3 and 4 entirely (and touches 2 and 5): 1, 2, 5 and 6 are held.
          assert.deepEqual(numeric(seen), [1, 2, 5, 6], 'preserved blocks');
          await h.checkSnapshot(sel, 'after every block was written');
          await expectCode(() => sel.handle.read(3 * bs, 2 * bs), ['EEXCLUDED'], 'blocks 3, 4');
        });
      }
    });
  }
}

/** `blocks` sorted ascending, as numbers. */
function numeric(blocks: readonly number[]): number[] {
  return [...blocks].sort((a, b) => a - b);
}

/** The entry of `infos` for `snap`, which must be listed. */
function infoOf(infos: readonly SnapshotInfo[], snap: TakenSnapshot): SnapshotInfo {
  const info = infos.find((i) => i.id === snap.handle.id);
  assert.ok(info, `snapshot ${snap.handle.id} is listed`);
  return info;
}

/**
 * Reopens the device and checks `infos` (what listSnapshots said before)
 * and every snapshot's content come back, then points each snapshot's
 * handle at the reopened device.
 */
async function reopenAndCheck(
  h: SnapshotHarness,
  snaps: TakenSnapshot[],
  infos: readonly SnapshotInfo[],
  when: string,
): Promise<void> {
  const describeInfo = (i: SnapshotInfo) => [i.id, i.name, i.writable, i.createdAt.getTime()];
  assert.deepEqual(
    infos.map((i) => i.id),
    snaps.map((s) => s.handle.id),
    'the test knows every snapshot',
  );
  await h.reopen();
  assert.deepEqual(
    h.device.listSnapshots().map(describeInfo),
    infos.map(describeInfo),
    `listSnapshots ${when}`,
  );
  await expectCode(() => h.device.openSnapshot(UNKNOWN_ID), ['ENOENT'], `unknown id ${when}`);
  await h.checkLive(when);
  for (const snap of snaps) {
    const handle: Snapshot = await h.device.openSnapshot(snap.handle.id);
    assert.equal(handle.readOnly, !infoOf(infos, snap).writable, `readOnly ${when}`);
    snap.handle = handle;
    await h.checkSnapshot(snap, when);
  }
}
