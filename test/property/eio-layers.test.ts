import { afterAll, describe, it } from 'vitest';
import { runMatrix, writeInjectionReport } from './eio-harness.js';
import { COPY_JOB_STACK, SNAPSHOT_STACKS } from './eio-stacks.js';

const SOAK = process.env.BLOCKSNAP_SOAK === '1';
/** CI runs these workloads; the soak draws fresh ones and prints them, so a failure can be replayed. */
const SEEDS = SOAK ? Array.from({ length: 6 }, () => Math.floor(Math.random() * 2 ** 31)) : [1, 2];
if (SOAK) console.log(`eio-layers seeds: ${SEEDS.join(', ')}`);

const injections = new Map<string, number>();

afterAll(() => writeInjectionReport('eio-layers', injections));

/*
 * Issue 15 item 4: a FaultyDevice under each layer of each stack fails one
 * read, write or flush at every I/O position of a short seeded workload
 * (writes, some concurrent and overlapping, reads, flushes, reads through
 * snapshot handles and writes through a writable snapshot, all taken in a
 * setup phase without faults). snapshot(), deleteSnapshot() and restore()
 * stay out of the fault window: how they fail under EIO is issue 20's.
 */
describe('EIO at every layer', () => {
  for (const stack of [...SNAPSHOT_STACKS, COPY_JOB_STACK]) {
    it.each(SEEDS)(
      `${stack.name}: every failing read, write or flush under ${Object.keys(stack.layers).join(', ')} (seed %i)`,
      async (seed) => {
        for (const [layer, n] of await runMatrix(stack, seed)) {
          injections.set(layer, (injections.get(layer) ?? 0) + n);
        }
      },
    );
  }
});
