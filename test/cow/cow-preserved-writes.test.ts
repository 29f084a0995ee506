import { describe, expect, it } from 'vitest';
import { CowSnapshotDevice, MemoryDevice } from '../../src/index.js';
import { expectBytes, fill, pattern } from '../support/bytes.js';
import { GatedDevice } from '../support/gated-device.js';
import { WriteSpyDevice } from '../support/write-spy-device.js';

/*
 * A write whose blocks every live snapshot has already preserved needs no
 * copy-on-write: it goes straight to the origin, with no block lock
 * (src/cow/cow-device-base.ts `#nothingToPreserve`). It must still never
 * overtake a locked write of the same blocks, and a write called after
 * snapshot() must still be preserved for that snapshot (rule 1).
 */

const BS = 4096;
const BLOCKS = 16;

async function rig() {
  const origin = new WriteSpyDevice(
    await MemoryDevice.create({ size: BLOCKS * BS, blockSize: BS }),
  );
  const store = new GatedDevice(await MemoryDevice.create({ size: 2 << 20, blockSize: BS }));
  const cow = await CowSnapshotDevice.create(origin, store, { maxSnapshots: 4 });
  const old = pattern(BLOCKS * BS, 1);
  await cow.write(0, old);
  return { cow, origin, store, old };
}

describe('COW writes to blocks already preserved', () => {
  it('go straight to the origin with the caller’s buffer, and the snapshot keeps its copy', async () => {
    const { cow, origin, old } = await rig();
    const snap = await cow.snapshot();
    await cow.write(2 * BS, fill(BS, 0xa1));
    expect(cow.preservedBlocks).toBe(1);
    const again = fill(BS, 0xa2);
    await cow.write(2 * BS, again);
    // Not the private copy a locked, preserving write hands down.
    expect(origin.written.at(-1)).toBe(again);
    expect(cow.preservedBlocks).toBe(1);
    expectBytes('snapshot', await snap.read(0, BLOCKS * BS), old);
    expectBytes('live block', await cow.read(2 * BS, BS), again);
    await cow.close();
  });

  it('are preserved again for a snapshot called before them, in the same turn', async () => {
    const { cow, old } = await rig();
    const first = await cow.snapshot();
    const d1 = fill(BS, 0xb1);
    await cow.write(5 * BS, d1);
    // Block 5 has its copy for `first`: the write after this snapshot() call must still be preserved for `second`.
    const taking = cow.snapshot();
    const d2 = fill(BS, 0xb2);
    const writing = cow.write(5 * BS, d2);
    const [second] = await Promise.all([taking, writing]);
    expect(cow.preservedBlocks).toBe(2);
    expectBytes('first', await first.read(5 * BS, BS), old.subarray(5 * BS, 6 * BS));
    expectBytes('second', await second.read(5 * BS, BS), d1);
    expectBytes('live', await cow.read(5 * BS, BS), d2);
    await cow.close();
  });

  it('wait behind a locked write of the same block instead of overtaking it', async () => {
    const { cow, store } = await rig();
    await cow.snapshot();
    await cow.write(3 * BS, fill(BS, 0xc0));
    // Blocks 3 (preserved) and 4 (not): the write locks both and preserves 4; its store write is held.
    const held = store.gate('write');
    const earlier = cow.write(3 * BS, fill(2 * BS, 0xc1));
    await held.reached;
    const later = cow.write(3 * BS, fill(BS, 0xc2));
    await new Promise((resolve) => setImmediate(resolve));
    held.open();
    await Promise.all([earlier, later]);
    expectBytes('block 3: the later write', await cow.read(3 * BS, BS), fill(BS, 0xc2));
    expectBytes('block 4', await cow.read(4 * BS, BS), fill(BS, 0xc1));
    await cow.close();
  });
});
