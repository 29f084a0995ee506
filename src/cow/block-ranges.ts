import type { Extent } from '../device.js';

/**
 * A set of blocks as half-open runs `[start, end)`, ascending, disjoint and
 * never touching (touching runs are merged): the one shape every designation
 * and every set operation below uses, so comparing two sets is comparing
 * arrays.
 */
export type BlockRanges = readonly BlockRun[];

/** One run of consecutive blocks, `[start, end)`. */
export interface BlockRun {
  readonly start: number;
  readonly end: number;
}

/** Sorts and merges runs (overlapping or touching) into a {@link BlockRanges}. */
export function normalizeRuns(runs: readonly BlockRun[]): BlockRanges {
  const sorted = runs.filter((r) => r.end > r.start).sort((a, b) => a.start - b.start);
  const out: BlockRun[] = [];
  for (const run of sorted) {
    const last = out[out.length - 1];
    if (last !== undefined && run.start <= last.end) {
      if (run.end > last.end) out[out.length - 1] = { start: last.start, end: run.end };
    } else {
      out.push(run);
    }
  }
  return out;
}

/**
 * The blocks a byte designation holds: every block an `include` extent
 * touches (all of `[0, blocks)` without any), minus every block an `exclude`
 * extent covers whole. Partial blocks fall to the include side, so a
 * snapshot holds at least every byte it was asked to.
 */
export function designatedBlocks(
  include: readonly Extent[] | undefined,
  exclude: readonly Extent[] | undefined,
  blockSize: number,
  blocks: number,
): BlockRanges {
  const included =
    include === undefined
      ? normalizeRuns([{ start: 0, end: blocks }])
      : normalizeRuns(
          // An empty include touches no byte, so holds no block, wherever it sits.
          include
            .filter((e) => e.length > 0)
            .map((e) => ({
              start: Math.floor(e.offset / blockSize),
              end: Math.ceil((e.offset + e.length) / blockSize),
            })),
        );
  if (exclude === undefined) return included;
  const excluded = normalizeRuns(
    exclude.map((e) => ({
      start: Math.ceil(e.offset / blockSize),
      end: Math.floor((e.offset + e.length) / blockSize),
    })),
  );
  return subtractRanges(included, excluded);
}

/** Index of the run holding `block`, or -1. O(log runs). */
function runIndex(ranges: BlockRanges, block: number): number {
  let lo = 0;
  let hi = ranges.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (ranges[mid]!.end <= block) lo = mid + 1;
    else hi = mid;
  }
  return lo < ranges.length && ranges[lo]!.start <= block ? lo : -1;
}

/** Whether `block` is in the set. */
export function rangesHold(ranges: BlockRanges, block: number): boolean {
  return runIndex(ranges, block) >= 0;
}

/** Whether every block of `first..last` is in the set. */
export function rangesHoldAll(ranges: BlockRanges, first: number, last: number): boolean {
  const i = runIndex(ranges, first);
  return i >= 0 && ranges[i]!.end > last;
}

/** Whether any block of `first..last` is in the set. */
export function rangesOverlap(ranges: BlockRanges, first: number, last: number): boolean {
  let lo = 0;
  let hi = ranges.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (ranges[mid]!.end <= first) lo = mid + 1;
    else hi = mid;
  }
  return lo < ranges.length && ranges[lo]!.start <= last;
}

/** Blocks in `a` and not in `b`. */
export function subtractRanges(a: BlockRanges, b: BlockRanges): BlockRanges {
  const out: BlockRun[] = [];
  let j = 0;
  for (const run of a) {
    let start = run.start;
    while (j < b.length && b[j]!.end <= start) j++;
    let k = j;
    while (k < b.length && b[k]!.start < run.end) {
      if (b[k]!.start > start) out.push({ start, end: b[k]!.start });
      start = Math.max(start, b[k]!.end);
      k++;
    }
    if (start < run.end) out.push({ start, end: run.end });
  }
  return out;
}

/** Blocks in both `a` and `b`. */
export function intersectRanges(a: BlockRanges, b: BlockRanges): BlockRanges {
  const out: BlockRun[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    const start = Math.max(a[i]!.start, b[j]!.start);
    const end = Math.min(a[i]!.end, b[j]!.end);
    if (start < end) out.push({ start, end });
    if (a[i]!.end < b[j]!.end) i++;
    else j++;
  }
  return out;
}

/** Blocks in `a` or `b`. */
export function unionRanges(a: BlockRanges, b: BlockRanges): BlockRanges {
  return normalizeRuns([...a, ...b]);
}

/** The set of ascending block numbers, as runs. */
export function rangesOfBlocks(blocks: readonly number[]): BlockRanges {
  const out: BlockRun[] = [];
  for (const block of blocks) {
    const last = out[out.length - 1];
    if (last !== undefined && last.end === block)
      out[out.length - 1] = { start: last.start, end: block + 1 };
    else out.push({ start: block, end: block + 1 });
  }
  return out;
}

/** The byte extents of the set. */
export function rangesToExtents(ranges: BlockRanges, blockSize: number): Extent[] {
  return ranges.map((r) => ({
    offset: r.start * blockSize,
    length: (r.end - r.start) * blockSize,
  }));
}

/** Number of blocks in the set. */
export function rangesBlockCount(ranges: BlockRanges): number {
  let n = 0;
  for (const r of ranges) n += r.end - r.start;
  return n;
}
