import fc from 'fast-check';
import { expect } from 'vitest';
import type { Snapshot } from '../../src/device.js';
import { expectBytes, pattern } from '../support/bytes.js';
import { isCode } from '../support/error-code.js';
import type { JournalModel } from './journal-commands.js';
import {
  type Effect,
  type JournalReal,
  type ModelSnapshot,
  type Operation,
  snapshotStats,
  type Unsure,
  type Written,
} from './journal-snapshot-checks.js';

/** Picks the `pick`-th (modulo) of `list`, or undefined if it is empty. */
function choose<T>(list: readonly T[], pick: number): T | undefined {
  return list.length === 0 ? undefined : list[pick % list.length];
}

const nothing = (): void => {};

/**
 * `snapshot({ name, writable })`: a durable marker, and a handle kept for
 * later reads. Past `maxSnapshots` it must fail with `ENOSPC` and leave the
 * model as it was.
 */
export class TakeSnapshot implements Operation {
  readonly touchesSnapshots = true;
  constructor(
    readonly name: string | undefined,
    readonly writable: boolean,
  ) {}
  toString(): string {
    return `snapshot(${this.name === undefined ? '' : `'${this.name}'`}${this.writable ? ' writable' : ''})`;
  }
  #full(m: JournalModel): boolean {
    return m.snapshots.length >= m.maxSnapshots;
  }
  unsure(m: JournalModel): Unsure {
    const { name, writable } = this;
    return { records: this.#full(m) ? [] : [{ kind: 'snapshot', name, writable }] };
  }
  async exec(r: JournalReal, m: JournalModel): Promise<(m: JournalModel) => void> {
    const full = this.#full(m);
    // Called before the first await: Amid relies on it.
    const taking = r.device.snapshot({ name: this.name, writable: this.writable });
    if (full) {
      // Past maxSnapshots: refused before anything happened.
      const err = await taking.then(
        () => new Error(`snapshot() past maxSnapshots (${m.maxSnapshots}) succeeded`),
        (e: unknown) => e,
      );
      if (!isCode(err, 'ENOSPC')) throw err;
      snapshotStats.refused++;
      return nothing;
    }
    const handle: Snapshot = await taking;
    expect(handle.name).toBe(this.name);
    expect(handle.readOnly).toBe(!this.writable);
    expect(handle.size).toBe(r.size);
    r.handles.set(handle.id, handle);
    return (m) => {
      m.note();
      m.snapshots.push({
        id: handle.id,
        name: this.name,
        writable: this.writable,
        sequence: m.seq,
        content: m.content.slice(),
      });
      m.makeDurable();
    };
  }
}

/**
 * A snapshot, delete or restore called amid writes to the live device: the
 * `before` ones called just before it, the `after` ones just after, none
 * awaited in between. Records land in call order (rule 1: a snapshot holds
 * exactly the writes called before it; writes called after a restore wait
 * for it and land on the restored content).
 */
export class Amid implements Operation {
  readonly touchesSnapshots = true;
  constructor(
    readonly before: readonly Written[],
    readonly inner: TakeSnapshot | DeleteSnapshot | Restore,
    readonly after: readonly Written[],
  ) {}
  toString(): string {
    const ws = (list: readonly Written[]) =>
      list.map((w) => `write(${w.offset}, ${w.data.length})`).join(', ');
    return `together[${ws(this.before)} | ${this.inner} | ${ws(this.after)}]`;
  }
  applicable(m: Readonly<JournalModel>): boolean {
    return this.inner instanceof TakeSnapshot || m.snapshots.length > 0;
  }
  unsure(m: JournalModel): Unsure {
    const writes = (list: readonly Written[]): Effect[] =>
      list.map((write) => ({ kind: 'write', write }));
    const inner = this.inner.unsure(m).records;
    return { records: [...writes(this.before), ...inner, ...writes(this.after)] };
  }
  async exec(r: JournalReal, m: JournalModel): Promise<(m: JournalModel) => void> {
    const write = (w: Written) => r.device.write(w.offset, w.data.slice());
    const before = this.before.map(write);
    const inner = this.inner.exec(r, m);
    const after = this.after.map(write);
    const [done] = await Promise.allSettled([inner]);
    const results = await Promise.allSettled([...before, ...after]);
    const failed = results.find((x) => x.status === 'rejected');
    if (failed?.status === 'rejected') throw failed.reason;
    if (done.status === 'rejected') throw done.reason;
    return (m) => {
      for (const w of this.before) m.apply(w);
      done.value(m);
      for (const w of this.after) m.apply(w);
    };
  }
}

/**
 * Writes through a handle on the `pick`-th writable snapshot (a pending one
 * is materialized first: a checkpoint), while the `alongside` writes go to
 * the live device at the same time; neither may change the other.
 */
export class WriteSnapshot implements Operation {
  readonly touchesSnapshots = true;
  constructor(
    readonly pick: number,
    readonly offset: number,
    readonly length: number,
    readonly seed: number,
    readonly fresh: boolean,
    readonly alongside: readonly Written[] = [],
  ) {}
  toString(): string {
    const write = `writable snapshot #${this.pick}${this.fresh ? ' (new handle)' : ''}.write(${this.offset}, ${this.length}, #${this.seed})`;
    return this.alongside.length === 0
      ? write
      : `together[${write} | ${this.alongside.map((w) => `write(${w.offset}, ${w.data.length})`).join(', ')}]`;
  }
  #target(m: Readonly<JournalModel>): ModelSnapshot | undefined {
    return choose(
      m.snapshots.filter((s) => s.writable),
      this.pick,
    );
  }
  applicable(m: Readonly<JournalModel>): boolean {
    return this.#target(m) !== undefined;
  }
  unsure(m: JournalModel): Unsure {
    const target = this.#target(m);
    const records: Effect[] = this.alongside.map((write) => ({ kind: 'write', write }));
    if (target === undefined) return { records };
    const write = { offset: this.offset, data: pattern(this.length, this.seed) };
    return { records, snapshotWrite: { id: target.id, write } };
  }
  async exec(r: JournalReal, m: JournalModel): Promise<(m: JournalModel) => void> {
    const target = this.#target(m);
    const data = pattern(this.length, this.seed);
    const writeSnapshot = async (id: string) => {
      if (this.fresh) {
        const handle = await r.device.openSnapshot(id);
        await handle.write(this.offset, data);
        await handle.close();
      } else {
        await (await r.handle(id)).write(this.offset, data);
      }
    };
    const results = await Promise.allSettled([
      target === undefined ? Promise.resolve() : writeSnapshot(target.id),
      ...this.alongside.map((w) => r.device.write(w.offset, w.data.slice())),
    ]);
    const failed = results.find((x) => x.status === 'rejected');
    if (failed?.status === 'rejected') throw failed.reason;
    return (m) => {
      if (target !== undefined) m.snapshot(target.id).content.set(data, this.offset);
      for (const w of this.alongside) m.apply(w);
    };
  }
}

/** Deletes the `pick`-th snapshot; a handle kept on it must then fail with `ENOENT`. */
export class DeleteSnapshot implements Operation {
  readonly touchesSnapshots = true;
  constructor(readonly pick: number) {}
  applicable(m: Readonly<JournalModel>): boolean {
    return m.snapshots.length > 0;
  }
  toString(): string {
    return `deleteSnapshot(#${this.pick})`;
  }
  unsure(m: JournalModel): Unsure {
    const target = choose(m.snapshots, this.pick);
    return { records: target === undefined ? [] : [{ kind: 'delete', id: target.id }] };
  }
  async exec(r: JournalReal, m: JournalModel): Promise<(m: JournalModel) => void> {
    const target = choose(m.snapshots, this.pick);
    if (target === undefined) return nothing;
    const kept = r.handles.get(target.id);
    await r.device.deleteSnapshot(target.id);
    if (kept !== undefined) {
      r.handles.delete(target.id);
      const err = await kept.read(0, 512).then(
        () => new Error(`a handle on deleted snapshot ${target.id} still reads`),
        (e: unknown) => e,
      );
      if (!isCode(err, 'ENOENT')) throw err;
      await kept.close();
    }
    return (m) => {
      m.note();
      m.snapshots = m.snapshots.filter((s) => s.id !== target.id);
      m.makeDurable();
    };
  }
}

/** Restores the device from the `pick`-th snapshot: its content becomes the live content. */
export class Restore implements Operation {
  readonly touchesSnapshots = true;
  constructor(readonly pick: number) {}
  applicable(m: Readonly<JournalModel>): boolean {
    return m.snapshots.length > 0;
  }
  toString(): string {
    return `restore(#${this.pick})`;
  }
  unsure(m: JournalModel): Unsure {
    const target = choose(m.snapshots, this.pick);
    return { records: target === undefined ? [] : [{ kind: 'restore', id: target.id }] };
  }
  async exec(r: JournalReal, m: JournalModel): Promise<(m: JournalModel) => void> {
    const target = choose(m.snapshots, this.pick);
    if (target === undefined) return nothing;
    await r.device.restore(target.id);
    return (m) => {
      m.note(m.snapshot(target.id).content);
      m.makeDurable();
    };
  }
}

/**
 * Reads a range of the `pick`-th snapshot through the handle kept on it or a
 * new one, while the `alongside` writes go to the live device (and may start
 * a background checkpoint that materializes it mid-read).
 */
export class ReadSnapshot implements fc.AsyncCommand<JournalModel, JournalReal> {
  constructor(
    readonly pick: number,
    readonly offset: number,
    readonly length: number,
    readonly fresh: boolean,
    readonly alongside: readonly Written[] = [],
  ) {}
  check(m: Readonly<JournalModel>): boolean {
    return m.snapshots.length > 0;
  }
  async run(m: JournalModel, r: JournalReal): Promise<void> {
    const target = choose(m.snapshots, this.pick)!;
    const handle = this.fresh ? await r.device.openSnapshot(target.id) : await r.handle(target.id);
    const writes = this.alongside.map((w) => r.device.write(w.offset, w.data.slice()));
    const read = handle.read(this.offset, this.length);
    await Promise.all(writes);
    expectBytes(
      `${this} of ${target.id} (marker ${target.sequence})`,
      await read,
      target.content.subarray(this.offset, this.offset + this.length),
    );
    if (this.fresh) await handle.close();
    for (const w of this.alongside) m.apply(w);
    expect(r.device.sequence).toBe(m.seq);
  }
  toString(): string {
    const read = `snapshot #${this.pick}${this.fresh ? ' (new handle)' : ''}.read(${this.offset}, ${this.length})`;
    return this.alongside.length === 0
      ? read
      : `together[${read} | ${this.alongside.map((w) => `write(${w.offset}, ${w.data.length})`).join(', ')}]`;
  }
}

type Range = readonly [number, number];

/** 0–`maxLength` whole-block writes to distinct blocks, to call at the same time as something else. */
function blockWrites(blocks: number, blockSize: number, maxLength = 4): fc.Arbitrary<Written[]> {
  return fc
    .uniqueArray(fc.tuple(fc.nat(blocks - 1), fc.nat(250)), {
      maxLength,
      selector: ([b]) => b,
    })
    .map((ws) =>
      ws.map(([b, seed]) => ({ offset: b * blockSize, data: pattern(blockSize, seed) })),
    );
}

/** Writes to distinct blocks, each inside its block, whole or partial. */
function blockPieces(blocks: number, blockSize: number): fc.Arbitrary<Written[]> {
  return fc
    .uniqueArray(fc.tuple(fc.nat(blocks - 1), fc.boolean(), fc.nat(blockSize - 1), fc.nat(250)), {
      minLength: 1,
      maxLength: 6,
      selector: ([b]) => b,
    })
    .map((ws) =>
      ws.map(([b, whole, within, seed]) => {
        const skip = whole ? 0 : within;
        return { offset: b * blockSize + skip, data: pattern(blockSize - skip, seed) };
      }),
    );
}

/** The snapshot operations, weighted, over byte ranges from `range`. */
export function snapshotOperations(range: fc.Arbitrary<Range>, blocks: number, blockSize: number) {
  const name = fc.option(fc.constantFrom('nightly', 'before-upgrade', 'x'), { freq: 2 });
  const writable = fc.boolean();
  const take = fc.tuple(name, writable).map(([n, w]) => new TakeSnapshot(n ?? undefined, w));
  const del = fc.nat(7).map((pick) => new DeleteSnapshot(pick));
  const restore = fc.nat(7).map((pick) => new Restore(pick));
  // Writes to distinct blocks around the call.
  const amid = fc
    .tuple(fc.oneof(take, take, del, restore), blockPieces(blocks, blockSize), fc.nat(6))
    .map(([inner, writes, split]) => {
      const at = split % (writes.length + 1);
      return new Amid(writes.slice(0, at), inner, writes.slice(at));
    });
  const writeSnapshot = fc
    .tuple(
      fc.nat(7),
      range,
      fc.nat(250),
      fc.boolean(),
      fc.option(blockWrites(blocks, blockSize), { freq: 2 }),
    )
    .map(
      ([pick, [o, l], seed, fresh, alongside]) =>
        new WriteSnapshot(pick, o, l, seed, fresh, alongside ?? []),
    );
  return [
    { weight: 2, arbitrary: take as fc.Arbitrary<Operation> },
    { weight: 2, arbitrary: amid as fc.Arbitrary<Operation> },
    { weight: 2, arbitrary: writeSnapshot as fc.Arbitrary<Operation> },
    { weight: 1, arbitrary: del as fc.Arbitrary<Operation> },
    { weight: 1, arbitrary: restore as fc.Arbitrary<Operation> },
  ];
}

/** Reads of snapshots: through kept handles and new ones, some amid live writes. */
export function snapshotReads(range: fc.Arbitrary<Range>, blocks: number, blockSize: number) {
  return fc
    .tuple(fc.nat(7), range, fc.boolean(), fc.option(blockWrites(blocks, blockSize), { freq: 2 }))
    .map(
      ([pick, [o, l], fresh, alongside]) => new ReadSnapshot(pick, o, l, fresh, alongside ?? []),
    );
}
