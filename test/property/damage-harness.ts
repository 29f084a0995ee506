import { SECTOR } from '../../src/base/index.js';
import { BlockDeviceError, type MemoryDevice } from '../../src/index.js';
import type { RecordingDevice } from '../support/recording-device.js';
import {
  countDamage,
  DAMAGE_OUTCOMES,
  type DamageOutcome,
  forcedSeed,
  pastDeadline,
  recordFailure,
  SOAK,
  seedFor,
} from '../support/soak.js';

/**
 * Damage trials (issue 15, item 3): a seeded workload on a device or stack
 * over memory devices, made durable by `close()` or by `flush()` after which
 * the process dies (the objects are dropped), then one kind of damage to a
 * sector the device wrote to one of its stores, then a reopen that reads
 * everything back. Only stores are damaged: an origin or production device
 * holds user data without checksums, as a raw disk under qcow2 does, and
 * nothing above it can tell its damage from a write.
 *
 * Each trial comes to one outcome: reported at open or at a read
 * (`ECORRUPT`), harmless (every read equals the model), silently wrong (a
 * read returned other bytes without an error) or snapshot lost (a durable
 * snapshot missing without an error). The last two fail the test, with the
 * seed, the damage and its offset (snapshot rules 5 and 6 in
 * docs/ARCHITECTURE.md, "Snapshot rules").
 */

/** A small seeded generator (mulberry32): the whole trial follows from its seed. */
export class Rng {
  #state: number;
  constructor(seed: number) {
    this.#state = seed >>> 0 || 0x9e3779b9;
  }
  /** A uniform integer in `[0, n)`. */
  int(n: number): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) % n) >>> 0;
  }
  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.int(1_000_000) < p * 1_000_000;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)] as T;
  }
  bytes(length: number): Uint8Array {
    const out = new Uint8Array(length);
    for (let i = 0; i < length; i++) out[i] = this.int(256);
    return out;
  }
}

/** How a workload was made durable before the process ended. */
export type Durability = 'close' | 'flush';

/** The damage a trial does: one of these, to one place the device wrote. */
export const DAMAGE_KINDS = [
  'bit',
  'byte',
  'random-sector',
  'zero-sector',
  'older-sector',
  'misdirected',
] as const;
export type DamageKind = (typeof DAMAGE_KINDS)[number];

/** What a workload left behind: every device's content, and what the stack must read back. */
export interface Workload {
  /** Every device of the stack as the process left it, by name. */
  images: Record<string, MemoryDevice>;
  /** The stores among them (the ones damaged), with what was written to each. */
  stores: Record<string, RecordingDevice>;
  /** What the workload did, for the failure message. */
  steps: string[];
  /** Names the structure at `offset` of store `store`, read from `image`, its undamaged image. */
  region(store: string, image: MemoryDevice, offset: number): Promise<string>;
  /** Opens the stack on `images` (copies of the above) and reads everything through `verdict`. */
  verify(images: Record<string, MemoryDevice>, verdict: Verdict): Promise<void>;
}

/** A device or stack under trial. */
export interface DamageTarget {
  name: string;
  /** Runs a workload drawn from `rng` and makes it durable by `mode`. */
  run(rng: Rng, mode: Durability): Promise<Workload>;
}

/** Thrown by a verify to stop after the open reported damage. */
class OpenReported extends Error {}

/** Collects what a reopen and its reads came to. */
export class Verdict {
  opened = false;
  reportedAtOpen = false;
  reportedAtRead = false;
  readonly silent: string[] = [];
  readonly lost: string[] = [];
  readonly unexpected: string[] = [];

  /** Opens a device; `ECORRUPT` ends the trial as reported at open. */
  async open<T>(what: string, open: () => Promise<T>): Promise<T> {
    try {
      return await open();
    } catch (err) {
      if (BlockDeviceError.is(err, 'ECORRUPT')) {
        this.reportedAtOpen = true;
        throw new OpenReported();
      }
      this.unexpected.push(`${what}: ${String(err)}`);
      throw new OpenReported();
    }
  }

  /** Reads and compares with the model; `ECORRUPT` counts as reported, other bytes as silent. */
  async read(what: string, read: () => Promise<Uint8Array>, expected: Uint8Array): Promise<void> {
    let got: Uint8Array;
    try {
      got = await read();
    } catch (err) {
      if (BlockDeviceError.is(err, 'ECORRUPT')) this.reportedAtRead = true;
      else this.unexpected.push(`${what}: ${String(err)}`);
      return;
    }
    const at = firstDifference(got, expected);
    if (at >= 0) {
      this.silent.push(`${what}: byte ${at} is ${got[at]}, the model says ${expected[at]}`);
    }
  }

  /** Compares the snapshot ids a device lists with the model's. */
  listed(what: string, listed: readonly string[], expected: readonly string[]): void {
    for (const id of expected) if (!listed.includes(id)) this.lost.push(`${what} ${id}`);
    for (const id of listed) {
      if (!expected.includes(id))
        this.silent.push(`${what} ${id}: listed, but deleted or never taken`);
    }
  }

  outcome(): DamageOutcome {
    if (this.silent.length > 0) return 'silent';
    if (this.lost.length > 0) return 'snapshot-lost';
    if (this.reportedAtOpen) return 'reported-open';
    if (this.reportedAtRead) return 'reported-read';
    return 'harmless';
  }
}

function firstDifference(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

/** A place in a store and what the damage did there, for the failure message. */
interface Damage {
  kind: DamageKind;
  store: string;
  offset: number;
  detail: string;
}

/**
 * Damages `image` (a copy of the store `store` recorded) by `kind` at a
 * place the device wrote; undefined where the kind has nothing to work on
 * (no sector written twice with different content, say).
 */
async function damage(
  rng: Rng,
  kind: DamageKind,
  store: string,
  recorder: RecordingDevice,
  image: MemoryDevice,
): Promise<Damage | undefined> {
  const sectors = recorder.writtenSectors;
  if (sectors.length === 0) return undefined;
  const sector = rng.pick(sectors);
  const at = sector * SECTOR;
  const current = await image.read(at, SECTOR);
  switch (kind) {
    case 'bit': {
      const byte = rng.int(SECTOR);
      const bit = rng.int(8);
      current[byte] = (current[byte] as number) ^ (1 << bit);
      await image.write(at, current);
      return { kind, store, offset: at + byte, detail: `bit ${bit}` };
    }
    case 'byte': {
      const byte = rng.int(SECTOR);
      const old = current[byte] as number;
      const value = (old + 1 + rng.int(255)) & 0xff;
      current[byte] = value;
      await image.write(at, current);
      return { kind, store, offset: at + byte, detail: `${old} → ${value}` };
    }
    case 'random-sector':
      await image.write(at, rng.bytes(SECTOR));
      return { kind, store, offset: at, detail: 'random bytes' };
    case 'zero-sector':
      if (current.every((b) => b === 0)) return undefined;
      await image.write(at, new Uint8Array(SECTOR));
      return { kind, store, offset: at, detail: 'zeroed' };
    case 'older-sector': {
      // A lost write: the sector still holds what an earlier write left.
      const older = sectors.filter((s) =>
        (recorder.history.get(s) ?? []).some((v) => !sameBytes(v, lastOf(recorder, s))),
      );
      if (older.length === 0) return undefined;
      const s = rng.pick(older);
      const versions = (recorder.history.get(s) ?? []).filter(
        (v) => !sameBytes(v, lastOf(recorder, s)),
      );
      const version = rng.int(versions.length);
      await image.write(s * SECTOR, versions[version] as Uint8Array);
      return {
        kind,
        store,
        offset: s * SECTOR,
        detail: `version ${version + 1} of ${versions.length + 1}`,
      };
    }
    case 'misdirected': {
      // A write that landed at the wrong offset: a sector written to one
      // place shows up over another written place as well.
      if (sectors.length < 2) return undefined;
      const source = rng.pick(sectors);
      const data = await image.read(source * SECTOR, SECTOR);
      if (sameBytes(data, current)) return undefined;
      await image.write(at, data);
      return { kind, store, offset: at, detail: `sector from ${source * SECTOR}` };
    }
  }
}

function lastOf(recorder: RecordingDevice, sector: number): Uint8Array {
  const versions = recorder.history.get(sector) ?? [];
  return versions[versions.length - 1] as Uint8Array;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a).equals(Buffer.from(b));
}

/** Independent copies of every image, for one trial to damage. */
async function cloneImages(images: Record<string, MemoryDevice>) {
  const out: Record<string, MemoryDevice> = {};
  for (const [name, image] of Object.entries(images)) out[name] = await image.clone();
  return out;
}

/** Outcome counts per target, for the table this file prints. */
export const damageTable = new Map<string, Record<DamageOutcome, number>>();

function tally(target: string, outcome: DamageOutcome): void {
  const row =
    damageTable.get(target) ??
    (Object.fromEntries(DAMAGE_OUTCOMES.map((o) => [o, 0])) as Record<DamageOutcome, number>);
  row[outcome]++;
  damageTable.set(target, row);
  countDamage(target, outcome);
}

/** The table of outcomes, one row per target. */
export function formatDamageTable(): string {
  const head = ['device/stack', ...DAMAGE_OUTCOMES];
  const rows = [...damageTable].map(([name, row]) => [
    name,
    ...DAMAGE_OUTCOMES.map((o) => String(row[o])),
  ]);
  const widths = head.map((h, i) =>
    Math.max(h.length, ...rows.map((r) => (r[i] as string).length)),
  );
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0)))
      .join('  ');
  return [line(head), ...rows.map(line)].join('\n');
}

/**
 * Runs seeded workloads on `target` (`ci` of them, `soak` in a soak, one
 * to replay `BLOCKSNAP_SEED`), each made durable both ways, and after each
 * every damage kind `perKind` times; counts the outcomes and fails, naming
 * seed, damage and offset, on any silent or lost-snapshot outcome or an
 * error other than `ECORRUPT`. A timed soak stops at its deadline, but
 * never before the `ci` workloads ran (a suite started late still counts).
 */
export async function runDamageTrials(
  target: DamageTarget,
  options: { fixedSeed: number; ci: number; soak: number; perKind: number },
): Promise<void> {
  const workloads = forcedSeed() !== undefined ? 1 : SOAK ? options.soak : options.ci;
  const more = (w: number) => w < workloads && (w < options.ci || !pastDeadline());
  const base = seedFor(`damage ${target.name}`, options.fixedSeed);
  const failures: string[] = [];
  /** Failures by durability, outcome and the kind of structure hit: how many, and the first. */
  const byWhere = new Map<string, { n: number; first: number }>();
  for (let w = 0; more(w); w++) {
    const seed = base + w;
    for (const mode of ['close', 'flush'] as const) {
      const rng = new Rng(seed * 2 + (mode === 'close' ? 0 : 1));
      const workload = await target.run(rng, mode);
      for (const kind of DAMAGE_KINDS) {
        for (let k = 0; k < options.perKind; k++) {
          const images = await cloneImages(workload.images);
          const store = rng.pick(Object.keys(workload.stores));
          const recorder = workload.stores[store] as RecordingDevice;
          const done = await damage(rng, kind, store, recorder, images[store] as MemoryDevice);
          if (done === undefined) continue;
          const verdict = new Verdict();
          try {
            await workload.verify(images, verdict);
          } catch (err) {
            if (!(err instanceof OpenReported)) verdict.unexpected.push(`verify: ${String(err)}`);
          }
          const outcome = verdict.outcome();
          tally(target.name, outcome);
          const problems = [...verdict.silent, ...verdict.lost, ...verdict.unexpected];
          if (
            outcome === 'silent' ||
            outcome === 'snapshot-lost' ||
            verdict.unexpected.length > 0
          ) {
            const region = await workload.region(
              done.store,
              workload.images[done.store] as MemoryDevice,
              done.offset,
            );
            const what =
              `${target.name} seed ${seed} (BLOCKSNAP_SEED=${seed}), after ${mode}: ` +
              `${done.kind} (${done.detail}) in ${done.store} at offset ${done.offset} ` +
              `(${region}): ${outcome}: ${problems.join('; ')}`;
            recordFailure(seed, what);
            const where = `after ${mode}: ${outcome} in ${done.store} ${region.replace(/\d+/g, 'N')}`;
            const group = byWhere.get(where);
            if (group === undefined) byWhere.set(where, { n: 1, first: failures.length });
            else group.n++;
            failures.push(`${what}\n    workload: ${workload.steps.join(', ')}`);
          }
        }
      }
    }
  }
  if (failures.length > 0) {
    // A count per kind of failure, then the first of each kind in full.
    const groups = [...byWhere].sort((a, b) => b[1].n - a[1].n);
    const summary = groups.map(([where, g]) => `  ${g.n} × ${where}`).join('\n');
    const examples = groups.map(([, g]) => failures[g.first]).join('\n');
    throw new Error(`${failures.length} failed damage trials:\n${summary}\n${examples}`);
  }
}
