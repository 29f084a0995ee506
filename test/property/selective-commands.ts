import fc from 'fast-check';
import { expect } from 'vitest';
import type { ExcludedReads } from '../../src/cow/index.js';
import { mergeExtents } from '../../src/cow/restore-pieces.js';
import type { Extent } from '../../src/index.js';
import { expectAllowed, expectBytes, pattern } from '../support/bytes.js';
import { expectCode } from '../support/error-code.js';
import type { SelectiveRig } from '../support/selective-rig.js';
import {
  BLOCKS,
  BS,
  type Designation,
  expectSame,
  heldBlocks,
  MAX_RUNS,
  MAX_SNAPSHOTS,
  type ModelSnap,
  masked,
  type PendingWrite,
  readHeld,
  runCount,
  type SelectiveModel,
  SIZE,
} from './selective-harness.js';

type Model = SelectiveModel;
type Real = SelectiveRig;

/** An operation both sides perform; `exec` runs it on the real device, `apply` on the model once it succeeded. */
interface Operation {
  toString(): string;
  check(m: Model): boolean;
  /** Resolves what the operation targets in the current model (indexes wrap over live snapshots). */
  exec(m: Model, r: Real): Promise<void>;
  apply(m: Model): void;
  /** What a power cut during `exec` may have left, for the post-crash check. */
  uncertainty(m: Model): Uncertainty;
}

/** The effects of an operation cut short by a power cut, any of which may have reached the disk. */
interface Uncertainty {
  writes: PendingWrite[];
  /** A snapshot that may have been created: it then holds the model's current origin exactly. */
  mayCreate?: ModelSnap;
  /** A snapshot that may have been deleted. */
  mayDelete?: string;
  /** A restore: with no unflushed origin write, the origin is all of this or none of it. */
  restored?: Uint8Array;
}

const NOTHING: Uncertainty = { writes: [] };

/** What the runs of a test file did, so the suite can prove it reached every path. */
export const stats = {
  crashes: 0,
  selectiveSnapshots: 0,
  refusedSnapshots: 0,
  snapshotWrites: 0,
  refusedSnapshotWrites: 0,
  partialRestores: 0,
  excludedReads: 0,
};

/** Picks the origin (0) or a live snapshot (1..n, wrapping). */
function pick(m: Model, target: number): string {
  if (target === 0 || m.snaps.length === 0) return 'origin';
  return m.snaps[(target - 1) % m.snaps.length]!.real;
}

function show(extents: readonly Extent[] | undefined): string {
  return extents === undefined ? '-' : extents.map((e) => `${e.offset}+${e.length}`).join(',');
}

export class Write implements Operation {
  #target = '';
  /** What the device must answer: nothing (it writes), or the code it must fail with. */
  #refusal: 'EROFS' | 'EEXCLUDED' | undefined;
  constructor(
    readonly target: number,
    readonly offset: number,
    readonly length: number,
    readonly seed: number,
  ) {}
  get data(): Uint8Array {
    return pattern(this.length, this.seed);
  }
  toString(): string {
    return `write(t${this.target}, ${this.offset}, ${this.length}, #${this.seed})`;
  }
  check(): boolean {
    return true;
  }
  async exec(m: Model, r: Real): Promise<void> {
    this.#target = pick(m, this.target);
    this.#refusal = undefined;
    if (this.#target === 'origin') return r.device.write(this.offset, this.data);
    const s = m.byReal(this.#target);
    if (!s.writable) this.#refusal = 'EROFS';
    else if (!m.holdsAll(s, this.offset, this.length)) this.#refusal = 'EEXCLUDED';
    const done = (await r.handle(this.#target)).write(this.offset, this.data);
    if (this.#refusal === undefined) {
      await done;
      stats.snapshotWrites++;
      return;
    }
    await expectCode(done, this.#refusal, String(this));
    if (this.#refusal === 'EEXCLUDED') stats.refusedSnapshotWrites++;
  }
  apply(m: Model): void {
    if (this.#refusal === undefined) m.write(this.#target, this.offset, this.data);
  }
  uncertainty(): Uncertainty {
    if (this.#refusal !== undefined) return NOTHING;
    return { writes: [{ target: this.#target, offset: this.offset, data: this.data }] };
  }
}

/** Several writes to distinct blocks issued at once: group commit and the gate under load. */
export class WriteGroup implements Operation {
  constructor(readonly writes: Write[]) {}
  toString(): string {
    return `together[${this.writes.join(', ')}]`;
  }
  check(): boolean {
    return true;
  }
  async exec(m: Model, r: Real): Promise<void> {
    const results = await Promise.allSettled(this.writes.map((w) => w.exec(m, r)));
    const failed = results.find((x) => x.status === 'rejected');
    if (failed) throw failed.reason;
  }
  apply(m: Model): void {
    for (const w of this.writes) w.apply(m);
  }
  uncertainty(): Uncertainty {
    return { writes: this.writes.flatMap((w) => w.uncertainty().writes) };
  }
}

export class Flush implements Operation {
  toString(): string {
    return 'flush()';
  }
  check(): boolean {
    return true;
  }
  async exec(_m: Model, r: Real): Promise<void> {
    await r.device.flush();
  }
  apply(m: Model): void {
    m.makeDurable();
  }
  uncertainty(): Uncertainty {
    return NOTHING;
  }
}

export class TakeSnapshot implements Operation {
  #snap: ModelSnap | undefined;
  readonly held: boolean[];
  constructor(
    readonly design: Designation,
    readonly writable: boolean,
  ) {
    this.held = heldBlocks(design);
  }
  /** EINVAL: a designation of no block, or of more runs than the store takes. */
  get invalid(): boolean {
    const runs = runCount(this.held);
    return runs === 0 || runs > MAX_RUNS;
  }
  toString(): string {
    const { include, exclude } = this.design;
    return `snapshot(include ${show(include)}, exclude ${show(exclude)}${this.writable ? ', writable' : ''})`;
  }
  check(m: Model): boolean {
    return m.snaps.length < MAX_SNAPSHOTS;
  }
  async exec(m: Model, r: Real): Promise<void> {
    this.#snap = undefined;
    const taking = r.device.snapshot({ ...this.design, writable: this.writable });
    if (this.invalid) {
      await expectCode(taking, 'EINVAL', String(this));
      stats.refusedSnapshots++;
      return;
    }
    // The model's clock now: the snapshot holds every write so far.
    const placeholder = this.#placeholder(m);
    const snap = await taking;
    expect(snap.readOnly).toBe(!this.writable);
    this.#snap = { ...placeholder, real: snap.id };
    if (this.held.includes(false)) stats.selectiveSnapshots++;
  }
  #placeholder(m: Model): ModelSnap {
    return {
      real: '',
      held: this.held,
      writable: this.writable,
      bytes: m.origin.slice(),
      time: m.clock,
      own: new Set(),
    };
  }
  apply(m: Model): void {
    if (this.#snap !== undefined) m.snapshot(this.#snap.real, this.held, this.writable);
  }
  uncertainty(m: Model): Uncertainty {
    return this.invalid ? NOTHING : { writes: [], mayCreate: this.#placeholder(m) };
  }
}

export class DeleteSnapshot implements Operation {
  #id = '';
  constructor(readonly index: number) {}
  toString(): string {
    return `delete(#${this.index})`;
  }
  check(m: Model): boolean {
    return m.snaps.length > 0;
  }
  async exec(m: Model, r: Real): Promise<void> {
    this.#id = m.snaps[this.index % m.snaps.length]!.real;
    await r.device.deleteSnapshot(this.#id);
  }
  apply(m: Model): void {
    m.delete(this.#id);
  }
  uncertainty(): Uncertainty {
    return { writes: [], mayDelete: this.#id };
  }
}

export class Restore implements Operation {
  #id = '';
  constructor(
    readonly index: number,
    readonly ranges: Extent[] | undefined,
  ) {}
  get invalid(): boolean {
    return this.ranges !== undefined && mergeExtents(this.ranges).length > MAX_RUNS;
  }
  toString(): string {
    return `restore(#${this.index}, ranges ${show(this.ranges)})`;
  }
  check(m: Model): boolean {
    return m.snaps.length > 0;
  }
  async exec(m: Model, r: Real): Promise<void> {
    this.#id = m.snaps[this.index % m.snaps.length]!.real;
    const restoring = r.device.restore(this.#id, this.ranges && { ranges: this.ranges });
    if (this.invalid) {
      await expectCode(restoring, 'EINVAL', String(this));
      return;
    }
    await restoring;
    if (this.ranges !== undefined) stats.partialRestores++;
  }
  apply(m: Model): void {
    if (!this.invalid) m.restore(this.#id, this.ranges);
  }
  uncertainty(m: Model): Uncertainty {
    if (this.invalid) return NOTHING;
    const restored = m.restored(this.#id, this.ranges);
    return { writes: [{ target: 'origin', offset: 0, data: restored }], restored };
  }
}

/** Runs one operation on both sides and compares everything afterwards. */
export class Step implements fc.AsyncCommand<Model, Real> {
  constructor(readonly op: Operation) {}
  check(m: Readonly<Model>): boolean {
    return this.op.check(m as Model);
  }
  async run(m: Model, r: Real): Promise<void> {
    await this.op.exec(m, r);
    this.op.apply(m);
    await expectSame(m, r);
  }
  toString(): string {
    return this.op.toString();
  }
}

/** A read of the origin or a snapshot: its bytes, `EEXCLUDED`, or zeros outside what it holds. */
export class Read implements fc.AsyncCommand<Model, Real> {
  constructor(
    readonly target: number,
    readonly offset: number,
    readonly length: number,
  ) {}
  check(): boolean {
    return true;
  }
  async run(m: Model, r: Real): Promise<void> {
    const t = pick(m, this.target);
    if (t === 'origin') {
      const got = await r.device.read(this.offset, this.length);
      expectBytes(String(this), got, m.origin.subarray(this.offset, this.offset + this.length));
      return;
    }
    const expected = m.snapshotRead(m.byReal(t), this.offset, this.length);
    const reading = (await r.handle(t)).read(this.offset, this.length);
    if (expected === 'EEXCLUDED') {
      await expectCode(reading, 'EEXCLUDED', String(this));
      stats.excludedReads++;
    } else expectBytes(String(this), await reading, expected);
  }
  toString(): string {
    return `read(t${this.target}, ${this.offset}, ${this.length})`;
  }
}

export class Reopen implements fc.AsyncCommand<Model, Real> {
  constructor(readonly mode: ExcludedReads) {}
  check(): boolean {
    return true;
  }
  async run(m: Model, r: Real): Promise<void> {
    await r.reopen(this.mode);
    m.mode = this.mode;
    // close() flushes: everything acknowledged is durable now.
    m.makeDurable();
    await expectSame(m, r);
  }
  toString(): string {
    return `reopen(${this.mode})`;
  }
}

/**
 * Arms a power cut `afterOps` device operations into `op` (or cuts right
 * away, with no op), opens what the disks hold and checks it: every write
 * acknowledged before the last durability point is there, every byte is
 * the durable one or one an unflushed write (or the cut-short op) put
 * there, a snapshot the cut-short snapshot() made holds exactly the
 * origin then, a cut-short restore is all or nothing, and (through the
 * final comparison) changedExtents still covers every block that differs.
 */
export class CrashDuring implements fc.AsyncCommand<Model, Real> {
  constructor(
    readonly afterOps: number,
    readonly seed: number,
    readonly op: Operation | undefined,
    readonly mode: ExcludedReads,
  ) {}
  check(): boolean {
    return true;
  }
  async run(m: Model, r: Real): Promise<void> {
    stats.crashes++;
    const op = this.op?.check(m) ? this.op : undefined;
    let unsure = NOTHING;
    if (op !== undefined) {
      r.power.cutAfter(this.afterOps);
      let completed = false;
      try {
        await op.exec(m, r);
        completed = true;
      } catch (err) {
        // Only the power cut may make it fail.
        if (r.power.isOn) throw err;
      }
      if (completed) op.apply(m);
      else unsure = op.uncertainty(m);
    }
    await r.crashAndReopen(this.seed, this.mode);
    m.mode = this.mode;
    await this.#expectAllowed(m, r, unsure);
    // Whatever the cut-short op may have landed counts as written, for changedExtents' bounds.
    for (const w of unsure.writes) {
      const first = Math.floor(w.offset / BS);
      const last = Math.floor((w.offset + w.data.length - 1) / BS);
      if (w.target === 'origin') m.touch(first, last);
      else for (let b = first; b <= last; b++) m.snaps.find((s) => s.real === w.target)?.own.add(b);
    }
    const newest = r.device.listSnapshots().at(-1)?.id ?? '';
    const made = unsure.mayCreate !== undefined && !m.snaps.some((s) => s.real === newest);
    await m.resync(r, made ? { ...unsure.mayCreate!, real: newest } : undefined);
    await expectSame(m, r);
  }

  async #expectAllowed(m: Model, r: Real, unsure: Uncertainty): Promise<void> {
    const ids = r.device.listSnapshots().map((s) => s.id);
    const known = m.snaps.map((s) => s.real);
    const allowed = [known];
    if (unsure.mayCreate) allowed.push([...known, ids[ids.length - 1] ?? '']);
    if (unsure.mayDelete) allowed.push(known.filter((id) => id !== unsure.mayDelete));
    expect(
      allowed.some((ok) => JSON.stringify(ok) === JSON.stringify(ids)),
      `snapshots ${ids}, known ${known}`,
    ).toBe(true);

    const candidates = (target: string) =>
      [...m.pending, ...unsure.writes].filter((w) => w.target === target);
    const origin = await r.device.read(0, SIZE);
    expectAllowed('origin', origin, m.durable.get('origin')!, candidates('origin'));
    if (unsure.restored !== undefined && m.pending.every((w) => w.target !== 'origin')) {
      const all = Buffer.from(origin).equals(unsure.restored);
      const none = Buffer.from(origin).equals(m.durable.get('origin')!);
      expect(all || none, 'a restore cut short is finished by open, or never began').toBe(true);
    }
    for (const id of ids) {
      const s = m.snaps.find((x) => x.real === id) ?? { ...unsure.mayCreate!, real: id };
      const content = await readHeld(r, s);
      const durable = m.durable.get(id);
      if (durable === undefined) {
        // Made by the cut-short snapshot(): it drained and flushed every
        // write before it, so it holds exactly the model's origin.
        expectBytes('snapshot created as the power went', content, masked(m.origin, s.held));
      } else {
        expectAllowed(`snapshot ${id}`, content, masked(durable, s.held), candidates(id));
      }
    }
  }

  toString(): string {
    return `crash(after ${this.afterOps} ops of ${this.op ?? 'nothing'}, seed ${this.seed}, open ${this.mode})`;
  }
}

/** A byte range: whole blocks (the fast path) or anything (unaligned edges, block crossings). */
const range = fc.oneof(
  fc
    .tuple(fc.nat(BLOCKS - 1), fc.integer({ min: 1, max: 4 }))
    .map(([b, n]) => ({ offset: b * BS, length: Math.min(n, BLOCKS - b) * BS })),
  fc
    .tuple(fc.nat(SIZE - 1), fc.integer({ min: 1, max: 3 * BS }))
    .map(([o, l]) => ({ offset: o, length: Math.min(l, SIZE - o) })),
);

/** A few bytes inside one block: restore ranges that cut a block into pieces. */
const sliver = fc
  .tuple(fc.nat(BLOCKS - 1), fc.nat(BS - 1), fc.integer({ min: 1, max: 64 }))
  .map(([b, within, l]) => ({ offset: b * BS + within, length: Math.min(l, BS - within) }));

/** Exclusions are often long, so that they cover whole blocks. */
const wideRange = fc.oneof(
  range,
  fc
    .tuple(fc.nat(SIZE - 1), fc.integer({ min: BS, max: 10 * BS }))
    .map(([o, l]) => ({ offset: o, length: Math.min(l, SIZE - o) })),
);

const designation: fc.Arbitrary<Designation> = fc
  .record(
    {
      include: fc.array(range, { minLength: 1, maxLength: 5 }),
      exclude: fc.array(wideRange, { minLength: 1, maxLength: 4 }),
    },
    { requiredKeys: [] },
  )
  .map(({ include, exclude }) => ({
    ...(include && { include }),
    ...(exclude && { exclude }),
  }));

/** 2–6 writes, each inside its own block, so their order cannot matter. */
const writeGroup = fc
  .uniqueArray(fc.tuple(fc.nat(BLOCKS - 1), fc.nat(MAX_SNAPSHOTS), fc.nat(BS - 1), fc.nat(250)), {
    minLength: 2,
    maxLength: 6,
    selector: ([block]) => block,
  })
  .map(
    (ws) =>
      new WriteGroup(
        ws.map(([block, t, within, seed]) => new Write(t, block * BS + within, BS - within, seed)),
      ),
  );

const operation: fc.Arbitrary<Operation> = fc.oneof(
  { weight: 2, arbitrary: writeGroup },
  {
    weight: 6,
    arbitrary: fc
      .tuple(fc.nat(MAX_SNAPSHOTS), range, fc.nat(250))
      .map(([t, { offset, length }, s]) => new Write(t, offset, length, s)),
  },
  { weight: 1, arbitrary: fc.constant(null).map(() => new Flush()) },
  {
    weight: 3,
    arbitrary: fc.tuple(designation, fc.boolean()).map(([d, w]) => new TakeSnapshot(d, w)),
  },
  { weight: 1, arbitrary: fc.nat(MAX_SNAPSHOTS).map((i) => new DeleteSnapshot(i)) },
  {
    weight: 2,
    arbitrary: fc
      .tuple(
        fc.nat(MAX_SNAPSHOTS),
        fc.option(fc.array(fc.oneof(range, sliver), { minLength: 1, maxLength: 7 })),
      )
      .map(([i, ranges]) => new Restore(i, ranges ?? undefined)),
  },
);

const mode = fc.constantFrom<ExcludedReads>('error', 'zero');

/** The command mix: every operation, reads, reopens, and (weighted by `crashWeight`) power cuts. */
export function selectiveCommands(crashWeight: number, maxCommands: number) {
  // fc.commands picks each listed arbitrary with equal chance: repeat one to weight it.
  const times = <T>(n: number, arb: T): T[] => Array.from({ length: n }, () => arb);
  const step = operation.map((op) => new Step(op));
  const read = fc
    .tuple(fc.nat(MAX_SNAPSHOTS), range)
    .map(([t, { offset, length }]) => new Read(t, offset, length));
  const reopen = mode.map((x) => new Reopen(x));
  const crash = fc
    // Most cuts land within the next few device operations: inside the op.
    .tuple(
      fc.oneof(fc.nat(12), fc.nat(60)),
      fc.nat(0xffff),
      fc.option(operation, { freq: 6 }),
      mode,
    )
    .map(([k, seed, op, x]) => new CrashDuring(k, seed, op ?? undefined, x));
  return fc.commands(
    [...times(10, step), ...times(3, read), reopen, ...times(crashWeight, crash)],
    { maxCommands, size: 'max' },
  );
}
