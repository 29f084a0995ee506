import { describe, expect, it } from 'vitest';
import { CopyEngine } from '../../src/copy/copy-engine.js';
import { CopyMap } from '../../src/copy/copy-map.js';
import {
  BUSY_RUN_BYTES,
  CopyPacer,
  QUIET_MS,
  QUIET_RUNS,
  RUN_BYTES,
} from '../../src/copy/copy-pacer.js';
import { type BlockDevice, type CopyConflictPolicy, MemoryDevice } from '../../src/index.js';
import { settle, watch } from '../support/async.js';
import { expectBytes, pattern } from '../support/bytes.js';
import { noise } from '../support/copy-job-rig.js';
import { FakeClock } from '../support/fake-clock.js';
import { PassThroughDevice } from '../support/pass-through-device.js';

/*
 * The copier's pacing, on a fake clock: every assertion is on what the
 * copier decided to start, never on how long the machine took.
 */

const KiB = 1024;

/**
 * A source that works like one disk queue: operations wait in arrival
 * order and one completes per event-loop turn. It records, for each
 * foreground write, how many copier reads were queued ahead of it.
 */
class DiskQueueDevice extends PassThroughDevice {
  readonly #queue: { run: () => void; kind: 'read' | 'write' }[] = [];
  #pumping = false;
  /** Per foreground write, in order: copier reads still queued when it arrived. */
  readonly readsAhead: number[] = [];
  /** Reads queued or being served now. */
  get readsQueued(): number {
    return this.#queue.filter((op) => op.kind === 'read').length;
  }
  /** The most reads queued at once, since the last {@link resetMostReads}. */
  mostReads = 0;

  resetMostReads(): void {
    this.mostReads = this.readsQueued;
  }

  override read(offset: number, length: number): Promise<Uint8Array> {
    return this.#enqueue('read', () => super.read(offset, length));
  }

  override write(offset: number, data: Uint8Array): Promise<void> {
    this.readsAhead.push(this.readsQueued);
    return this.#enqueue('write', () => super.write(offset, data));
  }

  #enqueue<T>(kind: 'read' | 'write', op: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#queue.push({ kind, run: () => op().then(resolve, reject) });
      this.mostReads = Math.max(this.mostReads, this.readsQueued);
      if (!this.#pumping) void this.#pump();
    });
  }

  async #pump(): Promise<void> {
    this.#pumping = true;
    while (this.#queue.length > 0) {
      await new Promise((resolve) => setImmediate(resolve));
      const op = this.#queue.shift()!;
      op.run();
    }
    this.#pumping = false;
  }
}

interface Bench {
  engine: CopyEngine;
  pacer: CopyPacer;
  clock: FakeClock;
  sourceDisk: MemoryDevice;
  destination: MemoryDevice;
  atStart: Uint8Array;
  g: { offset: number; length: number; chunkSize: number };
}

/** An engine copying `[offset, offset + length)` of a noise-filled source, on a fake clock. */
async function engineOver(
  g: { offset: number; length: number; chunkSize: number; sourceSize: number },
  options: {
    rate?: number;
    policy?: CopyConflictPolicy;
    wrap?: (d: BlockDevice) => BlockDevice;
  } = {},
): Promise<Bench> {
  const sourceDisk = await MemoryDevice.create({ size: g.sourceSize });
  const destination = await MemoryDevice.create({ size: g.length });
  const atStart = noise(g.sourceSize, 7);
  await sourceDisk.write(0, atStart);
  const source = options.wrap?.(sourceDisk) ?? sourceDisk;
  const clock = new FakeClock();
  const pacer = new CopyPacer(clock, g.chunkSize, options.rate ?? 0);
  const geometry = { ...g, destinationOffset: 0 };
  const map = await CopyMap.create(geometry, destination, undefined);
  const sink = { write: (at: number, data: Uint8Array) => destination.write(at, data) };
  const engine = new CopyEngine(source, sink, map, options.policy ?? 'copy-first', pacer, () => {});
  return { engine, pacer, clock, sourceDisk, destination, atStart, g };
}

async function expectCopied(b: Bench): Promise<void> {
  const { offset, length } = b.g;
  expectBytes(
    'destination',
    await b.destination.read(0, length),
    b.atStart.subarray(offset, offset + length),
  );
}

describe('SnapshotCopyJob pacing', () => {
  it('a rate caps the bytes the copier starts: by t ms, at most rate × t plus one run, and no fewer than rate × t', async () => {
    const rate = 40 * KiB; // bytes per second: one 4 KiB chunk per 100 ms
    const b = await engineOver(
      { offset: 0, length: 64 * 4 * KiB, chunkSize: 4 * KiB, sourceSize: 64 * 4 * KiB },
      { rate },
    );
    // A run at a low rate is the bytes of 100 ms: one chunk here.
    expect(b.pacer.shape().bytes).toBe(4 * KiB);
    const run = watch(b.engine.run(undefined));
    const copied: number[] = [];
    for (let t = 0; t <= 1000; t += 50) {
      if (t > 0) await b.clock.advance(50);
      else await settle();
      const bytes = b.engine.counters.copierBytes;
      copied.push(bytes);
      expect(bytes, `at ${t} ms`).toBeLessThanOrEqual((rate * t) / 1000 + 4 * KiB);
      expect(bytes, `at ${t} ms`).toBeGreaterThanOrEqual((rate * t) / 1000);
    }
    expect(copied.at(-1)).toBe(11 * 4 * KiB);
    expect(run.settled).toBe(false);
    // Unlimited again: the copier is woken and finishes without the clock moving.
    b.pacer.setRate(0);
    await run.promise;
    await expectCopied(b);
    expect(b.clock.pending).toBe(0);
  });

  it('setRate while the copier waits on the budget takes effect at once: a lower rate stretches the wait, bytes already copied count', async () => {
    const b = await engineOver(
      { offset: 0, length: 64 * 4 * KiB, chunkSize: 4 * KiB, sourceSize: 64 * 4 * KiB },
      { rate: 40 * KiB },
    );
    const run = watch(b.engine.run(undefined));
    await settle();
    expect(b.engine.counters.copierBytes).toBe(4 * KiB);
    await b.clock.advance(50);
    // 50 ms of the first chunk's 100 are still owed: 2 KiB, at 4 KiB/s now 500 ms.
    b.pacer.setRate(4 * KiB);
    await b.clock.advance(499);
    expect(b.engine.counters.copierBytes).toBe(4 * KiB);
    await b.clock.advance(1);
    expect(b.engine.counters.copierBytes).toBe(8 * KiB);
    // Then one chunk a second.
    await b.clock.advance(999);
    expect(b.engine.counters.copierBytes).toBe(8 * KiB);
    await b.clock.advance(1);
    expect(b.engine.counters.copierBytes).toBe(12 * KiB);
    b.pacer.setRate(0);
    await run.promise;
    await expectCopied(b);
  });

  it('old bytes saved for copy-first writes are never held by the rate, but count toward it', async () => {
    const chunk = 4 * KiB;
    const b = await engineOver(
      { offset: 0, length: 64 * chunk, chunkSize: chunk, sourceSize: 64 * chunk },
      { rate: 40 * KiB },
    );
    const run = watch(b.engine.run(undefined));
    await settle();
    expect(b.engine.counters.copierBytes).toBe(chunk);
    // Ten writes of a whole uncopied chunk save its old bytes (no map store)
    // and go through at once, the clock standing still...
    for (let c = 10; c < 20; c++) await b.engine.write(c * chunk, pattern(chunk, c));
    expect(b.engine.counters.copyFirstBytes).toBe(0);
    // ...and put the copier 10 chunks (a second at this rate) further back.
    await b.clock.advance(1099);
    expect(b.engine.counters.copierBytes).toBe(chunk);
    await b.clock.advance(1);
    expect(b.engine.counters.copierBytes).toBe(2 * chunk);
    b.pacer.setRate(0);
    await run.promise;
  });

  it('stop() ends a copier waiting on the budget without its timer', async () => {
    const b = await engineOver(
      { offset: 0, length: 16 * 4 * KiB, chunkSize: 4 * KiB, sourceSize: 16 * 4 * KiB },
      { rate: 1 },
    );
    const run = b.engine.run(undefined).catch((err: unknown) => err);
    await settle();
    expect(b.clock.pending).toBe(1);
    await b.engine.stop();
    expect(await run).toMatchObject({ code: 'ECLOSED' });
    expect(b.clock.pending).toBe(0);
  });

  it('the copier yields: while foreground I/O is in flight at most one copier run is queued ahead of a foreground write, and full speed is back once the application is quiet', async () => {
    const chunk = 64 * KiB;
    const length = 512 * chunk; // 32 MiB: many runs
    const offset = 64 * KiB; // foreground writes go below the range: no copy of their own
    let disk!: DiskQueueDevice;
    const b = await engineOver(
      { offset, length, chunkSize: chunk, sourceSize: offset + length },
      {
        wrap: (d) => {
          disk = new DiskQueueDevice(d);
          return disk;
        },
      },
    );
    const run = watch(b.engine.run(undefined));
    await settle();
    // Quiet: the copier keeps its full number of runs in flight.
    expect(disk.mostReads).toBe(QUIET_RUNS);
    // A writer that never stops (the fake clock never lets "busy" expire).
    let writing = true;
    let writes = 0;
    const writer = (async () => {
      while (writing) {
        await b.engine.write((writes % 16) * 4096, pattern(4096, writes));
        writes++;
      }
    })();
    while (writes < 24 && !run.settled) await new Promise((resolve) => setImmediate(resolve));
    writing = false;
    await writer;
    expect(run.settled).toBe(false);
    // The first writes find the quiet-time runs queued ahead; once those
    // are served, at most the one busy run is.
    expect(Math.max(...disk.readsAhead)).toBeLessThanOrEqual(QUIET_RUNS);
    expect(Math.max(...disk.readsAhead.slice(QUIET_RUNS + 1))).toBeLessThanOrEqual(1);
    // And it still made progress, in runs no larger than the busy size.
    const busyCopied = b.engine.counters.copierBytes;
    expect(busyCopied).toBeGreaterThan(0);
    expect(b.pacer.shape()).toEqual({ runs: 1, bytes: BUSY_RUN_BYTES });
    // Quiet again: after QUIET_MS the copier goes back to full runs in flight.
    await b.clock.advance(QUIET_MS);
    expect(b.pacer.shape()).toEqual({ runs: QUIET_RUNS, bytes: RUN_BYTES });
    disk.resetMostReads();
    while (!run.settled && disk.mostReads < QUIET_RUNS) {
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(disk.mostReads).toBe(QUIET_RUNS);
    await run.promise;
    await expectCopied(b);
  });

  it.each<CopyConflictPolicy>(['copy-first', 'queue'])(
    '%s: the copy finishes while a foreground writer never stops',
    async (policy) => {
      const chunk = 4 * KiB;
      const length = 512 * chunk;
      const b = await engineOver(
        { offset: 0, length, chunkSize: chunk, sourceSize: length },
        { policy },
      );
      const run = watch(b.engine.run(undefined));
      const model = b.atStart.slice();
      let writes = 0;
      // Always busy, always in the first 8 chunks (copied first, then
      // written over): the other 504 are the copier's to copy. Bounded, so
      // a copier that starved fails the test rather than hanging it.
      while (!run.settled && writes < 200_000) {
        const at = (writes % 8) * chunk + (writes % 7) * 512;
        const data = pattern(512, writes);
        model.set(data, at);
        await b.engine.write(at, data);
        writes++;
      }
      expect(run.settled, `the copy after ${writes} writes`).toBe(true);
      await run.promise;
      await expectCopied(b);
      expectBytes('source', await b.sourceDisk.read(0, length), model);
      expect(writes).toBeGreaterThan(0);
    },
  );
});
