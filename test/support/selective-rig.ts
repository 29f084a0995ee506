import { expect } from 'vitest';
import {
  BlockDeviceError,
  type Extent,
  MemoryDevice,
  SelectiveSnapshotDevice,
  type Snapshot,
} from '../../src/index.js';
import { FaultyDevice, type FaultyDeviceOptions, PowerSwitch } from '../../src/testing/index.js';

/** What reading bytes a snapshot does not hold does. */
export type ExcludedReads = 'error' | 'zero';

export interface SelectiveRigOptions {
  /** Origin block size. @default 512 */
  blockSize?: number;
  /** Origin blocks. @default 32 */
  blocks?: number;
  /** Bytes of the store disk. @default 256 KiB */
  storeBytes?: number;
  /** @default 4 */
  maxSnapshots?: number;
  /** @default the device's (256) */
  maxRuns?: number;
  /** @default 'error' */
  excludedReads?: ExcludedReads;
  /** Delays some operations of both disks (FaultyDevice `latency`). */
  latency?: FaultyDeviceOptions['latency'];
}

/**
 * A SelectiveSnapshotDevice over two memory "disks" (origin and store), each
 * behind a FaultyDevice, both on one power switch: it can reopen (in either
 * `excludedReads` mode), lose power at any device operation, and open what
 * the disks hold after the cut.
 */
export class SelectiveRig {
  readonly originDisk: MemoryDevice;
  readonly storeDisk: MemoryDevice;
  readonly options: SelectiveRigOptions;
  power = new PowerSwitch();
  origin!: FaultyDevice;
  store!: FaultyDevice;
  device!: SelectiveSnapshotDevice;
  mode: ExcludedReads;
  /**
   * Preservations the device should not have made, watched from its
   * `snapshot` and `preserve` events: a block preserved twice in one
   * generation (between two snapshots), as `twice gen:block`, or one no
   * live snapshot holds, as `unheld block` (rule 3, claim 34: only
   * designated blocks, only on their first change).
   */
  readonly badPreserves: string[] = [];
  readonly #handles = new Map<string, Snapshot>();

  private constructor(
    originDisk: MemoryDevice,
    storeDisk: MemoryDevice,
    options: SelectiveRigOptions,
  ) {
    this.originDisk = originDisk;
    this.storeDisk = storeDisk;
    this.options = options;
    this.mode = options.excludedReads ?? 'error';
  }

  static async create(options: SelectiveRigOptions = {}): Promise<SelectiveRig> {
    const blockSize = options.blockSize ?? 512;
    const rig = new SelectiveRig(
      await MemoryDevice.create({ size: (options.blocks ?? 32) * blockSize, blockSize }),
      await MemoryDevice.create({ size: options.storeBytes ?? 256 * 1024, blockSize }),
      options,
    );
    rig.#attach();
    rig.device = await SelectiveSnapshotDevice.create(rig.origin, rig.store, {
      maxSnapshots: options.maxSnapshots ?? 4,
      maxRuns: options.maxRuns,
      excludedReads: rig.mode,
    });
    rig.#watch();
    return rig;
  }

  #watch(): void {
    let generation = 0;
    const seen = new Set<string>();
    this.device.on('snapshot', () => {
      generation++;
    });
    this.device.on('preserve', ({ block }) => {
      const key = `${generation}:${block}`;
      if (seen.has(key)) this.badPreserves.push(`twice ${key}`);
      seen.add(key);
      const at = block * this.bs;
      const held = this.device
        .listSnapshots()
        .some((info) =>
          this.device
            .snapshotExtents(info.id)
            .some((e) => at >= e.offset && at < e.offset + e.length),
        );
      if (!held) this.badPreserves.push(`unheld ${block}`);
    });
  }

  get size(): number {
    return this.originDisk.size;
  }

  get bs(): number {
    return this.originDisk.blockSize;
  }

  #attach(): void {
    this.power = new PowerSwitch();
    const { latency } = this.options;
    this.origin = new FaultyDevice(this.originDisk.reopen(), { power: this.power, latency });
    this.store = new FaultyDevice(this.storeDisk.reopen(), { power: this.power, latency });
    this.#handles.clear();
  }

  /** A handle on snapshot `id`, kept until the device reopens. */
  async handle(id: string): Promise<Snapshot> {
    let handle = this.#handles.get(id);
    if (handle === undefined) {
      handle = await this.device.openSnapshot(id);
      this.#handles.set(id, handle);
    }
    return handle;
  }

  /** Opens the device over fresh handles on the disks as they are. */
  async open(mode: ExcludedReads = this.mode): Promise<SelectiveSnapshotDevice> {
    this.#attach();
    this.mode = mode;
    this.device = await SelectiveSnapshotDevice.open(this.origin, this.store, {
      excludedReads: mode,
    });
    this.#watch();
    return this.device;
  }

  /** Closes the device and opens it again. */
  async reopen(mode: ExcludedReads = this.mode): Promise<SelectiveSnapshotDevice> {
    await this.device.close();
    return this.open(mode);
  }

  /** Pulls the plug on both disks at once, keeps what a power cut may leave (by `seed`), and opens that. */
  async crashAndOpen(
    seed: number,
    mode: ExcludedReads = this.mode,
  ): Promise<SelectiveSnapshotDevice> {
    this.power.cut();
    await this.origin.crash(seed);
    await this.store.crash(seed ^ 0x5bd1e995);
    return this.open(mode);
  }

  async dispose(): Promise<void> {
    if (this.power.isOn) await this.device.close();
  }
}

/** The set of blocks a list of byte extents covers, each block counted if any byte of it is in. */
export function blocksOf(extents: readonly Extent[], bs: number): number[] {
  const out = new Set<number>();
  for (const e of extents) {
    for (let b = Math.floor(e.offset / bs); b * bs < e.offset + e.length; b++) out.add(b);
  }
  return [...out].sort((a, b) => a - b);
}

/** Whole-block extents of ascending block numbers, coalesced: what changedExtents and snapshotExtents return. */
export function extentsOfBlocks(blocks: Iterable<number>, bs: number): Extent[] {
  const sorted = [...new Set(blocks)].sort((a, b) => a - b);
  const out: { offset: number; length: number }[] = [];
  for (const b of sorted) {
    const last = out[out.length - 1];
    if (last !== undefined && last.offset + last.length === b * bs) last.length += bs;
    else out.push({ offset: b * bs, length: bs });
  }
  return out;
}

/** The BlockDeviceError code `p` rejects with; fails the test if it resolves or rejects otherwise. */
export async function expectCode(p: Promise<unknown>, code: string, what = ''): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(BlockDeviceError.is(err), `${what} expected ${code}, got ${String(err)}`).toBe(true);
  expect((err as BlockDeviceError).code, `${what}: ${String(err)}`).toBe(code);
}
