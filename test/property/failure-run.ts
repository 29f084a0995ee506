/**
 * One run of the failure property test (failure-model.test.ts): a stack,
 * the worlds it is checked against, the fault schedule the commands arm,
 * and the step every command goes through (run with faults armed, classify
 * what rejected, probe for fail-stop, then check what the device shows).
 */
import { BlockDeviceError } from '../../src/index.js';
import type { FaultyOperation, FaultyOperationKind } from '../../src/testing/index.js';
import type { ModelWrite } from './byte-model.js';
import type { FailureStack, FailureSubject } from './failure-stacks.js';
import { type Observation, Worlds } from './failure-worlds.js';

/** What an armed fault fails: one kind of operation, or any. */
export type FaultKind = FaultyOperationKind | 'any';

/**
 * "The next N operations of disk D fail": per disk, the kind and how many
 * are left. Only operations made while a command runs count (the checks
 * between commands and every open run with the window closed), and a
 * reopen disarms everything: after it the failing disk works again
 * (docs/ARCHITECTURE.md, "After an I/O error", "After reopen").
 */
export class FaultArm {
  readonly armed = new Map<string, { kind: FaultKind; left: number }>();
  /** Failures injected so far. */
  injected = 0;
  windowOpen = false;

  readonly decide = (disk: string, op: FaultyOperation): boolean => {
    if (!this.windowOpen) return false;
    const a = this.armed.get(disk);
    if (a === undefined || (a.kind !== 'any' && a.kind !== op.kind)) return false;
    if (--a.left <= 0) this.armed.delete(disk);
    this.injected++;
    return true;
  };
}

/** What a command's call was, for the fail-stop rules. */
export type CallKind =
  | 'write'
  | 'snapshot-write'
  | 'snapshot-op'
  | 'read'
  | 'snapshot-read'
  | 'flush'
  | 'close';

/** How a call a command made settled. */
export interface Settled {
  readonly kind: CallKind;
  readonly what: string;
  readonly ok: boolean;
  readonly err?: unknown;
}

/**
 * What the runs met, over a test file: so a CI run can show it was not
 * vacuous (failures injected, calls rejected, fail-stops, forks kept).
 */
export const coverage = {
  injected: 0,
  rejected: new Map<string, number>(),
  stops: 0,
  forks: 0,
  reopens: 0,
};

/** Snapshots a device may hold at once in these stacks (the rigs' `maxSnapshots`). */
export const MAX_SNAPSHOTS = 4;

/** The state of one run, shared by its commands. */
export class FailureRun {
  readonly worlds: Worlds;
  readonly arm = new FaultArm();
  /** Injected failures since the device last opened: only they may explain a rejection. */
  injectedSinceOpen = 0;
  /** Commands run so far, for failure messages. */
  readonly log: string[] = [];
  /** The listing as last observed: names, oldest first, and their ids. */
  names: string[] = [];
  readonly ids = new Map<string, string>();
  #value = 100;
  #name = 0;

  private constructor(
    readonly stack: FailureStack,
    readonly subject: FailureSubject,
  ) {
    this.worlds = new Worlds(subject.initial);
  }

  static async create(stack: FailureStack): Promise<FailureRun> {
    let run: FailureRun | undefined;
    const subject = await stack.build((disk, op) => run?.arm.decide(disk, op) ?? false);
    run = new FailureRun(stack, subject);
    return run;
  }

  /** A value no other write of the run's last 150 used, so a byte names the write that left it. */
  nextValue(): number {
    this.#value = this.#value >= 250 ? 100 : this.#value + 1;
    return this.#value;
  }

  nextName(): string {
    return `s${this.#name++}`;
  }

  get label(): string {
    return `${this.stack.name}, command ${this.log.length} ${this.log.at(-1) ?? ''}`;
  }

  /**
   * Runs one command: `body` with the faults armed, then the rules every
   * command keeps, then the check of the whole device and every snapshot.
   */
  async step(what: string, body: () => Promise<Settled[]>): Promise<void> {
    const { injectedNow, settled, unexplained } = await this.#exec(what, body);
    if (!this.worlds.stopped && (injectedNow > 0 || settled.some((s) => !s.ok))) {
      await this.#probe();
    }
    // Refused with nothing failing: fail-stop (the probe was refused too),
    // or a stack whose calls wait for checkpoints that fail.
    if (unexplained !== undefined && !this.worlds.stopped && !this.#waitsForCheckpoints()) {
      throw new Error(
        `${this.label}: ${unexplained} rejected with no failure injected to explain it, and the device is not in fail-stop`,
      );
    }
    this.worlds.observe(this.label, await this.observe());
  }

  /** Closes (faults armed) or crashes, then opens with nothing armed and checks what the reopen finds. */
  async reopen(what: string, how: { crashSeed: number } | 'close'): Promise<void> {
    if (how === 'close') {
      await this.#exec(what, async () => {
        const outcome = await settle(this.subject.close());
        // close() flushes: a durability point.
        if (outcome.ok) this.worlds.durable();
        return [{ kind: 'close', what: 'close()', ...outcome }];
      });
      // Failed or not, close() leaves nothing open below: a layer owns its devices.
      const open = this.subject.openDisks();
      if (open.length > 0) throw new Error(`${this.label}: close() left ${open.join(', ')} open`);
    } else {
      this.log.push(what);
    }
    this.arm.armed.clear();
    if (how === 'close') await this.subject.open();
    else await this.subject.crashAndOpen(how.crashSeed);
    this.injectedSinceOpen = 0;
    coverage.reopens++;
    this.worlds.reopened(`${this.label}: after reopen`, await this.observe(true));
  }

  /** Runs `body` with the faults armed and judges how its calls settled. */
  async #exec(
    what: string,
    body: () => Promise<Settled[]>,
  ): Promise<{ injectedNow: number; settled: Settled[]; unexplained: string | undefined }> {
    this.log.push(what);
    const before = this.arm.injected;
    this.arm.windowOpen = true;
    let settled: Settled[];
    try {
      settled = await body();
    } finally {
      this.arm.windowOpen = false;
    }
    const injectedNow = this.arm.injected - before;
    this.injectedSinceOpen += injectedNow;
    coverage.injected += injectedNow;
    for (const s of settled) {
      if (!s.ok) coverage.rejected.set(s.kind, (coverage.rejected.get(s.kind) ?? 0) + 1);
    }
    const unexplained = this.#judge(settled, injectedNow);
    this.#drainBackground();
    return { injectedNow, settled, unexplained };
  }

  /** The device as it is, with nothing armed (the window is closed). */
  async observe(reopened = false): Promise<Observation> {
    const cap = this.subject.snapshots();
    const infos = cap?.listSnapshots() ?? [];
    const names = infos.map((info) => info.name ?? `(unnamed ${info.id})`);
    if (reopened) this.ids.clear();
    for (const info of infos) this.ids.set(info.name ?? '', info.id);
    this.names = names;
    const device = await this.#reading('device.read()', () =>
      this.subject.device().read(0, this.subject.size),
    );
    const snaps = new Map<string, Uint8Array>();
    for (const info of infos) {
      const name = info.name ?? '';
      const held = this.worlds.worlds.find((w) => w.snap(name) !== undefined)?.snap(name)?.held;
      if (held === undefined)
        throw new Error(`${this.label}: snapshot ${name} is listed; no world has it`);
      const handle = await this.#reading(`openSnapshot(${name})`, () =>
        this.subject.handle(info.id),
      );
      const read = await settleValue(handle.read(held[0], held[1] - held[0]));
      if (read.ok) snaps.set(name, read.value);
      else {
        throw new Error(
          `${this.label}: snapshot ${name} read with nothing failing rejected: ${String(read.err)}`,
          {
            cause: read.err,
          },
        );
      }
    }
    return { names, device, snaps };
  }

  /** `read()`, its rejection named: with nothing armed, a read (or opening a handle) must not fail. */
  async #reading<T>(what: string, read: () => Promise<T>): Promise<T> {
    try {
      return await read();
    } catch (err) {
      throw new Error(`${this.label}: ${what} with nothing failing rejected: ${String(err)}`, {
        cause: err,
      });
    }
  }

  /** Writes `data` of one value to `target` ('device' or a snapshot's name), model first. */
  async write(target: string, w: ModelWrite): Promise<Settled> {
    const dev =
      target === 'device'
        ? this.subject.device()
        : await this.subject.handle(this.ids.get(target)!);
    this.worlds.called(target, w);
    const outcome = await settle(dev.write(w.offset, new Uint8Array(w.length).fill(w.value)));
    this.worlds.settled(target, [{ op: w, ok: outcome.ok }]);
    return {
      kind: target === 'device' ? 'write' : 'snapshot-write',
      what: `${target}.write(${w.offset}, ${w.length} × ${w.value})`,
      ...outcome,
    };
  }

  /**
   * Every rejection is `EIO`. Returns the first write or snapshot operation
   * that no failure injected in its command explains (the caller then
   * checks it was fail-stop); throws for any other unexplained rejection.
   * In fail-stop, no write or snapshot operation may succeed.
   */
  #judge(settled: readonly Settled[], injectedNow: number): string | undefined {
    let unexplained: string | undefined;
    for (const s of settled) {
      const refusable =
        s.kind === 'write' || s.kind === 'snapshot-write' || s.kind === 'snapshot-op';
      if (s.ok) {
        // A JournalDevice stopped by a failed journal-store write refuses
        // the writes that go through the journal ("every later write",
        // docs/ARCHITECTURE.md, "After an I/O error", the JournalDevice
        // row); one through a writable snapshot goes to production's.
        const journalBypass = s.kind === 'snapshot-write' && this.stack.needsCheckpoints === true;
        if (this.worlds.stopped && refusable && !journalBypass) {
          throw new Error(`${this.label}: ${s.what} succeeded in fail-stop`);
        }
        continue;
      }
      if (!BlockDeviceError.is(s.err, 'EIO')) {
        throw new Error(`${this.label}: ${s.what} rejected with ${String(s.err)}`, {
          cause: s.err,
        });
      }
      if (injectedNow > 0 || this.worlds.stopped) continue;
      if (this.injectedSinceOpen > 0) {
        // close() after a failure rejects with it (docs/ARCHITECTURE.md, "After an I/O error", Close).
        if (s.kind === 'close') continue;
        if (refusable) {
          unexplained ??= s.what;
          continue;
        }
      }
      throw new Error(
        `${this.label}: ${s.what} rejected with no failure injected to explain it: ${String(s.err)}`,
        { cause: s.err },
      );
    }
    return unexplained;
  }

  /**
   * Whether a call may fail with a checkpoint's `EIO` after a failure below,
   * with nothing failing at the call ({@link FailureStack.needsCheckpoints}).
   */
  #waitsForCheckpoints(): boolean {
    return this.stack.needsCheckpoints === true && this.injectedSinceOpen > 0;
  }

  /**
   * After a command that met a failure: a write with nothing armed tells
   * whether the device is in fail-stop (it must then refuse it with `EIO`).
   */
  async #probe(): Promise<void> {
    const value = this.nextValue();
    const offset = 512 * (value % Math.floor(this.subject.size / 512));
    const s = await this.write('device', { offset, length: 512, value });
    this.log.push(`probe: ${s.what}${s.ok ? '' : ' refused'}`);
    if (s.ok) return;
    if (!BlockDeviceError.is(s.err, 'EIO') || this.injectedSinceOpen === 0) {
      throw new Error(`${this.label}: the probe ${s.what} rejected with ${String(s.err)}`, {
        cause: s.err,
      });
    }
    this.worlds.stopped = true;
    coverage.stops++;
  }

  /** Background failures (`error` events, a copy job's `done`) are EIO, or ECLOSED for a job closed under it. */
  #drainBackground(): void {
    for (const err of this.subject.background.splice(0)) {
      if (BlockDeviceError.is(err, 'EIO') || BlockDeviceError.is(err, 'ECLOSED')) continue;
      throw new Error(`${this.label}: background failure ${String(err)}`, { cause: err });
    }
  }
}

/** A promise's outcome, with its value. */
export async function settleValue<T>(
  p: Promise<T>,
): Promise<{ ok: true; value: T } | { ok: false; err: unknown }> {
  try {
    return { ok: true, value: await p };
  } catch (err) {
    return { ok: false, err };
  }
}

/** A promise's outcome as a value. */
export async function settle(p: Promise<unknown>): Promise<{ ok: boolean; err?: unknown }> {
  try {
    await p;
    return { ok: true };
  } catch (err) {
    return { ok: false, err };
  }
}
