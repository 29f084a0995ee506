import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { WRITE_NOW } from '../../src/base/index.js';
import { CowSnapshotDevice, FileDevice } from '../../src/index.js';
import type { FaultyOperation } from '../../src/testing/index.js';
import { expectAllowed, expectBytes, fill } from '../support/bytes.js';
import { CowRig } from '../support/cow-rig.js';
import { codeOf } from '../support/error-code.js';

/*
 * The group commit of first writes (docs/ARCHITECTURE.md, "Crash ordering",
 * rule 4): each first write's preserved data and its entry go to the
 * metadata log as one append; the commit writes the data of its whole group
 * (blocks on consecutive chunks as one store write), then the frame, then
 * flushes the store, and only then do the group's origin writes go out.
 */

const BS = 512;
const BLOCKS = 32;
const SIZE = BLOCKS * BS;
/** First writes in flight at once, each worker taking the next block as its last write resolves. */
const WORKERS = 4;
/** Distinct blocks the workload first-writes, in this order. */
const ORDER = [7, 3, 20, 11, 0, 29, 14, 25, 5, 18, 9, 31, 2, 22, 16, 27];

const old = new Uint8Array(SIZE).map((_, i) => (i * 13 + 5) & 0xff);
const fresh = fill(BS, 0xd1);

/** What each store write of a rig was: its length and offset, in call order. */
type StoreWrites = { offset: number; length: number }[];

function rig(storeWrites?: StoreWrites, failStoreWrite?: (op: FaultyOperation) => boolean) {
  return CowRig.create({
    blocks: BLOCKS,
    storeBytes: 128 * 1024,
    crashSeeds: 'consecutive',
    failures: (disk, op) => {
      if (disk !== 'store' || op.kind !== 'write') return false;
      storeWrites?.push({ offset: op.offset, length: op.length });
      return failStoreWrite?.(op) ?? false;
    },
  });
}

/**
 * First writes of {@link ORDER} by {@link WORKERS} workers, each issuing its
 * next write as soon as its last one settles: one group's origin writes and
 * the next group's origin reads and commit overlap, as under load.
 */
async function firstWrites(r: CowRig): Promise<PromiseSettledResult<void>[]> {
  const results: PromiseSettledResult<void>[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: WORKERS }, async () => {
      while (next < ORDER.length) {
        const i = next++;
        [results[i]] = await Promise.allSettled([r.device.write(ORDER[i]! * BS, fresh)]);
      }
    }),
  );
  return results;
}

const everyFreshWrite = ORDER.map((b) => ({ offset: b * BS, data: fresh }));

describe('CowSnapshotDevice group commit of first writes', () => {
  it('writes a group’s preserved blocks in one store write, its frame, then one flush', async () => {
    const writes: StoreWrites = [];
    const r = await rig(writes);
    await r.device.write(0, old);
    await r.device.snapshot();
    writes.length = 0;
    const flushesBefore = r.store.stats.flushes;
    const results = await firstWrites(r);
    expect(results.every((x) => x.status === 'fulfilled')).toBe(true);
    const flushes = r.store.stats.flushes - flushesBefore;
    // Every group: one data write and one frame, then its flush.
    expect(writes.length).toBe(2 * flushes);
    // Fewer groups than first writes, and some group's blocks went down as one write.
    expect(flushes).toBeLessThan(ORDER.length);
    expect(Math.max(...writes.map((w) => w.length))).toBeGreaterThanOrEqual(2 * BS);
    expect(r.device.preservedBlocks).toBe(ORDER.length);
    await r.dispose();
  });

  // Rule 4 at every step of the pipeline: a power cut after any I/O — an
  // origin read, a group's data write, its frame, its flush, an origin
  // write of the group before while the next one commits — leaves a store
  // that opens, a snapshot that reads exactly its old content, and an
  // origin of old or new bytes.
  it('keeps the snapshot exact whichever I/O of overlapping groups the power cut lands on', async () => {
    let positions = 0;
    for (let cut = 0; ; cut++) {
      let finished = false;
      for (let seed = 0; seed < 8; seed++) {
        const r = await rig();
        await r.device.write(0, old);
        const snap = await r.device.snapshot();
        r.power.cutAfter(cut);
        await firstWrites(r);
        finished = r.power.isOn;
        const again = await r.crashAndReopen(seed);
        const s = await again.openSnapshot(snap.id);
        expectBytes(`cut ${cut} seed ${seed}: snapshot`, await s.read(0, SIZE), old);
        expectAllowed(
          `cut ${cut} seed ${seed}: origin`,
          await again.read(0, SIZE),
          old,
          everyFreshWrite,
        );
        expect((await again.check()).problems, `cut ${cut} seed ${seed}: check()`).toEqual([]);
        await again.close();
      }
      positions++;
      if (finished) break;
    }
    // 16 origin reads and 16 origin writes, and each group's data write, frame and flush.
    expect(positions).toBeGreaterThan(2 * ORDER.length + 3);
  });

  it('fails only the first writes whose blocks were in a store write that failed; the rest commit', async () => {
    let failed = false;
    const r = await rig(undefined, (op) => {
      // The first store write of more than one chunk: a group's data.
      if (failed || op.length < 2 * BS) return false;
      failed = true;
      return true;
    });
    await r.device.write(0, old);
    const snap = await r.device.snapshot();
    const free = r.device.freeChunks;
    const results = await firstWrites(r);
    expect(failed).toBe(true);
    const rejected = ORDER.filter((_, i) => results[i]?.status === 'rejected');
    const codes = await Promise.all(
      results.map((x) => (x.status === 'rejected' ? codeOf(Promise.reject(x.reason)) : 'ok')),
    );
    expect(codes.filter((c) => c !== 'ok').every((c) => c === 'EIO')).toBe(true);
    expect(rejected.length).toBeGreaterThanOrEqual(2);
    expect(rejected.length).toBeLessThan(ORDER.length);
    // Their chunks were freed, the others hold their preserved blocks; the log goes on.
    const committed = ORDER.length - rejected.length;
    expect(r.device.preservedBlocks).toBe(committed);
    expect(r.device.freeChunks).toBe(free - committed);
    for (const block of rejected) await r.device.write(block * BS, fresh);
    expect(r.device.preservedBlocks).toBe(ORDER.length);
    const again = await r.reopen();
    expectBytes(
      'snapshot after reopen',
      await (await again.openSnapshot(snap.id)).read(0, SIZE),
      old,
    );
    const expected = old.slice();
    for (const block of ORDER) expected.set(fresh, block * BS);
    expectBytes('origin after reopen', await again.read(0, SIZE), expected);
    expect((await again.check()).problems).toEqual([]);
    await r.dispose();
  });
});

describe('CowSnapshotDevice group commit over FileDevices (data and frame by WRITE_NOW)', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
  });

  /** A COW device over an origin and a store file; `writeNow` sees (and may refuse) the store's WRITE_NOW calls. */
  async function files(
    writeNow: (offset: number, data: Uint8Array, write: () => void) => void,
  ): Promise<{ cow: CowSnapshotDevice; reopen: () => Promise<CowSnapshotDevice> }> {
    const dir = fs.mkdtempSync(join(tmpdir(), 'blocksnap-cow-group-'));
    dirs.push(dir);
    const open = async (create: boolean) => {
      const origin = await FileDevice.open(join(dir, 'origin'), {
        size: SIZE,
        blockSize: BS,
        create,
      });
      const store = await FileDevice.open(join(dir, 'store'), {
        size: 128 * 1024,
        blockSize: BS,
        create,
      });
      const own = store[WRITE_NOW].bind(store);
      store[WRITE_NOW] = (offset, data) => writeNow(offset, data, () => own(offset, data));
      return create
        ? CowSnapshotDevice.create(origin, store, { maxSnapshots: 4 })
        : CowSnapshotDevice.open(origin, store);
    };
    return { cow: await open(true), reopen: () => open(false) };
  }

  it('commits overlapping groups with the store written on this thread, and reopens exact', async () => {
    const immediate: number[] = [];
    const { cow, reopen } = await files((_offset, data, write) => {
      immediate.push(data.length);
      write();
    });
    await cow.write(0, old);
    const snap = await cow.snapshot();
    immediate.length = 0;
    let next = 0;
    await Promise.all(
      Array.from({ length: WORKERS }, async () => {
        while (next < ORDER.length) await cow.write(ORDER[next++]! * BS, fresh);
      }),
    );
    // Data and frame by WRITE_NOW, some group's data several chunks at once.
    expect(immediate.length).toBeGreaterThan(0);
    expect(Math.max(...immediate)).toBeGreaterThanOrEqual(2 * BS);
    await cow.close();
    const again = await reopen();
    expectBytes('snapshot', await (await again.openSnapshot(snap.id)).read(0, SIZE), old);
    const expected = old.slice();
    for (const block of ORDER) expected.set(fresh, block * BS);
    expectBytes('origin', await again.read(0, SIZE), expected);
    expect((await again.check()).problems).toEqual([]);
    await again.close();
  });

  it('fails only the first writes whose data WRITE_NOW refused; the log goes on', async () => {
    let refused = false;
    const { cow, reopen } = await files((_offset, data, write) => {
      // The first data write of more than one chunk (frames are under a chunk here).
      if (!refused && data.length >= 2 * BS) {
        refused = true;
        throw new Error('injected: the disk refused the write');
      }
      write();
    });
    await cow.write(0, old);
    const snap = await cow.snapshot();
    const results: PromiseSettledResult<void>[] = [];
    let next = 0;
    await Promise.all(
      Array.from({ length: WORKERS }, async () => {
        while (next < ORDER.length) {
          const i = next++;
          [results[i]] = await Promise.allSettled([cow.write(ORDER[i]! * BS, fresh)]);
        }
      }),
    );
    expect(refused).toBe(true);
    const rejected = ORDER.filter((_, i) => results[i]?.status === 'rejected');
    expect(rejected.length).toBeGreaterThanOrEqual(2);
    for (const x of results)
      if (x.status === 'rejected') expect(await codeOf(Promise.reject(x.reason))).toBe('EIO');
    expect(cow.preservedBlocks).toBe(ORDER.length - rejected.length);
    for (const block of rejected) await cow.write(block * BS, fresh);
    await cow.close();
    const again = await reopen();
    expectBytes('snapshot', await (await again.openSnapshot(snap.id)).read(0, SIZE), old);
    expect(again.preservedBlocks).toBe(ORDER.length);
    expect((await again.check()).problems).toEqual([]);
    await again.close();
  });
});
