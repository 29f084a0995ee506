/**
 * Runs the EIO matrix's trials: a stack set up without faults, the seeded
 * workload with one lower operation failing (or none, for the dry run that
 * counts the positions), close, reopen with the fault gone, and the checks.
 */
import { randomInt } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BlockDeviceError } from '../../src/index.js';
import type { FaultyOperation, FaultyOperationKind } from '../../src/testing/index.js';
import { settle } from '../support/async.js';
import { expectBytes } from '../support/bytes.js';
import type { ByteModel } from './byte-model.js';
import type { EioStack, EioSubject } from './eio-stacks.js';
import {
  describeStep,
  drawWorkload,
  type ReadOp,
  type Step,
  type WriteOp,
} from './eio-workload.js';

export const KINDS: readonly FaultyOperationKind[] = ['read', 'write', 'flush'];

/** The one operation a trial fails: the `position`-th (0-based) of `kind` on `disk` inside the fault window. */
export interface Fault {
  readonly disk: string;
  readonly kind: FaultyOperationKind;
  readonly position: number;
}

/**
 * Counts the operations each disk sees inside the fault window, by kind,
 * and fails the one `fault` names. Only the window counts: setup and the
 * reopen run with no fault, so a position means the same operation in the
 * dry run and in the trial (memory disks, no latency: the same history).
 */
export class FaultPlan {
  readonly counts = new Map<string, number>();
  /** The FaultyDevice message of the failure injected, once it was. */
  injected: string | undefined;
  #open = false;

  constructor(readonly fault: Fault | undefined) {}

  readonly decide = (disk: string, op: FaultyOperation): boolean => {
    if (!this.#open) return false;
    const key = `${disk}:${op.kind}`;
    const n = this.counts.get(key) ?? 0;
    this.counts.set(key, n + 1);
    const f = this.fault;
    if (f === undefined || this.injected !== undefined) return false;
    if (f.disk !== disk || f.kind !== op.kind || f.position !== n) return false;
    this.injected = `injected failure of ${op.kind} #${op.index} `;
    return true;
  };

  openWindow(): void {
    this.#open = true;
  }

  closeWindow(): void {
    this.#open = false;
  }
}

/**
 * How many `cause` links lead from what a call rejected with down to the
 * injected error itself (the deepest error whose message names it: a
 * wrapper's message quotes its cause's); undefined if none does.
 */
function reachesInjected(err: unknown, injected: string): number | undefined {
  let found: number | undefined;
  let depth = 0;
  for (let e: unknown = err; e instanceof Error; e = e.cause, depth++) {
    if (e.message.includes(injected)) found = depth;
  }
  return found;
}

/** A call that rejected during the trial, with its step for the failure message. */
interface Rejection {
  readonly what: string;
  readonly err: unknown;
  readonly background: boolean;
}

/**
 * One trial of `stack` on workload `seed`, failing `fault` (none: the dry
 * run). Throws, naming the trial and the step, on any broken guarantee;
 * returns the plan (its counts are the positions, for the dry run).
 */
export async function runTrial(
  stack: EioStack,
  seed: number,
  fault: Fault | undefined,
): Promise<FaultPlan> {
  const plan = new FaultPlan(fault);
  const subject = await stack.build(plan.decide);
  const steps = drawWorkload(seed, subject.shape);
  const label = `${stack.name} seed ${seed} ${
    fault === undefined ? 'dry run' : `${fault.kind} #${fault.position} on ${fault.disk}`
  }`;
  const rejections: Rejection[] = [];
  plan.openWindow();
  for (const [i, step] of steps.entries()) {
    const what = `${label}, step ${i} ${describeStep(step)}`;
    await runStep(subject, step, what, rejections);
  }
  try {
    await subject.close();
    // close() flushes: every write acknowledged before it is durable.
    subject.model.flushed();
    subject.writableModel?.flushed();
  } catch (err) {
    rejections.push({ what: `${label}, close()`, err, background: false });
  }
  await settle();
  plan.closeWindow();
  // Failed or not, close() leaves nothing open below: a layer owns its devices.
  const open = subject.openDisks();
  if (open.length > 0) throw new Error(`${label}: close() left ${open.join(', ')} open`);
  for (const err of subject.background) {
    rejections.push({ what: `${label}, background`, err, background: true });
  }
  for (const r of rejections) {
    const code = BlockDeviceError.is(r.err) ? r.err.code : undefined;
    // EIO is the only code a lower failure may surface as; a copy job's
    // `done` also rejects ECLOSED when its device is closed first.
    const allowed = code === 'EIO' || (r.background && code === 'ECLOSED');
    if (!allowed) throw new Error(`${r.what}: rejected with ${String(r.err)}`, { cause: r.err });
  }
  if (fault !== undefined) {
    if (plan.injected === undefined) throw new Error(`${label}: the fault was never reached`);
    const reported = rejections.filter(
      (r) =>
        BlockDeviceError.is(r.err, 'EIO') && (reachesInjected(r.err, plan.injected!) ?? 0) >= 1,
    );
    if (reported.length === 0) {
      throw new Error(
        `${label}: no call rejected with EIO caused by the injected failure; rejections: ${
          rejections.map((r) => `${r.what}: ${String(r.err)}`).join('; ') || 'none'
        }`,
      );
    }
  } else {
    const failed = rejections.find((r) => !r.background || !BlockDeviceError.is(r.err, 'ECLOSED'));
    if (failed !== undefined) {
      throw new Error(`${label}: ${failed.what} rejected with no fault: ${String(failed.err)}`);
    }
  }
  await subject.reopenAndCheck(label, seed);
  return plan;
}

function modelOf(subject: EioSubject, target: WriteOp['target']): ByteModel {
  return target === 'device' ? subject.model : subject.writableModel!;
}

/** Runs one step, checks what its reads returned, and brings the models up to date. */
async function runStep(
  subject: EioSubject,
  step: Step,
  what: string,
  rejections: Rejection[],
): Promise<void> {
  if (step.kind === 'flush') {
    try {
      await subject.handle('device').flush();
      subject.model.flushed();
      subject.writableModel?.flushed();
    } catch (err) {
      rejections.push({ what, err, background: false });
    }
    return;
  }
  const ops = step.kind === 'batch' ? step.ops : [step];
  const writes = ops.filter((op): op is WriteOp => op.kind === 'write');
  for (const w of writes) modelOf(subject, w.target).called(w);
  const outcomes = await Promise.allSettled(
    ops.map((op) =>
      op.kind === 'write'
        ? subject.handle(op.target).write(op.offset, new Uint8Array(op.length).fill(op.value))
        : subject.handle(op.target).read(op.offset, op.length),
    ),
  );
  for (const [i, op] of ops.entries()) {
    const outcome = outcomes[i]!;
    if (outcome.status === 'rejected')
      rejections.push({ what, err: outcome.reason, background: false });
    else if (op.kind === 'read') checkRead(subject, op, outcome.value as Uint8Array, writes, what);
  }
  for (const target of ['device', 'writable'] as const) {
    const settled = writes
      .map((op, i) => ({ op, ok: outcomes[ops.indexOf(op)]?.status === 'fulfilled', i }))
      .filter(({ op }) => op.target === target);
    if (settled.length > 0) modelOf(subject, target).settled(settled);
  }
}

function checkRead(
  subject: EioSubject,
  op: ReadOp,
  data: Uint8Array,
  racing: readonly WriteOp[],
  what: string,
): void {
  const end = op.offset + op.length;
  if (op.target === 'snapshot' || op.target === 'lower') {
    expectBytes(`${what}: ${op.target} read`, data, subject.pointInTime.subarray(op.offset, end));
    return;
  }
  const mine = racing.filter((w) => w.target === op.target);
  modelOf(subject, op.target).check(`${what}: read`, op.offset, data, mine);
}

/**
 * Every position of every kind on every layer of `stack`, for `seed`: the
 * dry run counts them, then one trial fails each. Returns the number of
 * injections per layer label.
 */
export async function runMatrix(stack: EioStack, seed: number): Promise<Map<string, number>> {
  const dry = await runTrial(stack, seed, undefined);
  const injections = new Map<string, number>();
  for (const [layer, disk] of Object.entries(stack.layers)) {
    let n = 0;
    for (const kind of KINDS) {
      const positions = dry.counts.get(`${disk}:${kind}`) ?? 0;
      for (let position = 0; position < positions; position++) {
        await runTrial(stack, seed, { disk, kind, position });
        n++;
      }
    }
    injections.set(`${stack.name}/${layer}`, n);
  }
  return injections;
}

/**
 * Writes `{ suite, eioInjections }` to a new file in `$BLOCKSNAP_SOAK_REPORT_DIR`
 * for the soak report, when that variable is set.
 */
export function writeInjectionReport(suite: string, injections: ReadonlyMap<string, number>): void {
  const dir = process.env.BLOCKSNAP_SOAK_REPORT_DIR;
  if (dir === undefined || dir === '') return;
  mkdirSync(dir, { recursive: true });
  const report = { suite, eioInjections: Object.fromEntries(injections) };
  // One file per run: a soak's rounds each add theirs, and the report sums them.
  const name = `${suite}-${process.pid}-${Date.now()}-${randomInt(1e9)}.json`;
  writeFileSync(join(dir, name), `${JSON.stringify(report, null, 2)}\n`);
}
