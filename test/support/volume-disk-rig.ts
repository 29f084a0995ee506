import { CowSnapshotDevice, MemoryDevice, VirtualVolume } from '../../src/index.js';
import { type DiskRigOptions, SnapshotRig, STORE_SALT } from './disk-rig.js';

/** The disks of a {@link VolumeRig}: the volume store, and each partition's origin and store. */
export type VolumeDiskName = 'volume' | `origin${number}` | `store${number}`;

export interface VolumeRigOptions extends DiskRigOptions {
  /** @default 3 */
  partitions?: number;
  /** Blocks per partition. @default 8 */
  partitionBlocks?: number;
  /** Stripe unit in bytes; 0 for contiguous. @default 1024 */
  stripeUnit?: number;
  /** @default 4 */
  maxSnapshots?: number;
}

const BS = 512;

/**
 * A VirtualVolume with every partition in this thread, over memory disks
 * behind FaultyDevices on one power switch (see {@link SnapshotRig}): a
 * power cut hits the volume store and every partition's origin and store
 * at one instant.
 */
export class VolumeRig extends SnapshotRig<VolumeDiskName, VirtualVolume> {
  readonly partitions: number;
  readonly #options: VolumeRigOptions;

  private constructor(
    disks: { name: VolumeDiskName; disk: MemoryDevice; crashSalt?: number }[],
    options: VolumeRigOptions,
  ) {
    super(disks, options);
    this.partitions = options.partitions ?? 3;
    this.#options = options;
  }

  static async create(options: VolumeRigOptions = {}): Promise<VolumeRig> {
    const partitions = options.partitions ?? 3;
    const blocks = options.partitionBlocks ?? 8;
    const disks: { name: VolumeDiskName; disk: MemoryDevice; crashSalt?: number }[] = [
      { name: 'volume', disk: await MemoryDevice.create({ size: 64 * 1024, blockSize: BS }) },
    ];
    for (let i = 0; i < partitions; i++) {
      disks.push({
        name: `origin${i}`,
        disk: await MemoryDevice.create({ size: blocks * BS, blockSize: BS }),
        crashSalt: i * 0x9e3779b1,
      });
      disks.push({
        name: `store${i}`,
        disk: await MemoryDevice.create({ size: 128 * 1024, blockSize: BS }),
        crashSalt: STORE_SALT + i,
      });
    }
    return new VolumeRig(disks, options).launch();
  }

  /** Bytes of the volume. */
  get size(): number {
    return this.partitions * (this.#options.partitionBlocks ?? 8) * BS;
  }

  #partitionDevices() {
    return Array.from({ length: this.partitions }, (_, i) => ({
      origin: this.faulty(`origin${i}`),
      store: this.faulty(`store${i}`),
    }));
  }

  protected createDevice(): Promise<VirtualVolume> {
    return VirtualVolume.create({
      store: this.faulty('volume'),
      partitions: this.#partitionDevices(),
      stripeUnit: this.#options.stripeUnit ?? 1024,
      maxSnapshots: this.#options.maxSnapshots ?? 4,
    });
  }

  protected openDevice(): Promise<VirtualVolume> {
    return VirtualVolume.open({
      store: this.faulty('volume'),
      partitions: this.#partitionDevices(),
    });
  }

  /**
   * How many snapshots each partition's COW device holds, read by opening
   * each partition alone over fresh handles (the volume must be closed).
   */
  async partitionSnapshotCounts(): Promise<number[]> {
    const counts: number[] = [];
    for (let i = 0; i < this.partitions; i++) {
      const cow = await CowSnapshotDevice.open(
        this.disk(`origin${i}`).reopen(),
        this.disk(`store${i}`).reopen(),
      );
      counts.push(cow.listSnapshots().length);
      await cow.close();
    }
    return counts;
  }
}
