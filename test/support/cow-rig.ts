import { CowSnapshotDevice, MemoryDevice } from '../../src/index.js';
import type { FaultyDevice } from '../../src/testing/index.js';
import { type DiskRigOptions, SnapshotRig, type SnapshotSource, STORE_SALT } from './disk-rig.js';

export interface OriginStoreRigOptions extends DiskRigOptions {
  /** Origin block size (the store disk's too). @default 512 */
  blockSize?: number;
  /** Origin blocks. @default 32 */
  blocks?: number;
  /** Bytes of the store disk. @default 256 KiB */
  storeBytes?: number;
  /** @default 4 */
  maxSnapshots?: number;
}

/** The two disks of an {@link OriginStoreRig}, of the sizes `options` asks. */
export async function originAndStore(
  options: OriginStoreRigOptions,
): Promise<[MemoryDevice, MemoryDevice]> {
  const blockSize = options.blockSize ?? 512;
  return [
    await MemoryDevice.create({ size: (options.blocks ?? 32) * blockSize, blockSize }),
    await MemoryDevice.create({ size: options.storeBytes ?? 256 * 1024, blockSize }),
  ];
}

/**
 * A layer over two memory disks, `origin` and `store` (see
 * {@link SnapshotRig}): what the COW and the selective rig share.
 */
export abstract class OriginStoreRig<D extends SnapshotSource> extends SnapshotRig<
  'origin' | 'store',
  D
> {
  protected constructor([origin, store]: [MemoryDevice, MemoryDevice], options: DiskRigOptions) {
    super(
      [
        { name: 'origin', disk: origin },
        { name: 'store', disk: store, crashSalt: STORE_SALT },
      ],
      options,
    );
  }

  get origin(): FaultyDevice {
    return this.faulty('origin');
  }

  get store(): FaultyDevice {
    return this.faulty('store');
  }

  /** The origin's size in bytes. */
  get size(): number {
    return this.disk('origin').size;
  }

  /** The origin's block size. */
  get bs(): number {
    return this.disk('origin').blockSize;
  }
}

/** A CowSnapshotDevice over an origin and a store disk (see {@link OriginStoreRig}). */
export class CowRig extends OriginStoreRig<CowSnapshotDevice> {
  readonly #maxSnapshots: number;

  private constructor(disks: [MemoryDevice, MemoryDevice], options: OriginStoreRigOptions) {
    super(disks, options);
    this.#maxSnapshots = options.maxSnapshots ?? 4;
  }

  static async create(options: OriginStoreRigOptions = {}): Promise<CowRig> {
    return new CowRig(await originAndStore(options), options).launch();
  }

  protected createDevice(): Promise<CowSnapshotDevice> {
    return CowSnapshotDevice.create(this.origin, this.store, { maxSnapshots: this.#maxSnapshots });
  }

  protected openDevice(): Promise<CowSnapshotDevice> {
    return CowSnapshotDevice.open(this.origin, this.store);
  }
}
