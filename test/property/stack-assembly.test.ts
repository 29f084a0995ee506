import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type BlockDevice,
  BlockDeviceError,
  CowSnapshotDevice,
  JournalDevice,
  MemoryDevice,
  SelectiveSnapshotDevice,
} from '../../src/index.js';
import { expectBytes } from '../support/bytes.js';
import { assertProperty } from '../support/soak.js';

/*
 * Issue 21, "done when": random stacks of COW, selective and journal layers
 * over one origin, assembled right and then misused every way the issue
 * lists — a write or snapshot operation around an owner, a second layer on
 * an owned device, a create over an existing store, an open of the stack
 * with a layer left out, stores swapped or the wrong kind of layer. Every
 * misuse must be refused with its code and change no byte on any disk;
 * every valid use (writes through the top, close, reopen as created) must
 * match a byte model.
 */

const BS = 512;
const SIZE = 32 * BS;
const STORE = 256 * 1024;

type Kind = 'cow' | 'selective' | 'journal';

function create(kind: Kind, below: BlockDevice, store: BlockDevice): Promise<BlockDevice> {
  switch (kind) {
    case 'cow':
      return CowSnapshotDevice.create(below, store, { maxSnapshots: 4 });
    case 'selective':
      return SelectiveSnapshotDevice.create(below, store, { maxSnapshots: 4, maxRuns: 8 });
    case 'journal':
      return JournalDevice.create(below, store, { maxSnapshots: 4, checkpointAt: 0.5 });
  }
}

function open(kind: Kind, below: BlockDevice, store: BlockDevice): Promise<BlockDevice> {
  switch (kind) {
    case 'cow':
      return CowSnapshotDevice.open(below, store);
    case 'selective':
      return SelectiveSnapshotDevice.open(below, store);
    case 'journal':
      return JournalDevice.open(below, store);
  }
}

/** Opens `kinds` over fresh handles on `origin` and `stores`, bottom up; every device of the stack. */
async function openStack(
  kinds: readonly Kind[],
  origin: MemoryDevice,
  stores: readonly MemoryDevice[],
): Promise<BlockDevice[]> {
  const devices: BlockDevice[] = [origin.reopen()];
  for (let i = 0; i < kinds.length; i++) {
    devices.push(await open(kinds[i]!, devices[i]!, stores[i]!.reopen()));
  }
  return devices;
}

async function images(disks: readonly MemoryDevice[]): Promise<Uint8Array[]> {
  return Promise.all(disks.map((d) => d.reopen().read(0, d.size)));
}

function code(err: unknown): string {
  return BlockDeviceError.is(err) ? err.code : String(err);
}

/** A wrong way to open the stack, as a list of (kind, store index) bottom up. */
const wrongOpen = fc.oneof(
  fc.record({ how: fc.constant('leave a layer out' as const), at: fc.nat() }),
  fc.record({ how: fc.constant('swap two stores' as const), at: fc.nat() }),
  fc.record({
    how: fc.constant('wrong kind of layer' as const),
    at: fc.nat(),
    kind: fc.constantFrom<Kind>('cow', 'selective', 'journal'),
  }),
);

describe('stacks assembled at random, and misused', () => {
  it('refuses every misuse without changing a byte, and matches the model otherwise', async () => {
    let misuses = 0;
    await assertProperty(
      'stack assembly',
      fc.asyncProperty(
        fc.array(fc.constantFrom<Kind>('cow', 'selective', 'journal'), {
          minLength: 1,
          maxLength: 3,
        }),
        fc.array(fc.tuple(fc.nat(SIZE - 1), fc.integer({ min: 1, max: 3 * BS }), fc.nat(250)), {
          maxLength: 8,
        }),
        wrongOpen,
        async (kinds, writes, wrong) => {
          const origin = await MemoryDevice.create({ size: SIZE, blockSize: BS });
          const stores = await Promise.all(
            kinds.map(() => MemoryDevice.create({ size: STORE, blockSize: BS })),
          );
          const disks = [origin, ...stores];
          const model = new Uint8Array(SIZE);
          const devices: BlockDevice[] = [origin];
          for (let i = 0; i < kinds.length; i++) {
            devices.push(await create(kinds[i]!, devices[i]!, stores[i]!));
          }
          const top = devices[devices.length - 1]!;
          for (const [offset, len, seed] of writes) {
            const data = new Uint8Array(Math.min(len, SIZE - offset)).fill(seed + 1);
            await top.write(offset, data);
            model.set(data, offset);
          }
          await top.flush();
          let before = await images(disks);

          // Around an owner: every device under the top, and every store.
          for (const owned of [...devices.slice(0, -1), ...stores]) {
            misuses++;
            expect(code(await owned.write(0, new Uint8Array(BS)).catch((e) => e))).toBe('EBUSY');
            const snapshots = owned as Partial<CowSnapshotDevice>;
            if (typeof snapshots.snapshot === 'function') {
              misuses++;
              expect(code(await snapshots.snapshot().catch((e) => e))).toBe('EBUSY');
            }
          }
          // A second layer on a device the stack owns, a create over a store.
          const spare = () => MemoryDevice.create({ size: STORE, blockSize: BS });
          misuses++;
          expect(code(await create('cow', devices[0]!, await spare()).catch((e) => e))).toBe(
            'EBUSY',
          );
          for (const store of stores) {
            misuses++;
            const below = await MemoryDevice.create({ size: SIZE, blockSize: BS });
            const again = create(kinds[0]!, below, store.reopen());
            expect(code(await again.catch((e) => e))).toBe('EBUSY');
          }
          const after = await images(disks);
          for (let i = 0; i < disks.length; i++) {
            expectBytes(`misuse of an open stack: disk ${i}`, after[i]!, before[i]!);
          }
          expectBytes('the top', await top.read(0, SIZE), model);
          await top.close();
          before = await images(disks);

          // Open it wrong: refused, nothing written.
          const plan = kinds.map((kind, i) => ({ kind, store: i }));
          let wrongPlan: { kind: Kind; store: number }[] | undefined;
          if (wrong.how === 'leave a layer out' && kinds.length > 1) {
            const at = wrong.at % kinds.length;
            // Leaving out the top layer leaves a valid stack: leave out another.
            const drop = at === kinds.length - 1 ? 0 : at;
            wrongPlan = plan.filter((_, i) => i !== drop);
          } else if (wrong.how === 'swap two stores' && kinds.length > 1) {
            const a = wrong.at % (kinds.length - 1);
            wrongPlan = plan.map((p, i) =>
              i === a ? { ...p, store: a + 1 } : i === a + 1 ? { ...p, store: a } : p,
            );
          } else if (wrong.how === 'wrong kind of layer') {
            const at = wrong.at % kinds.length;
            if (wrong.kind !== kinds[at]) {
              wrongPlan = plan.map((p, i) => (i === at ? { ...p, kind: wrong.kind } : p));
            }
          }
          if (wrongPlan !== undefined) {
            misuses++;
            const opened: BlockDevice[] = [origin.reopen()];
            let refused: unknown;
            let failedAt = 0;
            try {
              for (const p of wrongPlan) {
                const below = opened[opened.length - 1]!;
                opened.push(await open(p.kind, below, stores[p.store]!.reopen()));
                failedAt++;
              }
            } catch (err) {
              refused = err;
            }
            expect(['EINVAL', 'ECORRUPT'], `${wrong.how}: ${code(refused)}`).toContain(
              code(refused),
            );
            // The layer that refused wrote nothing to its store, nor (at the
            // bottom) to the origin; the right layers under it opened as usual.
            const after = await images(disks);
            const store = wrongPlan[failedAt]!.store + 1;
            expectBytes(`${wrong.how}: the refusing layer's store`, after[store]!, before[store]!);
            if (failedAt === 0) expectBytes(`${wrong.how}: origin`, after[0]!, before[0]!);
            if (opened.length > 1) await opened[opened.length - 1]!.close();
          }

          // Opened as created: the writes are all there.
          const reopened = await openStack(kinds, origin, stores);
          const again = reopened[reopened.length - 1]!;
          expectBytes(`${kinds.join(' over ')}: after reopen`, await again.read(0, SIZE), model);
          await again.close();
        },
      ),
      { numRuns: 200, soakRuns: 2000, seed: 0x5a7c },
    );
    expect(misuses).toBeGreaterThan(300);
  });
});
