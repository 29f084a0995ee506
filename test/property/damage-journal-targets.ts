import { CowSnapshotDevice, JournalDevice, type MemoryDevice } from '../../src/index.js';
import { catalogSlotBytes, RING_START } from '../../src/journal/index.js';
import { imagesOf, memory, memoryOf, recordedStore, runMix } from './damage-cow-targets.js';
import type { DamageTarget, Durability, Rng, Workload } from './damage-harness.js';
import { cowRegion, journalRegion } from './damage-regions.js';
import { MAX_SNAPSHOTS, SIZE, SnapshotWorkload } from './damage-workload.js';

/** A ring of 12 KiB: a few writes fill it, so checkpoints and wrap-around come up often. */
const RING = 12 * 1024;
const COW_STORE = 256 * 1024;

/**
 * Journal devices: `checkpointAt: 1` runs checkpoints only when asked or
 * when the ring is full (inside the write that found it full), so every
 * checkpoint is over when the workload makes its state durable.
 */
const OPTIONS = { checkpointAt: 1 };

/** JournalDevice over a memory production device: only the journal store is damaged. */
export const journalDamageTarget: DamageTarget = {
  name: 'JournalDevice over MemoryDevice',
  async run(rng: Rng, mode: Durability): Promise<Workload> {
    const production = await memory(SIZE);
    const journal = await recordedStore(RING_START + RING);
    const device = await JournalDevice.create(production, journal, OPTIONS);
    const work = new SnapshotWorkload(rng, device, []);
    await runMix(work, mode, async () => {
      work.steps.push('checkpoint');
      await device.checkpoint();
    });
    return {
      images: await imagesOf({ production, journal: memoryOf(journal) }),
      stores: { journal },
      steps: work.steps,
      region: (_store, image, offset) => journalRegion(image, offset),
      async verify(images, verdict) {
        const reopened = await verdict.open('open', () =>
          JournalDevice.open(images.production as MemoryDevice, images.journal as MemoryDevice),
        );
        try {
          await work.verify(verdict, reopened, []);
        } finally {
          await reopened.close().catch(() => {});
        }
      },
    };
  },
};

/**
 * JournalDevice over a CowSnapshotDevice over memory, the typical stack:
 * journal snapshots (materialized by checkpoints into COW snapshots),
 * their writes and deletes. Both stores are damaged, the raw origin is not.
 */
export const journalOverCowDamageTarget: DamageTarget = {
  name: 'JournalDevice over CowSnapshotDevice',
  async run(rng: Rng, mode: Durability): Promise<Workload> {
    const origin = await memory(SIZE);
    const cowStore = await recordedStore(COW_STORE);
    const journal = await recordedStore(RING_START + RING + 2 * catalogSlotBytes(MAX_SNAPSHOTS));
    const cow = await CowSnapshotDevice.create(origin, cowStore, {
      maxSnapshots: 2 * MAX_SNAPSHOTS,
    });
    const device = await JournalDevice.create(cow, journal, {
      ...OPTIONS,
      maxSnapshots: MAX_SNAPSHOTS,
    });
    const work = new SnapshotWorkload(rng, device, [{ name: 'journal', device, selective: false }]);
    await runMix(work, mode, async () => {
      work.steps.push('checkpoint');
      await device.checkpoint();
    });
    return {
      images: await imagesOf({ origin, cowStore: memoryOf(cowStore), journal: memoryOf(journal) }),
      stores: { cowStore, journal },
      steps: work.steps,
      region: (store, image, offset) =>
        store === 'journal' ? journalRegion(image, offset) : cowRegion(image, offset),
      async verify(images, verdict) {
        const reCow = await verdict.open('open COW', () =>
          CowSnapshotDevice.open(images.origin as MemoryDevice, images.cowStore as MemoryDevice),
        );
        try {
          const reopened = await verdict.open('open journal', () =>
            JournalDevice.open(reCow, images.journal as MemoryDevice),
          );
          await work.verify(verdict, reopened, [{ name: 'journal', device: reopened }]);
          await reopened.close().catch(() => {});
        } finally {
          await reCow.close().catch(() => {});
        }
      },
    };
  },
};
