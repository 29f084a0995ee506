import {
  type BlockDevice,
  CowSnapshotDevice,
  MemoryDevice,
  SelectiveSnapshotDevice,
} from '../../src/index.js';
import { RecordingDevice } from '../support/recording-device.js';
import type { DamageTarget, Durability, Rng, Workload } from './damage-harness.js';
import { cowRegion } from './damage-regions.js';
import {
  BS,
  MAX_SNAPSHOTS,
  SIZE,
  type SnapshotDevice,
  type SnapshotLayer,
  SnapshotWorkload,
} from './damage-workload.js';

/** COW store size: room for every block of every snapshot, and a log that fills (checkpoints happen). */
const COW_STORE = 256 * 1024;

/** A fresh memory device of `size` bytes. */
export function memory(size: number): Promise<MemoryDevice> {
  return MemoryDevice.create({ size, blockSize: BS });
}

/** A recorded store over fresh memory. */
export async function recordedStore(size: number): Promise<RecordingDevice> {
  return new RecordingDevice(await memory(size));
}

/** The memory under a recorded store. */
export function memoryOf(store: RecordingDevice): MemoryDevice {
  return store.inner as MemoryDevice;
}

/**
 * Runs a random mix of operations (writes to the top, snapshots read-only
 * and writable, their writes, deletes, flushes) and makes it durable by
 * `mode`: `close()`, or `flush()` and then nothing more (the objects are
 * dropped, as when the process dies). `extra` is one more kind of step
 * (a journal's checkpoint), as likely as a flush.
 */
export async function runMix(
  work: SnapshotWorkload,
  mode: Durability,
  extra?: () => Promise<void>,
): Promise<void> {
  await runSteps(work, extra);
  if (mode === 'close') {
    work.steps.push('close');
    await work.top.close();
  } else {
    work.steps.push('flush, then the process dies');
    await work.top.flush();
  }
}

/** 6 to 35 random steps of `work`: writes, snapshots, snapshot writes, deletes, flushes. */
async function runSteps(work: SnapshotWorkload, extra?: () => Promise<void>): Promise<void> {
  const count = 6 + work.rng.int(30);
  for (let i = 0; i < count; i++) {
    const r = work.rng.int(100);
    if (r < 40) await work.write();
    else if (r < 55) await work.snapshot();
    else if (r < 70) await work.writeSnapshot();
    else if (r < 78) await work.delete();
    else if (r < 86 || extra === undefined) await work.flush();
    else await extra();
  }
}

/** Copies of `devices`' memory, taken at one instant (what the process left). */
export async function imagesOf(devices: Record<string, MemoryDevice>) {
  const out: Record<string, MemoryDevice> = {};
  for (const [name, device] of Object.entries(devices)) out[name] = await device.clone();
  return out;
}

/** CowSnapshotDevice or SelectiveSnapshotDevice over memory: only the COW store is damaged. */
function cowTarget(selective: boolean): DamageTarget {
  const create = (origin: BlockDevice, store: BlockDevice): Promise<SnapshotDevice> =>
    selective
      ? SelectiveSnapshotDevice.create(origin, store, {
          maxSnapshots: MAX_SNAPSHOTS,
          excludedReads: 'zero',
        })
      : CowSnapshotDevice.create(origin, store, { maxSnapshots: MAX_SNAPSHOTS });
  const open = (origin: BlockDevice, store: BlockDevice): Promise<SnapshotDevice> =>
    selective
      ? SelectiveSnapshotDevice.open(origin, store, { excludedReads: 'zero' })
      : CowSnapshotDevice.open(origin, store);
  return {
    name: selective ? 'SelectiveSnapshotDevice' : 'CowSnapshotDevice',
    async run(rng: Rng, mode: Durability): Promise<Workload> {
      const origin = await memory(SIZE);
      const store = await recordedStore(COW_STORE);
      const device = await create(origin, store);
      const layer: SnapshotLayer = { name: 'cow', device, selective };
      const work = new SnapshotWorkload(rng, device, [layer]);
      await runMix(work, mode);
      return {
        images: await imagesOf({ origin, store: memoryOf(store) }),
        stores: { store },
        steps: work.steps,
        region: (_store, image, offset) => cowRegion(image, offset),
        async verify(images, verdict) {
          const reopened = await verdict.open('open', () =>
            open(images.origin as MemoryDevice, images.store as MemoryDevice),
          );
          try {
            await work.verify(verdict, reopened, [{ name: 'cow', device: reopened }]);
          } finally {
            await reopened.close().catch(() => {});
          }
        },
      };
    },
  };
}

export const cowDamageTarget = cowTarget(false);
export const selectiveDamageTarget = cowTarget(true);

/**
 * A CowSnapshotDevice whose origin is another CowSnapshotDevice: snapshots
 * on both layers — the inner one's taken before the outer one is stacked on
 * it and owns it (it then refuses a snapshot called directly), written
 * through their handles after — both COW stores are damaged, the raw origin
 * is not.
 */
export const cowOverCowDamageTarget: DamageTarget = {
  name: 'COW over COW',
  async run(rng: Rng, mode: Durability): Promise<Workload> {
    const origin = await memory(SIZE);
    const innerStore = await recordedStore(COW_STORE);
    const outerStore = await recordedStore(COW_STORE);
    const inner = await CowSnapshotDevice.create(origin, innerStore, {
      maxSnapshots: MAX_SNAPSHOTS,
    });
    const alone = new SnapshotWorkload(rng, inner, [
      { name: 'inner', device: inner, selective: false },
    ]);
    await runSteps(alone);
    const outer = await CowSnapshotDevice.create(inner, outerStore, {
      maxSnapshots: MAX_SNAPSHOTS,
    });
    const work = alone.stackedOn(outer, [{ name: 'outer', device: outer, selective: false }]);
    await runMix(work, mode);
    return {
      images: await imagesOf({
        origin,
        innerStore: memoryOf(innerStore),
        outerStore: memoryOf(outerStore),
      }),
      stores: { innerStore, outerStore },
      steps: work.steps,
      region: (_store, image, offset) => cowRegion(image, offset),
      async verify(images, verdict) {
        const reInner = await verdict.open('open inner', () =>
          CowSnapshotDevice.open(images.origin as MemoryDevice, images.innerStore as MemoryDevice),
        );
        try {
          const reOuter = await verdict.open('open outer', () =>
            CowSnapshotDevice.open(reInner, images.outerStore as MemoryDevice),
          );
          await work.verify(verdict, reOuter, [
            { name: 'outer', device: reOuter },
            { name: 'inner', device: reInner },
          ]);
          await reOuter.close().catch(() => {});
        } finally {
          await reInner.close().catch(() => {});
        }
      },
    };
  },
};

export { BS };
