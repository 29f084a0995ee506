import { expect } from 'vitest';
import type { JournalSnapshotInfo } from '../../src/device.js';
import { expectBytes } from '../support/bytes.js';
import type { JournalRig } from '../support/journal-rig.js';
import type { JournalModel } from './journal-commands.js';

/*
 * The snapshot side of the journal model: the types operations share, the
 * checks of a device's snapshots against the model, and the states a device
 * may recover to after a power cut cut an operation short.
 */

/** The system under test: a JournalDevice over memory disks behind FaultyDevices on one power switch. */
export type JournalReal = JournalRig;

/** A write as the model keeps it. */
export interface Written {
  offset: number;
  data: Uint8Array;
}

/** A snapshot as the model keeps it: its content, changed only by writes through its handles. */
export interface ModelSnapshot {
  id: string;
  name: string | undefined;
  writable: boolean;
  /** Sequence number of its marker record. */
  sequence: number;
  content: Uint8Array;
}

/** One record an operation appends to the journal. */
export type Effect =
  | { kind: 'write'; write: Written }
  | { kind: 'snapshot'; name: string | undefined; writable: boolean }
  | { kind: 'delete'; id: string }
  | { kind: 'restore'; id: string };

/** What a power cut during an operation may have left done. */
export interface Unsure {
  /** Its records in call order: any prefix of them may have landed. */
  records: Effect[];
  /** A write through a writable snapshot's handle: there in full or not at all. */
  snapshotWrite?: { id: string; write: Written };
}

/** An operation that a power cut may interrupt. */
export interface Operation {
  toString(): string;
  /**
   * Runs it on the device (the model, not changed, only names its targets);
   * resolves with what to do to the model now that it succeeded.
   */
  exec(r: JournalReal, m: JournalModel): Promise<(m: JournalModel) => void>;
  /** What a power cut during `exec` may have left done (`m` as before `exec`). */
  unsure(m: JournalModel): Unsure;
  /** It takes, changes or removes snapshots: compare every snapshot after it. */
  readonly touchesSnapshots: boolean;
  /** Whether it has something to act on (a snapshot, a writable one); a crash runs it anyway. */
  applicable?(m: Readonly<JournalModel>): boolean;
}

/** Power cuts by the kind of snapshot operation they interrupted, and what recovery made of them. */
export const snapshotStats = {
  cutShort: new Map<string, number>(),
  outcomes: new Map<string, number>(),
  /** `snapshot()` calls refused with `ENOSPC` past `maxSnapshots`. */
  refused: 0,
};

function count(map: Map<string, number>, key: string): void {
  map.set(key, (map.get(key) ?? 0) + 1);
}

/** Whether a listed snapshot has the model's marker and options. */
export function sameInfo(
  info: JournalSnapshotInfo,
  s: Omit<ModelSnapshot, 'id' | 'content'>,
): boolean {
  return info.sequence === s.sequence && info.writable === s.writable && info.name === s.name;
}

/** listSnapshots() names the model's snapshots, oldest first, with their markers and options. */
export function expectSnapshotList(m: JournalModel, r: JournalReal): JournalSnapshotInfo[] {
  const infos = r.device.listSnapshots();
  expect(infos.map((i) => i.id)).toEqual(m.snapshots.map((s) => s.id));
  infos.forEach((info, i) => {
    const s = m.snapshots[i]!;
    if (!sameInfo(info, s)) {
      throw new Error(
        `snapshot ${s.id}: listed as marker ${info.sequence} writable ${info.writable} name ${info.name}, ` +
          `the model says ${s.sequence} ${s.writable} ${s.name}`,
      );
    }
  });
  return infos;
}

/** Every snapshot is listed as the model says and reads back exactly (through kept handles). */
export async function expectSnapshots(m: JournalModel, r: JournalReal): Promise<void> {
  expectSnapshotList(m, r);
  for (const s of m.snapshots) {
    const handle = await r.handle(s.id);
    expectBytes(`snapshot ${s.id} (marker ${s.sequence})`, await handle.read(0, r.size), s.content);
  }
}

/**
 * Production (with `cow`) holds one `journal:<id>` snapshot per materialized
 * journal snapshot, at most one per pending one (a checkpoint cut short may
 * have taken it; the next adopts it), and nothing else. `exact`: right after
 * a checkpoint, so every journal snapshot is materialized.
 */
export function expectProductionSnapshots(r: JournalReal, exact: boolean): void {
  if (r.cow === undefined) return;
  const journal = r.device.listSnapshots();
  const names = r.cow.listSnapshots().map((p) => p.name);
  const live = new Set(journal.map((s) => `journal:${s.id}`));
  for (const name of names) {
    if (name === undefined || !live.has(name)) {
      throw new Error(
        `production has snapshot ${name}, which no live journal snapshot owns (${[...live]})`,
      );
    }
  }
  for (const s of journal) {
    const n = names.filter((name) => name === `journal:${s.id}`).length;
    if (exact) expect(s.materialized, `snapshot ${s.id} materialized`).toBe(true);
    if (n > 1 || (s.materialized && n === 0)) {
      throw new Error(
        `${s.materialized ? 'materialized' : 'pending'} snapshot ${s.id} has ${n} production snapshots`,
      );
    }
  }
}

/** A snapshot a recovered device may hold: `id` undefined for one a cut-short snapshot() took. */
interface Candidate extends Omit<ModelSnapshot, 'id' | 'content'> {
  id: string | undefined;
  /** It may hold any of these. */
  contents: Uint8Array[];
  /** Its delete record landed: only a materialized one may survive that (its catalog entry was not yet removed). */
  materialized?: true;
}

/** One state the journal may recover to. */
interface Outcome {
  label: string;
  content: Uint8Array;
  snapshots: Candidate[];
  /**
   * The content after each cut-short record that landed, by sequence
   * number: what a point-in-time view of it must read. A restore that
   * happened changes the views from its record on, one that did not
   * leaves them as they were.
   */
  history: Map<number, Uint8Array>;
}

/** What {@link matchRecovery} found the recovered device to be. */
export interface Recovered {
  /** The snapshots the model is to hold from now on. */
  snapshots: ModelSnapshot[];
  /** The content after each cut-short record that landed (see `Outcome.history`). */
  history: Map<number, Uint8Array>;
}

/**
 * The states a device may recover as sequence number `k`, after a power cut
 * during an operation that left `unsure` (`m` as of before it): records up
 * to `k` landed; a snapshot write is there or not; a delete or a restore
 * whose record landed may still not have happened (all or nothing).
 */
export function outcomesAt(m: JournalModel, unsure: Unsure, k: number): Outcome[] {
  const base: Candidate[] = m.snapshots.map((s) => ({ ...s, contents: [s.content] }));
  const sw = unsure.snapshotWrite;
  if (sw !== undefined) {
    const c = base.find((s) => s.id === sw.id)!;
    const written = c.contents[0]!.slice();
    written.set(sw.write.data, sw.write.offset);
    c.contents = [c.contents[0]!, written];
  }
  if (k <= m.seq) {
    const content = m.states.get(k)!;
    return [{ label: `state after record ${k}`, content, snapshots: base, history: new Map() }];
  }
  let outcomes: Outcome[] = [
    { label: `records to ${m.seq}`, content: m.content, snapshots: base, history: new Map() },
  ];
  for (let seq = m.seq + 1; seq <= k; seq++) {
    const e = unsure.records[seq - m.seq - 1]!;
    outcomes = outcomes.flatMap((o) =>
      after(o, e, seq).map((next) => ({
        ...next,
        history: new Map([...o.history, [seq, next.content]]),
      })),
    );
  }
  return outcomes;
}

/** The states `o` may become once record `seq`, `e`, has landed (`history` not yet extended). */
function after(o: Outcome, e: Effect, seq: number): Outcome[] {
  switch (e.kind) {
    case 'write': {
      const content = o.content.slice();
      content.set(e.write.data, e.write.offset);
      return [{ ...o, content, label: `${o.label}, write ${seq}` }];
    }
    case 'snapshot': {
      const { name, writable } = e;
      const taken = { id: undefined, name, writable, sequence: seq, contents: [o.content] };
      return [{ ...o, snapshots: [...o.snapshots, taken], label: `${o.label}, snapshot ${seq}` }];
    }
    case 'delete':
      return [
        {
          ...o,
          snapshots: o.snapshots.filter((s) => s.id !== e.id),
          label: `${o.label}, delete ${seq} done`,
        },
        {
          ...o,
          snapshots: o.snapshots.map((s) => (s.id === e.id ? { ...s, materialized: true } : s)),
          label: `${o.label}, delete ${seq} landed but not done`,
        },
      ];
    case 'restore': {
      const from = o.snapshots.find((s) => s.id === e.id)!.contents[0]!;
      return [
        { ...o, content: from, label: `${o.label}, restore ${seq} done` },
        { ...o, label: `${o.label}, restore ${seq} landed but not done` },
      ];
    }
  }
}

/** What differs between the recovered device and `o`, or undefined if nothing. */
function mismatch(
  o: Outcome,
  got: Uint8Array,
  infos: JournalSnapshotInfo[],
  reads: Map<string, Uint8Array>,
): string | undefined {
  if (!Buffer.from(got).equals(o.content)) {
    let i = 0;
    while (got[i] === o.content[i]) i++;
    return `content differs at byte ${i}: ${got[i]}, expected ${o.content[i]}`;
  }
  const list = (xs: { id: string | undefined; sequence: number }[]) =>
    xs.map((s) => `${s.id?.slice(0, 8) ?? 'new'}@${s.sequence}`).join(' ');
  if (infos.length !== o.snapshots.length) {
    return `snapshots [${list(infos)}], expected [${list(o.snapshots)}]`;
  }
  for (let j = 0; j < infos.length; j++) {
    const info = infos[j]!;
    const c = o.snapshots[j]!;
    if ((c.id !== undefined && c.id !== info.id) || !sameInfo(info, c)) {
      return `snapshots [${list(infos)}], expected [${list(o.snapshots)}]`;
    }
    if (c.materialized && !info.materialized) {
      return `pending snapshot ${info.id} survived its delete record`;
    }
    const read = reads.get(info.id)!;
    if (!c.contents.some((x) => Buffer.from(read).equals(x))) {
      return `snapshot ${info.id} (marker ${info.sequence}, ${info.materialized ? 'materialized' : 'pending'}) reads wrong`;
    }
  }
  return undefined;
}

/**
 * Checks the device opened after a power cut holds one of the allowed
 * outcomes at its sequence number `k` (content `got`), every surviving
 * snapshot bit-exact; returns the snapshots the model is to hold from now on
 * and the history of the outcome that matched.
 */
export async function matchRecovery(
  m: JournalModel,
  r: JournalReal,
  unsure: Unsure,
  k: number,
  got: Uint8Array,
): Promise<Recovered> {
  const infos = r.device.listSnapshots();
  // Oldest first, by marker.
  const sequences = infos.map((i) => i.sequence);
  expect(sequences).toEqual([...sequences].sort((a, b) => a - b));
  const reads = new Map<string, Uint8Array>();
  for (const info of infos) {
    reads.set(info.id, await (await r.handle(info.id)).read(0, r.size));
  }
  const outcomes = outcomesAt(m, unsure, k);
  const problems: string[] = [];
  for (const o of outcomes) {
    const why = mismatch(o, got, infos, reads);
    if (why === undefined) {
      count(snapshotStats.outcomes, o.label.replace(/\d+/g, 'n'));
      const snapshots = infos.map((info) => ({
        id: info.id,
        name: info.name,
        writable: info.writable,
        sequence: info.sequence,
        content: reads.get(info.id)!,
      }));
      return { snapshots, history: o.history };
    }
    problems.push(`${o.label}: ${why}`);
  }
  throw new Error(
    `after the crash (sequence ${k}) no allowed state matches:\n  ${problems.join('\n  ')}`,
  );
}

/** Counts a power cut during an operation that touches snapshots. */
export function countCutShort(op: Operation, unsure: Unsure): void {
  const kinds = [
    ...unsure.records.filter((e) => e.kind !== 'write').map((e) => e.kind),
    ...(unsure.snapshotWrite === undefined ? [] : ['snapshot write']),
  ];
  if (op.touchesSnapshots) for (const kind of new Set(kinds)) count(snapshotStats.cutShort, kind);
}
