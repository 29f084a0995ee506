import type { ExcludedReads } from '../../src/cow/index.js';
import { type Extent, type MemoryDevice, SelectiveSnapshotDevice } from '../../src/index.js';
import { OriginStoreRig, type OriginStoreRigOptions, originAndStore } from './cow-rig.js';
import type { DiskRig } from './disk-rig.js';

export interface SelectiveRigOptions extends OriginStoreRigOptions {
  /** @default the device's (256) */
  maxRuns?: number;
  /** @default 'error' */
  excludedReads?: ExcludedReads;
}

/**
 * A SelectiveSnapshotDevice over an origin and a store disk (see
 * {@link OriginStoreRig}), that can also reopen in the other
 * `excludedReads` mode.
 */
export class SelectiveRig extends OriginStoreRig<SelectiveSnapshotDevice> {
  readonly options: SelectiveRigOptions;
  mode: ExcludedReads;
  /**
   * Preservations the device should not have made, watched from its
   * `snapshot` and `preserve` events: a block preserved twice in one
   * generation (between two snapshots), as `twice gen:block`, or one no
   * live snapshot holds, as `unheld block` (rule 3, claim 34: only
   * designated blocks, only on their first change).
   */
  readonly badPreserves: string[] = [];

  private constructor(disks: [MemoryDevice, MemoryDevice], options: SelectiveRigOptions) {
    super(disks, options);
    this.options = options;
    this.mode = options.excludedReads ?? 'error';
  }

  static async create(options: SelectiveRigOptions = {}): Promise<SelectiveRig> {
    return new SelectiveRig(await originAndStore(options), options).launch();
  }

  protected createDevice(): Promise<SelectiveSnapshotDevice> {
    return SelectiveSnapshotDevice.create(this.origin, this.store, {
      maxSnapshots: this.options.maxSnapshots ?? 4,
      maxRuns: this.options.maxRuns,
      excludedReads: this.mode,
    });
  }

  protected openDevice(): Promise<SelectiveSnapshotDevice> {
    return SelectiveSnapshotDevice.open(this.origin, this.store, { excludedReads: this.mode });
  }

  protected override opened(device: SelectiveSnapshotDevice): void {
    super.opened(device);
    let generation = 0;
    const seen = new Set<string>();
    device.on('snapshot', () => {
      generation++;
    });
    device.on('preserve', ({ block }) => {
      const key = `${generation}:${block}`;
      if (seen.has(key)) this.badPreserves.push(`twice ${key}`);
      seen.add(key);
      const at = block * this.bs;
      const held = device
        .listSnapshots()
        .some((info) =>
          device.snapshotExtents(info.id).some((e) => at >= e.offset && at < e.offset + e.length),
        );
      if (!held) this.badPreserves.push(`unheld ${block}`);
    });
  }

  /** Opens the device over fresh handles on the disks as they are, in `mode`. */
  override open(mode: ExcludedReads = this.mode): Promise<SelectiveSnapshotDevice> {
    this.mode = mode;
    return super.open();
  }

  /** Closes the device and opens it again, in `mode`. */
  override async reopen(mode: ExcludedReads = this.mode): Promise<SelectiveSnapshotDevice> {
    await this.closeDevice(this.device);
    return this.open(mode);
  }

  /** A power cut, then open what the disks hold (see {@link DiskRig.crashAndReopen}), in `mode`. */
  override crashAndReopen(
    seed: number,
    mode: ExcludedReads = this.mode,
  ): Promise<SelectiveSnapshotDevice> {
    this.mode = mode;
    return super.crashAndReopen(seed);
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
