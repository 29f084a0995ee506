import type fc from 'fast-check';
import {
  type BlockDevice,
  type CopyReport,
  MemoryDevice,
  SnapshotCopyJob,
  type SnapshotCopyJobOptions,
} from '../../src/index.js';
import { expectBytes } from '../property/cow-harness.js';
import { Doors, type Gate } from './gated-device.js';
import { PassThroughDevice } from './pass-through-device.js';

export type ConflictPolicy = NonNullable<SnapshotCopyJobOptions['conflictPolicy']>;
export const POLICIES: readonly ConflictPolicy[] = ['copy-first', 'queue'];

/**
 * Position-dependent pseudo-random bytes (xorshift32 per word), fast enough
 * to fill megabytes per run: a chunk copied to the wrong place, or not at
 * all, never matches by accident.
 */
export function noise(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  const view = new DataView(out.buffer);
  let x = (seed * 0x9e3779b1) >>> 0 || 1;
  for (let i = 0; i + 4 <= length; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    view.setUint32(i, x >>> 0, true);
  }
  for (let i = length & ~3; i < length; i++) out[i] = (x >>> (8 * (i & 3))) & 0xff;
  return out;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Yields to the event loop until `ready()` holds (a bounded number of turns). */
export async function until(ready: () => boolean, what: string, turns = 10_000): Promise<void> {
  for (let i = 0; i < turns; i++) {
    if (ready()) return;
    await new Promise((resolve) => setImmediate(resolve));
  }
  throw new Error(`timed out waiting until ${what}`);
}

/** Resolves with `p`'s value if it settles within `ms`, else rejects naming `what`. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: still pending after ${ms} ms`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** Tracks whether a promise settled yet, without ever letting it reject unhandled. */
export function watch<T>(p: Promise<T>): {
  readonly settled: boolean;
  readonly promise: Promise<T>;
} {
  let settled = false;
  const mark = () => {
    settled = true;
  };
  p.then(mark, mark);
  return {
    get settled() {
      return settled;
    },
    promise: p,
  };
}

/** The reason `p` rejects with; fails if it resolves. */
export async function rejectionOf(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection, but the promise resolved');
}

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

/** Where a job copies what: sizes, range and chunk size. */
export interface CopyGeometry {
  sourceSize: number;
  offset: number;
  length: number;
  destinationSize: number;
  destinationOffset: number;
  chunkSize: number;
}

/** A geometry with `chunks` chunks of `chunkSize` and room around the range in both devices. */
export function geometry(
  chunkSize: number,
  chunks: number,
  shape: { offset?: number; short?: number; destinationOffset?: number; tail?: number } = {},
): CopyGeometry {
  const offset = shape.offset ?? 0;
  const length = chunks * chunkSize - (shape.short ?? 0);
  const destinationOffset = shape.destinationOffset ?? 0;
  const tail = shape.tail ?? 4096;
  return {
    sourceSize: roundUp(offset + length + tail, 4096),
    offset,
    length,
    destinationSize: roundUp(destinationOffset + length + tail, 4096),
    destinationOffset,
    chunkSize,
  };
}

export function roundUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

/**
 * A copy job's devices: source, destination and map store are memory disks
 * behind {@link ProbeDevice}s; the source is filled with noise and the
 * destination with other noise, and `model` tracks what the source must
 * hold as writes are made through {@link CopyRig.write}.
 */
export class CopyRig {
  readonly sourceDisk: MemoryDevice;
  readonly destinationDisk: MemoryDevice;
  readonly storeDisk: MemoryDevice;
  readonly source: ProbeDevice;
  readonly destination: ProbeDevice;
  readonly mapStore: ProbeDevice;
  /** The source when the job started (the snapshot the destination must end up with). */
  readonly atStart: Uint8Array;
  readonly destinationBefore: Uint8Array;
  /** What the source must hold: `atStart` with every write through the rig, in call order. */
  readonly model: Uint8Array;

  private constructor(
    readonly g: CopyGeometry,
    disks: [MemoryDevice, MemoryDevice, MemoryDevice],
    atStart: Uint8Array,
    destinationBefore: Uint8Array,
  ) {
    [this.sourceDisk, this.destinationDisk, this.storeDisk] = disks;
    this.source = new ProbeDevice(this.sourceDisk, 'source');
    this.destination = new ProbeDevice(this.destinationDisk, 'destination');
    this.mapStore = new ProbeDevice(this.storeDisk, 'map store');
    this.atStart = atStart;
    this.destinationBefore = destinationBefore;
    this.model = atStart.slice();
  }

  static async create(g: CopyGeometry, seed = 1, blockSize = 512): Promise<CopyRig> {
    const disk = (size: number) => MemoryDevice.create({ size, blockSize });
    const source = await disk(g.sourceSize);
    const destination = await disk(g.destinationSize);
    const { offset, length, destinationOffset, chunkSize } = g;
    const storeBytes = SnapshotCopyJob.mapStoreBytes({
      source,
      destination,
      offset,
      length,
      destinationOffset,
      chunkSize,
    });
    const disks: [MemoryDevice, MemoryDevice, MemoryDevice] = [
      source,
      destination,
      await disk(roundUp(storeBytes, blockSize)),
    ];
    const atStart = noise(g.sourceSize, seed);
    const destinationBefore = noise(g.destinationSize, seed + 1000);
    await disks[0].write(0, atStart);
    await disks[1].write(0, destinationBefore);
    return new CopyRig(g, disks, atStart, destinationBefore);
  }

  /** Options for `start`/`resume` over the rig's devices; `mapStore` only with `store`. */
  options(extra: Partial<SnapshotCopyJobOptions> = {}, store = false): SnapshotCopyJobOptions {
    const { offset, length, destinationOffset, chunkSize } = this.g;
    return {
      source: this.source,
      destination: this.destination,
      offset,
      length,
      destinationOffset,
      chunkSize,
      ...(store ? { mapStore: this.mapStore } : {}),
      ...extra,
    };
  }

  /** A write through `job.device` (or any device over the source), recorded in the model at the call. */
  write(device: BlockDevice, offset: number, data: Uint8Array): Promise<void> {
    this.model.set(data, offset);
    return device.write(offset, data);
  }

  /** The part of the snapshot the destination must hold from range byte `from` on, `length` bytes. */
  snapshot(from = 0, length = this.g.length - from): Uint8Array {
    return this.atStart.subarray(this.g.offset + from, this.g.offset + from + length);
  }

  /** The destination holds the range as it was at start, and nothing else changed. */
  async expectCopy(what = 'destination'): Promise<void> {
    const { destinationOffset: at, length, destinationSize } = this.g;
    const dest = await this.destinationDisk.read(0, destinationSize);
    expectBytes(
      `${what}: before the copy`,
      dest.subarray(0, at),
      this.destinationBefore.subarray(0, at),
    );
    expectBytes(`${what}: the copy`, dest.subarray(at, at + length), this.snapshot());
    expectBytes(
      `${what}: after the copy`,
      dest.subarray(at + length),
      this.destinationBefore.subarray(at + length),
    );
  }

  /**
   * Each chunk of the destination is either copied whole or untouched (an
   * aborted or failed job); returns how many are copied.
   */
  async expectWholeChunks(): Promise<number> {
    const { destinationOffset: at, length, chunkSize } = this.g;
    const dest = await this.destinationDisk.read(at, length);
    const before = this.destinationBefore.subarray(at, at + length);
    const snapshot = this.snapshot();
    let copied = 0;
    for (let from = 0; from < length; from += chunkSize) {
      const to = Math.min(length, from + chunkSize);
      const chunk = Buffer.from(dest.subarray(from, to));
      if (chunk.equals(snapshot.subarray(from, to))) copied++;
      else if (!chunk.equals(before.subarray(from, to))) {
        throw new Error(`destination chunk at range byte ${from} is neither copied nor untouched`);
      }
    }
    return copied;
  }

  /** Waits for the job; then the destination holds the copy and the source every write. */
  async expectDone(job: SnapshotCopyJob): Promise<CopyReport> {
    const report = await job.done;
    await this.expectCopy();
    await this.expectSource();
    return report;
  }

  /** The source holds every write made through the rig, in call order. */
  async expectSource(what = 'source'): Promise<void> {
    expectBytes(what, await this.sourceDisk.read(0, this.g.sourceSize), this.model);
  }
}

/** Collects a job's progress events. */
export function progressOf(job: SnapshotCopyJob): { copiedBytes: number; queuedWrites: number }[] {
  const events: { copiedBytes: number; queuedWrites: number }[] = [];
  job.on('progress', (p) =>
    events.push({ copiedBytes: p.copiedBytes, queuedWrites: p.queuedWrites }),
  );
  return events;
}
