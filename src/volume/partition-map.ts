import { readResultBuffer } from '../base/index.js';
import type { Extent } from '../device.js';
import { BlockDeviceError } from '../errors.js';

/*
 * The partition map: how the volume's address space falls onto its
 * partitions (docs/ARCHITECTURE.md, "VirtualVolume"). Contiguous: partition
 * i holds one range, right after partition i-1's. Striped (as RBD stripes
 * its objects): the volume is cut into stripe units dealt round-robin, unit
 * s to partition s mod n at its offset floor(s / n) · unit, so sequential
 * and random load alike spread over every partition and processor.
 */

/** One piece of a volume range: a range of one partition. */
export interface Piece {
  /** Index of the partition. */
  readonly partition: number;
  /** Offset in the partition. */
  readonly offset: number;
  /** Bytes. */
  readonly length: number;
  /** Offset of the piece in the volume range it was cut from (0 for the first piece). */
  readonly at: number;
}

/** The volume's layout: contiguous (stripeUnit 0) or striped. */
export class PartitionMap {
  /** Size of each partition in bytes. */
  readonly sizes: readonly number[];
  /** Stripe unit in bytes; 0 for contiguous. */
  readonly stripeUnit: number;
  /** Volume size in bytes. */
  readonly size: number;
  /** Volume offset of each partition (contiguous only). */
  readonly #starts: number[];

  /**
   * @throws `EINVAL` for a striped layout over partitions of unequal size, or
   *   a partition size that is not a multiple of the stripe unit.
   */
  constructor(sizes: readonly number[], stripeUnit: number, blockSize: number) {
    this.sizes = sizes;
    this.stripeUnit = stripeUnit;
    if (stripeUnit !== 0) {
      if (!Number.isSafeInteger(stripeUnit) || stripeUnit < blockSize || stripeUnit % blockSize) {
        throw new BlockDeviceError(
          'EINVAL',
          `stripeUnit ${stripeUnit} is not a positive multiple of the block size ${blockSize}`,
        );
      }
      const first = sizes[0]!;
      if (sizes.some((s) => s !== first) || first % stripeUnit !== 0) {
        throw new BlockDeviceError(
          'EINVAL',
          `a striped volume needs partitions of one size, a multiple of stripeUnit ${stripeUnit}; got ${sizes.join(', ')}`,
        );
      }
    }
    this.#starts = [];
    let at = 0;
    for (const s of sizes) {
      this.#starts.push(at);
      at += s;
    }
    this.size = at;
  }

  /** The pieces of volume range `[offset, offset + length)`, in volume order. */
  pieces(offset: number, length: number): Piece[] {
    const out: Piece[] = [];
    const end = offset + length;
    if (this.stripeUnit === 0) {
      let p = this.#partitionAt(offset);
      for (let at = offset; at < end; p++) {
        const stop = Math.min(end, this.#starts[p]! + this.sizes[p]!);
        if (stop > at) {
          out.push({
            partition: p,
            offset: at - this.#starts[p]!,
            length: stop - at,
            at: at - offset,
          });
        }
        at = Math.max(at, stop);
      }
      return out;
    }
    const unit = this.stripeUnit;
    const n = this.sizes.length;
    for (let at = offset; at < end; ) {
      const stripe = Math.floor(at / unit);
      const within = at - stripe * unit;
      const take = Math.min(unit - within, end - at);
      out.push({
        partition: stripe % n,
        offset: this.#stripedOffset(stripe, within),
        length: take,
        at: at - offset,
      });
      at += take;
    }
    return out;
  }

  /**
   * The partition that holds all of volume range `[offset, offset + length)`,
   * or -1 when the range falls on more than one piece ({@link pieces}): a
   * 4 KiB I/O inside one stripe unit goes to its partition without an array
   * of pieces built for it.
   */
  partitionOf(offset: number, length: number): number {
    if (this.stripeUnit === 0) {
      const p = this.#partitionAt(offset);
      return offset + length <= this.#starts[p]! + this.sizes[p]! ? p : -1;
    }
    const stripe = Math.floor(offset / this.stripeUnit);
    return offset + length <= (stripe + 1) * this.stripeUnit ? stripe % this.sizes.length : -1;
  }

  /**
   * The offset of volume offset `offset` in `partition`, the partition that
   * holds it ({@link partitionOf}'s answer: not looked up again).
   */
  partitionOffset(offset: number, partition: number): number {
    if (this.stripeUnit === 0) return offset - this.#starts[partition]!;
    const stripe = Math.floor(offset / this.stripeUnit);
    return this.#stripedOffset(stripe, offset - stripe * this.stripeUnit);
  }

  /** The partition offset of byte `within` of stripe unit `stripe` (a striped map). */
  #stripedOffset(stripe: number, within: number): number {
    return Math.floor(stripe / this.sizes.length) * this.stripeUnit + within;
  }

  /** Volume extents of partition `p`'s extents, ascending and coalesced. */
  toVolume(p: number, extents: readonly Extent[]): Extent[] {
    if (this.stripeUnit === 0) {
      return extents.map((e) => ({ offset: e.offset + this.#starts[p]!, length: e.length }));
    }
    const unit = this.stripeUnit;
    const n = this.sizes.length;
    const out: Extent[] = [];
    for (const e of extents) {
      for (let at = e.offset; at < e.offset + e.length; ) {
        const row = Math.floor(at / unit);
        const within = at - row * unit;
        const take = Math.min(unit - within, e.offset + e.length - at);
        out.push({ offset: (row * n + p) * unit + within, length: take });
        at += take;
      }
    }
    return coalesce(out);
  }

  /** The volume range partition `p` covers (contiguous), or its whole share (striped: every n-th unit). */
  describe(p: number): { offset: number; length: number } {
    return this.stripeUnit === 0
      ? { offset: this.#starts[p]!, length: this.sizes[p]! }
      : { offset: p * this.stripeUnit, length: this.sizes[p]! };
  }

  #partitionAt(offset: number): number {
    let lo = 0;
    let hi = this.sizes.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.#starts[mid]! <= offset) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }
}

/** `extents` sorted by offset, with touching or overlapping ones merged. */
export function coalesce(extents: readonly Extent[]): Extent[] {
  const sorted = [...extents].sort((a, b) => a.offset - b.offset);
  const out: { offset: number; length: number }[] = [];
  for (const e of sorted) {
    const last = out[out.length - 1];
    if (last !== undefined && e.offset <= last.offset + last.length) {
      last.length = Math.max(last.length, e.offset + e.length - last.offset);
    } else {
      out.push({ offset: e.offset, length: e.length });
    }
  }
  return out;
}

/**
 * Reads volume range `[offset, offset + length)` piece by piece with
 * `readPiece`: one piece's result is returned as is (a buffer its reader
 * owns), several are gathered into one fresh buffer.
 */
export function readPieces(
  map: PartitionMap,
  offset: number,
  length: number,
  readPiece: (partition: number, offset: number, length: number) => Promise<Uint8Array>,
): Promise<Uint8Array> {
  const one = map.partitionOf(offset, length);
  if (one >= 0) return readPiece(one, map.partitionOffset(offset, one), length);
  const pieces = map.pieces(offset, length);
  return Promise.all(pieces.map((p) => readPiece(p.partition, p.offset, p.length))).then(
    (parts) => {
      const out = readResultBuffer(length);
      for (const [k, part] of parts.entries()) out.set(part, pieces[k]!.at);
      return out;
    },
  );
}

/**
 * Writes `data` at volume offset `offset`, every piece handed to
 * `writePiece` before this returns (each takes its bytes then), in order.
 */
export function writePieces(
  map: PartitionMap,
  offset: number,
  data: Uint8Array,
  writePiece: (partition: number, offset: number, bytes: Uint8Array) => Promise<void>,
): Promise<void> {
  const one = map.partitionOf(offset, data.length);
  if (one >= 0) return writePiece(one, map.partitionOffset(offset, one), data);
  const pieces = map.pieces(offset, data.length);
  return Promise.all(
    pieces.map((p) => writePiece(p.partition, p.offset, data.subarray(p.at, p.at + p.length))),
  ).then(() => {});
}
