import { CowSnapshotDevice, MemoryDevice } from '../../src/index.js';
import { type DiskRigOptions, SnapshotRig, STORE_SALT } from './disk-rig.js';

export interface CowOverCowRigOptions extends DiskRigOptions {
  /**
   * Written to the lower device and snapshotted there before the top one is
   * created over it (an owned layer refuses a snapshot called directly):
   * the snapshot's id is then {@link CowOverCowRig.lowerSnapshotId}.
   * @default none: no lower snapshot
   */
  lowerSnapshotOf?: Uint8Array;
}

const BS = 512;
const SIZE = BS * 32;

/** A CowSnapshotDevice whose origin is another CowSnapshotDevice; each with a store disk of its own. */
export class CowOverCowRig extends SnapshotRig<
  'origin' | 'lowerStore' | 'upperStore',
  CowSnapshotDevice
> {
  /** The CowSnapshotDevice under the top one. */
  lower: CowSnapshotDevice | undefined;
  /** The lower device's snapshot of `lowerSnapshotOf`, taken before the top one owns it. */
  lowerSnapshotId: string | undefined;
  readonly #lowerSnapshotOf: Uint8Array | undefined;

  private constructor(disks: MemoryDevice[], options: CowOverCowRigOptions) {
    super(
      [
        { name: 'origin', disk: disks[0]! },
        { name: 'lowerStore', disk: disks[1]!, crashSalt: STORE_SALT },
        { name: 'upperStore', disk: disks[2]!, crashSalt: STORE_SALT ^ 1 },
      ],
      options,
    );
    this.#lowerSnapshotOf = options.lowerSnapshotOf;
  }

  static async create(options: CowOverCowRigOptions): Promise<CowOverCowRig> {
    const disks = [
      await MemoryDevice.create({ size: SIZE, blockSize: BS }),
      await MemoryDevice.create({ size: 256 * 1024, blockSize: BS }),
      await MemoryDevice.create({ size: 256 * 1024, blockSize: BS }),
    ];
    return new CowOverCowRig(disks, options).launch();
  }

  protected async createDevice(): Promise<CowSnapshotDevice> {
    this.lower = await CowSnapshotDevice.create(this.faulty('origin'), this.faulty('lowerStore'), {
      maxSnapshots: 4,
    });
    if (this.#lowerSnapshotOf !== undefined) {
      await this.lower.write(0, this.#lowerSnapshotOf);
      this.lowerSnapshotId = (await this.lower.snapshot()).id;
    }
    return CowSnapshotDevice.create(this.lower, this.faulty('upperStore'), { maxSnapshots: 4 });
  }

  protected async openDevice(): Promise<CowSnapshotDevice> {
    this.lower = await CowSnapshotDevice.open(this.faulty('origin'), this.faulty('lowerStore'));
    return CowSnapshotDevice.open(this.lower, this.faulty('upperStore'));
  }
}
