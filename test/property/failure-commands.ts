/**
 * The fast-check commands of the failure property test
 * (failure-model.test.ts): writes (some concurrent), reads, flushes,
 * snapshots, deletes, restores, writes and reads through snapshot handles,
 * "the next N operations of a disk fail", close+reopen and crash+reopen.
 * Each resolves its target (a snapshot by index over the listing last
 * observed) when it runs, so every command applies to every state.
 */
import fc from 'fast-check';
import type { ModelWrite } from './byte-model.js';
import {
  coverage,
  type FailureRun,
  type FaultKind,
  MAX_SNAPSHOTS,
  type Settled,
  settle,
} from './failure-run.js';
import type { FailureStack } from './failure-stacks.js';
import type { World } from './failure-worlds.js';

type Command = fc.AsyncCommand<FailureRun, FailureRun>;

/** A byte range drawn independently of the device: 256- or 512-byte units, 1–3 of them. */
interface Span {
  readonly unit: 256 | 512;
  readonly start: number;
  readonly count: number;
}

const spanArb: fc.Arbitrary<Span> = fc.record({
  unit: fc.constantFrom<256 | 512>(256, 512, 512),
  start: fc.nat(63),
  count: fc.integer({ min: 1, max: 3 }),
});

/** `span` placed inside `[from, to)`. */
function place(span: Span, from: number, to: number): { offset: number; length: number } {
  const offset = from + ((span.start * span.unit) % (to - from));
  return { offset, length: Math.min(span.count * span.unit, to - offset) };
}

/** The names of the listed writable snapshots. */
function writableNames(run: FailureRun): string[] {
  return run.names.filter((n) => run.worlds.worlds.some((w) => w.snap(n)?.writable === true));
}

/** Target 0 is the device; k > 0 the ((k − 1) mod n)-th of `names`, or the device if there are none. */
function pick(names: readonly string[], target: number): string {
  if (target === 0 || names.length === 0) return 'device';
  return names[(target - 1) % names.length]!;
}

function heldOf(run: FailureRun, target: string): readonly [number, number] {
  if (target === 'device') return [0, run.subject.size];
  return run.worlds.worlds.find((w) => w.snap(target) !== undefined)!.snap(target)!.held;
}

abstract class Base implements Command {
  check(): boolean {
    return true;
  }
  abstract run(m: FailureRun): Promise<void>;
  abstract toString(): string;
}

class Write extends Base {
  constructor(
    readonly target: number,
    readonly span: Span,
  ) {
    super();
  }
  toString(): string {
    return `write(t${this.target}, ${JSON.stringify(this.span)})`;
  }
  async run(run: FailureRun): Promise<void> {
    const target = pick(writableNames(run), this.target);
    const w = { ...place(this.span, 0, run.subject.size), value: run.nextValue() };
    await run.step(`${this}`, async () => [await run.write(target, w)]);
  }
}

/** Writes (to the device and writable snapshots) and a read, called together and awaited together. */
class Together extends Base {
  constructor(
    readonly writes: readonly { target: number; span: Span }[],
    readonly read: { target: number; span: Span; at: number },
  ) {
    super();
  }
  toString(): string {
    return `together(${this.writes.map((w) => `write(t${w.target}, ${JSON.stringify(w.span)})`).join(', ')}, read(t${this.read.target}) at ${this.read.at})`;
  }
  async run(run: FailureRun): Promise<void> {
    const writable = writableNames(run);
    const writes = this.writes.map((w) => ({
      target: pick(writable, w.target),
      op: { ...place(w.span, 0, run.subject.size), value: run.nextValue() } as ModelWrite,
    }));
    const readTarget = pick(run.names, this.read.target);
    const [from, to] = heldOf(run, readTarget);
    const r = place(this.read.span, from, to);
    await run.step(`${this}`, async () => {
      for (const w of writes) run.worlds.called(w.target, w.op);
      const devices = await Promise.all(
        writes.map((w) =>
          w.target === 'device' ? run.subject.device() : run.subject.handle(run.ids.get(w.target)!),
        ),
      );
      const reader =
        readTarget === 'device'
          ? run.subject.device()
          : await run.subject.handle(run.ids.get(readTarget)!);
      const calls: Promise<unknown>[] = writes.map((w, i) =>
        devices[i]!.write(w.op.offset, new Uint8Array(w.op.length).fill(w.op.value)),
      );
      calls.splice(Math.min(this.read.at, calls.length), 0, reader.read(r.offset, r.length));
      const readIndex = Math.min(this.read.at, writes.length);
      const outcomes = await Promise.allSettled(calls);
      const settled: Settled[] = [];
      for (const [i, w] of writes.entries()) {
        const o = outcomes[i < readIndex ? i : i + 1]!;
        settled.push({
          kind: w.target === 'device' ? 'write' : 'snapshot-write',
          what: `${w.target}.write(${w.op.offset}, ${w.op.length} × ${w.op.value})`,
          ok: o.status === 'fulfilled',
          err: o.status === 'rejected' ? o.reason : undefined,
        });
      }
      const readOutcome = outcomes[readIndex]!;
      if (readOutcome.status === 'fulfilled') {
        const racing = writes.filter((w) => w.target === readTarget).map((w) => w.op);
        run.worlds.checkRead(
          `${run.label}: ${readTarget}.read(${r.offset}, ${r.length})`,
          readTarget,
          r.offset,
          readOutcome.value as Uint8Array,
          racing,
        );
      }
      settled.push({
        kind: readTarget === 'device' ? 'read' : 'snapshot-read',
        what: `${readTarget}.read(${r.offset}, ${r.length})`,
        ok: readOutcome.status === 'fulfilled',
        err: readOutcome.status === 'rejected' ? readOutcome.reason : undefined,
      });
      for (const target of new Set(writes.map((w) => w.target))) {
        run.worlds.settled(
          target,
          writes.flatMap((w, i) => (w.target === target ? [{ op: w.op, ok: settled[i]!.ok }] : [])),
        );
      }
      return settled;
    });
  }
}

class Read extends Base {
  constructor(
    readonly target: number,
    readonly span: Span,
  ) {
    super();
  }
  toString(): string {
    return `read(t${this.target}, ${JSON.stringify(this.span)})`;
  }
  async run(run: FailureRun): Promise<void> {
    const target = pick(run.names, this.target);
    const [from, to] = heldOf(run, target);
    const r = place(this.span, from, to);
    const what = `${target}.read(${r.offset}, ${r.length})`;
    const kind = target === 'device' ? 'read' : 'snapshot-read';
    await run.step(`${this}`, async () => {
      const dev =
        target === 'device' ? run.subject.device() : await run.subject.handle(run.ids.get(target)!);
      try {
        const data = await dev.read(r.offset, r.length);
        run.worlds.checkRead(`${run.label}: ${what}`, target, r.offset, data, []);
        return [{ kind, what, ok: true }];
      } catch (err) {
        if (err instanceof Error && err.message.startsWith(run.label)) throw err;
        return [{ kind, what, ok: false, err }];
      }
    });
  }
}

class Flush extends Base {
  toString(): string {
    return 'flush()';
  }
  async run(run: FailureRun): Promise<void> {
    await run.step('flush()', async () => {
      const outcome = await settle(run.subject.device().flush());
      if (outcome.ok) run.worlds.durable();
      return [{ kind: 'flush', what: 'flush()', ...outcome }];
    });
  }
}

/**
 * A snapshot operation: on success a durability point (every crash-only
 * world goes); rejected outside fail-stop, it has not happened or has
 * happened completely, so every world forks; refused in fail-stop, it has
 * not happened.
 */
async function snapshotOp(
  run: FailureRun,
  what: string,
  call: () => Promise<unknown>,
  apply: (w: World) => boolean,
): Promise<void> {
  await run.step(what, async () => {
    const stopped = run.worlds.stopped;
    const outcome = await settle(call());
    if (outcome.ok) {
      run.worlds.worlds = run.worlds.live;
      for (const w of run.worlds.worlds) {
        if (!apply(w))
          throw new Error(`${run.label}: succeeded where the model has no such snapshot`);
      }
      run.worlds.durable();
    } else if (!stopped) {
      run.worlds.fork(`${what} happened`, apply);
      coverage.forks++;
    }
    return [{ kind: 'snapshot-op', what, ...outcome }];
  });
}

class TakeSnapshot extends Base {
  constructor(
    readonly writable: boolean,
    readonly partial: boolean,
  ) {
    super();
  }
  toString(): string {
    return `snapshot(${this.writable ? 'writable' : 'read-only'}${this.partial ? ', partial' : ''})`;
  }
  async run(run: FailureRun): Promise<void> {
    if (Math.max(...run.worlds.worlds.map((w) => w.snaps.length)) >= MAX_SNAPSHOTS) {
      run.log.push(`${this} skipped: ${MAX_SNAPSHOTS} snapshots`);
      return;
    }
    const name = run.nextName();
    const partial = this.partial && !this.writable ? run.stack.partial : undefined;
    const held = partial?.held ?? ([0, run.subject.size] as const);
    await snapshotOp(
      run,
      `snapshot(${name}${this.writable ? ', writable' : ''}${partial ? ', partial' : ''})`,
      async () => {
        const snap = await run.subject
          .snapshots()!
          .snapshot({ ...partial?.options, name, writable: this.writable });
        run.ids.set(name, snap.id);
        await snap.close();
      },
      (w) => {
        // Exactly the content at the call: no write was in flight.
        w.snaps.push({ name, writable: this.writable, held, bytes: w.device.frozen() });
        return true;
      },
    );
  }
}

/** deleteSnapshot() or restore() of a listed snapshot (by index over the listing). */
class OnSnapshot extends Base {
  constructor(
    readonly op: 'deleteSnapshot' | 'restore',
    readonly index: number,
  ) {
    super();
  }
  toString(): string {
    return `${this.op}(#${this.index})`;
  }
  async run(run: FailureRun): Promise<void> {
    if (run.names.length === 0) {
      run.log.push(`${this} skipped: no snapshot`);
      return;
    }
    const name = run.names[this.index % run.names.length]!;
    const id = run.ids.get(name)!;
    const device = run.subject.snapshots()!;
    await snapshotOp(
      run,
      `${this.op}(${name})`,
      async () => {
        if (this.op === 'restore') return device.restore(id);
        await device.deleteSnapshot(id);
        run.subject.forget(id);
      },
      (w) => {
        const s = w.snap(name);
        if (s === undefined) return false;
        if (this.op === 'deleteSnapshot') w.snaps.splice(w.snaps.indexOf(s), 1);
        // Whole, and durable: a restore is a durability point; a power cut
        // before it was may bring back the world where it did not happen.
        else w.device.replace(s.bytes, s.held[0], s.held[1], true);
        return true;
      },
    );
  }
}

class Fail extends Base {
  constructor(
    readonly disk: string,
    readonly kind: FaultKind,
    readonly n: number,
  ) {
    super();
  }
  toString(): string {
    return `fail(next ${this.n} ${this.kind} of ${this.disk})`;
  }
  async run(run: FailureRun): Promise<void> {
    run.log.push(`${this}`);
    run.arm.armed.set(this.disk, { kind: this.kind, left: this.n });
  }
}

class CloseReopen extends Base {
  toString(): string {
    return 'close() + open';
  }
  async run(run: FailureRun): Promise<void> {
    await run.reopen(`${this}`, 'close');
  }
}

class CrashReopen extends Base {
  constructor(readonly seed: number) {
    super();
  }
  toString(): string {
    return `power cut (crash seed ${this.seed}) + open`;
  }
  async run(run: FailureRun): Promise<void> {
    await run.reopen(`${this}`, { crashSeed: this.seed });
  }
}

/** The commands for `stack`, at most `max` of them; snapshot commands only where the stack has snapshots. */
export function failureCommands(stack: FailureStack, max: number): fc.Arbitrary<Iterable<Command>> {
  const target = fc.nat(4);
  const snapshots = stack.name !== 'copy-job';
  const arbs: fc.WeightedArbitrary<Command>[] = [
    { weight: 5, arbitrary: fc.tuple(target, spanArb).map(([t, s]) => new Write(t, s)) },
    {
      weight: 2,
      arbitrary: fc
        .tuple(
          fc.array(fc.record({ target, span: spanArb }), { minLength: 2, maxLength: 3 }),
          fc.record({ target, span: spanArb, at: fc.nat(3) }),
        )
        .map(([w, r]) => new Together(w, r)),
    },
    { weight: 3, arbitrary: fc.tuple(target, spanArb).map(([t, s]) => new Read(t, s)) },
    { weight: 2, arbitrary: fc.constant(new Flush()) },
    {
      weight: 8,
      arbitrary: fc
        .tuple(
          fc.constantFrom(...stack.disks),
          fc.constantFrom<FaultKind>('read', 'write', 'flush', 'any'),
          fc.integer({ min: 1, max: 4 }),
        )
        .map(([d, k, n]) => new Fail(d, k, n)),
    },
    { weight: 1, arbitrary: fc.constant(new CloseReopen()) },
    { weight: 1, arbitrary: fc.nat().map((s) => new CrashReopen(s)) },
  ];
  if (snapshots) {
    arbs.push(
      {
        weight: 3,
        arbitrary: fc.tuple(fc.boolean(), fc.boolean()).map(([w, p]) => new TakeSnapshot(w, p)),
      },
      { weight: 1, arbitrary: fc.nat(7).map((i) => new OnSnapshot('deleteSnapshot', i)) },
      { weight: 2, arbitrary: fc.nat(7).map((i) => new OnSnapshot('restore', i)) },
    );
  }
  // fc.commands draws each arbitrary alike: a weight is that many copies.
  const weighted = arbs.flatMap((a) => Array.from({ length: a.weight }, () => a.arbitrary));
  return fc.commands(weighted, { maxCommands: max });
}
