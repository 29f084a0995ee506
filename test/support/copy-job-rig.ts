import type fc from 'fast-check';
import {
  type BlockDevice,
  BlockDeviceError,
  type CopyReport,
  MemoryDevice,
  SnapshotCopyJob,
  type SnapshotCopyJobOptions,
  type SnapshotCopyJobResumeOptions,
} from '../../src/index.js';
import { expectBytes } from './bytes.js';
import { DiskRig, type DiskRigOptions } from './disk-rig.js';
import { ProbeDevice } from './probe-device.js';

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

/** A copy job's disks, in the order a crash takes them (each seed one more than the last). */
export type CopyDisk = 'source' | 'destination' | 'mapStore';

/** How a {@link CopyCrashRig} runs its jobs. */
export interface CopyJobPlan {
  policy: ConflictPolicy;
  /** The job keeps its map in the map store disk (only then can it resume). */
  withStore: boolean;
  /**
   * The job's I/O goes through the ProbeDevices (false: straight to the
   * FaultyDevices, one await less per operation, for tests whose cut
   * positions were counted that way). @default true
   */
  probed?: boolean;
}

/**
 * A copy job over a {@link CopyRig}'s disks, each behind a FaultyDevice (one
 * power switch, consecutive crash seeds; see {@link DiskRig}) behind a
 * ProbeDevice (fast-check's scheduler orders their I/O, while it is set).
 * Creating the device under test starts the job; opening it resumes the
 * job from its map store, or starts it again if no `start()` ever resolved
 * and the map store holds no valid map (a cut inside the first start).
 */
export class CopyCrashRig extends DiskRig<CopyDisk, SnapshotCopyJob> {
  probes!: [ProbeDevice, ProbeDevice, ProbeDevice];
  /** The signal the job gets when it starts (not when it resumes). */
  signal: AbortSignal | undefined;
  /** Whether a job ever started or resumed: only before that may the map store hold no map. */
  startResolved = false;
  /** Opens that found no valid map and started the job again. */
  restarts = 0;

  private constructor(
    readonly base: CopyRig,
    readonly plan: CopyJobPlan,
    options: Omit<DiskRigOptions, 'crashSeeds'>,
  ) {
    super(
      [
        { name: 'source', disk: base.sourceDisk },
        { name: 'destination', disk: base.destinationDisk },
        { name: 'mapStore', disk: base.storeDisk },
      ],
      { ...options, crashSeeds: 'consecutive' },
    );
  }

  /** A rig over a new {@link CopyRig} (`seed` picks its noise), attached; no job yet. */
  static async create(
    g: CopyGeometry,
    plan: CopyJobPlan,
    seed = 1,
    options: Omit<DiskRigOptions, 'crashSeeds'> = {},
  ): Promise<CopyCrashRig> {
    const rig = new CopyCrashRig(await CopyRig.create(g, seed), plan, options);
    rig.attach();
    return rig;
  }

  protected override attached(): void {
    this.probes = [
      new ProbeDevice(this.faulty('source'), 'source'),
      new ProbeDevice(this.faulty('destination'), 'destination'),
      new ProbeDevice(this.faulty('mapStore'), 'map store'),
    ];
  }

  set scheduler(s: fc.Scheduler | undefined) {
    for (const p of this.probes) p.scheduler = s;
  }

  /** Job options over the probes (or the FaultyDevices), with the plan's policy and map store. */
  options(extra: Partial<SnapshotCopyJobOptions> = {}): SnapshotCopyJobOptions {
    const [source, destination, mapStore] =
      this.plan.probed === false
        ? [this.faulty('source'), this.faulty('destination'), this.faulty('mapStore')]
        : this.probes;
    return this.base.options({
      source,
      destination,
      conflictPolicy: this.plan.policy,
      ...(this.plan.withStore ? { mapStore } : {}),
      ...extra,
    });
  }

  /** What the source disk holds now. */
  source(): Promise<Uint8Array> {
    return this.base.sourceDisk.read(0, this.base.g.sourceSize);
  }

  protected createDevice(): Promise<SnapshotCopyJob> {
    return SnapshotCopyJob.start(this.options({ signal: this.signal }));
  }

  protected async openDevice(): Promise<SnapshotCopyJob> {
    try {
      return await SnapshotCopyJob.resume(this.options() as SnapshotCopyJobResumeOptions);
    } catch (err) {
      if (!this.power.isOn || this.startResolved || !BlockDeviceError.is(err, 'ECORRUPT'))
        throw err;
      this.restarts++;
    }
    return SnapshotCopyJob.start(this.options());
  }

  protected closeDevice(job: SnapshotCopyJob): Promise<void> {
    return job.device.close();
  }

  protected override opened(): void {
    this.startResolved = true;
  }
}
