import { Mutex } from 'async-mutex';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { LockTable, type Release } from '../../src/base/lock-table.js';
import { settle } from '../support/async.js';

/** An acquire whose grant the test can see without awaiting it. */
interface Watched {
  held: boolean;
  readonly granted: Promise<Release>;
}

function watch(table: LockTable, first: number, last: number): Watched {
  const watched: Watched = {
    held: false,
    granted: table.acquire(first, last).then((release) => {
      watched.held = true;
      return release;
    }),
  };
  return watched;
}

describe('async-mutex: what LockTable relies on', () => {
  // LockTable drops a block's mutex when, just after a release, it is
  // unlocked: that is only safe because a release hands the lock to the
  // next waiter synchronously. An upgrade that defers the hand-off would
  // leave an unlocked mutex with a waiter queued.
  it('a release hands the lock to a queued waiter synchronously', async () => {
    const mutex = new Mutex();
    await mutex.acquire();
    const waiter = mutex.acquire();
    mutex.release();
    expect(mutex.isLocked()).toBe(true);
    (await waiter)();
    expect(mutex.isLocked()).toBe(false);
  });
});

describe('LockTable', () => {
  it('a block released with a waiter queued stays locked for it, and a later caller waits behind it', async () => {
    const table = new LockTable();
    const releaseFirst = await table.acquire(5, 5);
    const second = watch(table, 5, 5);
    await settle();
    expect(second.held).toBe(false);
    releaseFirst();
    // Handed over at the release: the block's mutex is still in the table.
    expect(table.size).toBe(1);
    const third = watch(table, 5, 5);
    const releaseSecond = await second.granted;
    await settle();
    expect(third.held).toBe(false);
    releaseSecond();
    (await third.granted)();
    expect(table.size).toBe(0);
  });

  it('different blocks are locked independently', async () => {
    const table = new LockTable();
    const releaseOne = await table.acquire(1, 1);
    const two = watch(table, 2, 2);
    const range = watch(table, 3, 8);
    await settle();
    expect([two.held, range.held]).toEqual([true, true]);
    expect(table.size).toBe(1 + 1 + 6);
    releaseOne();
    (await two.granted)();
    (await range.granted)();
    expect(table.size).toBe(0);
  });

  it('a range lock takes its blocks in ascending order, waiting at the first one held', async () => {
    const table = new LockTable();
    const releaseMiddle = await table.acquire(3, 3);
    const range = watch(table, 1, 5);
    await settle();
    expect(range.held).toBe(false);
    // Blocks 1 and 2 are taken (a caller for them waits), 4 and 5 not yet.
    const below = watch(table, 2, 2);
    const above = watch(table, 4, 5);
    await settle();
    expect([below.held, above.held]).toEqual([false, true]);
    (await above.granted)();
    releaseMiddle();
    const releaseRange = await range.granted;
    await settle();
    expect(below.held).toBe(false);
    releaseRange();
    (await below.granted)();
    expect(table.size).toBe(0);
  });

  it('overlapping range locks never hold a block together, never deadlock, and leave nothing behind', async () => {
    const request = fc.record({
      first: fc.integer({ min: 0, max: 15 }),
      length: fc.integer({ min: 1, max: 6 }),
      // Turns of the event loop the lock is held for.
      hold: fc.integer({ min: 0, max: 3 }),
      // Turns of the event loop before it is asked for.
      delay: fc.integer({ min: 0, max: 3 }),
    });
    await fc.assert(
      fc.asyncProperty(fc.array(request, { minLength: 2, maxLength: 12 }), async (requests) => {
        const table = new LockTable();
        const holder = new Map<number, number>();
        await Promise.all(
          requests.map(async ({ first, length, hold, delay }, who) => {
            const last = first + length - 1;
            await turns(delay);
            const release = await table.acquire(first, last);
            for (let b = first; b <= last; b++) {
              expect(holder.get(b), `block ${b} held by ${holder.get(b)} and ${who}`).toBe(
                undefined,
              );
              holder.set(b, who);
            }
            await turns(hold);
            for (let b = first; b <= last; b++) holder.delete(b);
            release();
          }),
        );
        expect(table.size).toBe(0);
      }),
      { seed: 0x10c4, numRuns: 100 },
    );
  });
});

async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((resolve) => setImmediate(resolve));
}
