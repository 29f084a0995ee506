import fc from 'fast-check';
import { expect } from 'vitest';
import type { JournalRig } from '../support/journal-rig.js';
import { expectAllowed, expectBytes, isCode, pattern } from './cow-harness.js';

export const BS = 512;
export const BLOCKS = 32;
export const SIZE = BS * BLOCKS;

interface Written {
  offset: number;
  data: Uint8Array;
}

/**
 * The reference: the content as a plain byte array, and the content after
 * every record still in the journal (record n is the n-th write called), so
 * point-in-time views and crash recovery can be checked exactly.
 */
export class JournalModel {
  content: Uint8Array = new Uint8Array(SIZE);
  seq = 0;
  /** Content right after record n, for every n (a short run keeps them all). */
  states = new Map<number, Uint8Array>([[0, new Uint8Array(SIZE)]]);
  /** The model's `seq` at the last durability point, and the content then. */
  durableSeq = 0;
  durable: Uint8Array = new Uint8Array(SIZE);
  /** Writes called since the last durability point. */
  pending: Written[] = [];

  apply(w: Written): void {
    this.content.set(w.data, w.offset);
    this.seq++;
    this.states.set(this.seq, this.content.slice());
    this.pending.push(w);
  }

  makeDurable(): void {
    this.durableSeq = this.seq;
    this.durable = this.content.slice();
    this.pending = [];
  }
}

/** The system under test: a JournalDevice over two memory disks behind FaultyDevices on one power switch. */
export type JournalReal = JournalRig;

/** Counts power cuts across a test file, so the suite can prove how many it ran. */
export const journalCrashes = { value: 0 };

/** An operation that a power cut may interrupt: `exec` on the device, `apply` to the model once it succeeded. */
interface Operation {
  toString(): string;
  exec(r: JournalReal): Promise<void>;
  apply(m: JournalModel): void;
  /** The writes it calls, in call order: after a cut, any prefix of them may have landed. */
  readonly writes: readonly Written[];
}

class Write implements Operation {
  constructor(
    readonly offset: number,
    readonly length: number,
    readonly seed: number,
  ) {}
  get writes(): Written[] {
    return [{ offset: this.offset, data: pattern(this.length, this.seed) }];
  }
  toString(): string {
    return `write(${this.offset}, ${this.length}, #${this.seed})`;
  }
  async exec(r: JournalReal): Promise<void> {
    await r.device.write(this.offset, pattern(this.length, this.seed));
  }
  apply(m: JournalModel): void {
    for (const w of this.writes) m.apply(w);
  }
}

/** Writes to distinct blocks called at once (aligned and partial mixed): one frame, merges in flight. */
class WriteGroup implements Operation {
  constructor(readonly group: Write[]) {}
  get writes(): Written[] {
    return this.group.flatMap((w) => w.writes);
  }
  toString(): string {
    return `together[${this.group.join(', ')}]`;
  }
  async exec(r: JournalReal): Promise<void> {
    const results = await Promise.allSettled(this.group.map((w) => w.exec(r)));
    const failed = results.find((x) => x.status === 'rejected');
    if (failed) throw failed.reason;
  }
  apply(m: JournalModel): void {
    for (const w of this.group) w.apply(m);
  }
}

class Flush implements Operation {
  readonly writes = [];
  toString(): string {
    return 'flush()';
  }
  async exec(r: JournalReal): Promise<void> {
    await r.device.flush();
  }
  apply(m: JournalModel): void {
    m.makeDurable();
  }
}

class Checkpoint implements Operation {
  readonly writes = [];
  toString(): string {
    return 'checkpoint()';
  }
  async exec(r: JournalReal): Promise<void> {
    await r.device.checkpoint();
    expect(r.device.oldestSequence).toBe(r.device.sequence);
    expect(r.device.changedBlocks).toBe(0);
  }
  apply(): void {}
}

/** Runs one operation on both sides, then compares the whole device. */
class Step implements fc.AsyncCommand<JournalModel, JournalReal> {
  constructor(readonly op: Operation) {}
  check(): boolean {
    return true;
  }
  async run(m: JournalModel, r: JournalReal): Promise<void> {
    await this.op.exec(r);
    this.op.apply(m);
    expect(r.device.sequence).toBe(m.seq);
    expectBytes(`after ${this.op}`, await r.device.read(0, SIZE), m.content);
  }
  toString(): string {
    return this.op.toString();
  }
}

class Read implements fc.AsyncCommand<JournalModel, JournalReal> {
  constructor(
    readonly offset: number,
    readonly length: number,
  ) {}
  check(): boolean {
    return true;
  }
  async run(m: JournalModel, r: JournalReal): Promise<void> {
    const expected = m.content.subarray(this.offset, this.offset + this.length);
    expectBytes(String(this), await r.device.read(this.offset, this.length), expected);
  }
  toString(): string {
    return `read(${this.offset}, ${this.length})`;
  }
}

/** Reads a view of a record between the oldest still viewable and the newest. */
class PointInTimeRead implements fc.AsyncCommand<JournalModel, JournalReal> {
  constructor(
    readonly where: number,
    readonly offset: number,
    readonly length: number,
  ) {}
  check(): boolean {
    return true;
  }
  async run(m: JournalModel, r: JournalReal): Promise<void> {
    await checkPoint(m, r, this.where, this.offset, this.length);
  }
  toString(): string {
    return `pointInTime(${this.where.toFixed(2)}).read(${this.offset}, ${this.length})`;
  }
}

/** Reads `[offset, offset + length)` of the view at fraction `where` of the viewable history. */
async function checkPoint(
  m: JournalModel,
  r: JournalReal,
  where: number,
  offset: number,
  length: number,
) {
  const oldest = r.device.oldestSequence;
  const seq = Math.min(m.seq, oldest + Math.floor(where * (m.seq - oldest + 1)));
  const expected = m.states.get(seq);
  if (expected === undefined) throw new Error(`model has no state for record ${seq}`);
  try {
    const view = await r.device.pointInTime(seq);
    expectBytes(
      `pointInTime(${seq})`,
      await view.read(offset, length),
      expected.subarray(offset, offset + length),
    );
    await view.close();
  } catch (err) {
    // A background checkpoint may apply past the point meanwhile; nothing else may fail.
    if (!(isCode(err, 'ENOENT') && r.device.oldestSequence > seq)) throw err;
  }
}

class Reopen implements fc.AsyncCommand<JournalModel, JournalReal> {
  check(): boolean {
    return true;
  }
  async run(m: JournalModel, r: JournalReal): Promise<void> {
    await r.reopen();
    // close() flushes: everything acknowledged is durable now.
    m.makeDurable();
    expect(r.device.sequence).toBe(m.seq);
    expectBytes('after reopen', await r.device.read(0, SIZE), m.content);
    await checkPoint(m, r, 0, 0, SIZE);
  }
  toString(): string {
    return 'reopen()';
  }
}

/**
 * Arms a power cut `afterOps` device operations into `op` (or right away),
 * cuts, and opens what the disks hold. The journal replays a prefix of the
 * records, so the device must equal the model's state after some record
 * between the last durability point and the last write called, every byte
 * must be durable or from a write since, and the history before it must
 * still read back exactly.
 */
class CrashDuring implements fc.AsyncCommand<JournalModel, JournalReal> {
  constructor(
    readonly afterOps: number,
    readonly seed: number,
    readonly op: Operation | undefined,
  ) {}
  check(): boolean {
    return true;
  }
  async run(m: JournalModel, r: JournalReal): Promise<void> {
    journalCrashes.value++;
    let unsure: readonly Written[] = [];
    if (this.op !== undefined) {
      r.power.cutAfter(this.afterOps);
      let completed = false;
      try {
        await this.op.exec(r);
        completed = true;
      } catch (err) {
        if (r.power.isOn) throw err;
      }
      if (completed) this.op.apply(m);
      else unsure = this.op.writes;
    }
    // Any prefix of the cut-short writes may have landed: their states are candidates.
    const candidates = new Map(m.states);
    const content = m.content.slice();
    unsure.forEach((w, i) => {
      content.set(w.data, w.offset);
      candidates.set(m.seq + i + 1, content.slice());
    });
    await r.crashAndOpen(this.seed);

    const k = r.device.sequence;
    expect(k, 'recovered sequence').toBeGreaterThanOrEqual(m.durableSeq);
    expect(k, 'recovered sequence').toBeLessThanOrEqual(m.seq + unsure.length);
    const got = await r.device.read(0, SIZE);
    expectAllowed('after the crash', got, m.durable, [...m.pending, ...unsure]);
    expectBytes(`after the crash: state after record ${k}`, got, candidates.get(k)!);
    // Resync the model to what survived, then check the history still reads back.
    m.content = got;
    m.seq = k;
    m.states = new Map([...candidates].filter(([n]) => n <= k));
    m.makeDurable();
    await checkPoint(m, r, 0, 0, SIZE);
    await checkPoint(m, r, 0.5, 0, SIZE);
  }
  toString(): string {
    return `crash(after ${this.afterOps} ops of ${this.op ?? 'nothing'}, seed ${this.seed})`;
  }
}

const range = fc.oneof(
  // Aligned blocks: the one-I/O path.
  fc
    .tuple(fc.nat(BLOCKS - 1), fc.integer({ min: 1, max: 3 }))
    .map(([b, n]) => [b * BS, Math.min(n, BLOCKS - b) * BS] as const),
  // Anything: partial blocks, block crossings.
  fc
    .tuple(fc.nat(SIZE - 1), fc.integer({ min: 1, max: 3 * BS }))
    .map(([o, l]) => [o, Math.min(l, SIZE - o)] as const),
);

const write = fc.tuple(range, fc.nat(250)).map(([[o, l], s]) => new Write(o, l, s));

/** 2–6 writes, each inside its own block, whole or partial. */
const writeGroup = fc
  .uniqueArray(fc.tuple(fc.nat(BLOCKS - 1), fc.boolean(), fc.nat(BS - 1), fc.nat(250)), {
    minLength: 2,
    maxLength: 6,
    selector: ([block]) => block,
  })
  .map(
    (ws) =>
      new WriteGroup(
        ws.map(([block, whole, within, seed]) =>
          whole
            ? new Write(block * BS, BS, seed)
            : new Write(block * BS + within, BS - within, seed),
        ),
      ),
  );

const operation: fc.Arbitrary<Operation> = fc.oneof(
  { weight: 6, arbitrary: write },
  { weight: 3, arbitrary: writeGroup },
  { weight: 1, arbitrary: fc.constant(null).map(() => new Flush()) },
  { weight: 1, arbitrary: fc.constant(null).map(() => new Checkpoint()) },
);

/** The command mix: operations, reads, point-in-time reads, reopens and (weighted) power cuts. */
export function journalCommands(crashWeight: number, maxCommands: number) {
  const times = <T>(n: number, arb: T): T[] => Array.from({ length: n }, () => arb);
  const step = operation.map((op) => new Step(op));
  const read = range.map(([o, l]) => new Read(o, l));
  const pit = fc
    .tuple(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), range)
    .map(([w, [o, l]]) => new PointInTimeRead(w, o, l));
  const reopen = fc.constant(null).map(() => new Reopen());
  const crash = fc
    // Most cuts land within the next few device operations: inside the op.
    .tuple(fc.oneof(fc.nat(8), fc.nat(40)), fc.nat(0xffff), fc.option(operation, { freq: 6 }))
    .map(([k, seed, op]) => new CrashDuring(k, seed, op ?? undefined));
  return fc.commands(
    [...times(10, step), ...times(2, read), ...times(2, pit), reopen, ...times(crashWeight, crash)],
    { maxCommands, size: 'max' },
  );
}
