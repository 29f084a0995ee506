import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FirstRecords } from '../../src/cow/first-records.js';

/*
 * Where a snapshot read finds a block's first preserve record
 * (src/cow/first-records.ts, over src/base/integer-key-table.ts), against a
 * Map: linear probing with backward-shift deletion must keep every record
 * reachable, through collisions, growth and shrinking, for any block number
 * up to 2^53; and `serving` must say which snapshots the record serves.
 */

type Head = [epoch: number, chunk: number, crc: number];

function check(first: FirstRecords, model: Map<number, Head>, blocks: number[]) {
  expect(first.size).toBe(model.size);
  for (const block of blocks) {
    const head = model.get(block);
    if (head === undefined) {
      expect(first.serving(block, 1), `block ${block}`).toBeUndefined();
      continue;
    }
    const [epoch, chunk, crc] = head;
    expect(first.serving(block, epoch), `block ${block}`).toEqual({ chunk, crc });
    expect(first.serving(block, 1), `block ${block}`).toEqual({ chunk, crc });
    expect(first.serving(block, epoch + 1), `block ${block}`).toBeNull();
  }
}

describe('FirstRecords', () => {
  it('finds what was set and nothing deleted, through collisions, growth and shrinking', () => {
    // A pool of blocks the ops pick from, so sets and deletes meet: small
    // numbers, numbers past 2^32 (the high bits hashed) and any up to 2^53.
    const block = fc.oneof(
      fc.integer({ min: 0, max: 300 }),
      fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER - 1 }),
      fc.integer({ min: 0, max: 40 }).map((k) => k * 2 ** 32),
    );
    const op = fc.record({
      pick: fc.nat(),
      // Undefined: the block's list became empty.
      head: fc.option(
        fc.tuple(
          fc.integer({ min: 1, max: 2 ** 40 }),
          fc.integer({ min: 0, max: 2 ** 41 }),
          fc.integer({ min: 0, max: 2 ** 32 - 1 }),
        ),
        { nil: undefined },
      ),
    });
    fc.assert(
      fc.property(
        fc.uniqueArray(block, { minLength: 1, maxLength: 200 }),
        fc.array(op, { maxLength: 800 }),
        (pool, ops) => {
          const first = new FirstRecords();
          const model = new Map<number, Head>();
          for (const { pick, head } of ops) {
            const b = pool[pick % pool.length]!;
            // A list whose head is `head`, with a later record behind it.
            first.follow(b, head === undefined ? [] : [...head, head[0] + 1, 7, 7]);
            if (head === undefined) model.delete(b);
            else model.set(b, head);
          }
          check(first, model, [...pool, 301, 2 ** 40 + 1]);
        },
      ),
      { seed: 0xf157, numRuns: 200 },
    );
  });

  it('keeps every record of many scattered blocks as it grows, then as they go in any order', () => {
    const first = new FirstRecords();
    const model = new Map<number, Head>();
    // Scattered blocks (an arithmetic run would hash without a collision).
    const blocks = [...new Set(Array.from({ length: 5000 }, (_, i) => (i * 2654435761) % 2 ** 31))];
    for (const b of blocks) {
      const head: Head = [3, b + 7, (b * 40503) >>> 0];
      first.follow(b, head);
      model.set(b, head);
    }
    check(first, model, [...blocks, 2 ** 31 + 1]);
    for (let i = 0; i < blocks.length; i += 2) {
      first.follow(blocks[i]!, []);
      model.delete(blocks[i]!);
    }
    check(first, model, blocks);
    for (const b of blocks) {
      first.follow(b, []);
      model.delete(b);
    }
    check(first, model, blocks);
  });
});
