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

  it('tryLock never passes a waiter: a block handed to one is still locked', async () => {
    const table = new LockTable();
    const releaseFirst = await table.acquire(7, 7);
    const second = watch(table, 7, 7);
    await settle();
    releaseFirst();
    // Handed to `second` at the release, before its promise even resolves.
    expect(table.tryLock(7)).toBe(false);
    (await second.granted)();
    expect(table.tryLock(7)).toBe(true);
    table.unlock(7);
    expect(table.size).toBe(0);
  });

  it('tryLock takes a free block at once and nothing else; unlock hands it to the first waiter', async () => {
    const table = new LockTable();
    expect(table.tryLock(9)).toBe(true);
    expect(table.tryLock(9)).toBe(false);
    expect(table.size).toBe(1);
    const first = watch(table, 9, 9);
    const second = watch(table, 8, 9);
    await settle();
    expect(first.held).toBe(false);
    table.unlock(9);
    // Handed to `first` at the unlock: still locked, so tryLock cannot slip in.
    expect(table.tryLock(9)).toBe(false);
    (await first.granted)();
    (await second.granted)();
    expect(table.size).toBe(0);
    expect(table.tryLock(9)).toBe(true);
    table.unlock(9);
    expect(table.size).toBe(0);
  });

  it('holds thousands of locks at once and forgets each one released (its table grows and shrinks)', async () => {
    const table = new LockTable();
    const blocks = Array.from({ length: 5000 }, (_, i) => (i * 2654435761) % 2 ** 40);
    for (const b of blocks) expect(table.tryLock(b)).toBe(true);
    expect(table.size).toBe(blocks.length);
    for (const b of blocks) expect(table.tryLock(b)).toBe(false);
    expect(table.anyLocked(blocks[4999]!, blocks[4999]!)).toBe(true);
    for (let i = 0; i < blocks.length; i += 2) table.unlock(blocks[i]!);
    for (let i = 0; i < blocks.length; i++) {
      expect(table.anyLocked(blocks[i]!, blocks[i]!), `block ${blocks[i]}`).toBe(i % 2 === 1);
    }
    for (let i = 1; i < blocks.length; i += 2) table.unlock(blocks[i]!);
    expect(table.size).toBe(0);
    expect(table.anyLocked(0, 10)).toBe(false);
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
            // Odd one-block requests try first, and wait only if the block is taken.
            const release =
              who % 2 === 1 && length === 1 && table.tryLock(first)
                ? () => table.unlock(first)
                : await table.acquire(first, last);
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
