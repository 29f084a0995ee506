import fc from 'fast-check';
import { expect } from 'vitest';
import {
  type CopyReport,
  SnapshotCopyJob,
  type SnapshotCopyJobResumeOptions,
} from '../../src/index.js';
import { expectAllowed, expectBytes, pattern } from '../support/bytes.js';
import {
  type ConflictPolicy,
  CopyCrashRig,
  type CopyGeometry,
  POLICIES,
  roundUp,
} from '../support/copy-job-rig.js';

const BS = 512;

/** A range of 1 to 24 chunks of 512 B .. 64 KiB, anywhere in the source and the destination, unaligned. */
export const geometryArb: fc.Arbitrary<CopyGeometry> = fc
  .record({
    chunkLog: fc.integer({ min: 9, max: 16 }),
    chunks: fc.integer({ min: 1, max: 24 }),
    short: fc.nat(),
    offset: fc.nat(),
    destinationOffset: fc.nat(),
    tail: fc.nat(4096),
  })
  .map(({ chunkLog, chunks, short, offset, destinationOffset, tail }) => {
    const chunkSize = 2 ** chunkLog;
    const length = chunks * chunkSize - (short % chunkSize);
    const at = offset % (2 * chunkSize + 700);
    const to = destinationOffset % (chunkSize + 300);
    return {
      sourceSize: roundUp(at + length + tail, BS),
      offset: at,
      length,
      destinationSize: roundUp(to + length + (tail % 1024), BS),
      destinationOffset: to,
      chunkSize,
    };
  });

export type Where = 'inside' | 'edge' | 'outside';

/** A foreground operation through `job.device`; `at` and `size` are placed by {@link place}. */
export interface PlannedOp {
  kind: 'write' | 'read' | 'flush';
  where: Where;
  at: number;
  size: number;
  seed: number;
}

export const opArb: fc.Arbitrary<PlannedOp> = fc.record({
  kind: fc.constantFrom('write', 'write', 'write', 'write', 'read', 'read', 'flush'),
  where: fc.constantFrom<Where>('inside', 'inside', 'edge', 'edge', 'outside'),
  at: fc.nat(),
  size: fc.nat(),
  seed: fc.nat(250),
});

/** Where an op lands: inside the range, across one of its edges, or outside it (before or after). */
export function place(g: CopyGeometry, op: PlannedOp): { offset: number; length: number } {
  const max = Math.min(3 * g.chunkSize, 12 * 1024);
  let length = 1 + (op.size % max);
  let offset: number;
  const end = g.offset + g.length;
  const before = g.offset;
  const after = g.sourceSize - end;
  if (op.where === 'edge') {
    const edge = op.at % 2 === 0 ? g.offset : end;
    offset = edge - 1 - ((op.at >>> 1) % length);
  } else if (op.where === 'outside' && (before > 0 || after > 0)) {
    if (before >= after) {
      offset = op.at % before;
      length = Math.min(length, before - offset);
    } else {
      offset = end + (op.at % after);
    }
  } else {
    offset = g.offset + (op.at % g.length);
  }
  offset = Math.max(0, Math.min(offset, g.sourceSize - 1));
  return { offset, length: Math.min(length, g.sourceSize - offset) };
}

export interface Plan {
  g: CopyGeometry;
  policy: ConflictPolicy;
  withStore: boolean;
  ops: PlannedOp[];
  /** Where in `ops` an abort is called; `quiet`: once every write so far has completed, and nothing after it. */
  abort: { at: number; quiet: boolean } | null;
  /** Device operations (over source, destination and map store) before each power cut. */
  cuts: number[];
  seed: number;
}

export function planArb(options: { crash: boolean; maxOps: number }): fc.Arbitrary<Plan> {
  return fc.record({
    g: geometryArb,
    policy: fc.constantFrom(...POLICIES),
    withStore: options.crash ? fc.constant(true) : fc.boolean(),
    ops: fc.array(opArb, { maxLength: options.maxOps }),
    abort: options.crash
      ? fc.constant(null)
      : fc.option(fc.record({ at: fc.nat(options.maxOps), quiet: fc.boolean() }), { freq: 2 }),
    cuts: options.crash
      ? fc
          // Mostly early: a small job does a few dozen operations in all.
          .tuple(fc.oneof(fc.nat(12), fc.nat(40), fc.nat(120)), fc.option(fc.nat(60), { freq: 3 }))
          .map(([a, b]) => (b === null ? [a] : [a, b]))
      : fc.constant([]),
    seed: fc.nat(),
  });
}

/** What the runs covered, so a test can check it was not vacuous. */
export const coverage = {
  runs: 0,
  queuedWrites: 0,
  copyFirstBytes: 0,
  aborted: 0,
  resumedAfterAbort: 0,
  resumedAfterQuietAbort: 0,
  /** Power cuts that struck before the job was done, and after its start resolved. */
  cutMidCopy: 0,
  /** ... or before its start resolved (the map store may hold no map). */
  cutInStart: 0,
  /** Resumes whose map store held no valid map (only possible after a cut in start). */
  corrupt: 0,
  /** Power cuts during a resume. */
  cutInResume: 0,
  /** Every power cut (each crash image taken). */
  powerCuts: 0,
  reads: 0,
};

interface TrackedWrite {
  offset: number;
  data: Uint8Array;
  resolved: boolean;
  durable: boolean;
}

/**
 * The model of the source: what it held when tracking began, and every write
 * made through `job.device` since, in call order (the engine applies
 * overlapping writes in call order). Knows which writes completed, and which
 * a completed flush made durable, to judge reads racing writes and what a
 * power cut may leave.
 */
class SourceModel {
  base: Uint8Array;
  writes: TrackedWrite[] = [];
  /** Checks that failed inside callbacks (reads, progress events). */
  readonly violations: unknown[] = [];

  constructor(base: Uint8Array) {
    this.base = base;
  }

  /** The source as every write called so far leaves it. */
  content(): Uint8Array {
    return this.#with(() => true);
  }

  /** `base` with only the writes `keep` selects, in call order, over `[offset, offset + length)`. */
  #with(keep: (w: TrackedWrite) => boolean, offset = 0, length = this.base.length): Uint8Array {
    const out = this.base.slice(offset, offset + length);
    for (const w of this.writes) {
      if (!keep(w) || w.offset >= offset + length || w.offset + w.data.length <= offset) continue;
      const from = Math.max(offset, w.offset);
      const to = Math.min(offset + length, w.offset + w.data.length);
      out.set(w.data.subarray(from - w.offset, to - w.offset), from - offset);
    }
    return out;
  }

  write(
    device: { write(offset: number, data: Uint8Array): Promise<void> },
    offset: number,
    data: Uint8Array,
  ): Promise<void> {
    const w: TrackedWrite = { offset, data, resolved: false, durable: false };
    this.writes.push(w);
    const p = device.write(offset, data);
    p.then(
      () => {
        w.resolved = true;
      },
      () => {},
    );
    return p;
  }

  flush(device: { flush(): Promise<void> }): Promise<void> {
    const covered = this.writes.filter((w) => w.resolved);
    const p = device.flush();
    p.then(
      () => {
        for (const w of covered) w.durable = true;
      },
      () => {},
    );
    return p;
  }

  /**
   * A read of `[offset, offset + length)`, called now: each byte must be what
   * the writes completed before the call left there, or the byte of a write
   * that had not completed by the call, or that was called before the read returned.
   */
  read(
    device: { read(offset: number, length: number): Promise<Uint8Array> },
    offset: number,
    length: number,
  ): Promise<void> {
    const settled = this.#with((w) => w.resolved, offset, length);
    const pending = new Set(this.writes.filter((w) => !w.resolved));
    const calledBefore = this.writes.length;
    return device.read(offset, length).then((actual) => {
      const racing = this.writes.filter((w, i) => pending.has(w) || i >= calledBefore);
      try {
        expectAllowed(
          `read ${offset}+${length}`,
          actual,
          settled,
          racing.map((w) => ({ offset: w.offset - offset, data: w.data })),
        );
      } catch (err) {
        this.violations.push(err);
      }
      coverage.reads++;
    });
  }

  expectNoViolation(): void {
    if (this.violations.length > 0) throw this.violations[0];
  }

  /** After a power cut: `actual` may hold each durable write, and any other write whole, torn or not at all. */
  expectAfterCrash(actual: Uint8Array): void {
    const durable = this.#with((w) => w.durable);
    const others = this.writes.filter((w) => !w.durable);
    expectAllowed('source after the power cut', actual, durable, others);
    this.base = actual.slice();
    this.writes = [];
  }
}

function expectReport(report: CopyReport, g: CopyGeometry): void {
  expect(report.totalBytes).toBe(g.length);
  expect(report.copierBytes + report.copyFirstBytes + report.resumedBytes).toBe(g.length);
}

async function settle(s: fc.Scheduler | undefined, ps: Promise<unknown>[]): Promise<void> {
  const all = Promise.allSettled(ps);
  await (s === undefined ? all : s.waitFor(all));
}

/**
 * Starts a job, makes the plan's foreground reads, writes and flushes
 * through `job.device` at points the scheduler picks (each one called when
 * the scheduler reaches it, not awaited before the next), aborts if the
 * plan says so, waits for everything, then checks: the destination holds
 * the range as it was at start (or whole chunks, after an abort), the
 * source holds every write in call order, the device passes through.
 * With power cuts: crashes the disks, checks what the source may hold,
 * resumes (perhaps cut again), and checks the finished copy is still exact.
 */
export async function runPlan(s: fc.Scheduler, plan: Plan): Promise<void> {
  coverage.runs++;
  const { g } = plan;
  const rig = await CopyCrashRig.create(g, plan, plan.seed);
  const model = new SourceModel(rig.base.atStart.slice());
  const cuts = [...plan.cuts];
  const firstCut = cuts.shift();
  if (firstCut !== undefined) rig.power.cutAfter(firstCut);
  rig.scheduler = s;

  const controller = new AbortController();
  const reason = new Error('abort from the plan');
  rig.signal = controller.signal;
  const started = rig.start();
  await settle(s, [started]);
  const job = await started.catch((err: unknown) => {
    if (firstCut === undefined) throw err;
    return undefined;
  });
  const ops: Promise<unknown>[] = [];
  let abortCalled = false;
  let quietAbort = false;
  let report: CopyReport | undefined;
  let failure: unknown;
  let lastCopied = 0;
  if (job !== undefined) {
    job.on('progress', (p) => {
      if (p.copiedBytes < lastCopied || p.copiedBytes > p.totalBytes) {
        model.violations.push(new Error(`progress went from ${lastCopied} to ${p.copiedBytes}`));
      }
      lastCopied = p.copiedBytes;
    });
    const planned = plan.abort?.quiet ? plan.ops.slice(0, plan.abort.at) : plan.ops;
    const items: (() => Promise<unknown>)[] = planned.map((op) => () => {
      const { offset, length } = place(g, op);
      if (op.kind === 'write') {
        ops.push(model.write(job.device, offset, pattern(length, op.seed)));
      } else if (op.kind === 'read') ops.push(model.read(job.device, offset, length));
      else ops.push(model.flush(job.device));
      return Promise.resolve();
    });
    let quietAborted: Promise<void> | undefined;
    if (plan.abort !== null) {
      const { at, quiet } = plan.abort;
      const abort = () => {
        abortCalled = true;
        controller.abort(reason);
      };
      items.splice(Math.min(at, items.length), 0, () => {
        if (!quiet) abort();
        else {
          // Once nothing is in flight (and nothing comes after): a resume may then finish the copy.
          // Not awaited here: a sequence item waiting for scheduled I/O would stall the scheduler.
          quietAborted = Promise.allSettled(ops)
            .then(() => s.schedule(Promise.resolve(), 'quiet abort'))
            .then(() => {
              quietAbort = true;
              abort();
            });
        }
        return Promise.resolve();
      });
    }
    const sequence = s.scheduleSequence(items.map((builder, i) => ({ builder, label: `op ${i}` })));
    await s.waitFor(sequence.task);
    await settle(s, [...ops, job.done, ...(quietAborted === undefined ? [] : [quietAborted])]);
    await job.done.then(
      (r) => {
        report = r;
      },
      (err: unknown) => {
        failure = err;
      },
    );
  }
  rig.scheduler = undefined;

  if (firstCut === undefined) {
    // ---------------------------------------------------------- no power cut
    const results = await Promise.allSettled(ops);
    model.expectNoViolation();
    for (const r of results) if (r.status === 'rejected') throw r.reason;
    if (report !== undefined) {
      expectReport(report, g);
      expect(lastCopied).toBe(g.length);
      coverage.queuedWrites += report.queuedWrites;
      coverage.copyFirstBytes += report.copyFirstBytes;
      await rig.base.expectCopy('destination');
    } else {
      expect(abortCalled, `done rejected without an abort: ${String(failure)}`).toBe(true);
      expect(failure).toBe(reason);
      coverage.aborted++;
      await rig.base.expectWholeChunks();
    }
    expectBytes('source', await rig.source(), model.content());
    // After the job: a plain pass-through — except that an aborted job with a
    // map store stays resumable, so a write into a chunk never copied still
    // copies it first.
    const destinationOps = rig.probes[1].ops.length;
    const at = g.offset + (g.length >>> 1);
    await model.write(job!.device, at, pattern(Math.min(100, g.sourceSize - at), 7));
    if (report !== undefined || !plan.withStore) {
      expect(rig.probes[1].ops.length).toBe(destinationOps);
    }
    expectBytes('source at the end', await rig.source(), model.content());
    if (report === undefined && plan.withStore) {
      // Whatever raced the abort, every write into an uncopied chunk copied
      // it first: a resume finishes an exact copy.
      const resumed = await SnapshotCopyJob.resume(rig.options() as SnapshotCopyJobResumeOptions);
      expectReport(await resumed.done, g);
      await rig.base.expectCopy('destination after resuming the aborted job');
      coverage.resumedAfterAbort++;
      if (quietAbort) coverage.resumedAfterQuietAbort++;
    }
    return;
  }

  // ------------------------------------------------------------ power cuts
  await Promise.allSettled(ops);
  model.expectNoViolation();
  let finished = report !== undefined;
  if (rig.startResolved && !finished) coverage.cutMidCopy++;
  if (!rig.startResolved) coverage.cutInStart++;
  for (let round = 1; round <= 4; round++) {
    await rig.crash(plan.seed + 10 * round);
    coverage.powerCuts++;
    model.expectAfterCrash(await rig.source());
    const cut = cuts.shift();
    if (cut !== undefined) rig.power.cutAfter(cut);
    // Resumes, or starts again if a cut in start() left no map (see CopyCrashRig).
    const restartsBefore = rig.restarts;
    const next = await rig.openAttached().catch((err: unknown) => {
      if (rig.power.isOn) throw err;
      return undefined;
    });
    coverage.corrupt += rig.restarts - restartsBefore;
    if (next === undefined) continue;
    const writes = plan.ops
      .filter((op) => op.kind === 'write')
      .slice(0, 3)
      .map((op) => {
        const { offset, length } = place(g, op);
        return model.write(next.device, offset, pattern(length, op.seed + round));
      });
    const [done] = await Promise.allSettled([next.done]);
    await Promise.allSettled(writes);
    if (done!.status === 'fulfilled') {
      expectReport(done.value, g);
      // A job whose done resolved is durably finished: nothing is copied again.
      if (finished) expect(done.value.copierBytes + done.value.copyFirstBytes).toBe(0);
      finished = true;
    }
    if (!rig.power.isOn) {
      coverage.cutInResume++;
      continue;
    }
    if (done!.status === 'rejected') throw done.reason;
    await rig.base.expectCopy(`destination after ${round} power cut(s)`);
    const source = await rig.source();
    expectBytes('source after the resume', source, model.content());
    return;
  }
  throw new Error('the copy did not finish after 4 power cuts');
}
