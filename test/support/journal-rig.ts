import { SECTOR, WRITE_OWNED } from '../../src/base/index.js';
import {
  type BlockDevice,
  CowSnapshotDevice,
  JournalDevice,
  type JournalDeviceOptions,
  MemoryDevice,
} from '../../src/index.js';
import { catalogSlotBytes, RING_START } from '../../src/journal/index.js';
import type { FaultyDevice, FaultyDeviceOptions } from '../../src/testing/index.js';
import {
  type DiskRigOptions,
  LOWER_STORE_SALT,
  type RigDisk,
  SnapshotRig,
  STORE_SALT,
} from './disk-rig.js';
import { PassThroughDevice } from './pass-through-device.js';

/** The journal rig's disks: `store` (the COW store) only with `cow`. */
export type JournalDisk = 'production' | 'store' | 'journal';

export interface JournalRigOptions extends JournalDeviceOptions, DiskRigOptions {
  /** Production block size. @default 512 */
  blockSize?: number;
  /** Production blocks. @default 32 */
  blocks?: number;
  /** Bytes of journal ring. @default 64 KiB */
  ringBytes?: number;
  /**
   * Production is a CowSnapshotDevice over the production disk (its origin)
   * and a COW store disk, both behind FaultyDevices on the journal's power
   * switch: journal snapshots materialize into it. @default false
   */
  cow?: boolean;
  /**
   * The journal store takes frames in pieces (WRITE_OWNED, as a FileDevice
   * does): the journal then writes a frame as its header and the records'
   * own buffers, not gathered into one. Faults and power cuts apply as to
   * any write. @default false
   */
  ownedWrites?: boolean;
  /** Bytes of the COW store disk (with `cow`). @default 1 MiB */
  cowStoreBytes?: number;
  /** The CowSnapshotDevice's own `maxSnapshots` (with `cow`). @default 2 × the journal's */
  cowMaxSnapshots?: number;
  /** Fails chosen operations of the journal store (its FaultyDevice `failures`), on every attach. */
  journalFailures?: FaultyDeviceOptions['failures'];
}

/**
 * A JournalDevice over memory disks `production` and `journal` (see
 * {@link SnapshotRig}); with `cow`, production is a CowSnapshotDevice over
 * the production disk and a COW store disk `store`, so journal snapshots can
 * materialize. Counts every I/O, and can lose power at any point.
 */
export class JournalRig extends SnapshotRig<JournalDisk, JournalDevice> {
  readonly options: JournalRigOptions;
  /** The production CowSnapshotDevice (with `cow`). */
  cow: CowSnapshotDevice | undefined;
  /** Power cuts during a recovering open (`crashAndReopen`'s `openCutAfter`). */
  recoveryCuts = 0;

  private constructor(disks: RigDisk<JournalDisk>[], options: JournalRigOptions) {
    super(disks, options);
    this.options = options;
  }

  static async create(options: JournalRigOptions = {}): Promise<JournalRig> {
    const blockSize = options.blockSize ?? 512;
    // The catalog follows the ring; only a snapshot-capable production gets one.
    const catalog = options.cow ? 2 * catalogSlotBytes(options.maxSnapshots ?? 64) : 0;
    const disks: RigDisk<JournalDisk>[] = [
      {
        name: 'production',
        disk: await MemoryDevice.create({ size: (options.blocks ?? 32) * blockSize, blockSize }),
      },
    ];
    if (options.cow) {
      disks.push({
        name: 'store',
        disk: await MemoryDevice.create({ size: options.cowStoreBytes ?? 1024 * 1024, blockSize }),
        crashSalt: LOWER_STORE_SALT,
      });
    }
    disks.push({
      name: 'journal',
      disk: await MemoryDevice.create({
        size: RING_START + (options.ringBytes ?? 64 * 1024) + catalog,
        blockSize: SECTOR,
      }),
      crashSalt: STORE_SALT,
      failures: options.journalFailures,
    });
    return new JournalRig(disks, options).launch();
  }

  get size(): number {
    return this.productionDisk.size;
  }

  get productionDisk(): MemoryDevice {
    return this.disk('production');
  }

  get journalDisk(): MemoryDevice {
    return this.disk('journal');
  }

  /** The production disk's FaultyDevice (with `cow`: the CowSnapshotDevice's origin). */
  get production(): FaultyDevice {
    return this.faulty('production');
  }

  /** The COW store disk's FaultyDevice (with `cow`). */
  get store(): FaultyDevice | undefined {
    return this.hasDisk('store') ? this.faulty('store') : undefined;
  }

  get journal(): FaultyDevice {
    return this.faulty('journal');
  }

  /** What the JournalDevice gets as its store: the journal's FaultyDevice, taking pieces if asked. */
  journalStore(): BlockDevice {
    return this.options.ownedWrites === true ? new OwnedWrites(this.journal) : this.journal;
  }

  deviceOptions(): JournalDeviceOptions {
    const { checkpointAt, onProgress, maxSnapshots } = this.options;
    return { checkpointAt, onProgress, maxSnapshots };
  }

  protected async createDevice(): Promise<JournalDevice> {
    const { store } = this;
    this.cow =
      store === undefined
        ? undefined
        : await CowSnapshotDevice.create(this.production, store, {
            maxSnapshots: this.options.cowMaxSnapshots ?? 2 * (this.options.maxSnapshots ?? 64),
          });
    return JournalDevice.create(
      this.cow ?? this.production,
      this.journalStore(),
      this.deviceOptions(),
    );
  }

  /** Opens the COW device under the journal too, when there is one. */
  protected async openDevice(): Promise<JournalDevice> {
    const { store } = this;
    this.cow = undefined;
    if (store !== undefined) this.cow = await CowSnapshotDevice.open(this.production, store);
    return JournalDevice.open(
      this.cow ?? this.production,
      this.journalStore(),
      this.deviceOptions(),
    );
  }

  /**
   * A power cut, then open (see {@link DiskRig.crashAndReopen}). With
   * `openCutAfter`, the power fails again that many device operations into
   * the recovering open (if it gets that far): the disks are crashed once
   * more (by `seed + 1`) and opened again.
   */
  override async crashAndReopen(seed: number, openCutAfter?: number): Promise<JournalDevice> {
    if (openCutAfter === undefined) return super.crashAndReopen(seed);
    await this.crash(seed);
    this.power.cutAfter(openCutAfter);
    try {
      await this.openAttached();
      // It got through: disarm the switch.
      this.power.cutAfter(Number.MAX_SAFE_INTEGER);
      return this.device;
    } catch (err) {
      if (this.power.isOn) throw err;
    }
    this.recoveryCuts++;
    return super.crashAndReopen(seed + 1);
  }

  /** Store offsets on the journal disk where a 512-byte run of `value` starts. */
  async find(value: number): Promise<number[]> {
    const all = Buffer.from(await this.journalDisk.reopen().read(0, this.journalDisk.size));
    const run = Buffer.alloc(512, value);
    const out: number[] = [];
    for (let at = all.indexOf(run); at >= 0; at = all.indexOf(run, at + 512)) out.push(at);
    return out;
  }

  /** Flips one byte of the journal disk. */
  async corrupt(offset: number): Promise<void> {
    const disk = this.journalDisk.reopen();
    const byte = await disk.read(offset, 1);
    await disk.write(offset, Uint8Array.of(byte[0]! ^ 0xff));
  }
}

/**
 * Gives a device WRITE_OWNED as a FileDevice has it: the pieces written back
 * to back. Here they go down as one `write` of their concatenation, so a
 * FaultyDevice below tears or drops the whole of it as it would a frame
 * written in one piece; what is exercised is the layer above building its
 * writes from pieces.
 */
class OwnedWrites extends PassThroughDevice {
  [WRITE_OWNED](offset: number, blocks: readonly Uint8Array[]): Promise<void> {
    let length = 0;
    for (const block of blocks) length += block.length;
    const whole = new Uint8Array(length);
    let at = 0;
    for (const block of blocks) {
      whole.set(block, at);
      at += block.length;
    }
    return this.write(offset, whole);
  }
}
