import { describe, expect, it } from 'vitest';
import { type BlockDeviceError, CowSnapshotDevice, MemoryDevice } from '../../src/index.js';
import { watch } from '../support/async.js';
import { fill } from '../support/bytes.js';
import { CountingDevice } from '../support/counting-device.js';
import { expectCode } from '../support/error-code.js';
import { GatedDevice } from '../support/gated-device.js';
import { PassThroughDevice } from '../support/pass-through-device.js';

const BS = 4096;

async function setup(
  options: { originBlocks?: number; storeBytes?: number; maxSnapshots?: number } = {},
) {
  const origin = await MemoryDevice.create({
    size: (options.originBlocks ?? 64) * BS,
    blockSize: BS,
  });
  const store = await MemoryDevice.create({ size: options.storeBytes ?? 4 << 20, blockSize: BS });
  const device = await CowSnapshotDevice.create(origin, store, {
    maxSnapshots: options.maxSnapshots ?? 16,
  });
  const reopen = () => CowSnapshotDevice.open(origin.reopen(), store.reopen());
  return { origin, store, device, reopen };
}

describe('CowSnapshotDevice', () => {
  it('preserves a block once per generation, shared by every snapshot that needs it (rule 3)', async () => {
    const { device } = await setup();
    await device.write(0, fill(BS, 1));
    const snaps = [];
    for (let i = 0; i < 10; i++) snaps.push(await device.snapshot());
    await device.write(0, fill(BS, 2));
    expect(device.preservedBlocks).toBe(1);
    await device.write(0, fill(BS, 3));
    expect(device.preservedBlocks).toBe(1);
    const late = await device.snapshot();
    await device.write(0, fill(BS, 4));
    expect(device.preservedBlocks).toBe(2);
    for (const s of snaps) expect(await s.read(0, BS)).toEqual(fill(BS, 1));
    expect(await late.read(0, BS)).toEqual(fill(BS, 3));
    await device.close();
  });

  it('costs the same store I/O for a first write with 1 or 10 snapshots', async () => {
    const counts: number[] = [];
    for (const n of [1, 10]) {
      const origin = await MemoryDevice.create({ size: 64 * BS, blockSize: BS });
      const store = new CountingDevice(await MemoryDevice.create({ size: 4 << 20, blockSize: BS }));
      const device = await CowSnapshotDevice.create(origin, store, { maxSnapshots: 16 });
      for (let i = 0; i < n; i++) await device.snapshot();
      store.reset();
      await device.write(0, fill(BS, 9));
      counts.push(store.writes + store.flushes);
      await device.close();
    }
    expect(counts[1]).toBe(counts[0]);
  });

  it('group-commits concurrent first writes: 32 writers share store flushes', async () => {
    const origin = await MemoryDevice.create({ size: 64 * BS, blockSize: BS });
    const store = new CountingDevice(await MemoryDevice.create({ size: 4 << 20, blockSize: BS }));
    const device = await CowSnapshotDevice.create(origin, store, { maxSnapshots: 4 });
    await device.snapshot();
    store.reset();
    await Promise.all(Array.from({ length: 32 }, (_, i) => device.write(i * BS, fill(BS, i + 1))));
    expect(device.preservedBlocks).toBe(32);
    expect(store.flushes).toBeLessThan(8);
    await device.close();
  });

  it('makes preserved data and its entry durable before the origin write is issued (rule 4)', async () => {
    const origin = new CountingDevice(await MemoryDevice.create({ size: 64 * BS, blockSize: BS }));
    const store = new CountingDevice(await MemoryDevice.create({ size: 4 << 20, blockSize: BS }));
    const events: string[] = [];
    const originWrite = origin.write.bind(origin);
    origin.write = (offset, data) => {
      events.push('origin-write');
      return originWrite(offset, data);
    };
    const storeWrite = store.write.bind(store);
    store.write = (offset, data) => {
      events.push('store-write');
      return storeWrite(offset, data);
    };
    const storeFlush = store.flush.bind(store);
    store.flush = () => {
      events.push('store-flush');
      return storeFlush();
    };
    const device = await CowSnapshotDevice.create(origin, store, { maxSnapshots: 4 });
    await device.snapshot();
    events.length = 0;
    await device.write(0, fill(BS, 5));
    // chunk data, then the log frame, then the flush that covers both, then the origin.
    expect(events).toEqual(['store-write', 'store-write', 'store-flush', 'origin-write']);
    await device.close();
  });

  it('gives writable snapshots their own content, independent of the origin and each other', async () => {
    const { device, reopen } = await setup();
    await device.write(0, fill(BS, 1));
    const a = await device.snapshot({ writable: true });
    const b = await device.snapshot({ writable: true });
    await a.write(10, new Uint8Array([7, 7]));
    await device.write(0, fill(BS, 2));
    await b.write(0, fill(BS, 3));
    const expectedA = fill(BS, 1);
    expectedA.set([7, 7], 10);
    expect(await a.read(0, BS)).toEqual(expectedA);
    expect(await b.read(0, BS)).toEqual(fill(BS, 3));
    expect(await device.read(0, BS)).toEqual(fill(BS, 2));
    expect(device.listSnapshots().map((s) => s.privateBytes)).toEqual([BS, BS]);
    await device.close();
    const again = await reopen();
    const [infoA, infoB] = again.listSnapshots();
    expect(await (await again.openSnapshot(infoA!.id)).read(0, BS)).toEqual(expectedA);
    expect(await (await again.openSnapshot(infoB!.id)).read(0, BS)).toEqual(fill(BS, 3));
    await again.close();
  });

  it('frees store space on delete and reuses it, keeping what other snapshots need', async () => {
    const { device } = await setup({ storeBytes: 1 << 20, maxSnapshots: 4 });
    const free = device.freeChunks;
    await device.write(0, fill(8 * BS, 1));
    const s1 = await device.snapshot();
    await device.write(0, fill(4 * BS, 2));
    const s2 = await device.snapshot();
    await device.write(0, fill(8 * BS, 3));
    expect(device.freeChunks).toBe(free - 4 - 8);
    await device.deleteSnapshot(s1.id);
    // s2 still needs blocks 0..7 as they were at its time (2,2,2,2,1,1,1,1).
    expect(device.freeChunks).toBe(free - 8);
    const expected = fill(8 * BS, 1);
    expected.fill(2, 0, 4 * BS);
    expect(await s2.read(0, 8 * BS)).toEqual(expected);
    await expectCode(s1.read(0, 10), 'ENOENT');
    await device.deleteSnapshot(s2.id);
    expect(device.freeChunks).toBe(free);
    // Space is reused: fill the store completely over several rounds.
    for (let round = 0; round < 3; round++) {
      const s = await device.snapshot();
      const blocks = Math.min(device.freeChunks, 64);
      for (let b = 0; b < blocks; b++) await device.write(b * BS, fill(BS, round + 10));
      await device.deleteSnapshot(s.id);
      expect(device.freeChunks).toBe(free);
    }
    await device.close();
  });

  it('fails a write with ENOSPC and changes nothing when the store is full', async () => {
    const { device } = await setup({ storeBytes: 48 * BS, maxSnapshots: 2 });
    const chunks = device.freeChunks;
    expect(chunks).toBeLessThan(64);
    const snap = await device.snapshot();
    for (let b = 0; b < chunks; b++) await device.write(b * BS, fill(BS, 1));
    await expectCode(device.write(chunks * BS, fill(BS, 2)), 'ENOSPC');
    expect(await device.read(chunks * BS, BS)).toEqual(new Uint8Array(BS));
    expect(await snap.read(0, BS)).toEqual(new Uint8Array(BS));
    // Restoring over a newer snapshot would have to preserve every block again.
    const newer = await device.snapshot();
    await expectCode(device.restore(snap.id), 'ENOSPC');
    expect(await device.read(0, BS)).toEqual(fill(BS, 1));
    await device.deleteSnapshot(newer.id);
    await device.restore(snap.id);
    expect(await device.read(0, chunks * BS)).toEqual(new Uint8Array(chunks * BS));
    await device.deleteSnapshot(snap.id);
    await device.write(chunks * BS, fill(BS, 2));
    await device.close();
  });

  it('refuses more than maxSnapshots with ENOSPC', async () => {
    const { device } = await setup({ maxSnapshots: 2 });
    await device.snapshot();
    await device.snapshot();
    await expectCode(device.snapshot(), 'ENOSPC');
    expect(device.listSnapshots()).toHaveLength(2);
    await device.close();
  });

  it('validates snapshot arguments before changing anything', async () => {
    const { device } = await setup();
    await expectCode(device.snapshot({ name: 5 as unknown as string }), 'EINVAL');
    await expectCode(device.snapshot({ name: 'x'.repeat(256) }), 'EINVAL');
    await expectCode(device.snapshot({ writable: 'yes' as unknown as boolean }), 'EINVAL');
    await expectCode(device.snapshot(null as unknown as object), 'EINVAL');
    await expectCode(device.openSnapshot('nope'), 'ENOENT');
    await expectCode(device.deleteSnapshot('nope'), 'ENOENT');
    await expectCode(device.restore('nope'), 'ENOENT');
    await expectCode(device.openSnapshot(42 as unknown as string), 'ENOENT');
    expect(device.listSnapshots()).toEqual([]);
    await device.close();
    await expectCode(device.snapshot(), 'ECLOSED');
    expect(() => device.listSnapshots()).toThrow(/ECLOSED/);
  });

  it('emits snapshot, preserve, snapshot-deleted and progress events', async () => {
    const { device } = await setup();
    const seen: string[] = [];
    device.on('snapshot', (info) => seen.push(`snapshot ${info.name}`));
    device.on('preserve', (e) => seen.push(`preserve ${e.block}`));
    device.on('snapshot-deleted', () => seen.push('deleted'));
    device.on('progress', (p) => seen.push(`progress ${p.operation} ${p.done}/${p.total}`));
    const snap = await device.snapshot({ name: 'n' });
    await device.write(BS, fill(10, 1));
    await device.restore(snap.id);
    await device.deleteSnapshot(snap.id);
    expect(seen).toEqual([
      'snapshot n',
      'preserve 1',
      // The restore rewrites block 1 in the same generation: nothing more to preserve.
      'progress restore 1/1',
      'deleted',
    ]);
    await device.close();
  });

  it('reopens with every snapshot, name, time and preserved block back', async () => {
    const { device, reopen } = await setup();
    await device.write(0, fill(3 * BS, 1));
    const s = await device.snapshot({ name: 'nightly' });
    await device.write(BS, fill(BS, 2));
    await device.close();
    const again = await reopen();
    const [info] = again.listSnapshots();
    expect(info).toMatchObject({ id: s.id, name: 'nightly', writable: false });
    expect(info!.createdAt.getTime()).toBe(s.createdAt.getTime());
    expect(await (await again.openSnapshot(s.id)).read(0, 3 * BS)).toEqual(fill(3 * BS, 1));
    expect(again.preservedBlocks).toBe(1);
    await again.close();
  });

  it('checkpoints its metadata when the log fills and reads it all back', async () => {
    // A small store gives a small log: hundreds of snapshot cycles overflow it.
    const { device, reopen } = await setup({ storeBytes: 2 << 20, maxSnapshots: 4 });
    const keep = await device.snapshot({ name: 'keep' });
    await device.write(0, fill(BS, 7));
    for (let i = 0; i < 400; i++) {
      const s = await device.snapshot();
      await device.write(((i % 60) + 1) * BS, fill(BS, i & 0xff));
      await device.deleteSnapshot(s.id);
    }
    const live = await device.read(0, 64 * BS);
    await device.close();
    const again = await reopen();
    expect(await again.read(0, 64 * BS)).toEqual(live);
    const k = await again.openSnapshot(keep.id);
    expect(await k.read(0, 64 * BS)).toEqual(new Uint8Array(64 * BS));
    expect(again.listSnapshots()).toHaveLength(1);
    await again.close();
  });

  it('refuses a store whose geometry does not match the origin', async () => {
    const { device, store } = await setup();
    await device.close();
    const other = await MemoryDevice.create({ size: 32 * BS, blockSize: BS });
    await expectCode(CowSnapshotDevice.open(other, store.reopen()), 'EINVAL');
  });

  it('refuses an unformatted or damaged store with ECORRUPT naming the place', async () => {
    const origin = await MemoryDevice.create({ size: 64 * BS, blockSize: BS });
    const blank = await MemoryDevice.create({ size: 1 << 20, blockSize: BS });
    await expect(CowSnapshotDevice.open(origin, blank)).rejects.toThrow(
      /ECORRUPT.*superblock.*offsets 0/,
    );

    const { device, store, reopen } = await setup();
    await device.write(0, fill(BS, 1));
    const snap = await device.snapshot();
    await device.write(0, fill(BS, 2));
    await device.close();
    // Damage both superblocks.
    const raw = store.reopen();
    await raw.write(20, new Uint8Array([0xff]));
    await raw.write(4096 + 20, new Uint8Array([0xff]));
    await expect(reopen()).rejects.toThrow(/ECORRUPT/);
    void snap;
  });

  it('reports a damaged preserved chunk as ECORRUPT instead of returning it', async () => {
    const origin = await MemoryDevice.create({ size: 64 * BS, blockSize: BS });
    const store = await MemoryDevice.create({ size: 4 << 20, blockSize: BS });
    const device = await CowSnapshotDevice.create(origin, store, { maxSnapshots: 4 });
    let chunk = -1;
    device.on('preserve', (e) => {
      chunk = e.chunk;
    });
    await device.write(0, fill(BS, 1));
    const snap = await device.snapshot();
    await device.write(0, fill(BS, 2));
    // Flip one bit of every block past the metadata: the preserved chunk is among them.
    const raw = store.reopen();
    expect(chunk).toBeGreaterThanOrEqual(0);
    const all = await raw.read(0, raw.size);
    for (let at = raw.size - BS * (device.totalChunks - chunk); at < raw.size; at += raw.size) {
      all[at] = (all[at] ?? 0) ^ 1;
      await raw.write(at, all.subarray(at, at + 1));
    }
    await expectCode(snap.read(0, BS), 'ECORRUPT');
    await device.close();
  });

  it('refuses a damaged log frame that a later intact frame proves was durable', async () => {
    const { device, store, reopen } = await setup({ storeBytes: 2 << 20, maxSnapshots: 4 });
    const snaps = [];
    for (let i = 0; i < 3; i++) snaps.push(await device.snapshot({ name: `s${i}` }));
    await device.close();
    const raw = store.reopen();
    // Find the log: the frame magic "BSLG" at a 512-byte boundary.
    const all = await raw.read(0, raw.size);
    const frames: number[] = [];
    for (let at = 0; at < all.length; at += 512) {
      if (all[at] === 0x42 && all[at + 1] === 0x53 && all[at + 2] === 0x4c && all[at + 3] === 0x47)
        frames.push(at);
    }
    expect(frames.length).toBe(3);
    await raw.write(frames[1]! + 40, new Uint8Array([all[frames[1]! + 40]! ^ 0x10]));
    await expect(reopen()).rejects.toThrow(/ECORRUPT: log frame 1 at store offset \d+ is damaged/);
  });

  it('drops a torn last frame silently after a crash: it was never acknowledged', async () => {
    const { device, store, reopen } = await setup({ storeBytes: 2 << 20, maxSnapshots: 4 });
    await device.snapshot({ name: 'kept' });
    await device.snapshot({ name: 'torn' });
    // The process dies without close(), so the store carries no clean-close
    // mark and its last frame may be torn (test/cow/cow-clean-close.test.ts
    // has the same damage after a clean close: ECORRUPT).
    const raw = store.reopen();
    const all = await raw.read(0, raw.size);
    let last = -1;
    for (let at = 0; at < all.length; at += 512) {
      if (all[at] === 0x42 && all[at + 1] === 0x53 && all[at + 2] === 0x4c && all[at + 3] === 0x47)
        last = at;
    }
    await raw.write(last + 40, new Uint8Array([all[last + 40]! ^ 0x10]));
    const again = await reopen();
    expect(again.listSnapshots().map((s) => s.name)).toEqual(['kept']);
    await again.snapshot({ name: 'after' });
    await again.close();
    const third = await reopen();
    expect(third.listSnapshots().map((s) => s.name)).toEqual(['kept', 'after']);
    await third.close();
  });

  it('closes the devices it owns, and its snapshot handles', async () => {
    const { device, origin, store } = await setup();
    const snap = await device.snapshot();
    await device.close();
    await device.close();
    expect(origin.closed).toBe(true);
    expect(store.closed).toBe(true);
    await expectCode(snap.read(0, 1), 'ECLOSED');
  });
});

describe('CowSnapshotDevice: close waits for I/O in flight', () => {
  async function rig() {
    const disk = await MemoryDevice.create({ size: 64 * 1024, blockSize: 4096 });
    const origin = new GatedDevice(disk);
    const cow = await CowSnapshotDevice.create(
      origin,
      await MemoryDevice.create({ size: 2 * 1024 * 1024, blockSize: 4096 }),
    );
    return { disk, origin, cow };
  }

  async function ticks(n: number): Promise<void> {
    for (let i = 0; i < n; i++) await new Promise((resolve) => setImmediate(resolve));
  }

  it('an origin read held at the origin keeps close() waiting, then returns its data', async () => {
    const { origin, cow } = await rig();
    await cow.write(4096, new Uint8Array(4096).fill(7));
    const gate = origin.gate('read');
    const reading = cow.read(4096, 4096);
    await gate.reached;
    const closing = watch(cow.close());
    await ticks(5);
    expect(closing.settled).toBe(false);
    gate.open();
    expect((await reading)[0]).toBe(7);
    await closing.promise;
  });

  it('a write passed straight to the origin (no snapshot holds it) keeps close() waiting', async () => {
    const { disk, origin, cow } = await rig();
    const gate = origin.gate('write');
    const writing = cow.write(8192, new Uint8Array(4096).fill(9));
    await gate.reached;
    const closing = watch(cow.close());
    await ticks(5);
    expect(closing.settled).toBe(false);
    gate.open();
    await writing;
    await closing.promise;
    expect((await disk.reopen().read(8192, 1))[0]).toBe(9);
  });

  it('writes passed straight to the origin settle each with its own outcome, out of order, and leave the gate', async () => {
    // Their reactions are reused from write to write: a mix-up would settle
    // a write with another's outcome, or leave one inside the gate (the
    // snapshot below, which drains every earlier write, would never come).
    const disk = await MemoryDevice.create({ size: 64 * BS, blockSize: BS });
    const flaky = new (class extends PassThroughDevice {
      override write(offset: number, data: Uint8Array): Promise<void> {
        const block = offset / BS;
        if (block % 4 === 1) throw new Error(`driver threw at block ${block}`);
        const copy = data.slice();
        // Later calls settle first.
        const delay = 64 - block;
        return new Promise<void>((resolve, reject) => {
          setTimeout(() => {
            if (block % 4 === 2) reject(new Error(`bad sector ${block}`));
            else this.inner.write(offset, copy).then(resolve, reject);
          }, delay);
        });
      }
    })(disk);
    const cow = await CowSnapshotDevice.create(
      flaky,
      await MemoryDevice.create({ size: 2 * 1024 * 1024, blockSize: BS }),
    );
    for (let round = 0; round < 2; round++) {
      const outcomes = await Promise.allSettled(
        Array.from({ length: 64 }, (_, b) => cow.write(b * BS, fill(BS, round * 64 + b))),
      );
      for (const [b, outcome] of outcomes.entries()) {
        if (b % 4 === 1 || b % 4 === 2) {
          expect(outcome.status, `block ${b}`).toBe('rejected');
          const err = (outcome as PromiseRejectedResult).reason as BlockDeviceError;
          expect(err.code).toBe('EIO');
          expect(String((err.cause as Error).message)).toMatch(
            new RegExp(`block ${b}$|sector ${b}$`),
          );
        } else {
          expect(outcome.status, `block ${b}`).toBe('fulfilled');
          expect((await cow.read(b * BS, 1))[0]).toBe((round * 64 + b) & 0xff);
        }
      }
    }
    const snap = await cow.snapshot();
    expect(snap.id).toBeDefined();
    await cow.close();
  });

  it('an origin that throws instead of rejecting fails the read with EIO and leaks nothing', async () => {
    const disk = await MemoryDevice.create({ size: 64 * 1024, blockSize: 4096 });
    const throwing = new (class extends PassThroughDevice {
      override read(): Promise<Uint8Array> {
        throw new Error('broken driver');
      }
    })(disk);
    const cow = await CowSnapshotDevice.create(
      throwing,
      await MemoryDevice.create({ size: 2 * 1024 * 1024, blockSize: 4096 }),
    );
    const snap = await cow.snapshot();
    await expect(cow.read(0, 4096)).rejects.toMatchObject({ code: 'EIO' });
    // The read gate was left: a restore (which takes it exclusively) runs, and close returns.
    await cow.restore(snap.id);
    await cow.close();
  });
});
