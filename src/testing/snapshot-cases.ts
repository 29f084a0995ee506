/**
 * The snapshot suite's cases for what a snapshot is: its handle, the ids
 * the device answers to, its point in time (rule 1) and its independence
 * from the origin and other snapshots (rule 2) (docs/ARCHITECTURE.md,
 * Snapshot rules).
 */
import assert from 'node:assert/strict';
import { type DescribeFn, expectCode, pattern, random } from './conformance-support.js';
import type { SnapshotSupport, SnapshotTestFn } from './snapshot-conformance.js';
import type { SnapshotHarness, TakenSnapshot } from './snapshot-harness.js';

/** An id no device hands out: the suite's ids for unknown snapshots start with it. */
export const UNKNOWN_ID = 'no-such-snapshot';

/** One write of a test: `length` bytes of pattern `seed` at `offset`. */
interface PlannedWrite {
  offset: number;
  length: number;
  seed: number;
}

/** Registers the handle, unknown-id, point-in-time and independence cases that `supports` allows. */
export function registerSnapshotCases(
  describe: DescribeFn,
  test: SnapshotTestFn,
  supports: SnapshotSupport,
): void {
  describe('snapshot handles', () => {
    test('a snapshot is a read-only block device of the same geometry, listed by listSnapshots', async (h) => {
      await h.write(0, pattern(h.size, 1));
      const before = Date.now();
      const first = await h.snapshot({ name: 'first' });
      const second = await h.snapshot();
      const after = Date.now();
      for (const { handle } of [first, second]) {
        assert.equal(handle.size, h.size, 'a snapshot has the device size');
        assert.equal(handle.blockSize, h.bs, 'a snapshot has the device blockSize');
        assert.equal(handle.readOnly, true, 'a snapshot taken without writable is read-only');
        assert.equal(typeof handle.id, 'string', 'a snapshot id is a string');
        assert.ok(handle.createdAt instanceof Date, 'createdAt is a Date');
        const at = handle.createdAt.getTime();
        assert.ok(at >= before && at <= after, `createdAt ${at} is within [${before}, ${after}]`);
      }
      assert.notEqual(first.handle.id, second.handle.id, 'ids are unique');
      assert.equal(first.handle.name, 'first');
      assert.equal(second.handle.name, undefined, 'an unnamed snapshot has name undefined');
      const infos = h.device.listSnapshots();
      assert.deepEqual(
        infos.map((i) => [i.id, i.name, i.writable, i.createdAt.getTime()]),
        [first, second].map(({ handle }) => [
          handle.id,
          handle.name,
          false,
          handle.createdAt.getTime(),
        ]),
        'listSnapshots lists both, oldest first, as their handles describe them',
      );
      await h.checkSnapshot(first, 'just taken');
      await h.checkSnapshot(second, 'just taken');
    });

    test('a write to a read-only snapshot fails with EROFS and changes nothing', async (h) => {
      await h.write(0, pattern(h.size, 2));
      const snap = await h.snapshot();
      for (const [offset, length] of [
        [0, h.bs],
        [h.bs - 3, 2 * h.bs + 6],
        [h.size - 1, 1],
      ] as const) {
        await expectCode(
          () => snap.handle.write(offset, pattern(length, 3)),
          ['EROFS'],
          `write(${offset}, ${length}) to a read-only snapshot`,
        );
      }
      await h.checkSnapshot(snap, 'after refused writes');
      await h.checkLive('after refused snapshot writes');
    });

    test('closing a handle closes only that handle', async (h) => {
      await h.write(0, pattern(h.size, 4));
      const snap = await h.snapshot({ name: 'kept' });
      const other = await h.device.openSnapshot(snap.handle.id);
      await snap.handle.close();
      await snap.handle.close();
      await expectCode(() => snap.handle.read(0, h.bs), ['ECLOSED'], 'read of a closed handle');
      await h.checkSnapshot(snap, 'through a second handle, the first closed', other);
      await h.write(h.bs, pattern(2 * h.bs, 5));
      await h.checkLive('after closing a snapshot handle');
      assert.deepEqual(
        h.device.listSnapshots().map((i) => i.id),
        [snap.handle.id],
        'closing a handle deletes nothing',
      );
      const again = await h.device.openSnapshot(snap.handle.id);
      assert.equal(again.name, 'kept', 'openSnapshot gives the name');
      assert.equal(again.createdAt.getTime(), snap.handle.createdAt.getTime(), 'and the time');
      await h.checkSnapshot(snap, 'reopened by openSnapshot', again);
    });

    test('unknown ids fail with ENOENT, changing nothing', async (h) => {
      await h.write(0, pattern(h.size, 6));
      const snap = await h.snapshot({ name: 'only' });
      const ids = [UNKNOWN_ID, `${snap.handle.id}x`, ''];
      const calls: [string, (id: string) => Promise<unknown>][] = [
        ['openSnapshot', (id) => h.device.openSnapshot(id)],
        ['deleteSnapshot', (id) => h.device.deleteSnapshot(id)],
      ];
      if (supports.restore) calls.push(['restore', (id) => h.device.restore(id)]);
      for (const id of ids) {
        for (const [what, call] of calls) {
          await expectCode(() => call(id), ['ENOENT'], `${what}(${JSON.stringify(id)})`);
        }
      }
      assert.deepEqual(
        h.device.listSnapshots().map((i) => i.id),
        [snap.handle.id],
        'listSnapshots after the refused calls',
      );
      await h.checkSnapshot(snap, 'after the refused calls');
      await h.checkLive('after the refused calls');
    });
  });

  if (supports.pointInTime) {
    describe('point in time (rule 1)', () => {
      test('a snapshot holds every write called before snapshot(), in flight ones included, and none called after', async (h) => {
        const taken: TakenSnapshot[] = [];
        for (let round = 0; round < 6; round++) {
          const writable = supports.writable && round % 2 === 1;
          const [before, after] = plannedRounds(h, round);
          const base = h.live.slice();
          const pending = startWrites(h, before);
          const taking = h.device.snapshot({ name: `round ${round}`, writable });
          const later = startWrites(h, after);
          const handle = await taking;
          await Promise.all([...pending, ...later]);
          const content = applied(base, before);
          taken.push({ handle, content });
          await h.checkSnapshot(taken[round]!, `of round ${round}`);
          // Writes called after snapshot() were held until it was taken, so
          // they land after every write called before it.
          h.live.set(applied(content, after));
          await h.checkLive(`after round ${round}`);
        }
        for (const [round, snap] of taken.entries()) {
          await h.checkSnapshot(snap, `of round ${round}, after every round`);
        }
      });

      test('snapshots taken back to back with writes in flight between them each hold their own point', async (h) => {
        const { bs } = h;
        const base = h.live.slice();
        const w1: PlannedWrite[] = [
          { offset: 0, length: 3 * bs, seed: 20 },
          { offset: 5 * bs + 11, length: 100, seed: 21 },
        ];
        const w2: PlannedWrite[] = [
          { offset: bs, length: bs, seed: 22 },
          { offset: 5 * bs, length: 2 * bs, seed: 23 },
        ];
        const w3: PlannedWrite[] = [{ offset: bs / 2, length: 6 * bs, seed: 24 }];
        const p1 = startWrites(h, w1);
        const takingA = h.device.snapshot({ name: 'a' });
        const p2 = startWrites(h, w2);
        const takingB = h.device.snapshot({ name: 'b' });
        const p3 = startWrites(h, w3);
        const [a, b] = await Promise.all([takingA, takingB]);
        await Promise.all([...p1, ...p2, ...p3]);
        const atA = applied(base, w1);
        const atB = applied(atA, w2);
        await h.checkSnapshot({ handle: a, content: atA }, 'a');
        await h.checkSnapshot({ handle: b, content: atB }, 'b');
        h.live.set(applied(atB, w3));
        await h.checkLive('after both snapshots');
        assert.deepEqual(
          h.device.listSnapshots().map((i) => i.name),
          ['a', 'b'],
          'listSnapshots in the order snapshot() was called',
        );
      });
    });
  }

  describe('independence (rule 2)', () => {
    test('writes to the origin never change a snapshot', async (h) => {
      const { bs, size } = h;
      const snaps: TakenSnapshot[] = [await h.snapshot({ name: 'start' })];
      const steps: PlannedWrite[][] = [
        [{ offset: 0, length: size, seed: 30 }],
        [
          { offset: bs - 1, length: 2, seed: 31 },
          { offset: 3 * bs + 5, length: 2 * bs, seed: 32 },
        ],
        [{ offset: 0, length: 4 * bs, seed: 33 }],
        [{ offset: size - bs - 7, length: bs + 7, seed: 34 }],
      ];
      for (const [i, step] of steps.entries()) {
        for (const w of step) await h.write(w.offset, pattern(w.length, w.seed));
        for (const snap of snaps) await h.checkSnapshot(snap, `after write step ${i}`);
        snaps.push(await h.snapshot({ name: `after step ${i}` }));
      }
      // The same blocks written again, in one generation and across several.
      await h.write(0, pattern(size, 35));
      await h.write(bs, pattern(bs, 36));
      for (const snap of snaps) await h.checkSnapshot(snap, 'after the last writes');
      await h.checkLive('after the last writes');
    });

    if (supports.writable) {
      test('writes to a writable snapshot never change the origin or another snapshot', async (h) => {
        const { bs } = h;
        await h.write(0, pattern(h.size, 40));
        const ro = await h.snapshot({ name: 'ro' });
        const w1 = await h.snapshot({ name: 'w1', writable: true });
        const w2 = await h.snapshot({ name: 'w2', writable: true });
        assert.equal(w1.handle.readOnly, false, 'a writable snapshot is not readOnly');
        assert.deepEqual(
          h.device.listSnapshots().map((i) => i.writable),
          [false, true, true],
          'listSnapshots gives writable',
        );
        const cloneWrite = async (snap: TakenSnapshot, offset: number, data: Uint8Array) => {
          await snap.handle.write(offset, data);
          snap.content.set(data, offset);
        };
        // The same blocks written through both clones and the origin.
        await cloneWrite(w1, bs + 5, pattern(2 * bs, 41));
        await cloneWrite(w2, bs, pattern(bs, 42));
        await h.write(0, pattern(3 * bs, 43));
        await cloneWrite(w1, 0, pattern(bs / 2, 44));
        for (const snap of [ro, w1, w2]) await h.checkSnapshot(snap, 'after clone writes');
        await h.checkLive('after clone writes');
        // A later generation: a clone of the moved-on origin, written at once.
        const w3 = await h.snapshot({ name: 'w3', writable: true });
        await cloneWrite(w3, 2 * bs - 1, pattern(bs + 2, 45));
        await h.write(2 * bs, pattern(bs, 46));
        await cloneWrite(w2, 2 * bs, pattern(bs, 47));
        for (const snap of [ro, w1, w2, w3]) await h.checkSnapshot(snap, 'in the second round');
        await h.checkLive('in the second round');
      });
    }
  });
}

/**
 * Two groups of writes for one round of the point-in-time test: the ones
 * called before snapshot() and the ones called after. Writes in one group
 * are disjoint (the order of concurrent overlapping writes is the device's
 * choice); the groups overlap each other, so an after-write that slipped
 * in before the snapshot shows.
 */
function plannedRounds(h: SnapshotHarness, round: number): [PlannedWrite[], PlannedWrite[]] {
  const { bs } = h;
  if (round === 0) {
    return [
      [
        { offset: 0, length: 2 * bs, seed: 100 },
        { offset: 2 * bs + 100, length: 50, seed: 101 },
        { offset: 5 * bs + 7, length: 3 * bs, seed: 102 },
      ],
      [
        { offset: 0, length: bs, seed: 103 },
        { offset: 2 * bs + 120, length: 10, seed: 104 },
        { offset: 6 * bs, length: 2 * bs, seed: 105 },
      ],
    ];
  }
  const next = random(110 + round);
  const group = (slots: number, seed: number): PlannedWrite[] => {
    const slot = Math.floor(h.size / slots);
    const out: PlannedWrite[] = [];
    for (let i = 0; i < slots; i++) {
      const length = 1 + (next() % slot);
      const offset = i * slot + (next() % (slot - length + 1));
      out.push({ offset, length, seed: seed + i });
    }
    return out;
  };
  return [group(4 + 2 * round, 1000 * round), group(3 + round, 1000 * round + 500)];
}

/**
 * Calls every write of `writes` on the live device now, none awaited. The
 * caller updates `live` once they are all done: their promises may settle
 * in any order.
 */
function startWrites(h: SnapshotHarness, writes: readonly PlannedWrite[]): Promise<void>[] {
  return writes.map((w) => h.device.write(w.offset, pattern(w.length, w.seed)));
}

/** `base` with `writes` applied in order. */
function applied(base: Uint8Array, writes: readonly PlannedWrite[]): Uint8Array {
  const out = base.slice();
  for (const w of writes) out.set(pattern(w.length, w.seed), w.offset);
  return out;
}
