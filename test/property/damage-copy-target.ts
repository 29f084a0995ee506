import { type MemoryDevice, SnapshotCopyJob } from '../../src/index.js';
import { imagesOf, memory, memoryOf, recordedStore } from './damage-cow-targets.js';
import type { DamageTarget, Durability, Rng, Verdict, Workload } from './damage-harness.js';
import { BS, SIZE } from './damage-workload.js';

/** Names the copy map slot at a map store offset. */
function mapRegion(offset: number, slotBytes: number): string {
  return `map slot ${Math.floor(offset / slotBytes)}`;
}

/**
 * SnapshotCopyJob with a map store: the job copies the whole source while
 * the workload writes through `job.device`; `close` lets the copy finish
 * (and the application goes on writing through `job.device`, straight to
 * the source), `flush` ends the process mid-copy. Only the map store is
 * damaged: the source is the application's raw device, and the destination
 * is a plain copy, checked against the model after the resumed job ends.
 */
export const copyMapDamageTarget: DamageTarget = {
  name: 'SnapshotCopyJob map store',
  async run(rng: Rng, mode: Durability): Promise<Workload> {
    const chunkSize = rng.pick([512, 1024, 2048]);
    const conflictPolicy = rng.pick(['copy-first', 'queue'] as const);
    const source = await memory(SIZE);
    const initial = rng.bytes(SIZE);
    await source.write(0, initial);
    const destination = await memory(SIZE);
    const geometry = { source, destination, chunkSize, conflictPolicy };
    const mapBytes = Math.ceil(SnapshotCopyJob.mapStoreBytes(geometry) / BS) * BS;
    const mapStore = await recordedStore(mapBytes);
    const steps = [`start(chunk ${chunkSize}, ${conflictPolicy})`];
    const abort = new AbortController();
    const job = await SnapshotCopyJob.start({ ...geometry, mapStore, signal: abort.signal });
    const writes = rng.int(8);
    for (let i = 0; i < writes; i++) {
      const offset = rng.int(SIZE - 1);
      const data = rng.bytes(1 + rng.int(Math.min(2 * BS, SIZE - offset)));
      steps.push(`job.device.write(${offset}, ${data.length})`);
      await job.device.write(offset, data);
    }
    let images: Record<string, MemoryDevice>;
    if (mode === 'close') {
      steps.push('done');
      await job.done;
      // The copy is complete: later writes reach the source, which no
      // longer matches the snapshot the map describes.
      for (let i = 0; i < 3; i++) {
        const offset = rng.int(SIZE - BS);
        steps.push(`job.device.write(${offset}, ${BS})`);
        await job.device.write(offset, rng.bytes(BS));
      }
      images = await imagesOf({ source, destination, mapStore: memoryOf(mapStore) });
    } else {
      steps.push('the process dies mid-copy');
      images = await imagesOf({ source, destination, mapStore: memoryOf(mapStore) });
      abort.abort();
      await job.done.catch(() => {});
    }
    return {
      images,
      stores: { mapStore },
      steps,
      region: async (_store, _image, offset) => mapRegion(offset, mapBytes / 2),
      async verify(copies: Record<string, MemoryDevice>, verdict: Verdict) {
        const dest = copies.destination as MemoryDevice;
        const resumed = await verdict.open('resume', () =>
          SnapshotCopyJob.resume({
            ...geometry,
            source: copies.source as MemoryDevice,
            destination: dest,
            mapStore: copies.mapStore as MemoryDevice,
          }),
        );
        await verdict.read(
          'destination',
          async () => {
            await resumed.done;
            return dest.read(0, SIZE);
          },
          initial,
        );
      },
    };
  },
};
