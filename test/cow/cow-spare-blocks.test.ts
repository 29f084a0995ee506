import { setImmediate as nextTurn } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { WRITE_NOW, WRITE_OWNED } from '../../src/base/owned-io.js';
import { CowSnapshotDevice, MemoryDevice } from '../../src/index.js';

/*
 * A COW device reuses block buffers for its first writes' data
 * (src/cow/spare-blocks.ts): the old block read from the origin, and the
 * private copy `write` takes of the new one. A buffer given back before the
 * write it went to has used it would be overwritten by the next first write
 * while still on its way down. Here both devices below take their data
 * uncopied and late — by WRITE_OWNED, copied only a few turns later, which
 * that fast path allows — so such a buffer would show up as another
 * block's bytes on the origin or in the snapshot.
 */

const BS = 4096;
const BLOCKS = 64;

/** `device`'s WRITE_OWNED holds the caller's buffers and copies them only a few turns later. */
function lateOwnedWrites(device: MemoryDevice): void {
  // Its WRITE_NOW copies at once; the write() of a device a layer owns would refuse, that late.
  const copyNow = device[WRITE_NOW].bind(device);
  Object.assign(device, {
    [WRITE_OWNED]: async (offset: number, blocks: readonly Uint8Array[]): Promise<void> => {
      for (let i = 0; i < 3; i++) await nextTurn();
      let at = offset;
      for (const block of blocks) {
        copyNow(at, block);
        at += block.length;
      }
    },
  });
}

/** Block `block`'s bytes in generation `generation`: every byte tells which. */
function content(block: number, generation: number): Uint8Array {
  const data = new Uint8Array(BS);
  for (let i = 0; i < BS; i += 4) {
    data[i] = block & 0xff;
    data[i + 1] = block >> 8;
    data[i + 2] = generation;
    data[i + 3] = i & 0xff;
  }
  return data;
}

describe('CowSnapshotDevice first writes reusing block buffers', () => {
  it('write what each caller wrote and preserve what each block held, wave after wave', async () => {
    const origin = await MemoryDevice.create({ size: BLOCKS * BS, blockSize: BS });
    for (let b = 0; b < BLOCKS; b++) await origin.write(b * BS, content(b, 0));
    const store = await MemoryDevice.create({ size: 4 << 20, blockSize: BS });
    lateOwnedWrites(origin);
    lateOwnedWrites(store);
    // No WRITE_NOW: the commit's data goes down by the late WRITE_OWNED above.
    Object.assign(store, { [WRITE_NOW]: undefined });
    const cow = await CowSnapshotDevice.create(origin, store, { maxSnapshots: 4 });
    const snapshots = [];
    for (let generation = 1; generation <= 3; generation++) {
      snapshots.push(await cow.snapshot());
      // Eight writers, each with one buffer it changes as soon as write()
      // returns, each starting its next first write while the others' are
      // still on their way down.
      const blocks: number[] = [];
      for (let b = generation % 2; b < BLOCKS; b += 2) blocks.push(b);
      await Promise.all(
        Array.from({ length: 8 }, async () => {
          const buffer = new Uint8Array(BS);
          for (let b = blocks.pop(); b !== undefined; b = blocks.pop()) {
            buffer.set(content(b, generation));
            const written = cow.write(b * BS, buffer);
            buffer.fill(0xee);
            await written;
          }
        }),
      );
    }
    for (let b = 0; b < BLOCKS; b++) {
      const last = b % 2 === 1 ? 3 : 2;
      expect(await cow.read(b * BS, BS), `block ${b}`).toEqual(content(b, last));
      for (let s = 0; s < 3; s++) {
        // Snapshot s+1 sees the newest generation written before it.
        const seen = b % 2 === 1 ? (s >= 1 ? 1 : 0) : s >= 2 ? 2 : 0;
        expect(await snapshots[s]!.read(b * BS, BS), `block ${b} in snapshot ${s + 1}`).toEqual(
          content(b, seen),
        );
      }
    }
    expect((await cow.check()).problems).toEqual([]);
    await cow.close();
  });
});
