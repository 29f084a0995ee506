import { CowSnapshotDevice, MemoryDevice } from '../../src/index.js';
import { type DiskRigOptions, SnapshotRig, STORE_SALT } from './disk-rig.js';

const BS = 512;
const SIZE = BS * 32;

/** A CowSnapshotDevice whose origin is another CowSnapshotDevice; each with a store disk of its own. */
export class CowOverCowRig extends SnapshotRig<
  'origin' | 'lowerStore' | 'upperStore',
  CowSnapshotDevice
> {
  /** The CowSnapshotDevice under the top one. */
  lower: CowSnapshotDevice | undefined;

  private constructor(disks: MemoryDevice[], options: DiskRigOptions) {
    super(
      [
        { name: 'origin', disk: disks[0]! },
        { name: 'lowerStore', disk: disks[1]!, crashSalt: STORE_SALT },
        { name: 'upperStore', disk: disks[2]!, crashSalt: STORE_SALT ^ 1 },
      ],
      options,
    );
  }

  static async create(options: DiskRigOptions): Promise<CowOverCowRig> {
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
    return CowSnapshotDevice.create(this.lower, this.faulty('upperStore'), { maxSnapshots: 4 });
  }

  protected async openDevice(): Promise<CowSnapshotDevice> {
    this.lower = await CowSnapshotDevice.open(this.faulty('origin'), this.faulty('lowerStore'));
    return CowSnapshotDevice.open(this.lower, this.faulty('upperStore'));
  }
}
