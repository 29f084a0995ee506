import { describe, expect, it } from 'vitest';
import { type OwnedIO, WRITE_OWNED } from '../../src/base/owned-io.js';
import { CowSnapshotDevice, MemoryDevice, SelectiveSnapshotDevice } from '../../src/index.js';
import { expectBytes, fill, pattern } from '../support/bytes.js';
import { expectCode } from '../support/error-code.js';
import { WriteSpyDevice } from '../support/write-spy-device.js';

/*
 * A COW device's WRITE_OWNED (src/cow/cow-device-base.ts): `write` without
 * its private copy, for a caller that leaves its buffers unchanged until
 * the write settles — the volume's workers, whose ring slabs are reused
 * only after the completion is settled. It must write what `write` writes,
 * preserve what `write` preserves, refuse what `write` refuses, and hand
 * the caller's buffer down as it is.
 */

const BS = 4096;
const BLOCKS = 16;

type Kind = 'cow' | 'selective';

async function rig(kind: Kind) {
  const origin = new WriteSpyDevice(
    await MemoryDevice.create({ size: BLOCKS * BS, blockSize: BS }),
  );
  const store = await MemoryDevice.create({ size: 2 << 20, blockSize: BS });
  const cow =
    kind === 'cow'
      ? await CowSnapshotDevice.create(origin, store, { maxSnapshots: 4 })
      : await SelectiveSnapshotDevice.create(origin, store, { maxSnapshots: 4 });
  await cow.write(0, pattern(BLOCKS * BS, 1));
  const owned = (cow as unknown as OwnedIO)[WRITE_OWNED].bind(cow);
  return { cow, origin, owned };
}

describe.each<Kind>(['cow', 'selective'])('%s device WRITE_OWNED', (kind) => {
  it('writes one block or several as write does, and a snapshot keeps what they replaced', async () => {
    const { cow, owned } = await rig(kind);
    const snap =
      cow instanceof SelectiveSnapshotDevice
        ? await cow.snapshot({ include: [{ offset: 0, length: 8 * BS }] })
        : await cow.snapshot();
    // Held (preserving) blocks, one buffer and three, then unheld ones past the selective range.
    await owned(BS, [fill(BS, 0xa1)]);
    await owned(3 * BS, [fill(BS, 0xa2), fill(2 * BS, 0xa3)]);
    await owned(10 * BS, [fill(BS, 0xa4), fill(BS, 0xa5)]);
    const expected = pattern(BLOCKS * BS, 1);
    expected.fill(0xa1, BS, 2 * BS);
    expected.fill(0xa2, 3 * BS, 4 * BS);
    expected.fill(0xa3, 4 * BS, 6 * BS);
    expected.fill(0xa4, 10 * BS, 11 * BS);
    expected.fill(0xa5, 11 * BS, 12 * BS);
    expectBytes('live', await cow.read(0, BLOCKS * BS), expected);
    expectBytes(
      'snapshot',
      await snap.read(0, 8 * BS),
      pattern(BLOCKS * BS, 1).subarray(0, 8 * BS),
    );
    await snap.close();
    await cow.close();
  });

  it('hands the caller’s buffer to the origin uncopied where write hands a copy', async () => {
    const { cow, origin, owned } = await rig(kind);
    const snap =
      cow instanceof SelectiveSnapshotDevice
        ? await cow.snapshot({ include: [{ offset: 0, length: BLOCKS * BS }] })
        : await cow.snapshot();
    const copied = fill(BS, 0xb1);
    await cow.write(2 * BS, copied);
    expect(origin.written.at(-1)).not.toBe(copied);
    const handed = fill(BS, 0xb2);
    await owned(5 * BS, [handed]);
    // The preserving write's origin write got the very buffer: no private copy was taken.
    expect(origin.written.at(-1)).toBe(handed);
    expectBytes('block 5', await cow.read(5 * BS, BS), fill(BS, 0xb2));
    await snap.close();
    await cow.close();
  });

  it('refuses what write refuses', async () => {
    const { cow, owned } = await rig(kind);
    await expectCode(owned(BLOCKS * BS, [fill(BS, 1)]), 'ERANGE');
    await expectCode(owned(0, [fill(BS, 1), 'x' as unknown as Uint8Array]), 'EINVAL');
    await expectCode(owned(0, ['x' as unknown as Uint8Array]), 'EINVAL');
    await cow.close();
    await expectCode(owned(0, [fill(BS, 1)]), 'ECLOSED');
  });

  it('is refused EBUSY around an owner, and let through for it (a COW device over this one)', async () => {
    const { cow, owned } = await rig(kind);
    const upperStore = await MemoryDevice.create({ size: 2 << 20, blockSize: BS });
    const upper = await CowSnapshotDevice.create(cow, upperStore, { maxSnapshots: 4 });
    await expectCode(owned(0, [fill(BS, 1)]), 'EBUSY');
    // The upper device's preserving writes reach this one through its WRITE_OWNED.
    const snap = await upper.snapshot();
    await upper.write(2 * BS, fill(BS, 0xc1));
    expectBytes('live', await upper.read(2 * BS, BS), fill(BS, 0xc1));
    expectBytes(
      'snapshot',
      await snap.read(2 * BS, BS),
      pattern(BLOCKS * BS, 1).subarray(2 * BS, 3 * BS),
    );
    await snap.close();
    await upper.close();
  });
});
