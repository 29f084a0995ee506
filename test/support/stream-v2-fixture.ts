import { CowSnapshotDevice, MemoryDevice } from '../../src/index.js';
import { seededBytes } from './bytes.js';

/**
 * The device the version-2 stream fixtures in test/fixtures/stream-v2/ were
 * exported from (by blocksnap at a2fda24, the last commit writing version 2):
 * 256 KiB in 4 KiB blocks; snapshot A holds data at [0, 40 KiB) and
 * [128 KiB, 136 KiB), zeros elsewhere; snapshot B is A with [100 KiB,
 * 120 KiB) written and [0, 8 KiB) zeroed. `full.bin` is A's full stream,
 * `incremental.bin` the stream from A to B. Kept so that the reader of
 * every later version is shown to apply them.
 */
export const V2_FIXTURE = { size: 256 * 1024, blockSize: 4096 } as const;

/** Builds that device; returns it with the ids of A and B and their content. */
export async function v2FixtureDevice() {
  const { size, blockSize } = V2_FIXTURE;
  const cow = await CowSnapshotDevice.create(
    await MemoryDevice.create({ size, blockSize }),
    await MemoryDevice.create({ size: 4 * size, blockSize }),
    { maxSnapshots: 4 },
  );
  await cow.write(0, seededBytes(40 * 1024, 21));
  await cow.write(128 * 1024, seededBytes(8 * 1024, 22));
  const a = await cow.snapshot({ name: 'A' });
  await cow.write(100 * 1024, seededBytes(20 * 1024, 23));
  await cow.write(0, new Uint8Array(8 * 1024));
  const b = await cow.snapshot({ name: 'B' });
  return {
    cow,
    a: a.id,
    b: b.id,
    aContent: await a.read(0, size),
    bContent: await b.read(0, size),
  };
}
