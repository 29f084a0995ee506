import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PartitionMap } from '../../src/volume/partition-map.js';

/*
 * The volume's I/O split takes a shortcut for a range that one partition
 * holds (`partitionOf`, `partitionOffset`: no array of pieces for a 4 KiB
 * I/O inside a stripe unit). It must name exactly the partition and offset
 * `pieces` gives when that range is one piece, and refuse (-1) whenever
 * `pieces` cuts the range, on contiguous and striped layouts alike.
 */

const BS = 512;

/** A layout and a range inside it: contiguous over unequal partitions, or striped. */
const layouts = fc
  .oneof(
    fc.record({
      sizes: fc.array(fc.integer({ min: 1, max: 8 }), { minLength: 1, maxLength: 5 }),
      unitBlocks: fc.constant(0),
    }),
    fc.integer({ min: 1, max: 4 }).chain((unitBlocks) =>
      fc.record({
        sizes: fc
          .tuple(fc.integer({ min: 1, max: 5 }), fc.integer({ min: 1, max: 4 }))
          .map(([units, n]) => Array.from({ length: n }, () => units * unitBlocks)),
        unitBlocks: fc.constant(unitBlocks),
      }),
    ),
  )
  .chain(({ sizes, unitBlocks }) => {
    const map = new PartitionMap(
      sizes.map((blocks) => blocks * BS),
      unitBlocks * BS,
      BS,
    );
    return fc
      .integer({ min: 0, max: map.size - 1 })
      .chain((offset) =>
        fc.tuple(
          fc.constant(map),
          fc.constant(offset),
          fc.integer({ min: 1, max: map.size - offset }),
        ),
      );
  });

describe('PartitionMap.partitionOf / partitionOffset', () => {
  it('agree with pieces(): the one piece when there is one, -1 otherwise', () => {
    fc.assert(
      fc.property(layouts, ([map, offset, length]) => {
        const pieces = map.pieces(offset, length);
        const one = map.partitionOf(offset, length);
        if (pieces.length === 1) {
          expect(one).toBe(pieces[0]!.partition);
          expect(map.partitionOffset(offset, one)).toBe(pieces[0]!.offset);
        } else {
          expect(one).toBe(-1);
        }
        // The offset of a range's first byte is the first piece's, either way.
        expect(map.partitionOffset(offset, pieces[0]!.partition)).toBe(pieces[0]!.offset);
      }),
      { numRuns: 2000 },
    );
  });

  it('a 4 KiB I/O inside a 64 KiB stripe unit of 4 partitions', () => {
    const map = new PartitionMap([1 << 20, 1 << 20, 1 << 20, 1 << 20], 64 * 1024, 4096);
    // Stripe 5 is partition 1's second unit: offset 64 KiB + 8 KiB there.
    expect(map.partitionOf(5 * 65536 + 8192, 4096)).toBe(1);
    expect(map.partitionOffset(5 * 65536 + 8192, 1)).toBe(65536 + 8192);
    // Across the end of stripe 5: two pieces.
    expect(map.partitionOf(6 * 65536 - 2048, 4096)).toBe(-1);
  });
});
