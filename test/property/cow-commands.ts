import fc from 'fast-check';
import { expect } from 'vitest';
import { readInto } from '../../src/index.js';
import { expectAllowed, expectBytes, pattern } from '../support/bytes.js';
import type { CowRig } from '../support/cow-rig.js';
import { isCode } from '../support/error-code.js';
import { BS, expectSame, MAX_SNAPSHOTS, type Model, SIZE } from './cow-harness.js';

/** An operation both sides perform; `exec` runs it on the real device, `apply` on the model once it succeeded. */
interface Operation {
  toString(): string;
  check(m: Model): boolean;
  /** Resolves what the operation targets in the current model (indexes wrap over live snapshots). */
  exec(m: Model, r: CowRig): Promise<void>;
  apply(m: Model): Promise<void>;
  /** What a power cut during `exec` may have left, for the post-crash check. */
  uncertainty(m: Model): Uncertainty;
}

/** The effects of an operation cut short by a power cut, any of which may have reached the disk. */
interface Uncertainty {
  /** Writes that may have landed, per target (`'origin'` or a real snapshot id). */
  writes: { target: string; offset: number; data: Uint8Array }[];
  /** A snapshot that may have been created: it then holds the model's current origin exactly. */
  mayCreate?: boolean;
  /** A snapshot that may have been deleted. */
  mayDelete?: string;
}

/** Picks origin (0) or a live snapshot (1..n, wrapping). */
function pick(m: Model, target: number): string {
  if (target === 0 || m.live.length === 0) return 'origin';
  return m.live[(target - 1) % m.live.length]!.real;
}

class Write implements Operation {
  #resolved = '';
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
  #readOnly(m: Model): boolean {
    return this.#resolved !== 'origin' && !m.byReal(this.#resolved).writable;
  }
  async exec(m: Model, r: CowRig): Promise<void> {
    this.#resolved = pick(m, this.target);
    const dev = this.#resolved === 'origin' ? r.device : await r.handle(this.#resolved);
    const done = dev.write(this.offset, this.data);
    if (this.#readOnly(m)) {
      const err = await done.then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isCode(err, 'EROFS'), `write to a read-only snapshot: ${String(err)}`).toBe(true);
    } else {
      await done;
    }
  }
  async apply(m: Model): Promise<void> {
    if (this.#readOnly(m)) return;
    const t = this.#resolved;
    const dev = t === 'origin' ? m.dev : await m.dev.openSnapshot(m.byReal(t).model);
    await dev.write(this.offset, this.data);
    m.pending.push({ target: t, offset: this.offset, data: this.data });
  }
  uncertainty(m: Model): Uncertainty {
    if (this.#readOnly(m)) return { writes: [] };
    return { writes: [{ target: this.#resolved, offset: this.offset, data: this.data }] };
  }
}

/** Several writes to distinct blocks issued at once: group commit, lock table and crash windows under load. */
class WriteGroup implements Operation {
  constructor(readonly writes: Write[]) {}
  toString(): string {
    return `together[${this.writes.join(', ')}]`;
  }
  check(): boolean {
    return true;
  }
  async exec(m: Model, r: CowRig): Promise<void> {
    const results = await Promise.allSettled(this.writes.map((w) => w.exec(m, r)));
    const failed = results.find((x) => x.status === 'rejected');
    if (failed) throw failed.reason;
  }
  async apply(m: Model): Promise<void> {
    for (const w of this.writes) await w.apply(m);
  }
  uncertainty(m: Model): Uncertainty {
    return { writes: this.writes.flatMap((w) => w.uncertainty(m).writes) };
  }
}

class Flush implements Operation {
  toString(): string {
    return 'flush()';
  }
  check(): boolean {
    return true;
  }
  async exec(_m: Model, r: CowRig): Promise<void> {
    await r.device.flush();
  }
  async apply(m: Model): Promise<void> {
    m.makeDurable();
  }
  uncertainty(): Uncertainty {
    return { writes: [] };
  }
}

class TakeSnapshot implements Operation {
  #id = '';
  constructor(readonly writable: boolean) {}
  toString(): string {
    return `snapshot(${this.writable ? 'writable' : 'read-only'})`;
  }
  check(m: Model): boolean {
    return m.live.length < MAX_SNAPSHOTS;
  }
  async exec(_m: Model, r: CowRig): Promise<void> {
    const snap = await r.device.snapshot({ writable: this.writable, name: `s${this.writable}` });
    this.#id = snap.id;
    expect(snap.readOnly).toBe(!this.writable);
  }
  async apply(m: Model): Promise<void> {
    const snap = await m.dev.snapshot({ writable: this.writable });
    m.live.push({ real: this.#id, model: snap.id, writable: this.writable });
    m.makeDurable();
  }
  uncertainty(): Uncertainty {
    return { writes: [], mayCreate: true };
  }
}

class DeleteSnapshot implements Operation {
  #id = '';
  constructor(readonly index: number) {}
  toString(): string {
    return `delete(#${this.index})`;
  }
  check(m: Model): boolean {
    return m.live.length > 0;
  }
  async exec(m: Model, r: CowRig): Promise<void> {
    this.#id = m.live[this.index % m.live.length]!.real;
    await r.device.deleteSnapshot(this.#id);
  }
  async apply(m: Model): Promise<void> {
    const s = m.byReal(this.#id);
    await m.dev.deleteSnapshot(s.model);
    m.live.splice(m.live.indexOf(s), 1);
    m.makeDurable();
  }
  uncertainty(): Uncertainty {
    return { writes: [], mayDelete: this.#id };
  }
}

class Restore implements Operation {
  #id = '';
  constructor(readonly index: number) {}
  toString(): string {
    return `restore(#${this.index})`;
  }
  check(m: Model): boolean {
    return m.live.length > 0;
  }
  async exec(m: Model, r: CowRig): Promise<void> {
    this.#id = m.live[this.index % m.live.length]!.real;
    await r.device.restore(this.#id);
  }
  async apply(m: Model): Promise<void> {
    await m.dev.restore(m.byReal(this.#id).model);
    m.makeDurable();
  }
  uncertainty(m: Model): Uncertainty {
    return { writes: [{ target: 'origin', offset: 0, data: m.content(this.#id) }] };
  }
}

/** Runs one operation on both sides and compares everything afterwards. */
class Step implements fc.AsyncCommand<Model, CowRig> {
  constructor(readonly op: Operation) {}
  check(m: Readonly<Model>): boolean {
    return this.op.check(m as Model);
  }
  async run(m: Model, r: CowRig): Promise<void> {
    await this.op.exec(m, r);
    await this.op.apply(m);
    await expectSame(m, r);
  }
  toString(): string {
    return this.op.toString();
  }
}

/** A read of the origin or a snapshot: by `read`, or by `readInto` a view of a larger buffer. */
class Read implements fc.AsyncCommand<Model, CowRig> {
  constructor(
    readonly target: number,
    readonly offset: number,
    readonly length: number,
    readonly into: boolean,
  ) {}
  check(): boolean {
    return true;
  }
  async run(m: Model, r: CowRig): Promise<void> {
    const t = pick(m, this.target);
    const dev = t === 'origin' ? r.device : await r.handle(t);
    const expected = m.content(t).subarray(this.offset, this.offset + this.length);
    if (!this.into) {
      expectBytes(String(this), await dev.read(this.offset, this.length), expected);
      return;
    }
    // Three bytes of margin either side: readInto writes only the view.
    const backing = new Uint8Array(this.length + 6).fill(0xee);
    const view = backing.subarray(3, 3 + this.length);
    expect(await readInto(dev, this.offset, view)).toBe(view);
    expectBytes(String(this), view, expected);
    expect([...backing.subarray(0, 3), ...backing.subarray(3 + this.length)]).toEqual(
      Array(6).fill(0xee),
    );
  }
  toString(): string {
    return `${this.into ? 'readInto' : 'read'}(t${this.target}, ${this.offset}, ${this.length})`;
  }
}

class Reopen implements fc.AsyncCommand<Model, CowRig> {
  check(): boolean {
    return true;
  }
  async run(m: Model, r: CowRig): Promise<void> {
    await r.reopen();
    // close() flushes: everything acknowledged is durable now.
    m.makeDurable();
    await expectSame(m, r);
  }
  toString(): string {
    return 'reopen()';
  }
}

/** Counts power cuts across a test file, so the suite can prove how many it ran. */
export const crashCount = { value: 0 };

/**
 * Arms a power cut `afterOps` device operations into `op` (or right away,
 * with no op), then opens what the disks hold and checks it: every write
 * acknowledged before the last durability point is there, every byte is
 * accounted for by an unflushed write or the cut-short op, and each
 * snapshot is exactly the model's.
 */
class CrashDuring implements fc.AsyncCommand<Model, CowRig> {
  constructor(
    readonly afterOps: number,
    readonly seed: number,
    readonly op: Operation | undefined,
  ) {}
  check(): boolean {
    return true;
  }
  async run(m: Model, r: CowRig): Promise<void> {
    crashCount.value++;
    const op = this.op?.check(m) ? this.op : undefined;
    let completed = op === undefined;
    if (op !== undefined) {
      r.power.cutAfter(this.afterOps);
      try {
        await op.exec(m, r);
        completed = true;
      } catch (err) {
        // Only the power cut may make it fail.
        if (r.power.isOn) throw err;
      }
      if (completed) await op.apply(m);
    }
    const unsure: Uncertainty = completed || op === undefined ? { writes: [] } : op.uncertainty(m);
    await r.crashAndReopen(this.seed);

    const ids = r.device.listSnapshots().map((s) => s.id);
    const known = m.live.map((s) => s.real);
    const allowed = [known];
    if (unsure.mayCreate) allowed.push([...known, ids[ids.length - 1] ?? '']);
    if (unsure.mayDelete) allowed.push(known.filter((id) => id !== unsure.mayDelete));
    expect(
      allowed.some((ok) => JSON.stringify(ok) === JSON.stringify(ids)),
      `snapshots ${ids}`,
    ).toBe(true);

    const candidates = (target: string) =>
      [...m.pending, ...unsure.writes].filter((w) => w.target === target);
    expectAllowed(
      'origin',
      await r.device.read(0, SIZE),
      m.durable.get('origin')!,
      candidates('origin'),
    );
    for (const id of ids) {
      const content = await (await r.handle(id)).read(0, SIZE);
      const durable = m.durable.get(id);
      if (durable === undefined) {
        // Created by the cut-short snapshot(): it drained and flushed every
        // write before it, so it holds exactly the model's current origin.
        expectBytes('snapshot created as the power went', content, m.dev.bytes());
      } else {
        expectAllowed(`snapshot ${id}`, content, durable, candidates(id));
      }
    }
    await m.resync(r);
  }
  toString(): string {
    return `crash(after ${this.afterOps} ops of ${this.op ?? 'nothing'}, seed ${this.seed})`;
  }
}

const range = fc.oneof(
  // Aligned blocks: the fast path.
  fc
    .tuple(fc.nat(BLOCKS_MINUS_ONE()), fc.integer({ min: 1, max: 3 }))
    .map(([b, n]) => [b * BS, Math.min(n, SIZE / BS - b) * BS] as const),
  // Anything: unaligned edges, block crossings.
  fc
    .tuple(fc.nat(SIZE - 1), fc.integer({ min: 1, max: 3 * BS }))
    .map(([o, l]) => [o, Math.min(l, SIZE - o)] as const),
);

function BLOCKS_MINUS_ONE(): number {
  return SIZE / BS - 1;
}

/** 2–6 writes, each inside its own block, so their order cannot matter. */
const writeGroup = fc
  .uniqueArray(
    fc.tuple(fc.nat(BLOCKS_MINUS_ONE()), fc.nat(MAX_SNAPSHOTS), fc.nat(BS - 1), fc.nat(250)),
    { minLength: 2, maxLength: 6, selector: ([block]) => block },
  )
  .map(
    (ws) =>
      new WriteGroup(
        ws.map(([block, t, within, seed]) => new Write(t, block * BS + within, BS - within, seed)),
      ),
  );

const operation: fc.Arbitrary<Operation> = fc.oneof(
  { weight: 3, arbitrary: writeGroup },
  {
    weight: 6,
    arbitrary: fc
      .tuple(fc.nat(MAX_SNAPSHOTS), range, fc.nat(250))
      .map(([t, [o, l], s]) => new Write(t, o, l, s)),
  },
  { weight: 1, arbitrary: fc.constant(null).map(() => new Flush()) },
  { weight: 2, arbitrary: fc.boolean().map((w) => new TakeSnapshot(w)) },
  { weight: 1, arbitrary: fc.nat(MAX_SNAPSHOTS).map((i) => new DeleteSnapshot(i)) },
  { weight: 1, arbitrary: fc.nat(MAX_SNAPSHOTS).map((i) => new Restore(i)) },
);

/** The command mix: every operation, reads, reopens, and (weighted by `crashWeight`) power cuts. */
export function cowCommands(crashWeight: number, maxCommands: number) {
  // fc.commands picks each listed arbitrary with equal chance: repeat one to weight it.
  const times = <T>(n: number, arb: T): T[] => Array.from({ length: n }, () => arb);
  const step = operation.map((op) => new Step(op));
  const read = fc
    .tuple(fc.nat(MAX_SNAPSHOTS), range, fc.boolean())
    .map(([t, [o, l], into]) => new Read(t, o, l, into));
  const reopen = fc.constant(null).map(() => new Reopen());
  const crash = fc
    // Most cuts land within the next few device operations: inside the op.
    .tuple(fc.oneof(fc.nat(12), fc.nat(60)), fc.nat(0xffff), fc.option(operation, { freq: 6 }))
    .map(([k, seed, op]) => new CrashDuring(k, seed, op ?? undefined));
  return fc.commands(
    [...times(10, step), ...times(3, read), reopen, ...times(crashWeight, crash)],
    { maxCommands, size: 'max' },
  );
}
