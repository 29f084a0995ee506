import { describe, expect, it } from 'vitest';
import {
  type CheckReport,
  MemoryDevice,
  SnapshotCopyJob,
  type SnapshotCopyJobResumeOptions,
} from '../../src/index.js';
import { FaultyDevice } from '../../src/testing/index.js';
import { sleep, within } from '../support/async.js';
import { fill, flipBit, pattern } from '../support/bytes.js';
import { expectCode } from '../support/error-code.js';
import { GatedDevice } from '../support/gated-device.js';

/*
 * check() of a copy job's map store (docs/ARCHITECTURE.md, "check()"):
 * `SnapshotCopyJob.checkMap(options)` before a resume, `job.checkMap()` while
 * the job runs. A clean map reports nothing; a flipped bit in either slot is
 * reported with the slot's offset; checking writes nothing, and commits
 * running through it are never reported as damage.
 */

const SIZE = 64 * 1024;
const CHUNK = 4096;

async function devices(mapStore: (disk: MemoryDevice) => FaultyDevice | GatedDevice): Promise<{
  options: SnapshotCopyJobResumeOptions;
  mapDisk: MemoryDevice;
}> {
  const source = await MemoryDevice.create({ size: SIZE, blockSize: 512 });
  await source.write(0, pattern(SIZE, 4));
  const destination = await MemoryDevice.create({ size: SIZE, blockSize: 512 });
  const mapDisk = await MemoryDevice.create({ size: 4096, blockSize: 512 });
  return {
    options: { source, destination, mapStore: mapStore(mapDisk), chunkSize: CHUNK },
    mapDisk,
  };
}

/** A finished job's devices, its map store behind a FaultyDevice. */
async function finished(): Promise<{
  options: SnapshotCopyJobResumeOptions;
  mapDisk: MemoryDevice;
  slot: number;
}> {
  const { options, mapDisk } = await devices((disk) => new FaultyDevice(disk));
  const job = await SnapshotCopyJob.start(options);
  await job.done;
  return { options, mapDisk, slot: SnapshotCopyJob.mapStoreBytes(options) / 2 };
}

function found(report: CheckReport): [string, number][] {
  return report.problems.map((p) => [p.structure, p.offset]);
}

describe('SnapshotCopyJob.checkMap', () => {
  it('reports nothing on an undamaged map store, after reading both slots', async () => {
    const { options } = await finished();
    const report = await SnapshotCopyJob.checkMap(options);
    expect(report.problems).toEqual([]);
    expect(report.readable).toEqual({ reopens: true, live: [], snapshots: [] });
    expect(report.checked).toMatchObject({ superblocks: 2, tables: 2, records: 2 * 16 });
  });

  it.each([
    { what: "slot 0's bitmap", flip: () => 64, slot: 0 },
    { what: "slot 1's header", flip: (slot: number) => slot + 20, slot: 1 },
  ])('reports a flipped bit in $what with the slot and its store offset', async (c) => {
    const { options, mapDisk, slot } = await finished();
    await flipBit(mapDisk, c.flip(slot));
    const report = await SnapshotCopyJob.checkMap(options);
    expect(found(report)).toEqual([['copy-map', c.slot * slot]]);
    expect(report.problems[0]!.message).toContain('fails its checksum');
    // Either slot may have been the newer: resuming from the other could copy new data.
    expect(report.readable.reopens).toBe(false);
  });

  it('reports slots that describe another copy', async () => {
    const { options, slot } = await finished();
    const report = await SnapshotCopyJob.checkMap({
      ...options,
      destinationOffset: 512,
      length: SIZE - 512,
    });
    expect(found(report)).toEqual([
      ['copy-map', 0],
      ['copy-map', slot],
    ]);
    expect(report.problems[0]!.message).toContain('describes another copy');
  });

  it('reads the map store and writes and flushes nothing', async () => {
    const { options } = await finished();
    const store = options.mapStore as FaultyDevice;
    store.resetStats();
    expect((await SnapshotCopyJob.checkMap(options)).problems).toEqual([]);
    expect(store.stats).toMatchObject({ writes: 0, flushes: 0, bytesWritten: 0 });
    expect(store.stats.reads).toBeGreaterThan(0);
  });

  it('a failing map store read is EIO with the cause kept; no map store is EINVAL', async () => {
    const { options } = await finished();
    (options.mapStore as FaultyDevice).failNext('read');
    const err = await expectCode(SnapshotCopyJob.checkMap(options), 'EIO');
    expect(err.cause).toBeInstanceOf(Error);
    const { mapStore: _, ...withoutStore } = options;
    await expectCode(
      SnapshotCopyJob.checkMap(withoutStore as SnapshotCopyJobResumeOptions),
      'EINVAL',
    );
  });
});

describe('job.checkMap() on a running job', () => {
  it('reports nothing while the copier and copy-first writes commit through it', async () => {
    const { options } = await devices(
      (disk) => new FaultyDevice(disk, { latency: (op) => (op.kind === 'write' ? 1 : 0) }),
    );
    const job = await SnapshotCopyJob.start(options);
    let running = true;
    job.done.finally(() => {
      running = false;
    });
    const writes: Promise<void>[] = [];
    const reports: CheckReport[] = [];
    for (let i = 0; running; i++) {
      writes.push(job.device.write(((i * 5) % 16) * CHUNK, fill(512, i)));
      reports.push(await job.checkMap());
      // A check of a memory map store settles in microtasks: let the job's timers run.
      await sleep(1);
    }
    await Promise.all(writes);
    await job.done;
    expect(reports.flatMap((r) => r.problems)).toEqual([]);
    expect(reports.length).toBeGreaterThan(1);
  });

  it('holds the commits that arrive while it reads the slots', async () => {
    const { options } = await devices((disk) => new GatedDevice(disk));
    const store = options.mapStore as GatedDevice;
    // Writes into uncopied chunks must wait for commits: the copier is held at its first write.
    const copier = new GatedDevice(options.destination as MemoryDevice);
    const held = copier.gate('write');
    const job = await SnapshotCopyJob.start({ ...options, destination: copier });
    await within(held.reached, 5000, 'the copier writing');
    const slotsRead = store.gate('read');
    const checking = job.checkMap();
    await within(slotsRead.reached, 5000, 'the check reading the map store');
    const writes = [8, 12].map((chunk) => job.device.write(chunk * CHUNK, fill(512, chunk)));
    held.open();
    await sleep(10);
    slotsRead.open();
    const report = await checking;
    await Promise.all(writes);
    await job.done;
    expect(report.problems).toEqual([]);
    expect((await job.checkMap()).problems).toEqual([]);
  });

  it('is EINVAL for a job without a map store', async () => {
    const { options } = await devices((disk) => new FaultyDevice(disk));
    const job = await SnapshotCopyJob.start({ ...options, mapStore: undefined });
    await expectCode(job.checkMap(), 'EINVAL');
    await job.done;
  });
});
