import { describe, expect, it } from 'vitest';
import {
  BlockDeviceError,
  type CopyReport,
  MemoryDevice,
  readInto,
  SnapshotCopyJob,
  type SnapshotCopyJobOptions,
} from '../../src/index.js';
import { FaultyDevice } from '../../src/testing/index.js';
import { rejectionOf, until, watch, within } from '../support/async.js';
import { expectAllowed, expectBytes, pattern } from '../support/bytes.js';
import {
  CopyCrashRig,
  type CopyGeometry,
  CopyRig,
  geometry,
  POLICIES,
  progressOf,
} from '../support/copy-job-rig.js';
import { codeOf } from '../support/error-code.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Unaligned everywhere: range start, range end, destination offset. */
const SMALL = geometry(4096, 12, { offset: 1000, short: 300, destinationOffset: 777 });
/** Two copier runs (1 MiB each at most): the second can finish while the first is held. */
const TWO_RUNS = geometry(64 * KiB, 20, { offset: 4096 });

/** Range byte `at` as a source offset. */
function src(g: CopyGeometry, at: number): number {
  return g.offset + at;
}

/** The destination offset of chunk `c`. */
function chunkAt(g: CopyGeometry, c: number): number {
  return g.destinationOffset + c * g.chunkSize;
}

/** Which of the two map slots holds the higher generation (a slot's f64 at byte 8). */
async function newestMapSlot(store: MemoryDevice, slotBytes: number): Promise<number> {
  const generation = async (slot: number) => {
    const head = await store.read(slot * slotBytes, 16);
    return new DataView(head.buffer).getFloat64(8, true);
  };
  return (await generation(1)) > (await generation(0)) ? 1 : 0;
}

function expectReportAddsUp(report: CopyReport, total: number): void {
  expect(report.totalBytes).toBe(total);
  expect(report.copierBytes + report.copyFirstBytes + report.resumedBytes).toBe(total);
  expect(report.durationMs).toBeGreaterThanOrEqual(0);
}

describe('SnapshotCopyJob', () => {
  it.each(POLICIES)(
    '%s: copies the range as it was at start() while writes go on inside, outside and across its edges',
    async (conflictPolicy) => {
      const rig = await CopyRig.create(SMALL);
      const g = rig.g;
      const job = await SnapshotCopyJob.start(rig.options({ conflictPolicy }));
      const d = job.device;
      const writes = [
        rig.write(d, src(g, 5000), pattern(3000, 1)),
        rig.write(d, src(g, 5500), pattern(100, 2)), // overlaps the one before
        rig.write(d, src(g, -100), pattern(250, 3)), // across the start of the range
        rig.write(d, src(g, g.length - 50), pattern(200, 4)), // across its end
        rig.write(d, 10, pattern(500, 5)), // before it
        rig.write(d, src(g, g.length + 100), pattern(300, 6)), // after it
        rig.write(d, src(g, 20_000), pattern(10_000, 7)), // over several chunks
        rig.write(d, src(g, 20_001), pattern(3, 8)),
      ];
      await Promise.all(writes);
      // Reads through the job see every write, wherever it went.
      expectBytes('read through the job', await d.read(0, g.sourceSize), rig.model);
      const report = await rig.expectDone(job);
      expectReportAddsUp(report, g.length);
    },
  );

  it('starts without waiting for the copy; writes outside the range pass straight through', async () => {
    const rig = await CopyRig.create(SMALL);
    const held = rig.destination.hold('write');
    const job = await SnapshotCopyJob.start(rig.options({ conflictPolicy: 'queue' }));
    const done = watch(job.done);
    await held.reached;
    expect(done.settled).toBe(false);
    expect(job.progress.copiedBytes).toBe(0);
    // The copier is stuck, yet writes outside the range complete.
    await within(rig.write(job.device, 0, pattern(512, 1)), 1000, 'write before the range');
    const after = src(rig.g, rig.g.length);
    await within(rig.write(job.device, after, pattern(700, 2)), 1000, 'write after the range');
    await rig.expectSource();
    held.open();
    await job.done;
    await rig.expectCopy();
  });

  it.each(POLICIES)('%s: a write into a part already copied passes straight through', async (p) => {
    const rig = await CopyRig.create(TWO_RUNS);
    const g = rig.g;
    // Hold the first run; the second (chunks 16..19) completes.
    const held = rig.destination.hold('write', (offset) => offset === chunkAt(g, 0));
    const job = await SnapshotCopyJob.start(rig.options({ conflictPolicy: p }));
    await until(() => job.progress.copiedBytes === 4 * g.chunkSize, 'the second run is copied');
    const before = { source: rig.source.ops.length, destination: rig.destination.ops.length };
    await within(
      rig.write(job.device, src(g, 17 * g.chunkSize + 5), pattern(9000, 1)),
      1000,
      'write into a copied chunk',
    );
    // One source write, no copy.
    expect(rig.source.ops.slice(before.source).map((op) => op.kind)).toEqual(['write']);
    expect(rig.destination.ops.length).toBe(before.destination);
    held.open();
    await rig.expectDone(job);
  });

  it.each(POLICIES)(
    '%s, no map store: a write into a part being copied goes once its old bytes are read, without waiting for their destination write',
    async (conflictPolicy) => {
      const rig = await CopyRig.create(SMALL);
      const g = rig.g;
      // A write over chunks 7 and 8; chunk 8's destination write is held.
      const held = rig.destination.hold('write', (offset) => offset === chunkAt(g, 8));
      const job = await SnapshotCopyJob.start(rig.options({ conflictPolicy }));
      const at = src(g, 8 * g.chunkSize - 10);
      await within(
        rig.write(job.device, at, pattern(100, 1)),
        1000,
        'the write while its chunk is on its way to the destination',
      );
      await held.reached;
      const [sourceWrite] = rig.source.of('write');
      // A source read of the bytes it overwrites came before the source write
      // (the copy's, or the write's own save of its old bytes)...
      const reads = rig.source
        .of('read')
        .filter((op) => op.offset <= at && at + 100 <= op.offset + op.length);
      expect(reads.some((read) => read.seq < sourceWrite!.seq)).toBe(true);
      held.open();
      // ...and the destination holds the range as it was at start(), chunk 8 included.
      const report = await rig.expectDone(job);
      expectReportAddsUp(report, g.length);
    },
  );

  it.each(POLICIES)(
    '%s, with a map store: a write into a part not yet copied waits until that part is in the destination',
    async (conflictPolicy) => {
      const rig = await CopyRig.create(SMALL);
      const g = rig.g;
      // A write over chunks 7 and 8; chunk 8's copy is held.
      const held = rig.destination.hold('write', (offset) => offset === chunkAt(g, 8));
      const job = await SnapshotCopyJob.start(rig.options({ conflictPolicy }, true));
      const at = src(g, 8 * g.chunkSize - 10);
      const write = watch(rig.write(job.device, at, pattern(100, 1)));
      await held.reached;
      for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
      expect(write.settled).toBe(false);
      expect(rig.source.of('write')).toEqual([]);
      held.open();
      await write.promise;
      const [sourceWrite] = rig.source.of('write');
      const copies = rig.destination
        .of('write')
        .filter((op) => op.offset === chunkAt(g, 7) || op.offset === chunkAt(g, 8));
      expect(copies.length).toBeGreaterThanOrEqual(2);
      for (const copy of copies) expect(copy.seq).toBeLessThan(sourceWrite!.seq);
      await rig.expectDone(job);
    },
  );

  it('copy-first, with a map store: a write into a part not yet copied copies that part itself', async () => {
    const rig = await CopyRig.create(SMALL);
    const g = rig.g;
    // A write over chunks 7 and 8: its own copy of them reads from chunk 7; that read is held.
    const held = rig.source.hold('read', (offset) => offset === src(g, 7 * g.chunkSize));
    const job = await SnapshotCopyJob.start(rig.options({ conflictPolicy: 'copy-first' }, true));
    const at = src(g, 8 * g.chunkSize - 10);
    const write = watch(rig.write(job.device, at, pattern(100, 1)));
    await held.reached;
    await until(
      () => job.progress.copierBytes === g.length - 2 * g.chunkSize,
      'the copier has copied every other chunk',
    );
    // The copier skipped chunks 7 and 8; the write waits for their copy.
    expect(write.settled).toBe(false);
    expect(rig.source.of('write')).toEqual([]);
    held.open();
    await write.promise;
    const report = await rig.expectDone(job);
    expect(report.copyFirstBytes).toBe(2 * g.chunkSize);
    expectReportAddsUp(report, g.length);
  });

  it('queue, with a map store: a write waits until the copier has taken its chunk; reads see it meanwhile', async () => {
    const rig = await CopyRig.create(SMALL);
    const g = rig.g;
    // The copier's read of chunk 3 (the chunk the write waits for, taken first) is held.
    const held = rig.source.hold(
      'read',
      (offset, length) => offset === src(g, 3 * g.chunkSize) && length === g.chunkSize,
    );
    const job = await SnapshotCopyJob.start(rig.options({ conflictPolicy: 'queue' }, true));
    const events = progressOf(job);
    const at = src(g, 3 * g.chunkSize + 100);
    const write = watch(rig.write(job.device, at, pattern(1000, 1)));
    await held.reached;
    expect(write.settled).toBe(false);
    expect(job.progress.queuedWrites).toBe(1);
    expect(events.some((e) => e.queuedWrites === 1)).toBe(true);
    expectBytes(
      'read of the queued write',
      await job.device.read(at - 50, 1100),
      rig.model.subarray(at - 50, at + 1050),
    );
    // readInto too: the source reads into the caller's buffer, the held write laid over it.
    const target = new Uint8Array(1100);
    expect(await readInto(job.device, at - 50, target)).toBe(target);
    expectBytes('readInto of the queued write', target, rig.model.subarray(at - 50, at + 1050));
    // The source itself is untouched until the chunk is copied.
    expectBytes('source', await rig.sourceDisk.read(at, 1000), rig.atStart.subarray(at, at + 1000));
    held.open();
    await write.promise;
    const report = await rig.expectDone(job);
    expect(report.queuedWrites).toBe(1);
    expect(report.copyFirstBytes).toBe(0);
  });

  it.each(POLICIES)(
    '%s: with a map store, a write into an uncopied chunk reaches the source only once the map holding it is durable',
    async (conflictPolicy) => {
      const rig = await CopyRig.create(SMALL);
      const g = rig.g;
      const job = await SnapshotCopyJob.start(rig.options({ conflictPolicy }, true));
      const commit = rig.mapStore.hold('write');
      const at = src(g, 5 * g.chunkSize + 9);
      const write = watch(rig.write(job.device, at, pattern(64, 1)));
      await commit.reached;
      await until(() => rig.destination.of('write').length === 12, 'every chunk is written');
      // The chunk is in the destination, but no durable map says so yet.
      for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
      expect(write.settled).toBe(false);
      expect(rig.source.of('write')).toEqual([]);
      commit.open();
      await write.promise;
      const [sourceWrite] = rig.source.of('write');
      const flushes = rig.mapStore.of('flush').filter((f) => f.seq < sourceWrite!.seq);
      // The flush of the start map, then that of the commit.
      expect(flushes.length).toBeGreaterThanOrEqual(2);
      await rig.expectDone(job);
    },
  );

  it('queue: writes over the same bytes are applied in arrival order', async () => {
    const rig = await CopyRig.create(SMALL);
    const g = rig.g;
    const held = rig.destination.hold('write', (offset) => offset === chunkAt(g, 2));
    const job = await SnapshotCopyJob.start(rig.options({ conflictPolicy: 'queue' }));
    const base = src(g, 2 * g.chunkSize);
    const planned = [
      [base + 100, 2000],
      [base + 50, 200],
      [base - 500, 5000], // over chunks 1..3
      [base + 120, 30],
      [base + 1000, 4000],
      [base + 110, 20],
    ] as const;
    const writes = planned.map(([at, n], i) => rig.write(job.device, at, pattern(n, i + 10)));
    await held.reached;
    expectBytes('read while queued', await job.device.read(0, g.sourceSize), rig.model);
    held.open();
    await Promise.all(writes);
    // Each reached the source after every earlier write it overlaps.
    const order = planned.map(([at, n]) => {
      const op = rig.source.of('write').find((w) => w.offset === at && w.length === n);
      return op!.seq;
    });
    for (let i = 0; i < planned.length; i++) {
      for (let k = 0; k < i; k++) {
        const [a, an] = planned[k]!;
        const [b, bn] = planned[i]!;
        if (a < b + bn && b < a + an) expect(order[k]).toBeLessThan(order[i]!);
      }
    }
    await rig.expectDone(job);
  });

  it('queue: the copier takes chunks with waiting writes first', async () => {
    // 128 chunks of 256 KiB to a destination that writes one chunk at a time, 1 ms each.
    const rig = await CopyRig.create(geometry(256 * KiB, 128), 1, 4096);
    const g = rig.g;
    rig.destination.writeMs = 1;
    const t0 = performance.now();
    const job = await SnapshotCopyJob.start(rig.options({ conflictPolicy: 'queue' }));
    let copiedWhenApplied = -1;
    let appliedAt = 0;
    await rig.write(job.device, src(g, g.length - 5000), pattern(4096, 1)).then(() => {
      copiedWhenApplied = job.progress.copiedBytes;
      appliedAt = performance.now() - t0;
    });
    await rig.expectDone(job);
    const total = performance.now() - t0;
    // In order, the copier would reach the last chunk at the very end.
    expect(copiedWhenApplied).toBeLessThan(g.length / 4);
    expect(appliedAt).toBeLessThan(total / 2);
  });

  it.each([512, 4096, 64 * KiB, 2 * MiB])(
    'chunkSize %i fixes the size of every destination write',
    async (chunkSize) => {
      const rig = await CopyRig.create(
        geometry(chunkSize, 5, { offset: 333, short: chunkSize / 2 + 3, destinationOffset: 1234 }),
        1,
        4096,
      );
      const g = rig.g;
      const job = await SnapshotCopyJob.start(rig.options());
      // Copy-first copies write chunks too.
      await rig.write(job.device, src(g, 3 * chunkSize + 7), pattern(100, 1));
      await rig.write(job.device, src(g, chunkSize - 1), pattern(2, 2));
      await job.done;
      const writes = rig.destination.of('write').sort((a, b) => a.offset - b.offset);
      expect(writes.map((w) => w.offset)).toEqual([0, 1, 2, 3, 4].map((c) => chunkAt(g, c)));
      const last = g.length - 4 * chunkSize;
      expect(writes.map((w) => w.length)).toEqual([
        chunkSize,
        chunkSize,
        chunkSize,
        chunkSize,
        last,
      ]);
      await rig.expectCopy();
      await rig.expectSource();
    },
  );

  it.each([512, 4096, 64 * KiB])(
    'the copier coalesces chunks of %i bytes into large sequential source reads',
    async (chunkSize) => {
      const rig = await CopyRig.create(geometry(chunkSize, (4 * MiB) / chunkSize), 1, 4096);
      const g = rig.g;
      const job = await SnapshotCopyJob.start(rig.options());
      await job.done;
      const reads = rig.source.of('read').sort((a, b) => a.offset - b.offset);
      expect(reads.length).toBeLessThanOrEqual(g.length / (256 * KiB));
      let at = g.offset;
      for (const read of reads) {
        expect(read.offset).toBe(at);
        at += read.length;
      }
      expect(at).toBe(g.offset + g.length);
      await rig.expectCopy();
    },
  );

  it.each(POLICIES)(
    '%s, with a map store: progress events rise to totalBytes; the report adds up',
    async (conflictPolicy) => {
      const rig = await CopyRig.create(geometry(4096, 300, { offset: 99, short: 100 }));
      const g = rig.g;
      const held = rig.destination.hold('write', (offset) => offset === chunkAt(g, 0));
      const job = await SnapshotCopyJob.start(rig.options({ conflictPolicy }, true));
      const events = progressOf(job);
      const chunks = [3, 40, 41, 299];
      const writes = chunks.map((c, i) =>
        rig.write(job.device, src(g, c * g.chunkSize + 1), pattern(10, i)),
      );
      held.open();
      await Promise.all(writes);
      const report = await rig.expectDone(job);
      expect(events.length).toBeGreaterThan(1);
      for (let i = 1; i < events.length; i++) {
        expect(events[i]!.copiedBytes).toBeGreaterThanOrEqual(events[i - 1]!.copiedBytes);
      }
      expect(events.at(-1)!.copiedBytes).toBe(g.length);
      expect(job.progress).toMatchObject({ copiedBytes: g.length, totalBytes: g.length });
      expectReportAddsUp(report, g.length);
      expect(report.resumedBytes).toBe(0);
      if (conflictPolicy === 'queue') {
        expect(report.queuedWrites).toBe(chunks.length);
        expect(report.copyFirstBytes).toBe(0);
        expect(Math.max(...events.map((e) => e.queuedWrites))).toBeGreaterThanOrEqual(1);
      } else {
        // Chunk 299 is the short last one.
        expect(report.copyFirstBytes).toBe(3 * g.chunkSize + (g.length - 299 * g.chunkSize));
        expect(report.queuedWrites).toBe(0);
      }
    },
  );

  it('an empty range is done at once', async () => {
    const rig = await CopyRig.create(SMALL);
    const job = await SnapshotCopyJob.start(rig.options({ length: 0 }, true));
    const report = await job.done;
    expect(report).toMatchObject({ totalBytes: 0, copierBytes: 0, copyFirstBytes: 0 });
    expect(rig.destination.of('write')).toEqual([]);
  });

  describe('bad input changes nothing', () => {
    type Case = [string, string, (rig: CopyRig) => unknown];
    const cases: Case[] = [
      ['options that are not an object', 'EINVAL', () => null],
      ['a source that is not a device', 'EINVAL', (r) => ({ ...r.options(), source: {} })],
      ['a destination that is not a device', 'EINVAL', (r) => ({ ...r.options(), destination: 7 })],
      ['a missing destination', 'EINVAL', (r) => ({ ...r.options(), destination: undefined })],
      ['a map store that is not a device', 'EINVAL', (r) => r.options({ mapStore: 'x' as never })],
      [
        'a read-only destination',
        'EINVAL',
        (r) => r.options({ destination: r.destinationDisk.reopen({ readOnly: true }) }),
      ],
      ['a negative offset', 'ERANGE', (r) => r.options({ offset: -1 })],
      ['a fractional offset', 'ERANGE', (r) => r.options({ offset: 1.5 })],
      ['an offset that is a string', 'EINVAL', (r) => r.options({ offset: '0' as never })],
      ['a NaN length', 'ERANGE', (r) => r.options({ length: Number.NaN })],
      ['a negative destinationOffset', 'ERANGE', (r) => r.options({ destinationOffset: -512 })],
      [
        'a range past the end of the source',
        'ERANGE',
        (r) => r.options({ length: r.g.sourceSize - r.g.offset + 1 }),
      ],
      [
        'a copy past the end of the destination',
        'ERANGE',
        (r) => r.options({ destinationOffset: r.g.destinationSize - r.g.length + 1 }),
      ],
      ['a chunk size that is not a power of two', 'EINVAL', (r) => r.options({ chunkSize: 1000 })],
      ['a chunk size under 512', 'EINVAL', (r) => r.options({ chunkSize: 256 })],
      ['a chunk size over 64 MiB', 'EINVAL', (r) => r.options({ chunkSize: 128 * MiB })],
      ['a chunk size that is a string', 'EINVAL', (r) => r.options({ chunkSize: '4096' as never })],
      ['an unknown policy', 'EINVAL', (r) => r.options({ conflictPolicy: 'later' as never })],
    ];
    const storeCases: Case[] = [
      [
        'a map store too small',
        'EINVAL',
        // SMALL's map needs 1024 bytes.
        async (r) =>
          r.options({ mapStore: await MemoryDevice.create({ size: 512, blockSize: 512 }) }),
      ],
      [
        'a read-only map store',
        'EINVAL',
        (r) => r.options({ mapStore: r.storeDisk.reopen({ readOnly: true }) }),
      ],
    ];

    async function expectUntouched(rig: CopyRig): Promise<void> {
      expect([rig.source.ops, rig.destination.ops, rig.mapStore.ops]).toEqual([[], [], []]);
      await rig.expectSource();
      expectBytes(
        'destination',
        await rig.destinationDisk.read(0, rig.g.destinationSize),
        rig.destinationBefore,
      );
      expectBytes(
        'map store',
        await rig.storeDisk.read(0, rig.storeDisk.size),
        new Uint8Array(rig.storeDisk.size),
      );
    }

    it.each([...cases, ...storeCases])('%s is %s', async (_what, code, options) => {
      const rig = await CopyRig.create(SMALL);
      const bad = (await options(rig)) as SnapshotCopyJobOptions;
      expect(await codeOf(SnapshotCopyJob.start(bad))).toBe(code);
      expect(
        await codeOf(
          SnapshotCopyJob.resume({ mapStore: rig.mapStore, ...bad } as never).then(() => {}),
        ),
      ).toBe(code);
      await expectUntouched(rig);
    });

    // mapStoreBytes checks what fixes the map's size, not the policy.
    const sized = cases.filter(([what]) => !what.includes('policy'));
    it.each(sized)('mapStoreBytes: %s is %s', async (_what, code, options) => {
      const rig = await CopyRig.create(SMALL);
      expect(
        await codeOf((async () => SnapshotCopyJob.mapStoreBytes(options(rig) as never))()),
      ).toBe(code);
    });

    it('resume without a map store is EINVAL', async () => {
      const rig = await CopyRig.create(SMALL);
      expect(await codeOf(SnapshotCopyJob.resume(rig.options() as never))).toBe('EINVAL');
      await expectUntouched(rig);
    });
  });

  describe('resume', () => {
    it('of a finished job copies nothing', async () => {
      const rig = await CopyRig.create(SMALL);
      await (await SnapshotCopyJob.start(rig.options({}, true))).done;
      const writesBefore = rig.destination.of('write').length;
      const readsBefore = rig.source.of('read').length;
      const job = await SnapshotCopyJob.resume(rig.options({}, true) as never);
      const report = await job.done;
      expect(report).toMatchObject({
        copierBytes: 0,
        copyFirstBytes: 0,
        resumedBytes: rig.g.length,
      });
      expect(rig.destination.of('write').length).toBe(writesBefore);
      expect(rig.source.of('read').length).toBe(readsBefore);
      // And its device passes through.
      await rig.write(job.device, src(rig.g, 0), pattern(100, 1));
      await rig.expectSource();
      await rig.expectCopy();
    });

    it.each([
      ['offset', { offset: SMALL.offset + 512 }],
      ['length', { length: SMALL.length - 512 }],
      ['destinationOffset', { destinationOffset: SMALL.destinationOffset + 1 }],
      ['chunkSize', { chunkSize: SMALL.chunkSize * 2 }],
    ])('with another %s is EINVAL and changes nothing', async (_key, change) => {
      const rig = await CopyRig.create(SMALL);
      const job = await SnapshotCopyJob.start(rig.options({ signal: AbortSignal.abort() }, true));
      await rejectionOf(job.done);
      const store = await rig.storeDisk.read(0, rig.storeDisk.size);
      const writes = () => rig.destination.of('write').length + rig.mapStore.of('write').length;
      const before = writes();
      expect(await codeOf(SnapshotCopyJob.resume(rig.options(change, true) as never))).toBe(
        'EINVAL',
      );
      expect(writes()).toBe(before);
      expectBytes('map store', await rig.storeDisk.read(0, rig.storeDisk.size), store);
    });

    it('of a source of another size is EINVAL', async () => {
      const rig = await CopyRig.create(SMALL);
      await (await SnapshotCopyJob.start(rig.options({}, true))).done;
      const other = await CopyRig.create({ ...SMALL, sourceSize: SMALL.sourceSize + 4096 });
      const resumed = SnapshotCopyJob.resume(
        rig.options({ source: other.source, mapStore: rig.mapStore }) as never,
      );
      expect(await codeOf(resumed)).toBe('EINVAL');
    });

    it('from a map store that holds no valid map is ECORRUPT', async () => {
      const rig = await CopyRig.create(SMALL);
      // Never written.
      expect(await codeOf(SnapshotCopyJob.resume(rig.options({}, true) as never))).toBe('ECORRUPT');
      await (await SnapshotCopyJob.start(rig.options({}, true))).done;
      // One flipped bit in each slot: in the header of one, in the bitmap of the other.
      const half = rig.storeDisk.size / 2;
      for (const at of [20, half + 64]) {
        const byte = await rig.storeDisk.read(at, 1);
        await rig.storeDisk.write(at, Uint8Array.of(byte[0]! ^ 0x10));
      }
      const writes = rig.destination.of('write').length;
      expect(await codeOf(SnapshotCopyJob.resume(rig.options({}, true) as never))).toBe('ECORRUPT');
      expect(rig.destination.of('write').length).toBe(writes);
    });

    // Found by the damage trials (test/property/damage-copy.test.ts): with
    // one slot per commit, damage to the newest slot (or a lost write that
    // left it holding an older map) made resume fall back to the older map
    // and copy again, from a source written since, chunks the lost commit
    // had covered.
    it.each([
      ['a lost write left its older map', 'older'],
      ['a flipped bit', 'bit'],
      ['zeros', 'zero'],
    ] as const)('resumes exactly when the newest map slot holds %s', async (_what, damage) => {
      const rig = await CopyRig.create(SMALL);
      const slot = rig.storeDisk.size / 2;
      const controller = new AbortController();
      const job = await SnapshotCopyJob.start(rig.options({ signal: controller.signal }, true));
      const before = await rig.storeDisk.read(0, rig.storeDisk.size);
      // Copy-first copies chunk 2 and commits it before the write reaches
      // the source; the copier never starts.
      const write = rig.write(job.device, src(rig.g, 2 * 4096 + 5), pattern(10, 1));
      controller.abort();
      await rejectionOf(job.done);
      await write;
      const newest = (await newestMapSlot(rig.storeDisk, slot)) * slot;
      if (damage === 'older')
        await rig.storeDisk.write(newest, before.slice(newest, newest + slot));
      if (damage === 'zero') await rig.storeDisk.write(newest, new Uint8Array(slot));
      if (damage === 'bit') {
        const byte = await rig.storeDisk.read(newest + 20, 1);
        await rig.storeDisk.write(newest + 20, Uint8Array.of(byte[0]! ^ 0x04));
      }
      const resumed = await SnapshotCopyJob.resume(rig.options({}, true) as never);
      await resumed.done;
      await rig.expectCopy();
    });

    it('finishes an aborted copy without copying twice', async () => {
      for (const abortAfter of [0, 1, 3, 6]) {
        const rig = await CopyRig.create(geometry(MiB, 8, { offset: 512, short: 1000 }), 1, 4096);
        const g = rig.g;
        const controller = new AbortController();
        let chunkWrites = 0;
        rig.destination.onOp = (op) => {
          if (op.kind === 'write' && ++chunkWrites > abortAfter) controller.abort();
        };
        const job = await SnapshotCopyJob.start(rig.options({ signal: controller.signal }, true));
        await rejectionOf(job.done);
        rig.destination.onOp = undefined;
        const copied = await rig.expectWholeChunks();
        if (abortAfter <= 3) expect(copied).toBeLessThan(8);
        const again = await SnapshotCopyJob.resume(rig.options({}, true) as never);
        const report = await again.done;
        expectReportAddsUp(report, g.length);
        expect(report.copierBytes).toBe(g.length - report.resumedBytes);
        await rig.expectCopy(`abort after ${abortAfter} chunk writes`);
      }
    });
  });

  describe('abort', () => {
    it.each(POLICIES)(
      '%s: done rejects with the reason, every held write is applied, then the device passes through',
      async (conflictPolicy) => {
        const rig = await CopyRig.create(SMALL);
        const g = rig.g;
        const controller = new AbortController();
        const held = rig.destination.hold('write', (offset) => offset === chunkAt(g, 0));
        const job = await SnapshotCopyJob.start(
          rig.options({ conflictPolicy, signal: controller.signal }),
        );
        const writes = [
          rig.write(job.device, src(g, 100), pattern(300, 1)),
          rig.write(job.device, src(g, 200), pattern(50, 2)),
          rig.write(job.device, src(g, 5 * g.chunkSize - 3), pattern(4000, 3)),
        ];
        await held.reached;
        const reason = new Error('operator pressed stop');
        controller.abort(reason);
        held.open();
        expect(await rejectionOf(job.done)).toBe(reason);
        await within(Promise.all(writes), 1000, 'writes held when the job was aborted');
        await rig.expectSource();
        await rig.expectWholeChunks();
        // A plain pass-through now, even into chunks never copied.
        const ops = rig.destination.ops.length;
        await within(
          rig.write(job.device, src(g, g.length - 2000), pattern(1000, 4)),
          1000,
          'write after the abort',
        );
        expect(rig.destination.ops.length).toBe(ops);
        await rig.expectSource();
        expectBytes('read after the abort', await job.device.read(0, g.sourceSize), rig.model);
      },
    );

    it.each(POLICIES)(
      '%s: at any point of the copy, no write is lost and each chunk is copied whole or not at all',
      async (conflictPolicy) => {
        for (const abortAfter of [0, 1, 2, 5, 17, 40, 70, 95]) {
          // Six copier runs of 16 chunks.
          const rig = await CopyRig.create(geometry(64 * KiB, 96, { offset: 300, short: 1000 }));
          const g = rig.g;
          const controller = new AbortController();
          let chunkWrites = 0;
          const writes: Promise<void>[] = [];
          let job!: SnapshotCopyJob;
          rig.destination.onOp = (op) => {
            if (op.kind !== 'write') return;
            chunkWrites++;
            // Writes arrive all along the copy.
            if (chunkWrites % 7 === 0) {
              const at = src(g, (chunkWrites * 7919) % (g.length - 3000));
              writes.push(rig.write(job.device, at, pattern(3000, chunkWrites)));
            }
            if (chunkWrites === abortAfter) controller.abort();
          };
          job = await SnapshotCopyJob.start(
            rig.options({ conflictPolicy, signal: controller.signal }),
          );
          if (abortAfter === 0) controller.abort();
          writes.push(rig.write(job.device, src(g, 10), pattern(100, 1)));
          const failure = await rejectionOf(job.done);
          expect((failure as Error).name, `abort after ${abortAfter}`).toBe('AbortError');
          await Promise.all(writes);
          rig.destination.onOp = undefined;
          await rig.expectSource(`abort after ${abortAfter}: source`);
          const copied = await rig.expectWholeChunks();
          if (abortAfter <= 17) expect(copied).toBeLessThan(96);
        }
      },
    );

    it('with a signal aborted already, copies nothing', async () => {
      const rig = await CopyRig.create(SMALL);
      const reason = new Error('not today');
      const job = await SnapshotCopyJob.start(rig.options({ signal: AbortSignal.abort(reason) }));
      expect(await rejectionOf(job.done)).toBe(reason);
      expect(rig.destination.of('write')).toEqual([]);
      await rig.write(job.device, src(rig.g, 0), pattern(100, 1));
      await rig.expectSource();
    });
  });

  describe('power cuts', () => {
    // Every I/O position of a small copy with writes going on, several crash
    // images each: the resumed copy is exact, the source holds old or new bytes.
    it.each(POLICIES)('%s: a cut at any I/O still resumes to an exact copy', async (p) => {
      let positions = 0;
      for (let cut = 0; ; cut++) {
        let finished = false;
        for (let seed = 0; seed < 4; seed++) {
          const rig = await CopyCrashRig.create(geometry(4096, 6, { offset: 700, short: 100 }), {
            policy: p,
            withStore: true,
            probed: false,
          });
          const { g } = rig.base;
          rig.power.cutAfter(cut);
          const job = await rig.start().catch(() => undefined);
          const writes: { offset: number; data: Uint8Array }[] = [];
          if (job !== undefined) {
            const planned = [src(g, 4096 + 5), src(g, -20), src(g, 4 * 4096 - 10)];
            const pending = planned.map((at, i) => {
              const data = pattern(100, i + 1);
              writes.push({ offset: at, data });
              return job.device.write(at, data);
            });
            await Promise.allSettled([...pending, job.done]);
          }
          finished = rig.power.isOn;
          await rig.crash(seed);
          const what = `cut ${cut} seed ${seed}`;
          expectAllowed(`${what}: source`, await rig.source(), rig.base.atStart, writes);
          // Resumes; only a cut inside start() may leave no map, and then it starts again.
          const resumed = await rig.openAttached();
          expectReportAddsUp(await resumed.done, g.length);
          await rig.base.expectCopy(what);
        }
        positions++;
        if (finished) break;
      }
      expect(positions).toBeGreaterThanOrEqual(25);
    });
  });

  describe('a failing device below', () => {
    it.each(POLICIES)(
      "%s: a destination that fails writes fails the job with EIO, never the application's writes",
      async (conflictPolicy) => {
        for (const failAt of [0, 3, 8]) {
          const rig = await CopyRig.create(SMALL);
          const g = rig.g;
          const destination = new FaultyDevice(rig.destination, {
            failures: (op) => op.kind === 'write' && op.index === failAt,
          });
          const job = await SnapshotCopyJob.start(rig.options({ conflictPolicy, destination }));
          const writes = [0, 4, 9, 11].map((c, i) =>
            rig.write(job.device, src(g, c * g.chunkSize + 10), pattern(5000, i)),
          );
          const failure = await rejectionOf(job.done);
          expect(BlockDeviceError.is(failure, 'EIO'), String(failure)).toBe(true);
          writes.push(rig.write(job.device, src(g, 6 * g.chunkSize), pattern(9000, 9)));
          await within(Promise.all(writes), 1000, 'application writes');
          await rig.expectSource(`destination write ${failAt} fails: source`);
        }
      },
    );

    it('a map store that fails a flush fails the job, and the write whose copy it was, with EIO', async () => {
      const rig = await CopyRig.create(SMALL);
      const mapStore = new FaultyDevice(rig.mapStore);
      const job = await SnapshotCopyJob.start(rig.options({ mapStore }));
      mapStore.failNext('flush');
      const at = src(rig.g, 9 * rig.g.chunkSize);
      const write = rig.write(job.device, at, pattern(100, 1));
      expect(await codeOf(job.done)).toBe('EIO');
      // Resumable: landing it over a chunk the durable map may call uncopied
      // would put the new bytes into the copy a resume makes.
      expect(await codeOf(write)).toBe('EIO');
      rig.model.set(rig.atStart.subarray(at, at + 100), at);
      await rig.expectSource();
    });
  });

  it('after done, the device is a plain pass-through', async () => {
    const rig = await CopyRig.create(SMALL);
    const job = await SnapshotCopyJob.start(rig.options({ conflictPolicy: 'queue' }, true));
    await job.done;
    const before = [rig.source.ops.length, rig.destination.ops.length, rig.mapStore.ops.length];
    await rig.write(job.device, src(rig.g, 7), pattern(100, 1));
    await job.device.read(src(rig.g, 0), 4096);
    expect(rig.source.ops.slice(before[0]).map((op) => op.kind)).toEqual(['write', 'read']);
    expect([rig.destination.ops.length, rig.mapStore.ops.length]).toEqual(before.slice(1));
    await job.device.close();
    expect(await codeOf(job.device.write(0, new Uint8Array(1)))).toBe('ECLOSED');
  });

  // Bugs these tests found in the engine: each of them fails without its fix.
  describe('regressions', () => {
    it('queue: a write outside the range waits behind a queued write it overlaps across the edge', async () => {
      const rig = await CopyRig.create(SMALL);
      const g = rig.g;
      const held = rig.destination.hold('write', (offset) => offset === chunkAt(g, 0));
      const job = await SnapshotCopyJob.start(rig.options({ conflictPolicy: 'queue' }));
      const queued = rig.write(job.device, g.offset - 100, pattern(200, 1));
      const outside = rig.write(job.device, g.offset - 50, pattern(40, 2));
      expectBytes('read', await job.device.read(0, g.sourceSize), rig.model);
      held.open();
      await Promise.all([queued, outside, job.done]);
      await rig.expectSource();
    });

    it('queue: a write arriving as the job ends waits behind the queued writes it overlaps', async () => {
      for (const end of ['done', 'abort'] as const) {
        const rig = await CopyRig.create(SMALL);
        const g = rig.g;
        const controller = new AbortController();
        const held = rig.destination.hold('write', (offset) => offset === chunkAt(g, 0));
        const job = await SnapshotCopyJob.start(
          rig.options({ conflictPolicy: 'queue', signal: controller.signal }),
        );
        // w2 overlaps w1, w3 overlaps only w2: w2 stays queued while w1 is applied.
        const w1at = src(g, 100);
        const w1 = rig.write(job.device, w1at, pattern(50, 1));
        const w2 = rig.write(job.device, src(g, 120), pattern(200, 2));
        const applying = rig.source.hold('write', (offset) => offset === w1at);
        await held.reached;
        if (end === 'abort') controller.abort();
        held.open();
        await applying.reached;
        const w3 = rig.write(job.device, src(g, 250), pattern(10, 3));
        applying.open();
        await Promise.all([w1, w2, w3, job.done.catch(() => {})]);
        await rig.expectSource(`job ${end}`);
      }
    });

    it('queue: a read sees a write queued when it was called, though the write is applied while the read is in flight', async () => {
      const rig = await CopyRig.create(SMALL);
      const g = rig.g;
      const held = rig.destination.hold('write', (offset) => offset === chunkAt(g, 0));
      const job = await SnapshotCopyJob.start(rig.options({ conflictPolicy: 'queue' }));
      const at = src(g, 100);
      const write = rig.write(job.device, at, pattern(50, 1));
      await held.reached;
      const reply = rig.source.hold('read', (offset) => offset === at, true);
      const read = job.device.read(at, 50);
      await reply.reached;
      held.open();
      await write;
      reply.open();
      expectBytes('read', await read, rig.model.subarray(at, at + 50));
      await job.done;
    });

    it('a map store reused after a finished job does not let a new job resume as finished', async () => {
      const rig = await CopyRig.create(SMALL);
      await (await SnapshotCopyJob.start(rig.options({}, true))).done;
      // The source changes; a new backup starts over the same map store and stops at once.
      await rig.sourceDisk.write(0, pattern(rig.g.sourceSize, 77));
      rig.atStart.set(pattern(rig.g.sourceSize, 77));
      const job = await SnapshotCopyJob.start(rig.options({ signal: AbortSignal.abort() }, true));
      await rejectionOf(job.done);
      const report = await (await SnapshotCopyJob.resume(rig.options({}, true) as never)).done;
      expectReportAddsUp(report, rig.g.length);
      await rig.expectCopy();
    });

    it('resumedBytes counts a short last chunk by its length', async () => {
      const rig = await CopyRig.create(geometry(4096, 3, { short: 2000 }));
      const controller = new AbortController();
      const job = await SnapshotCopyJob.start(rig.options({ signal: controller.signal }, true));
      // Copy-first copies the short last chunk; the copier never starts.
      const write = rig.write(job.device, src(rig.g, 2 * 4096 + 5), pattern(10, 1));
      controller.abort();
      await rejectionOf(job.done);
      await write;
      const again = await SnapshotCopyJob.resume(rig.options({}, true) as never);
      expect(again.progress.copiedBytes).toBe(rig.g.length - 2 * 4096);
      const report = await again.done;
      expectReportAddsUp(report, rig.g.length);
      expect(report.copierBytes).toBe(2 * 4096);
      await rig.expectCopy();
    });
  });
});
