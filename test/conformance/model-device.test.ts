import { describe, it } from 'vitest';
import { runConformanceSuite, runSnapshotConformanceSuite } from '../../src/testing/index.js';
import { ModelDevice } from '../../src/testing/model-device.js';

const size = 64 * 1024;
const blockSize = 4096;

/** Deterministic non-zero content, so read-only subjects are checked against something. */
function content(seed: number): Uint8Array {
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i++) out[i] = (i * 131 + seed * 7 + (i >>> 9)) & 0xff;
  return out;
}

runConformanceSuite({
  name: 'ModelDevice',
  create: async () => ({ device: await ModelDevice.create({ size, blockSize }) }),
  describe,
  it,
});

runConformanceSuite({
  name: 'ModelDevice (read-only, with content)',
  create: async () => {
    const expected = content(1);
    const device = await ModelDevice.create({ size, blockSize, readOnly: true, content: expected });
    return { device, expected };
  },
  describe,
  it,
});

runConformanceSuite({
  name: 'ModelDevice read-only snapshot',
  create: async () => {
    const model = await ModelDevice.create({ size, blockSize, content: content(2) });
    const snap = await model.snapshot({ name: 'ro' });
    const expected = model.bytes();
    // Later writes to the origin must not show through the snapshot.
    await model.write(0, new Uint8Array(size).fill(0x33));
    return { device: snap, expected, cleanup: () => model.close() };
  },
  describe,
  it,
});

runConformanceSuite({
  name: 'ModelDevice writable snapshot',
  create: async () => {
    const model = await ModelDevice.create({ size, blockSize, content: content(3) });
    const snap = await model.snapshot({ writable: true });
    const expected = model.bytes();
    await model.write(0, new Uint8Array(size).fill(0x44));
    return { device: snap, expected, cleanup: () => model.close() };
  },
  describe,
  it,
});

runSnapshotConformanceSuite({
  name: 'ModelDevice snapshots',
  create: async () => ({ device: await ModelDevice.create({ size, blockSize }) }),
  supports: {
    writable: true,
    restore: true,
    pointInTime: true,
    reopen: false,
    selective: false,
    preserveEvents: false,
  },
  describe,
  it,
});
