import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FirstRecords } from '../../src/cow/first-records.js';

/*
 * The hash table a snapshot read finds a block's first preserve record in
 * (src/cow/first-records.ts), against a Map: linear probing with
 * backward-shift deletion must keep every record reachable, through
 * collisions, growth and shrinking, for any block number up to 2^53.
 */

function check(
  table: FirstRecords,
  model: Map<number, [number, number, number]>,
  blocks: number[],
) {
  expect(table.size).toBe(model.size);
  for (const block of blocks) {
    const want = model.get(block);
    const at = table.find(block);
    if (want === undefined) expect(at, `block ${block}`).toBe(-1);
    else {
      expect(at, `block ${block}`).toBeGreaterThanOrEqual(0);
      expect([table.epochAt(at), table.chunkAt(at), table.crcAt(at)]).toEqual(want);
    }
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
    const pick = fc.nat();
    const op = fc.oneof(
      fc.record({
        kind: fc.constant('set' as const),
        pick,
        epoch: fc.integer({ min: 1, max: 2 ** 40 }),
        chunk: fc.integer({ min: 0, max: 2 ** 41 }),
        crc: fc.integer({ min: 0, max: 2 ** 32 - 1 }),
      }),
      fc.record({ kind: fc.constant('delete' as const), pick }),
    );
    fc.assert(
      fc.property(
        fc.uniqueArray(block, { minLength: 1, maxLength: 200 }),
        fc.array(op, { maxLength: 800 }),
        (pool, ops) => {
          const table = new FirstRecords();
          const model = new Map<number, [number, number, number]>();
          for (const o of ops) {
            const b = pool[o.pick % pool.length]!;
            if (o.kind === 'set') {
              table.set(b, o.epoch, o.chunk, o.crc);
              model.set(b, [o.epoch, o.chunk, o.crc]);
            } else {
              table.delete(b);
              model.delete(b);
            }
          }
          check(table, model, [...pool, 301, 2 ** 40 + 1]);
        },
      ),
      { seed: 0xf157, numRuns: 200 },
    );
  });

  it('keeps every record of a dense range as it grows, then as it is deleted in any order', () => {
    const table = new FirstRecords();
    const model = new Map<number, [number, number, number]>();
    // Scattered blocks (an arithmetic run would hash without a collision).
    const blocks = [...new Set(Array.from({ length: 5000 }, (_, i) => (i * 2654435761) % 2 ** 31))];
    for (const b of blocks) {
      table.set(b, 1, b + 7, (b * 2654435761) >>> 0);
      model.set(b, [1, b + 7, (b * 2654435761) >>> 0]);
    }
    check(table, model, [...blocks, 2 ** 31 + 1]);
    for (let i = 0; i < blocks.length; i += 2) {
      table.delete(blocks[i]!);
      model.delete(blocks[i]!);
    }
    check(table, model, blocks);
    for (const b of blocks) {
      table.delete(b);
      model.delete(b);
    }
    check(table, model, blocks);
  });
});
