import { describe, expect, it } from 'vitest';
import { CowSnapshotDevice, MemoryDevice } from '../../src/index.js';
import { settle, watch, within } from '../support/async.js';
import { expectSameBytes, fill } from '../support/bytes.js';
import { CallbackReadDevice } from '../support/callback-read-device.js';
import { expectCode } from '../support/error-code.js';

/*
 * A snapshot handle's one-block read, the hot path (src/cow/cow-snapshot-io.ts
 * `read`, src/cow/block-view-reads.ts): the gate and the block lock taken
 * synchronously, the store's or the origin's READ_CALLBACK, one promise.
 * Everything a read through the slow path keeps, it must keep too.
 */

const BS = 4096;

async function rig() {
  const originDisk = await MemoryDevice.create({ size: 64 * BS, blockSize: BS });
  const origin = new CallbackReadDevice(originDisk);
  const store = new CallbackReadDevice(await MemoryDevice.create({ size: 4 << 20, blockSize: BS }));
  const cow = await CowSnapshotDevice.create(origin, store, { maxSnapshots: 4 });
  // Block 0 is preserved for the snapshot (read from the store), block 1 is not (the origin).
  await cow.write(0, fill(BS, 1));
  await cow.write(BS, fill(BS, 2));
  const snap = await cow.snapshot();
  await cow.write(0, fill(BS, 3));
  return { originDisk, origin, store, cow, snap };
}

describe('CowSnapshotDevice snapshot reads: the one-block hot path', () => {
  it('is served by the store’s or the origin’s READ_CALLBACK, never their read()', async () => {
    const { origin, store, cow, snap } = await rig();
    origin.readCalls = 0;
    store.readCalls = 0;
    origin.callbackCalls = 0;
    store.callbackCalls = 0;
    expectSameBytes('bytes read', await snap.read(0, BS), fill(BS, 1));
    expectSameBytes('bytes read', await snap.read(BS, BS), fill(BS, 2));
    // Part of a preserved block: the whole chunk is read and checked, the part
    // copied out into a buffer of its own.
    const part = await snap.read(100, 200);
    expectSameBytes('bytes read', part, fill(200, 1));
    expect(part.buffer.byteLength).toBe(200);
    expect([store.callbackCalls, origin.callbackCalls]).toEqual([2, 1]);
    expect([store.readCalls, origin.readCalls]).toEqual([0, 0]);
    await cow.close();
  });

  it('holds the block’s lock until its bytes are in hand: a first write to the block waits for it', async () => {
    const { originDisk, origin, cow, snap } = await rig();
    const release = origin.hold(BS);
    const reading = snap.read(BS, BS);
    const writing = watch(cow.write(BS, fill(BS, 9)));
    await settle();
    // Without the lock the write would preserve block 1 and overwrite the
    // origin now, and the held read would then return the write's bytes.
    expect(writing.settled).toBe(false);
    expectSameBytes('bytes read', await originDisk.read(BS, BS), fill(BS, 2));
    release();
    expectSameBytes('bytes read', await reading, fill(BS, 2));
    await writing.promise;
    expectSameBytes('bytes read', await snap.read(BS, BS), fill(BS, 2));
    expectSameBytes('bytes read', await cow.read(BS, BS), fill(BS, 9));
    await cow.close();
  });

  it('keeps the handle’s and the device’s close waiting while a read is held below', async () => {
    const { origin, store, cow, snap } = await rig();
    const releaseChunk = store.hold();
    const fromStore = snap.read(0, BS);
    const closingHandle = watch(snap.close());
    await settle();
    expect(closingHandle.settled).toBe(false);
    releaseChunk();
    expectSameBytes('bytes read', await fromStore, fill(BS, 1));
    await closingHandle.promise;

    const other = await cow.openSnapshot(snap.id);
    const releaseOrigin = origin.hold(BS);
    const fromOrigin = other.read(BS, BS);
    const closingDevice = watch(cow.close());
    await settle();
    expect(closingDevice.settled).toBe(false);
    releaseOrigin();
    expectSameBytes('bytes read', await fromOrigin, fill(BS, 2));
    await closingDevice.promise;
  });

  it('leaves the gate, the lock and the in-flight count once, whatever the device below does', async () => {
    const { origin, store, cow, snap } = await rig();
    // Calls back twice: the first outcome counts, the second is ignored.
    store.misbehave('twice');
    expectSameBytes('bytes read', await snap.read(0, BS), fill(BS, 1));
    // Calls back, then throws: the same.
    origin.misbehave('throw-after', BS);
    expectSameBytes('bytes read', await snap.read(BS, BS), fill(BS, 2));
    // Throws without calling back: EIO naming the read, the driver's error as cause.
    origin.misbehave('throw', BS);
    const err = await expectCode(snap.read(BS, BS), 'EIO');
    expect(String(err.message)).toMatch(/origin read failed: driver threw/);
    store.misbehave('throw');
    await expectCode(snap.read(0, BS), 'EIO');
    // Nothing leaked: the blocks' locks are free (these writes preserve them),
    // a delete drains the gate, and both closes return.
    await within(cow.write(BS, fill(BS, 4)), 2000, 'write after the misbehaving reads');
    expectSameBytes('bytes read', await snap.read(BS, BS), fill(BS, 2));
    const other = await cow.snapshot();
    await within(cow.deleteSnapshot(other.id), 2000, 'delete after the misbehaving reads');
    await within(snap.close(), 2000, 'handle close');
    await within(cow.close(), 2000, 'device close');
  });

  it('reports a damaged preserved chunk as ECORRUPT for a part of the block too', async () => {
    const { store, cow, snap } = await rig();
    // Flip one bit of every block past the metadata: the preserved chunk is among them.
    const raw = store.inner;
    for (let at = raw.size - BS * cow.totalChunks; at < raw.size; at += BS) {
      const byte = await raw.read(at + 7, 1);
      await raw.write(at + 7, Uint8Array.of((byte[0] ?? 0) ^ 1));
    }
    await expectCode(snap.read(0, BS), 'ECORRUPT');
    await expectCode(snap.read(2048, 16), 'ECORRUPT');
    // The origin block the snapshot reads directly is not affected.
    expectSameBytes('bytes read', await snap.read(BS, BS), fill(BS, 2));
    await cow.close();
  });

  it('a read called after a delete of its snapshot waits for it, then fails ENOENT and leaks nothing', async () => {
    const { cow, snap } = await rig();
    const deleting = cow.deleteSnapshot(snap.id);
    const reading = snap.read(0, BS);
    await deleting;
    await expectCode(reading, 'ENOENT');
    await expectCode(snap.read(BS, BS), 'ENOENT');
    await within(snap.close(), 2000, 'handle close');
    await cow.close();
  });
});
