/**
 * The reference model of the failure property test (failure-model.test.ts):
 * the set of states ("worlds") the device may be in after operations that
 * rejected. A rejected snapshot(), deleteSnapshot() or restore() has not
 * happened or has happened completely (docs/ARCHITECTURE.md, "After an I/O
 * error": the rule for operations), so it forks every world into both
 * outcomes; what the device then shows prunes them.
 */
import { ByteModel, type ModelWrite } from './byte-model.js';

/** A snapshot as a world holds it: its name (unique per run), bytes `[from, to)` it holds, and its content. */
export interface SnapModel {
  readonly name: string;
  readonly writable: boolean;
  readonly held: readonly [number, number];
  readonly bytes: ByteModel;
}

/** What the device shows, read with no fault armed and nothing in flight. */
export interface Observation {
  /** The listed snapshots' names, oldest first. */
  readonly names: readonly string[];
  /** The whole device. */
  readonly device: Uint8Array;
  /**
   * Each listed snapshot's held bytes, by name; a snapshot whose read was
   * refused as the stack documents (failure-run.ts, `mayRefuseSnapshotRead`)
   * is missing.
   */
  readonly snaps: ReadonlyMap<string, Uint8Array>;
}

/** A state the device may be in: its content and its snapshots. */
export class World {
  constructor(
    readonly device: ByteModel,
    readonly snaps: SnapModel[],
    /**
     * False once the device showed a state other than this one: a power cut
     * (or a close that failed, which may leave the disks as a power cut
     * does) may still bring it back, until the next durability point.
     */
    public liveOk = true,
    /** The outcomes chosen for earlier rejected operations, for failure messages. */
    readonly history: readonly string[] = [],
  ) {}

  clone(note: string): World {
    return new World(
      this.device.clone(),
      this.snaps.map((s) => ({ ...s, bytes: s.bytes.clone() })),
      this.liveOk,
      [...this.history, note],
    );
  }

  snap(name: string): SnapModel | undefined {
    return this.snaps.find((s) => s.name === name);
  }

  /** The model a write to `target` ('device' or a snapshot's name) goes to, if this world has it. */
  target(target: string): ByteModel | undefined {
    return target === 'device' ? this.device : this.snap(target)?.bytes;
  }

  /** Why `obs` is not this world (`afterReopen`: as a reopen may find it), or undefined if it is. */
  mismatch(obs: Observation, afterReopen: boolean): string | undefined {
    const names = this.snaps.map((s) => s.name);
    if (names.join(',') !== obs.names.join(',')) {
      return `snapshots [${obs.names.join(', ')}] listed, [${names.join(', ')}] in the model`;
    }
    const wrong = this.device.mismatch(0, obs.device, [], afterReopen);
    if (wrong !== undefined) return `device: ${wrong}`;
    for (const s of this.snaps) {
      const bytes = obs.snaps.get(s.name);
      if (bytes === undefined) continue;
      const bad = s.bytes.mismatch(s.held[0], bytes, [], afterReopen);
      if (bad !== undefined) return `snapshot ${s.name}: ${bad}`;
    }
    return undefined;
  }

  describe(): string {
    const snaps = this.snaps.map((s) => `${s.name}${s.writable ? '(w)' : ''}`).join(', ');
    const path = this.history.length === 0 ? 'no rejected operation' : this.history.join(' → ');
    return `[${snaps}] after ${path}${this.liveOk ? '' : ' (only after a power cut)'}`;
  }
}

/** Past this many worlds the run is reported as a model explosion rather than run on. */
const MAX_WORLDS = 256;

/** The worlds, and whether the device is in fail-stop. */
export class Worlds {
  worlds: World[];
  /**
   * The device refused a write or snapshot operation no injected failure of
   * its own explained (fail-stop, docs/ARCHITECTURE.md, "After an I/O
   * error"): until reopen every write and snapshot operation must reject
   * `EIO`. Reads go on, but a restore that failed part way may show in part
   * until `open` finishes it, so reads are checked byte by byte against
   * every world, and nothing is pruned until the reopen tells.
   */
  stopped = false;

  constructor(initial: Uint8Array) {
    this.worlds = [new World(new ByteModel(initial, true), [])];
  }

  /** The worlds the device may be showing now. */
  get live(): World[] {
    return this.worlds.filter((w) => w.liveOk);
  }

  /** A durability point succeeded: what the device shows is what any reopen finds. */
  durable(): void {
    this.worlds = this.live;
    for (const w of this.worlds) {
      w.device.flushed();
      for (const s of w.snaps) s.bytes.flushed();
    }
  }

  /**
   * A snapshot operation rejected: every world forks into "has not happened"
   * and "has happened completely" (`apply` makes the latter; it returns
   * false where the operation cannot apply, say a delete of a snapshot that
   * world lacks).
   */
  fork(note: string, apply: (w: World) => boolean): void {
    const next: World[] = [];
    for (const w of this.worlds) {
      next.push(w);
      const done = w.clone(note);
      if (apply(done)) next.push(done);
    }
    if (next.length > MAX_WORLDS) throw new Error(`failure model: more than ${MAX_WORLDS} worlds`);
    this.worlds = next;
  }

  /** A write to `target` was called, in every world that has it. */
  called(target: string, w: ModelWrite): void {
    for (const world of this.worlds) world.target(target)?.called(w);
  }

  /** Writes to `target` settled, in every world that has it. */
  settled(target: string, writes: readonly { op: ModelWrite; ok: boolean }[]): void {
    for (const world of this.worlds) world.target(target)?.settled(writes);
  }

  /**
   * Throws unless a read of `target` at `offset` returning `data` is one a
   * live world allows (in fail-stop: byte by byte, any live world), with
   * `racing` writes in flight to it.
   */
  checkRead(
    what: string,
    target: string,
    offset: number,
    data: Uint8Array,
    racing: readonly ModelWrite[],
  ): void {
    const models = this.live.flatMap((w) => w.target(target) ?? []);
    if (models.length === 0) throw new Error(`${what}: ${target} is in no live world`);
    if (this.stopped) {
      for (let k = 0; k < data.length; k++) {
        const i = offset + k;
        const v = data[k]!;
        if (models.some((m) => m.allows(i, v))) continue;
        const wrong = models.map((m) => m.mismatch(i, data.subarray(k, k + 1), racing));
        if (wrong.every((x) => x !== undefined)) throw new Error(`${what}: ${wrong[0]}`);
      }
      return;
    }
    const wrong = models.map((m) => m.mismatch(offset, data, racing));
    if (wrong.every((x) => x !== undefined)) throw new Error(`${what}: ${wrong.join('; or ')}`);
  }

  /**
   * Checks what the device shows now against the live worlds and keeps
   * those it matches (pinned to exactly what it showed); the others remain
   * only as what a power cut may bring back. In fail-stop, checks byte by
   * byte against any world and keeps them all.
   */
  observe(what: string, obs: Observation): void {
    if (this.stopped) {
      this.#observeStopped(what, obs);
      return;
    }
    const reasons: string[] = [];
    let matched = 0;
    for (const w of this.live) {
      const wrong = w.mismatch(obs, false);
      if (wrong === undefined) {
        matched++;
        pin(w, obs, false);
      } else {
        reasons.push(`${w.describe()}: ${wrong}`);
        w.liveOk = false;
      }
    }
    if (matched === 0)
      throw new Error(`${what}: the device matches no world:\n  ${reasons.join('\n  ')}`);
  }

  /**
   * Checks what a reopen found against every world (as the disks may hold
   * it after a power cut or a failed close, or after a clean close) and
   * keeps those it matches, all live again and pinned.
   */
  reopened(what: string, obs: Observation): void {
    const reasons: string[] = [];
    const kept: World[] = [];
    for (const w of this.worlds) {
      const wrong = w.mismatch(obs, true);
      if (wrong === undefined) {
        w.liveOk = true;
        pin(w, obs, true);
        kept.push(w);
      } else {
        reasons.push(`${w.describe()}: ${wrong}`);
      }
    }
    if (kept.length === 0) {
      throw new Error(`${what}: the reopened device matches no world:\n  ${reasons.join('\n  ')}`);
    }
    this.worlds = kept;
    this.stopped = false;
  }

  #observeStopped(what: string, obs: Observation): void {
    const live = this.live;
    for (const name of obs.names) {
      if (!live.some((w) => w.snap(name) !== undefined)) {
        throw new Error(`${what}: snapshot ${name} is listed, and no world has it`);
      }
    }
    this.checkRead(`${what}: device`, 'device', 0, obs.device, []);
    for (const [name, bytes] of obs.snaps) {
      const from = live.find((w) => w.snap(name) !== undefined)!.snap(name)!.held[0];
      this.checkRead(`${what}: snapshot ${name}`, name, from, bytes, []);
    }
  }
}

function pin(w: World, obs: Observation, reopened: boolean): void {
  w.device.observed(0, obs.device, reopened);
  for (const s of w.snaps) {
    const bytes = obs.snaps.get(s.name);
    if (bytes !== undefined) s.bytes.observed(s.held[0], bytes, reopened);
  }
}
