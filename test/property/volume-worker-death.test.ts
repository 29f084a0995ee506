import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectAllowed, expectBytes, pattern } from '../support/bytes.js';
import { assertProperty, SOAK_TIMEOUT, writeSoakReport } from '../support/soak.js';
import { fileVolume, useBundledWorker } from '../support/volume-rig.js';

/*
 * Worker death against a byte model: a VirtualVolume over files on 2
 * worker processors takes writes, flushes and overall snapshots; at random
 * points a processor dies (terminated, as an out-of-memory kill would) with
 * writes in flight, and restartProcessor brings it back. After every
 * restart every write acknowledged before the last flush or snapshot is
 * there, every other byte is old or one of the writes in flight, and every
 * overall snapshot is whole.
 */

const BS = 4096;
const UNIT = BS;
const PARTITIONS = 4;
const PARTITION_SIZE = 16 * BS;
const BLOCKS = (PARTITIONS * PARTITION_SIZE) / BS;

type Step =
  | { kind: 'write'; block: number; seed: number }
  | { kind: 'flush' }
  | { kind: 'snapshot' }
  | { kind: 'kill'; processor: number; inFlight: { block: number; seed: number }[] };

const write = fc.record({ block: fc.nat(BLOCKS - 1), seed: fc.nat(250) });
const step: fc.Arbitrary<Step> = fc.oneof(
  { weight: 4, arbitrary: write.map((w) => ({ kind: 'write' as const, ...w })) },
  { weight: 1, arbitrary: fc.constant({ kind: 'flush' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'snapshot' as const }) },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('kill' as const),
      processor: fc.nat(1),
      inFlight: fc.uniqueArray(write, { maxLength: 8, selector: (w) => w.block }),
    }),
  },
);

let stopBundle: () => Promise<void>;
beforeAll(async () => {
  stopBundle = await useBundledWorker();
});
afterAll(async () => {
  await stopBundle();
  writeSoakReport('volume-worker-death');
});

describe('VirtualVolume worker death against the model', () => {
  it(
    'keeps every flushed write and every snapshot whole through deaths and restarts',
    async () => {
      await assertProperty(
        'volume worker death',
        fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 12 }), async (steps) => {
          const { volume, cleanup } = await fileVolume(
            {
              partitions: PARTITIONS,
              partitionSize: PARTITION_SIZE,
              stripeUnit: UNIT,
              maxSnapshots: 8,
            },
            2,
          );
          volume.on('error', () => {});
          const size = volume.size;
          let live: Uint8Array = new Uint8Array(size);
          let durable: Uint8Array = new Uint8Array(size);
          let pending: { offset: number; data: Uint8Array }[] = [];
          const snapshots: { id: string; content: Uint8Array }[] = [];
          const settle = () => {
            durable = live.slice();
            pending = [];
          };
          try {
            for (const s of steps) {
              if (s.kind === 'write') {
                const data = pattern(BS, s.seed);
                await volume.write(s.block * BS, data);
                live.set(data, s.block * BS);
                pending.push({ offset: s.block * BS, data });
              } else if (s.kind === 'flush') {
                await volume.flush();
                settle();
              } else if (s.kind === 'snapshot') {
                if (snapshots.length >= 8) continue;
                const snap = await volume.snapshot();
                await snap.close();
                snapshots.push({ id: snap.id, content: live.slice() });
                settle();
              } else {
                const writes = s.inFlight.map((w) => ({
                  offset: w.block * BS,
                  data: pattern(BS, w.seed),
                }));
                const calls = writes.map((w) => volume.write(w.offset, w.data));
                await volume.crashProcessor(s.processor);
                await Promise.allSettled(calls);
                await volume.restartProcessor(s.processor);
                const actual = await volume.read(0, size);
                expectAllowed('after the restart', actual, durable, [...pending, ...writes]);
                live = actual;
                // What the restart found is on the stores now; a flush makes it the floor.
                await volume.flush();
                settle();
              }
            }
            expectBytes('live', await volume.read(0, size), live);
            expect(volume.listSnapshots().map((x) => x.id)).toEqual(snapshots.map((x) => x.id));
            for (const snap of snapshots) {
              const handle = await volume.openSnapshot(snap.id);
              expectBytes(`snapshot ${snap.id}`, await handle.read(0, size), snap.content);
              await handle.close();
            }
            await volume.close();
          } finally {
            await volume.close().catch(() => {});
            await cleanup();
          }
        }),
        { numRuns: 25, soakRuns: 500, seed: 0xdead01 },
      );
    },
    SOAK_TIMEOUT ?? 60_000,
  );
});
