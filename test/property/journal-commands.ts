import fc from 'fast-check';
import { expect } from 'vitest';
import { expectAllowed, expectBytes, pattern } from '../support/bytes.js';
import { isCode } from '../support/error-code.js';
import {
  countCutShort,
  expectProductionSnapshots,
  expectSnapshotList,
  expectSnapshots,
  type JournalReal,
  type ModelSnapshot,
  matchRecovery,
  type Operation,
  type Unsure,
  type Written,
} from './journal-snapshot-checks.js';
import { snapshotOperations, snapshotReads } from './journal-snapshot-commands.js';

export type { JournalReal } from './journal-snapshot-checks.js';

export const BS = 512;
export const BLOCKS = 32;
export const SIZE = BS * BLOCKS;

/**
 * The reference: the content as a plain byte array, and the content after
 * every record still in the journal (record n is the n-th write, snapshot,
 * delete or restore called), so point-in-time views and crash recovery can
 * be checked exactly; and the live snapshots, each with its own content.
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
  /** Live snapshots, oldest first. */
  snapshots: ModelSnapshot[] = [];

  constructor(readonly maxSnapshots = 0) {}

  apply(w: Written): void {
    this.content.set(w.data, w.offset);
    this.seq++;
    this.states.set(this.seq, this.content.slice());
    this.pending.push(w);
  }

  /** A note record (snapshot marker, delete, restore): a sequence number, after which the content is `content`. */
  note(content: Uint8Array = this.content): void {
    this.content = content.slice();
    this.seq++;
    this.states.set(this.seq, this.content.slice());
  }

  snapshot(id: string): ModelSnapshot {
    const s = this.snapshots.find((x) => x.id === id);
    if (s === undefined) throw new Error(`model has no snapshot ${id}`);
    return s;
  }

  makeDurable(): void {
    this.durableSeq = this.seq;
    this.durable = this.content.slice();
    this.pending = [];
  }
}

/**
 * Counts power cuts across a test file, so the suite can prove how many it
 * ran: `value` during operations, `recoveryCuts` during the open after one.
 */
export const journalCrashes = { value: 0, recoveryCuts: 0 };

const nothing = (): void => {};

class Write implements Operation {
  readonly touchesSnapshots = false;
  constructor(
    readonly offset: number,
    readonly length: number,
    readonly seed: number,
  ) {}
  get write(): Written {
    return { offset: this.offset, data: pattern(this.length, this.seed) };
  }
  toString(): string {
    return `write(${this.offset}, ${this.length}, #${this.seed})`;
  }
  unsure(): Unsure {
    return { records: [{ kind: 'write', write: this.write }] };
  }
  async exec(r: JournalReal): Promise<(m: JournalModel) => void> {
    const w = this.write;
    await r.device.write(w.offset, w.data);
    return (m) => m.apply(w);
  }
}

/** Writes to distinct blocks called at once (aligned and partial mixed): one frame, merges in flight. */
class WriteGroup implements Operation {
  readonly touchesSnapshots = false;
  constructor(readonly group: Write[]) {}
  toString(): string {
    return `together[${this.group.join(', ')}]`;
  }
  unsure(): Unsure {
    return { records: this.group.flatMap((w) => w.unsure().records) };
  }
  async exec(r: JournalReal): Promise<(m: JournalModel) => void> {
    const results = await Promise.allSettled(this.group.map((w) => w.exec(r)));
    const failed = results.find((x) => x.status === 'rejected');
    if (failed) throw failed.reason;
    return (m) => {
      for (const x of results) if (x.status === 'fulfilled') x.value(m);
    };
  }
}

class Flush implements Operation {
  readonly touchesSnapshots = false;
  toString(): string {
    return 'flush()';
  }
  unsure(): Unsure {
    return { records: [] };
  }
  async exec(r: JournalReal): Promise<(m: JournalModel) => void> {
    await r.device.flush();
    return (m) => m.makeDurable();
  }
}

class Checkpoint implements Operation {
  readonly touchesSnapshots = false;
  toString(): string {
    return 'checkpoint()';
  }
  unsure(): Unsure {
    return { records: [] };
  }
  async exec(r: JournalReal): Promise<(m: JournalModel) => void> {
    await r.device.checkpoint();
    expect(r.device.oldestSequence).toBe(r.device.sequence);
    expect(r.device.changedBlocks).toBe(0);
    // Every snapshot's marker came before the call: all are in production now.
    expectProductionSnapshots(r, true);
    return nothing;
  }
}

/** Runs one operation on both sides, then compares the whole device (and the snapshots, if it touched them). */
class Step implements fc.AsyncCommand<JournalModel, JournalReal> {
  constructor(readonly op: Operation) {}
  check(m: Readonly<JournalModel>): boolean {
    return this.op.applicable?.(m) ?? true;
  }
  async run(m: JournalModel, r: JournalReal): Promise<void> {
    const apply = await this.op.exec(r, m);
    apply(m);
    expect(r.device.sequence).toBe(m.seq);
    expectBytes(`after ${this.op}`, await r.device.read(0, SIZE), m.content);
    if (this.op.touchesSnapshots) await expectSnapshots(m, r);
    else expectSnapshotList(m, r);
    expectProductionSnapshots(r, false);
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
    await expectSnapshots(m, r);
    expectProductionSnapshots(r, false);
    await checkPoint(m, r, 0, 0, SIZE);
  }
  toString(): string {
    return 'reopen()';
  }
}

/**
 * Arms a power cut `afterOps` device operations into `op` (or right away),
 * cuts, and opens what the disks hold (one time in three cutting the power
 * again during that open, and opening once more). The journal replays a
 * prefix of the records, so the device must equal the model's state after
 * some record between the last durability point and the last record
 * called, every byte must be durable or from a write since, and the history
 * before it must still read back exactly. A snapshot, delete or restore
 * cut short is all or nothing; a snapshot write too, and one acknowledged
 * is durable; every surviving snapshot reads back bit-exact, and production
 * (with `cow`) holds no orphan snapshot.
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
    let unsure: Unsure = { records: [] };
    if (this.op !== undefined) {
      const cutShort = this.op.unsure(m);
      r.power.cutAfter(this.afterOps);
      let apply: ((m: JournalModel) => void) | undefined;
      try {
        apply = await this.op.exec(r, m);
      } catch (err) {
        if (r.power.isOn) throw err;
      }
      if (apply !== undefined) apply(m);
      else {
        unsure = cutShort;
        countCutShort(this.op, unsure);
      }
    }
    // Any prefix of the cut-short records may have landed: their bytes are allowed.
    const allowed = [...m.pending];
    for (const e of unsure.records) {
      if (e.kind === 'write') allowed.push(e.write);
      else if (e.kind === 'restore') allowed.push({ offset: 0, data: m.snapshot(e.id).content });
    }
    // One crash in three cuts the power again during the recovering open.
    const cutsBefore = r.recoveryCuts;
    await r.crashAndReopen(
      this.seed,
      (this.seed >> 1) % 3 === 0 ? (this.seed >> 3) % 16 : undefined,
    );
    journalCrashes.recoveryCuts += r.recoveryCuts - cutsBefore;

    const k = r.device.sequence;
    expect(k, 'recovered sequence').toBeGreaterThanOrEqual(m.durableSeq);
    expect(k, 'recovered sequence').toBeLessThanOrEqual(m.seq + unsure.records.length);
    const got = await r.device.read(0, SIZE);
    expectAllowed('after the crash', got, m.durable, allowed);
    const { snapshots, history } = await matchRecovery(m, r, unsure, k, got);
    // Orphans (of a deletion cut short) are gone; a pending snapshot may have one a checkpoint cut short took.
    expectProductionSnapshots(r, false);
    // Resync the model to what survived, then check the history still reads back.
    m.content = got;
    m.seq = k;
    // The views of cut-short records read as the outcome that matched: a
    // restore that happened shows from its record on, one that did not never.
    m.states = new Map([...m.states, ...history].filter(([n]) => n <= k));
    m.states.set(k, got.slice());
    m.snapshots = snapshots;
    m.makeDurable();
    await checkPoint(m, r, 0, 0, SIZE);
    await checkPoint(m, r, 0.5, 0, SIZE);
    if (r.cow !== undefined && this.seed % 2 === 1) {
      // A checkpoint adopts what a cut short one took, and takes the rest.
      await r.device.checkpoint();
      expectProductionSnapshots(r, true);
      expectBytes('after the crash and a checkpoint', await r.device.read(0, SIZE), m.content);
      await expectSnapshots(m, r);
    }
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

const baseOperations = [
  { weight: 6, arbitrary: write as fc.Arbitrary<Operation> },
  { weight: 3, arbitrary: writeGroup as fc.Arbitrary<Operation> },
  { weight: 1, arbitrary: fc.constant(null).map((): Operation => new Flush()) },
  { weight: 1, arbitrary: fc.constant(null).map((): Operation => new Checkpoint()) },
];

/**
 * The command mix: operations, reads, point-in-time reads, reopens and
 * (weighted) power cuts; with `snapshots` (a rig with `cow`), snapshot
 * operations too, inside power cuts as well, and snapshot reads.
 */
export function journalCommands(crashWeight: number, maxCommands: number, snapshots = false) {
  const times = <T>(n: number, arb: T): T[] => Array.from({ length: n }, () => arb);
  const snapshotOps = snapshots ? snapshotOperations(range, BLOCKS, BS) : [];
  const operation = fc.oneof(...baseOperations, ...snapshotOps);
  // Power cuts land in snapshot operations more often than steps run them.
  const crashOperation = fc.oneof(
    ...baseOperations,
    ...snapshotOps.map(({ weight, arbitrary }) => ({ weight: 2 * weight, arbitrary })),
  );
  const step = operation.map((op) => new Step(op));
  const read = range.map(([o, l]) => new Read(o, l));
  const pit = fc
    .tuple(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), range)
    .map(([w, [o, l]]) => new PointInTimeRead(w, o, l));
  const reopen = fc.constant(null).map(() => new Reopen());
  // Most cuts land within the next few device operations: inside the op.
  // Snapshot operations issue few before they are durable: cut early more often.
  const after = snapshots
    ? fc.oneof(fc.nat(3), fc.nat(8), fc.nat(40))
    : fc.oneof(fc.nat(8), fc.nat(40));
  const crash = fc
    .tuple(after, fc.nat(0xffff), fc.option(crashOperation, { freq: 6 }))
    .map(([k, seed, op]) => new CrashDuring(k, seed, op ?? undefined));
  const snapshotRead = snapshots ? times(2, snapshotReads(range, BLOCKS, BS)) : [];
  const commands: fc.Arbitrary<fc.AsyncCommand<JournalModel, JournalReal>>[] = [
    ...times(snapshots ? 14 : 10, step),
    ...times(2, read),
    ...times(2, pit),
    ...snapshotRead,
    reopen,
    ...times(crashWeight, crash),
  ];
  return fc.commands(commands, { maxCommands, size: 'max' });
}
