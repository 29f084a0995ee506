import { describe, expect, it } from 'vitest';
import { expectBytes, fill } from '../support/bytes.js';
import { CowRig } from '../support/cow-rig.js';
import { expectCode } from '../support/error-code.js';
import { SelectiveRig } from '../support/selective-rig.js';

describe.each([
  ['CowSnapshotDevice', CowRig],
  ['SelectiveSnapshotDevice', SelectiveRig],
] as const)('%s: a lower failure at close', (_name, Rig) => {
  it('a snapshot handle whose close fails makes close() reject EIO, and still closes origin and store', async () => {
    let storeFlushes: number | undefined;
    const rig = await Rig.create({
      // Once armed, the second store flush fails: close() flushes the store
      // itself first, then a writable handle's close flushes it again.
      failures: (disk, op) =>
        storeFlushes !== undefined &&
        disk === 'store' &&
        op.kind === 'flush' &&
        ++storeFlushes === 2,
    });
    const d = rig.device;
    await d.write(0, fill(512, 1));
    const w = await d.snapshot({ writable: true });
    await w.write(512, fill(512, 2));
    await d.write(0, fill(512, 3));
    await d.flush();
    storeFlushes = 0;
    const err = await expectCode(d.close(), 'EIO');
    expect(String(err.message)).toMatch(/injected failure of flush/);
    expect([rig.origin.closed, rig.store.closed]).toEqual([true, true]);
    const again = await rig.open();
    expectBytes('device after reopen', await again.read(0, 512), fill(512, 3));
    const snap = await again.openSnapshot(w.id);
    expectBytes(
      'snapshot after reopen',
      await snap.read(0, 1024),
      Uint8Array.from([...fill(512, 1), ...fill(512, 2)]),
    );
    await again.close();
  });
});
