import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type BlockRanges,
  type BlockRun,
  designatedBlocks,
  intersectRanges,
  normalizeRuns,
  rangesBlockCount,
  rangesHold,
  rangesHoldAll,
  rangesOfBlocks,
  rangesOverlap,
  rangesToExtents,
  subtractRanges,
  unionRanges,
} from '../../src/cow/block-ranges.js';
import { mergeExtents } from '../../src/cow/restore-pieces.js';
import type { Extent } from '../../src/index.js';
import { heldBlocks } from '../property/selective-harness.js';

/** Blocks 0..N-1: small enough that the Set model is cheap, big enough for many runs. */
const N = 48;
const BS = 512;

/** The plain model: a set of block numbers. */
function setOf(ranges: readonly BlockRun[]): Set<number> {
  const out = new Set<number>();
  for (const r of ranges) for (let b = r.start; b < r.end; b++) out.add(b);
  return out;
}

function sorted(set: Set<number>): number[] {
  return [...set].sort((a, b) => a - b);
}

/** Ascending, disjoint, never touching, no empty run: the one shape every function returns. */
function expectCanonical(ranges: BlockRanges): void {
  ranges.forEach((r, i) => {
    expect(r.end, `run ${i} is not empty`).toBeGreaterThan(r.start);
    if (i > 0)
      expect(r.start, `run ${i} starts past the previous end`).toBeGreaterThan(ranges[i - 1]!.end);
  });
}

/** Any runs: unsorted, overlapping, touching, empty ones included. */
const looseRuns = fc.array(
  fc.tuple(fc.nat(N), fc.nat(N)).map(([a, b]) => ({ start: Math.min(a, b), end: Math.max(a, b) })),
  { maxLength: 8 },
);

/** A canonical set, from any set of blocks. */
const ranges = fc
  .uniqueArray(fc.nat(N - 1), { maxLength: N })
  .map((blocks) => rangesOfBlocks(blocks.sort((a, b) => a - b)));

const extent = (size: number) =>
  fc
    .tuple(fc.nat(size - 1), fc.nat(size))
    .map(([offset, length]) => ({ offset, length: Math.max(1, Math.min(length, size - offset)) }));

describe('block-ranges against a Set of blocks', () => {
  it('normalizeRuns sorts and merges into the canonical shape, same blocks', () => {
    fc.assert(
      fc.property(looseRuns, (runs) => {
        const out = normalizeRuns(runs);
        expectCanonical(out);
        expect(sorted(setOf(out))).toEqual(sorted(setOf(runs)));
      }),
    );
  });

  it('rangesOfBlocks and rangesBlockCount agree with the blocks', () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.nat(N - 1)), (blocks) => {
        const asc = blocks.sort((a, b) => a - b);
        const out = rangesOfBlocks(asc);
        expectCanonical(out);
        expect(sorted(setOf(out))).toEqual(asc);
        expect(rangesBlockCount(out)).toBe(asc.length);
      }),
    );
  });

  it('subtract, intersect and union are the set operations, canonical', () => {
    fc.assert(
      fc.property(ranges, ranges, (a, b) => {
        const sa = setOf(a);
        const sb = setOf(b);
        const cases: [string, BlockRanges, number[]][] = [
          ['subtract', subtractRanges(a, b), sorted(new Set([...sa].filter((x) => !sb.has(x))))],
          ['intersect', intersectRanges(a, b), sorted(new Set([...sa].filter((x) => sb.has(x))))],
          ['union', unionRanges(a, b), sorted(new Set([...sa, ...sb]))],
        ];
        for (const [what, got, want] of cases) {
          expectCanonical(got);
          expect(sorted(setOf(got)), what).toEqual(want);
        }
      }),
    );
  });

  it('rangesHold, rangesHoldAll and rangesOverlap answer like the set', () => {
    fc.assert(
      fc.property(ranges, fc.nat(N + 2), fc.nat(N + 2), (r, x, y) => {
        const s = setOf(r);
        const [first, last] = [Math.min(x, y), Math.max(x, y)];
        const span = Array.from({ length: last - first + 1 }, (_, i) => first + i);
        expect(rangesHold(r, x)).toBe(s.has(x));
        expect(rangesHoldAll(r, first, last)).toBe(span.every((b) => s.has(b)));
        expect(rangesOverlap(r, first, last)).toBe(span.some((b) => s.has(b)));
      }),
    );
  });

  it('rangesToExtents gives the byte extents of the runs', () => {
    fc.assert(
      fc.property(ranges, (r) => {
        const extents = rangesToExtents(r, BS);
        const bytes = new Set<number>();
        for (const e of extents)
          for (let b = e.offset / BS; b < (e.offset + e.length) / BS; b++) bytes.add(b);
        expect(sorted(bytes)).toEqual(sorted(setOf(r)));
        expect(extents.every((e) => e.offset % BS === 0 && e.length % BS === 0)).toBe(true);
      }),
    );
  });

  it('designatedBlocks follows the rule: blocks an include touches, minus blocks one exclude covers whole', () => {
    const designation = fc.record(
      {
        include: fc.array(extent(N * BS), { maxLength: 5 }),
        exclude: fc.array(extent(N * BS), { maxLength: 5 }),
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(designation, (d) => {
        const out = designatedBlocks(d.include, d.exclude, BS, N);
        expectCanonical(out);
        const held = heldBlocks(d, BS, N);
        expect(sorted(setOf(out))).toEqual(held.flatMap((h, b) => (h ? [b] : [])));
        // Every byte included and not in an exclusion stays held.
        for (const e of d.include ?? [{ offset: 0, length: N * BS }]) {
          for (let at = e.offset; at < e.offset + e.length; at += 97) {
            const excluded = (d.exclude ?? []).some(
              (x) => at >= x.offset && at < x.offset + x.length,
            );
            if (!excluded) expect(rangesHold(out, Math.floor(at / BS)), `byte ${at}`).toBe(true);
          }
        }
      }),
    );
  });

  it('mergeExtents sorts, drops empty extents and merges overlapping and touching ones, same bytes', () => {
    const size = 4096;
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(size - 1), fc.nat(300)), { maxLength: 8 }), (pairs) => {
        const extents = pairs.map(([offset, length]) => ({
          offset,
          length: Math.min(length, size - offset),
        }));
        const merged = mergeExtents(extents);
        const bytes = (list: Extent[]) => {
          const out = new Set<number>();
          for (const e of list) for (let i = e.offset; i < e.offset + e.length; i++) out.add(i);
          return sorted(out);
        };
        expect(bytes(merged)).toEqual(bytes(extents));
        merged.forEach((e, i) => {
          expect(e.length).toBeGreaterThan(0);
          if (i > 0)
            expect(e.offset).toBeGreaterThan(merged[i - 1]!.offset + merged[i - 1]!.length);
        });
      }),
    );
  });
});

describe('designatedBlocks: the widening and narrowing rule, by example (512-byte blocks)', () => {
  const designate = (include?: Extent[], exclude?: Extent[]) =>
    sorted(setOf(designatedBlocks(include, exclude, BS, 8)));

  it('holds every block when nothing is included explicitly', () => {
    expect(designate()).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(designate(undefined, [{ offset: 512, length: 1024 }])).toEqual([0, 3, 4, 5, 6, 7]);
  });

  it('widens an include to every block it touches', () => {
    expect(designate([{ offset: 100, length: 10 }])).toEqual([0]);
    expect(designate([{ offset: 511, length: 2 }])).toEqual([0, 1]);
    expect(designate([{ offset: 1024, length: 512 }])).toEqual([2]);
    expect(designate([{ offset: 1023, length: 514 }])).toEqual([1, 2, 3]);
  });

  it('narrows an exclude to the blocks it covers whole, so every included byte stays held', () => {
    expect(designate(undefined, [{ offset: 0, length: 511 }])).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(designate(undefined, [{ offset: 1, length: 512 }])).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(designate(undefined, [{ offset: 0, length: 512 }])).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(designate([{ offset: 0, length: 4096 }], [{ offset: 700, length: 1400 }])).toEqual([
      0, 1, 4, 5, 6, 7,
    ]);
  });

  it('judges each exclude on its own: two that only together cover a block leave it held', () => {
    expect(
      designate(
        [{ offset: 0, length: 1024 }],
        [
          { offset: 0, length: 300 },
          { offset: 300, length: 212 },
        ],
      ),
    ).toEqual([0, 1]);
  });

  it('an exclude takes out included blocks only: overlapping includes and excludes', () => {
    expect(
      designate(
        [
          { offset: 0, length: 1024 },
          { offset: 3072, length: 10 },
        ],
        [{ offset: 512, length: 3072 }],
      ),
    ).toEqual([0]);
  });

  // Was a bug (fixed; block-ranges.ts designatedBlocks): a zero-length include at an
  // unaligned offset touches no byte, yet designates its block
  // (floor(5/512) = 0, ceil(5/512) = 1). Fix: skip empty includes,
  // `include.filter((e) => e.length > 0).map(...)`.
  it('regression: a zero-length include touches no block, aligned or not', () => {
    expect(designate([{ offset: 1024, length: 0 }])).toEqual([]);
    expect(designate([{ offset: 5, length: 0 }])).toEqual([]);
  });
});
