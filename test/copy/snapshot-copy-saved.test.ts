import { describe, expect, it } from 'vitest';
import { BlockDeviceError, SnapshotCopyJob } from '../../src/index.js';
import { rejectionOf, until, watch, within } from '../support/async.js';
import { expectAllowed, expectBytes, pattern } from '../support/bytes.js';
import { CopyCrashRig, CopyRig, geometry, POLICIES } from '../support/copy-job-rig.js';

/*
 * Without a map store, a write into a chunk no copy has read yet saves the
 * old bytes it overwrites (only those) and goes; the copier lays them back
 * when it copies the chunk. A rate of 1 byte per second holds the copier
 * after its first chunk, so the writes below land long before it arrives.
 */

const CHUNK = 4096;
const G = geometry(CHUNK, 16, { offset: 4096, destinationOffset: 512 });

/** A copy-first job with no map store, its copier held after chunk 0. */
async function heldJob(rig: CopyRig): Promise<SnapshotCopyJob> {
  const job = await SnapshotCopyJob.start(rig.options({ rate: 1 }));
  await until(() => job.progress.copiedBytes >= CHUNK, 'the first chunk is copied');
  return job;
}

/** The source reads issued since `from` (an index into the probe's log). */
function readsSince(rig: CopyRig, from: number): { offset: number; length: number }[] {
  return rig.source
    .of('read')
    .slice(from)
    .map(({ offset, length }) => ({ offset, length }));
}

describe('SnapshotCopyJob without a map store: old bytes saved for a write', () => {
  it('a write into a chunk not yet copied reads only its own old bytes and goes; a second write over them reads nothing new', async () => {
    const rig = await CopyRig.create(G);
    const job = await heldJob(rig);
    const at = G.offset + 9 * CHUNK + 10;
    let seen = rig.source.of('read').length;
    await within(rig.write(job.device, at, pattern(100, 1)), 5000, 'the first write');
    expect(readsSince(rig, seen)).toEqual([{ offset: at, length: 100 }]);
    // Overlapping the first: only its last 50 bytes are new to save.
    seen = rig.source.of('read').length;
    await rig.write(job.device, at + 50, pattern(100, 2));
    expect(readsSince(rig, seen)).toEqual([{ offset: at + 50, length: 100 }]);
    // Over the first again: nothing new to save, no read.
    seen = rig.source.of('read').length;
    await rig.write(job.device, at, pattern(100, 3));
    expect(readsSince(rig, seen)).toEqual([]);
    expectBytes(
      'read through the job',
      await job.device.read(at, 150),
      rig.model.subarray(at, at + 150),
    );
    expect(job.progress.copyFirstBytes).toBe(0);
    expect(rig.destination.of('write').length).toBe(1);
    job.setRate(0);
    // Chunk 9 in the destination is the start() image, not any of the writes.
    const report = await within(rig.expectDone(job), 10_000, 'the copy');
    expect(report.copierBytes).toBe(G.length);
  });

  it('overlapping writes called together, across a chunk edge, leave the start() image in the destination', async () => {
    const rig = await CopyRig.create(G);
    const job = await heldJob(rig);
    const edge = G.offset + 6 * CHUNK;
    await within(
      Promise.all([
        rig.write(job.device, edge - 300, pattern(600, 1)),
        rig.write(job.device, edge - 100, pattern(200, 2)),
        rig.write(job.device, edge - 300, pattern(1000, 3)),
        rig.write(job.device, edge + 5, pattern(10, 4)),
      ]),
      5000,
      'the writes',
    );
    expectBytes('source', await rig.sourceDisk.read(0, G.sourceSize), rig.model);
    job.setRate(0);
    await within(rig.expectDone(job), 10_000, 'the copy');
  });

  it('a write into a chunk whose copy is reading goes without waiting for that read; the copy still gets the old bytes', async () => {
    const rig = await CopyRig.create(G);
    // The copier's read of chunk 0 is held before it reaches the source.
    const held = rig.source.hold('read', (offset) => offset === G.offset);
    const job = await SnapshotCopyJob.start(rig.options({ rate: 1 }));
    await held.reached;
    const at = G.offset + 100;
    await within(rig.write(job.device, at, pattern(300, 1)), 5000, 'the write');
    // The source has the new bytes before the copy read them.
    expectBytes('source', await rig.sourceDisk.read(at, 300), pattern(300, 1));
    held.open();
    job.setRate(0);
    await within(rig.expectDone(job), 10_000, 'the copy');
  });

  it('queue: a queued write leaves once its old bytes are saved, before the copier reaches its chunk; overlapping ones leave in arrival order', async () => {
    const rig = await CopyRig.create(G);
    const job = await SnapshotCopyJob.start(rig.options({ conflictPolicy: 'queue', rate: 1 }));
    await until(() => job.progress.copiedBytes >= CHUNK, 'the first chunk is copied');
    const at = G.offset + 5 * CHUNK + 7;
    // Its save read is held: the write stays queued, and reads see it.
    const held = rig.source.hold('read', (offset, length) => offset === at && length === 200);
    const first = watch(rig.write(job.device, at, pattern(200, 1)));
    const second = watch(rig.write(job.device, at + 100, pattern(200, 2)));
    await held.reached;
    expect(first.settled).toBe(false);
    expect(job.progress.queuedWrites).toBe(2);
    expectBytes(
      'read through the job',
      await job.device.read(at, 300),
      rig.model.subarray(at, at + 300),
    );
    expectBytes(
      'source while held',
      await rig.sourceDisk.read(at, 300),
      rig.atStart.subarray(at, at + 300),
    );
    held.open();
    await within(Promise.all([first.promise, second.promise]), 5000, 'the queued writes');
    // Both left with the copier still held after chunk 0; the second after the first.
    expect(job.progress.copiedBytes).toBe(CHUNK);
    expectBytes('source', await rig.sourceDisk.read(at, 300), rig.model.subarray(at, at + 300));
    job.setRate(0);
    const report = await within(rig.expectDone(job), 10_000, 'the copy');
    expect(report.queuedWrites).toBe(2);
    expect(report.copyFirstBytes).toBe(0);
  });

  it.each(POLICIES)(
    '%s: a save whose read fails fails the job with EIO; the write lands; no destination chunk holds new bytes',
    async (policy) => {
      const rig = await CopyCrashRig.create(G, {
        policy,
        withStore: false,
        probed: false,
      });
      const job = await SnapshotCopyJob.start(rig.options({ rate: 1 }));
      await until(() => job.progress.copiedBytes >= CHUNK, 'the first chunk is copied');
      // The next source read is the write's save (the copier waits on its budget).
      rig.faulty('source').failNext('read');
      await rig.base.write(job.device, G.offset + 9 * CHUNK + 10, pattern(100, 1));
      const err = await within(rejectionOf(job.done), 5000, 'done');
      expect(BlockDeviceError.is(err, 'EIO'), String(err)).toBe(true);
      await rig.base.expectSource();
      await rig.base.expectWholeChunks();
      await job.device.close();
    },
  );

  describe('power cuts', () => {
    // Every I/O position of a small copy with writes into uncopied chunks:
    // the source holds old or new bytes; the destination range never holds a
    // byte that is neither what it held before nor the start() image; and a
    // job whose `done` resolved and whose destination was then flushed holds
    // the exact copy after the cut.
    it.each(POLICIES)('%s: the destination never holds a written byte', async (p) => {
      let positions = 0;
      let completed = 0;
      for (let cut = 0; ; cut++) {
        let finished = false;
        for (let seed = 0; seed < 3; seed++) {
          const g = geometry(4096, 6, { offset: 700, short: 100 });
          const rig = await CopyCrashRig.create(g, { policy: p, withStore: false, probed: false });
          rig.power.cutAfter(cut);
          const job = await rig.start().catch(() => undefined);
          const writes: { offset: number; data: Uint8Array }[] = [];
          let exact = false;
          if (job !== undefined) {
            const planned = [700 + 4096 + 5, 700 + 4096 + 50, 700 - 20, 700 + 4 * 4096 - 10];
            const pending = planned.map((at, i) => {
              const data = pattern(100, i + 1);
              writes.push({ offset: at, data });
              return job.device.write(at, data);
            });
            const done = watch(job.done);
            await Promise.allSettled([...pending, done.promise]);
            const flushed = await done.promise
              .then(() => rig.faulty('destination').flush())
              .then(
                () => true,
                () => false,
              );
            exact = flushed && rig.power.isOn;
          }
          finished = rig.power.isOn;
          await rig.crash(seed);
          const what = `cut ${cut} seed ${seed}`;
          expectAllowed(`${what}: source`, await rig.source(), rig.base.atStart, writes);
          const { destinationOffset: at, length } = g;
          const dest = await rig.base.destinationDisk.read(at, length);
          const before = rig.base.destinationBefore.subarray(at, at + length);
          const image = rig.base.snapshot();
          for (let i = 0; i < length; i++) {
            if (dest[i] !== before[i] && dest[i] !== image[i]) {
              throw new Error(
                `${what}: destination range byte ${i} is ${dest[i]}, neither before nor start()`,
              );
            }
          }
          if (exact) {
            completed++;
            await rig.base.expectCopy(what);
          }
        }
        positions++;
        if (finished) break;
      }
      expect(positions).toBeGreaterThanOrEqual(10);
      expect(completed).toBeGreaterThanOrEqual(3);
    });
  });
});
