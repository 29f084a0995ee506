import fc from 'fast-check';
import { afterAll, beforeAll, describe, it } from 'vitest';
import type { Snapshot } from '../../src/index.js';
import type { VirtualVolume } from '../../src/volume/index.js';
import { expectBytes, pattern } from '../support/bytes.js';
import { memorySpecVolume, useBundledWorker } from '../support/volume-rig.js';

/*
 * Call order across the two ways a request reaches a worker
 * (src/volume/worker-ring.ts): 4 KiB writes go through the shared ring,
 * snapshots (and writes too large for a slab, and writes past the slabs in
 * flight) are posted. Writes and snapshots called in one turn, or across a
 * few, must reach every partition in call order: each overall snapshot
 * holds exactly the writes called before its snapshot() call, on every
 * partition, and none called after.
 */

const BS = 4096;
/** A stripe unit larger than a slab, so a whole-unit write is posted, not put in the ring. */
const UNIT = 128 * 1024;
const PARTITIONS = 4;
const PARTITION_SIZE = 512 * 1024;
const SIZE = PARTITIONS * PARTITION_SIZE;
const BLOCKS = SIZE / BS;
const UNIT_BLOCKS = UNIT / BS;

type Step =
  | { readonly kind: 'write'; readonly block: number; readonly seed: number }
  | { readonly kind: 'unit'; readonly unit: number; readonly seed: number }
  | { readonly kind: 'snapshot' }
  | { readonly kind: 'microtask' }
  | { readonly kind: 'turn' };

const step: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 12,
    arbitrary: fc.record({
      kind: fc.constant('write' as const),
      block: fc.nat(BLOCKS - 1),
      seed: fc.nat(1000),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('unit' as const),
      unit: fc.nat(SIZE / UNIT - 1),
      seed: fc.nat(1000),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('snapshot' as const) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('microtask' as const) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('turn' as const) }) },
);

/** Up to 3 snapshots among up to 300 steps: past the 64 ring slabs a processor has in flight. */
const steps = fc.array(step, { minLength: 1, maxLength: 300 }).map((list) => {
  let snapshots = 0;
  return list.filter((s) => s.kind !== 'snapshot' || ++snapshots <= 3);
});

/** The blocks a step writes. */
function blocksOf(s: Step): number[] {
  if (s.kind === 'write') return [s.block];
  if (s.kind === 'unit')
    return Array.from({ length: UNIT_BLOCKS }, (_, k) => s.unit * UNIT_BLOCKS + k);
  return [];
}

/** `list` without writes that overlap an earlier one: writes in flight together may land in any order. */
function disjoint(list: readonly Step[]): Step[] {
  const used = new Set<number>();
  return list.filter((s) => {
    const blocks = blocksOf(s);
    if (blocks.some((b) => used.has(b))) return false;
    for (const b of blocks) used.add(b);
    return true;
  });
}

describe('VirtualVolume on 2 workers: ring writes and posted snapshots in call order', () => {
  let stopBundle: () => Promise<void>;
  let volume: VirtualVolume;
  let live: Uint8Array;
  beforeAll(async () => {
    stopBundle = await useBundledWorker();
    volume = await memorySpecVolume(
      {
        partitions: PARTITIONS,
        partitionSize: PARTITION_SIZE,
        stripeUnit: UNIT,
        storeSize: 8 << 20,
      },
      2,
    );
    live = pattern(SIZE, 1);
    await volume.write(0, live);
  });
  afterAll(async () => {
    await volume?.close();
    await stopBundle();
  });

  it('each overall snapshot holds exactly the writes called before it, on every partition', async () => {
    await fc.assert(
      fc.asyncProperty(steps, async (list) => {
        const pending: Promise<unknown>[] = [];
        const taken: { snapshot: Promise<Snapshot>; expected: Uint8Array }[] = [];
        for (const s of disjoint(list)) {
          if (s.kind === 'write' || s.kind === 'unit') {
            const data = pattern(blocksOf(s).length * BS, s.seed);
            const at = blocksOf(s)[0]! * BS;
            pending.push(volume.write(at, data));
            live.set(data, at);
          } else if (s.kind === 'snapshot') {
            const snapshot = volume.snapshot();
            pending.push(snapshot);
            taken.push({ snapshot, expected: live.slice() });
          } else if (s.kind === 'microtask') {
            await Promise.resolve();
          } else {
            await new Promise((resolve) => setImmediate(resolve));
          }
        }
        await Promise.all(pending);
        try {
          for (const [i, { snapshot, expected }] of taken.entries()) {
            expectBytes(`snapshot ${i}`, await (await snapshot).read(0, SIZE), expected);
          }
          expectBytes('live volume', await volume.read(0, SIZE), live);
        } finally {
          for (const { snapshot } of taken) {
            const snap = await snapshot;
            await snap.close();
            await volume.deleteSnapshot(snap.id);
          }
        }
      }),
      { numRuns: 40, seed: 0x17 },
    );
  }, 120_000);
});
