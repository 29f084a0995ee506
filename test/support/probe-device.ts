import type fc from 'fast-check';
import type { BlockDevice } from '../../src/index.js';
import { sleep } from './async.js';
import { Doors, type Gate } from './gated-device.js';
import { PassThroughDevice } from './pass-through-device.js';

export type ProbeKind = 'read' | 'write' | 'flush';

/** One operation a {@link ProbeDevice} received. */
export interface ProbeOp {
  kind: ProbeKind;
  offset: number;
  length: number;
  /** Issue order across every ProbeDevice. */
  seq: number;
}

let sequence = 0;

/** One operation held at the door until {@link Gate.open}. */
export type Hold = Gate;

/**
 * Passes I/O through to `inner` and logs it; a test can hold the next
 * operation of a kind (before it reaches `inner`, or after, holding back
 * only its result), slow writes down to one at a time, or, with a fast-check
 * scheduler set, let the scheduler decide when every operation starts.
 * Overlapping writes always reach `inner` in the order they were issued, as
 * a disk keeps them: the engine relies on that for writes it passes through.
 */
export class ProbeDevice extends PassThroughDevice {
  readonly ops: ProbeOp[] = [];
  /** Called as each operation is issued (before any hold or delay). */
  onOp: ((op: ProbeOp) => void) | undefined;
  scheduler: fc.Scheduler | undefined;
  /** With a positive value, writes go one at a time, each taking this many milliseconds. */
  writeMs = 0;
  readonly #doors = new Doors<ProbeKind>();
  readonly #landing = new Set<{ offset: number; end: number; landed: Promise<void> }>();
  #paced: Promise<void> = Promise.resolve();

  constructor(
    inner: BlockDevice,
    readonly name = 'device',
  ) {
    super(inner);
  }

  /** Holds the next `kind` operation whose range matches; `reply`: after `inner` did it. */
  hold(
    kind: ProbeKind,
    match: (offset: number, length: number) => boolean = () => true,
    reply = false,
  ): Hold {
    return this.#doors.arm(kind, match, reply);
  }

  of(kind: ProbeKind): ProbeOp[] {
    return this.ops.filter((op) => op.kind === kind);
  }

  #issue(kind: ProbeKind, offset: number, length: number): void {
    const op = { kind, offset, length, seq: sequence++ };
    this.ops.push(op);
    this.onOp?.(op);
  }

  async #door(kind: ProbeKind, offset: number, length: number, reply: boolean): Promise<void> {
    if (await this.#doors.pass(kind, offset, length, reply)) return;
    if (this.scheduler !== undefined && !reply) {
      await this.scheduler.schedule(Promise.resolve(), `${this.name} ${kind} ${offset}+${length}`);
    }
  }

  override async read(offset: number, length: number): Promise<Uint8Array> {
    this.#issue('read', offset, length);
    await this.#door('read', offset, length, false);
    const data = await super.read(offset, length);
    await this.#door('read', offset, length, true);
    return data;
  }

  override async write(offset: number, data: Uint8Array): Promise<void> {
    this.#issue('write', offset, data.length);
    const copy = data.slice();
    const end = offset + copy.length;
    const earlier = [...this.#landing]
      .filter((w) => w.offset < end && offset < w.end)
      .map((w) => w.landed);
    let landed!: () => void;
    const entry = { offset, end, landed: new Promise<void>((resolve) => (landed = resolve)) };
    this.#landing.add(entry);
    try {
      await Promise.all(earlier);
      await this.#door('write', offset, copy.length, false);
      if (this.writeMs > 0) {
        const turn = this.#paced.then(() => sleep(this.writeMs));
        this.#paced = turn;
        await turn;
      }
      await super.write(offset, copy);
    } finally {
      this.#landing.delete(entry);
      landed();
    }
  }

  override async flush(): Promise<void> {
    this.#issue('flush', 0, 0);
    await this.#door('flush', 0, 0, false);
    return super.flush();
  }
}
