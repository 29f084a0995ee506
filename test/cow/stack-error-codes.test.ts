import { describe, expect, it } from 'vitest';
import {
  BlockDeviceError,
  CowSnapshotDevice,
  JournalDevice,
  MemoryDevice,
} from '../../src/index.js';
import { FaultyDevice } from '../../src/testing/index.js';
import { fill } from '../support/bytes.js';
import { expectCode } from '../support/error-code.js';

/*
 * A lower blocksnap layer's ENOSPC, ECORRUPT and EROFS reach the top of a
 * stack with their code, the lower error kept as `cause`; a foreign
 * device's failure is EIO (src/errors.ts wrapIO).
 */

const BS = 512;

/** A CowSnapshotDevice over memory with a store that has room for `chunks` preserved blocks, more or less. */
async function cowOver(origin: MemoryDevice | FaultyDevice, storeBytes: number) {
  const store = await MemoryDevice.create({ size: storeBytes, blockSize: BS });
  return { store, device: await CowSnapshotDevice.create(origin, store, { maxSnapshots: 4 }) };
}

/** The chain of causes of `err`, outermost first. */
function causes(err: unknown): unknown[] {
  const out: unknown[] = [];
  for (let e = err; e !== undefined; e = (e as { cause?: unknown }).cause) out.push(e);
  return out;
}

describe('error codes through a stack', () => {
  it('ENOSPC of a lower COW layer is ENOSPC at the COW device over it', async () => {
    const disk = await MemoryDevice.create({ size: 256 * BS, blockSize: BS });
    const lower = await cowOver(disk, 40 * 1024);
    // A snapshot of the lower device, taken before the upper one owns it.
    await lower.device.snapshot();
    const upperStore = await MemoryDevice.create({ size: 64 * 1024, blockSize: BS });
    // The upper device's origin is the lower COW device.
    const top = await CowSnapshotDevice.create(lower.device, upperStore, { maxSnapshots: 4 });
    const err = await expectCode(top.write(0, fill(256 * BS, 7)), 'ENOSPC');
    expect(causes(err).some((e) => BlockDeviceError.is(e, 'ENOSPC') && e !== err)).toBe(true);
    await top.close();
  });

  it('ECORRUPT of a lower COW layer is ECORRUPT at a JournalDevice over it', async () => {
    const disk = await MemoryDevice.create({ size: 64 * BS, blockSize: BS });
    const { store, device: cow } = await cowOver(disk, 256 * 1024);
    const journalStore = await MemoryDevice.create({ size: 8192 + 64 * 1024, blockSize: BS });
    const journal = await JournalDevice.create(cow, journalStore, { maxSnapshots: 4 });
    await journal.write(0, fill(BS, 1));
    await journal.checkpoint();
    const snap = await journal.snapshot();
    await journal.write(0, fill(BS, 2));
    await journal.checkpoint(); // materializes the snapshot, preserving block 0 in the COW store
    const bytes = await store.read(0, store.size);
    const at = Buffer.from(bytes).indexOf(Buffer.alloc(BS, 1));
    expect(at).toBeGreaterThan(0);
    // Damage through another handle on the memory: the COW device owns `store`.
    await store.reopen().write(at + 5, Uint8Array.of(0xfe));
    await expectCode(snap.read(0, BS), 'ECORRUPT');
    await journal.close();
  });

  it('a foreign device failure stays EIO, its error the cause', async () => {
    const disk = new FaultyDevice(await MemoryDevice.create({ size: 64 * BS, blockSize: BS }));
    const { device } = await cowOver(disk, 64 * 1024);
    disk.failNext('write');
    const err = await expectCode(device.write(0, fill(BS, 3)), 'EIO');
    expect(causes(err).length).toBeGreaterThan(1);
    await device.close();
  });
});
