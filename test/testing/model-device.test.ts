import { describe, expect, it } from 'vitest';
import { BlockDeviceError, type BlockDeviceErrorCode } from '../../src/errors.js';
import { ModelDevice } from '../../src/testing/model-device.js';
import { fill } from '../support/bytes.js';
import { expectCode } from '../support/error-code.js';

const size = 16 * 1024;
const blockSize = 4096;

function throwsWith(fn: () => unknown, code: BlockDeviceErrorCode): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(BlockDeviceError.is(caught, code), `expected ${code}, got ${String(caught)}`).toBe(true);
}

describe('ModelDevice.create', () => {
  it('starts all zeros with the given geometry', async () => {
    const model = await ModelDevice.create({ size, blockSize: 512 });
    expect(model.size).toBe(size);
    expect(model.blockSize).toBe(512);
    expect(model.readOnly).toBe(false);
    expect(model.bytes()).toEqual(new Uint8Array(size));
  });

  it('defaults blockSize to 4096', async () => {
    const model = await ModelDevice.create({ size });
    expect(model.blockSize).toBe(4096);
  });

  it('copies content, so the caller keeps its array', async () => {
    const content = fill(size, 7);
    const model = await ModelDevice.create({ size, blockSize, content });
    content.fill(9);
    expect(model.bytes()).toEqual(fill(size, 7));
  });

  it('rejects bad geometry and bad content with EINVAL', async () => {
    await expectCode(ModelDevice.create({ size: 1000, blockSize: 512 }), 'EINVAL');
    await expectCode(ModelDevice.create({ size, blockSize: 1000 }), 'EINVAL');
    await expectCode(ModelDevice.create({ size: -blockSize, blockSize }), 'EINVAL');
    await expectCode(
      ModelDevice.create({ size, blockSize, content: new Uint8Array(size - 1) }),
      'EINVAL',
    );
    await expectCode(
      ModelDevice.create({ size, blockSize, content: 'x' as unknown as Uint8Array }),
      'EINVAL',
    );
  });
});

describe('ModelDevice content', () => {
  it('bytes() is a copy: mutating it changes nothing', async () => {
    const model = await ModelDevice.create({ size, blockSize });
    await model.write(10, fill(5, 1));
    const copy = model.bytes();
    copy.fill(0xff);
    expect(model.bytes().subarray(8, 17)).toEqual(Uint8Array.of(0, 0, 1, 1, 1, 1, 1, 0, 0));
  });

  it('a write takes effect when called, before its promise settles', async () => {
    const model = await ModelDevice.create({ size, blockSize });
    const pending = model.write(100, fill(3, 5));
    expect(model.bytes().subarray(100, 103)).toEqual(fill(3, 5));
    await pending;
  });

  it('content stays inspectable after close', async () => {
    const model = await ModelDevice.create({ size, blockSize });
    await model.write(0, fill(4, 2));
    await model.close();
    expect(model.bytes().subarray(0, 5)).toEqual(Uint8Array.of(2, 2, 2, 2, 0));
  });

  it('a read-only model refuses writes and restore with EROFS', async () => {
    const model = await ModelDevice.create({ size, blockSize, readOnly: true });
    await expectCode(model.write(0, fill(1, 1)), 'EROFS');
    const snap = await model.snapshot();
    await expectCode(model.restore(snap.id), 'EROFS');
    expect(model.bytes()).toEqual(new Uint8Array(size));
  });
});

describe('ModelDevice snapshots', () => {
  it('a snapshot keeps the content at the call; later origin writes do not reach it', async () => {
    const model = await ModelDevice.create({ size, blockSize });
    await model.write(0, fill(blockSize, 1));
    const before = model.write(blockSize, fill(blockSize, 2));
    const snap = await model.snapshot({ name: 'first' });
    const after = model.write(0, fill(2 * blockSize, 3));
    await Promise.all([before, after]);

    const expected = new Uint8Array(size);
    expected.fill(1, 0, blockSize);
    expected.fill(2, blockSize, 2 * blockSize);
    expect(model.snapshotBytes(snap.id)).toEqual(expected);
    expect(await snap.read(0, size)).toEqual(expected);
    expect(model.bytes().subarray(0, 2 * blockSize)).toEqual(fill(2 * blockSize, 3));
  });

  it('a snapshot handle has the id, name and createdAt that listSnapshots reports', async () => {
    const model = await ModelDevice.create({ size, blockSize });
    const t0 = Date.now();
    const a = await model.snapshot({ name: 'a' });
    const b = await model.snapshot({ writable: true });
    const list = model.listSnapshots();
    expect(list.map((s) => s.id)).toEqual([a.id, b.id]);
    expect(typeof a.id).toBe('string');
    expect(a.id).not.toBe(b.id);
    expect(list[0]).toMatchObject({ id: a.id, name: 'a', writable: false, privateBytes: 0 });
    expect(list[1]).toMatchObject({ id: b.id, name: undefined, writable: true, privateBytes: 0 });
    expect(a.name).toBe('a');
    expect(b.name).toBeUndefined();
    expect(a.createdAt.getTime()).toBeGreaterThanOrEqual(t0);
    expect(list[0]?.createdAt.getTime()).toBe(a.createdAt.getTime());
    expect(a.readOnly).toBe(true);
    expect(b.readOnly).toBe(false);
    expect([a.size, a.blockSize]).toEqual([size, blockSize]);
  });

  it('a read-only snapshot rejects writes with EROFS', async () => {
    const model = await ModelDevice.create({ size, blockSize });
    const snap = await model.snapshot();
    await expectCode(snap.write(0, fill(1, 1)), 'EROFS');
    expect(model.snapshotBytes(snap.id)).toEqual(new Uint8Array(size));
  });

  it('a writable snapshot diverges from the origin and from other snapshots', async () => {
    const model = await ModelDevice.create({ size, blockSize });
    await model.write(0, fill(size, 1));
    const clone = await model.snapshot({ writable: true });
    const other = await model.snapshot({ writable: true });
    const frozen = await model.snapshot();

    await clone.write(blockSize + 1, fill(10, 2));
    await model.write(0, fill(blockSize, 3));
    await other.write(0, fill(1, 4));

    const cloneExpected = fill(size, 1);
    cloneExpected.fill(2, blockSize + 1, blockSize + 11);
    expect(await clone.read(0, size)).toEqual(cloneExpected);
    const otherExpected = fill(size, 1);
    otherExpected[0] = 4;
    expect(model.snapshotBytes(other.id)).toEqual(otherExpected);
    expect(model.snapshotBytes(frozen.id)).toEqual(fill(size, 1));
    const originExpected = fill(size, 1);
    originExpected.fill(3, 0, blockSize);
    expect(model.bytes()).toEqual(originExpected);
  });

  it('privateBytes counts the blocks written through a writable snapshot', async () => {
    const model = await ModelDevice.create({ size, blockSize });
    const clone = await model.snapshot({ writable: true });
    await clone.write(blockSize - 1, fill(2, 1));
    await clone.write(blockSize, fill(1, 1));
    expect(model.listSnapshots()[0]?.privateBytes).toBe(2 * blockSize);
  });

  it('handles opened on one snapshot share its content', async () => {
    const model = await ModelDevice.create({ size, blockSize });
    const first = await model.snapshot({ writable: true });
    const second = await model.openSnapshot(first.id);
    await first.write(50, fill(5, 8));
    expect(await second.read(50, 5)).toEqual(fill(5, 8));
    expect(second.id).toBe(first.id);
  });

  it('restore copies the snapshot over the device and leaves the snapshot as it was', async () => {
    const model = await ModelDevice.create({ size, blockSize });
    await model.write(0, fill(blockSize, 1));
    const clone = await model.snapshot({ writable: true });
    await clone.write(blockSize, fill(blockSize, 2));
    await model.write(0, fill(size, 9));

    await model.restore(clone.id);
    const expected = new Uint8Array(size);
    expected.fill(1, 0, blockSize);
    expected.fill(2, blockSize, 2 * blockSize);
    expect(model.bytes()).toEqual(expected);

    await model.write(0, fill(1, 7));
    expect(model.snapshotBytes(clone.id)).toEqual(expected);
  });

  it('deleteSnapshot removes it; its handles fail with ENOENT; ids are not reused', async () => {
    const model = await ModelDevice.create({ size, blockSize });
    const a = await model.snapshot();
    const b = await model.snapshot();
    await model.deleteSnapshot(a.id);
    expect(model.listSnapshots().map((s) => s.id)).toEqual([b.id]);
    await expectCode(a.read(0, 1), 'ENOENT');
    const c = await model.snapshot();
    expect([a.id, b.id]).not.toContain(c.id);
    await a.close();
    expect(await b.read(0, 1)).toEqual(new Uint8Array(1));
  });

  it('unknown ids are ENOENT and non-string ids EINVAL everywhere', async () => {
    const model = await ModelDevice.create({ size, blockSize });
    const gone = await model.snapshot();
    await model.deleteSnapshot(gone.id);
    for (const id of ['nope', gone.id]) {
      await expectCode(model.openSnapshot(id), 'ENOENT');
      await expectCode(model.deleteSnapshot(id), 'ENOENT');
      await expectCode(model.restore(id), 'ENOENT');
      throwsWith(() => model.snapshotBytes(id), 'ENOENT');
    }
    const bad = 1 as unknown as string;
    await expectCode(model.openSnapshot(bad), 'EINVAL');
    await expectCode(model.deleteSnapshot(bad), 'EINVAL');
    await expectCode(model.restore(bad), 'EINVAL');
    throwsWith(() => model.snapshotBytes(bad), 'EINVAL');
  });

  it('bad snapshot options are EINVAL and take no snapshot', async () => {
    const model = await ModelDevice.create({ size, blockSize });
    const bad = [
      { name: 5 },
      { name: 'é'.repeat(128) },
      { writable: 'yes' },
      null,
      'name',
    ] as unknown as { name?: string }[];
    for (const options of bad) await expectCode(model.snapshot(options), 'EINVAL');
    expect(model.listSnapshots()).toEqual([]);
    const longest = await model.snapshot({ name: 'x'.repeat(255) });
    expect(longest.name).toHaveLength(255);
  });

  it('emits snapshot and snapshot-deleted', async () => {
    const model = await ModelDevice.create({ size, blockSize });
    const events: string[] = [];
    model.on('snapshot', (info) => events.push(`snapshot ${info.id} ${info.name}`));
    model.on('snapshot-deleted', (id) => events.push(`deleted ${id}`));
    const snap = await model.snapshot({ name: 'n' });
    await model.deleteSnapshot(snap.id);
    expect(events).toEqual([`snapshot ${snap.id} n`, `deleted ${snap.id}`]);
  });

  it('closing a handle leaves the device and other handles open', async () => {
    const model = await ModelDevice.create({ size, blockSize });
    const first = await model.snapshot();
    const second = await model.openSnapshot(first.id);
    await first.close();
    await expectCode(first.read(0, 1), 'ECLOSED');
    expect(await second.read(0, 1)).toEqual(new Uint8Array(1));
    expect(await model.read(0, 1)).toEqual(new Uint8Array(1));
  });

  it('after the device closes, its snapshot API and handles fail with ECLOSED', async () => {
    const model = await ModelDevice.create({ size, blockSize });
    const snap = await model.snapshot({ writable: true });
    await model.close();
    await expectCode(model.snapshot(), 'ECLOSED');
    await expectCode(model.openSnapshot(snap.id), 'ECLOSED');
    await expectCode(model.deleteSnapshot(snap.id), 'ECLOSED');
    await expectCode(model.restore(snap.id), 'ECLOSED');
    throwsWith(() => model.listSnapshots(), 'ECLOSED');
    await expectCode(snap.read(0, 1), 'ECLOSED');
    await expectCode(snap.write(0, fill(1, 1)), 'ECLOSED');
    expect(model.snapshotBytes(snap.id)).toEqual(new Uint8Array(size));
  });
});
