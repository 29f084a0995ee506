import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ChunkAllocator } from '../../src/cow/chunk-allocator.js';
import { codeThrown } from '../support/error-code.js';

/** Every chunk the allocator says is in use. */
function used(allocator: ChunkAllocator): number[] {
  return Array.from({ length: allocator.count }, (_, c) => c).filter((c) => allocator.isUsed(c));
}

describe('ChunkAllocator', () => {
  it('starts with every chunk free and hands them out ascending', () => {
    const allocator = new ChunkAllocator(20);
    expect(allocator.free).toBe(20);
    expect(used(allocator)).toEqual([]);
    expect(allocator.allocate(3)).toEqual([0, 1, 2]);
    expect(allocator.allocate(0)).toEqual([]);
    expect(allocator.allocate(2)).toEqual([3, 4]);
    expect(allocator.free).toBe(15);
    expect(used(allocator)).toEqual([0, 1, 2, 3, 4]);
  });

  it('is next-fit: a freed chunk is reused only once the cursor wraps around to it', () => {
    const allocator = new ChunkAllocator(8);
    allocator.allocate(4);
    allocator.release(1);
    expect(allocator.allocate(2)).toEqual([4, 5]);
    // Up to the end, then from the start: 6, 7, then the freed 1.
    expect(allocator.allocate(3)).toEqual([6, 7, 1]);
    expect(allocator.free).toBe(0);
    allocator.release(7);
    allocator.release(0);
    expect(allocator.allocate(2)).toEqual([7, 0]);
  });

  it('taking more than is free is ENOSPC and takes nothing; the last free chunks can all be taken', () => {
    const allocator = new ChunkAllocator(13);
    allocator.allocate(10);
    const before = used(allocator);
    expect(codeThrown(() => allocator.allocate(4))).toBe('ENOSPC');
    expect(() => allocator.allocate(4)).toThrow(/4 chunk\(s\) needed, 3 of 13 free/);
    expect([allocator.free, used(allocator)]).toEqual([3, before]);
    expect(allocator.allocate(3)).toEqual([10, 11, 12]);
    expect(allocator.free).toBe(0);
    expect(codeThrown(() => allocator.allocate(1))).toBe('ENOSPC');
    expect(allocator.allocate(0)).toEqual([]);
  });

  it('a count that is not a multiple of 8 never hands out a chunk past it', () => {
    const allocator = new ChunkAllocator(13);
    expect(allocator.allocate(13)).toEqual(Array.from({ length: 13 }, (_, c) => c));
    for (const c of [13, 14, 15]) expect(allocator.isUsed(c)).toBe(false);
  });

  it('markUsed (replay) is idempotent and refuses a chunk past the store as ECORRUPT', () => {
    const allocator = new ChunkAllocator(16);
    allocator.markUsed(9);
    allocator.markUsed(9);
    expect([allocator.free, used(allocator)]).toEqual([15, [9]]);
    for (const chunk of [16, 17, 1000]) {
      expect(codeThrown(() => allocator.markUsed(chunk))).toBe('ECORRUPT');
    }
    expect(allocator.free).toBe(15);
    // The allocator skips what replay marked.
    expect(allocator.allocate(10)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 10]);
  });

  it('releasing a free chunk changes nothing', () => {
    const allocator = new ChunkAllocator(8);
    allocator.allocate(2);
    allocator.release(5);
    allocator.release(1);
    allocator.release(1);
    expect([allocator.free, used(allocator)]).toEqual([7, [0]]);
  });

  // A model: the set of used chunks and the cursor. allocate(n) takes the
  // first n free chunks in cyclic order from the cursor and leaves the
  // cursor just past the last one taken.
  it('agrees with a model of next-fit allocation over random operations', () => {
    const op = fc.oneof(
      fc.record({ kind: fc.constant('allocate' as const), n: fc.integer({ min: 0, max: 12 }) }),
      fc.record({ kind: fc.constant('release' as const), chunk: fc.nat(40) }),
      fc.record({ kind: fc.constant('markUsed' as const), chunk: fc.nat(40) }),
    );
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 40 }),
        fc.array(op, { maxLength: 60 }),
        (count, ops) => {
          const allocator = new ChunkAllocator(count);
          const model = new Set<number>();
          let cursor = 0;
          for (const o of ops) {
            if (o.kind === 'allocate') {
              if (o.n > count - model.size) {
                expect(codeThrown(() => allocator.allocate(o.n))).toBe('ENOSPC');
                continue;
              }
              const expected: number[] = [];
              for (let c = cursor; expected.length < o.n; c = (c + 1) % count) {
                if (!model.has(c)) expected.push(c);
              }
              expect(allocator.allocate(o.n)).toEqual(expected);
              for (const c of expected) model.add(c);
              if (expected.length > 0) cursor = (expected.at(-1)! + 1) % count;
            } else if (o.chunk >= count) {
              if (o.kind === 'markUsed')
                expect(codeThrown(() => allocator.markUsed(o.chunk))).toBe('ECORRUPT');
              else allocator.release(o.chunk);
            } else if (o.kind === 'release') {
              allocator.release(o.chunk);
              model.delete(o.chunk);
            } else {
              allocator.markUsed(o.chunk);
              model.add(o.chunk);
            }
            expect(allocator.free).toBe(count - model.size);
          }
          expect(used(allocator)).toEqual([...model].sort((a, b) => a - b));
        },
      ),
      { seed: 0xc4a, numRuns: 200 },
    );
  });
});
