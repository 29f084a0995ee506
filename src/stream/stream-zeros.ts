import { FRAME_DATA_MAX } from './stream-format.js';

/*
 * Finding zero bytes in what a stream carries (docs/stream-format.md, "Zero
 * frame"): the exporter sends a zero extent as a zero frame, without its
 * bytes, and the applier writes zeros only where the target is not already
 * zero, so a sparse volume's backup stays small and its restore sparse.
 * Compared against a zero buffer by the native memcmp (`Buffer.compare`),
 * never byte by byte in JavaScript: this is on every exported and every
 * zero-applied byte's path.
 */

/** Zeros to compare against: as long as the longest piece a stream has (a frame's data). */
const ZEROS = Buffer.alloc(FRAME_DATA_MAX);

/**
 * The finest grain zeros are found at: 4 KiB, or the block if larger. A
 * zero frame costs a frame head and cuts the data frames around it in two
 * (two more heads and a tail, ~120 bytes, and one more write on apply), so
 * zero runs shorter than a page are left in the data; a file's holes are
 * pages anyway. A power of two from 4 KiB, so whole blocks of any block size.
 */
export function zeroUnit(blockSize: number): number {
  return Math.max(blockSize, 4096);
}

/** One run of {@link zeroRuns}: bytes `[start, start + length)` of the data, all zero or not. */
export interface ZeroRun {
  readonly start: number;
  readonly length: number;
  /** Whether every byte of the run is zero. */
  readonly zero: boolean;
}

/**
 * Cuts `data` (at most {@link FRAME_DATA_MAX} bytes) into runs of `unit`s
 * that are all zero and runs of units that are not, in order, covering it
 * (the last unit may be shorter). Exact: a run marked zero holds only zero
 * bytes; a run not marked holds a non-zero byte in each of its units.
 */
export function zeroRuns(data: Uint8Array, unit: number): ZeroRun[] {
  const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  // Most pieces are all zero or all data: one compare answers the first.
  if (ZEROS.compare(bytes, 0, bytes.length, 0, bytes.length) === 0) {
    return [{ start: 0, length: bytes.length, zero: true }];
  }
  const runs: ZeroRun[] = [];
  let start = 0;
  let zero = false;
  for (let at = 0; at < bytes.length; at += unit) {
    const end = Math.min(at + unit, bytes.length);
    const unitZero = ZEROS.compare(bytes, at, end, 0, end - at) === 0;
    if (at > 0 && unitZero !== zero) {
      runs.push({ start, length: at - start, zero });
      start = at;
    }
    zero = unitZero;
  }
  runs.push({ start, length: bytes.length - start, zero });
  return runs;
}

/**
 * Whether a Fletcher-4 is that of zero bytes: all four sums 0. Exact for a
 * frame's data: its at most 2^18 words, each under 2^32, sum to under 2^50,
 * so the first sum never wraps and is 0 only if every word is.
 */
export function isZeroSum(sum: Uint8Array): boolean {
  return ZEROS.compare(sum, 0, sum.length, 0, sum.length) === 0;
}
