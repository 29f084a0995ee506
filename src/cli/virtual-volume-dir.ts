import { resolve } from 'node:path';
import { BlockDeviceError, FileDevice, type PartitionSpec, VirtualVolume } from '../index.js';

/*
 * A volume directory whose stack is one VirtualVolume: its own store file
 * (partition map, snapshot catalog) and an origin and a COW store file per
 * partition, all inside the directory. The manifest names the files and the
 * processor count; the VirtualVolume's store records the partitions' paths
 * too, but as they were at `create`, so `open` passes the manifest's (the
 * directory may have moved since).
 */

/** The manifest layer of a VirtualVolume volume. */
export interface VirtualLayer {
  readonly layer: 'virtual';
  /** The VirtualVolume's own store, a file of the directory. */
  readonly store: string;
  /** Worker threads the partitions run on; 0 runs them in the command's thread. */
  readonly processors: number;
  /** Stripe unit in bytes, 0 for contiguous partitions. */
  readonly stripeUnit: number;
  /** Per partition, in volume order, its origin and COW store files. */
  readonly partitions: readonly { readonly origin: string; readonly store: string }[];
}

/** What `blocksnap create --partitions` makes. */
export interface VirtualCreateOptions {
  readonly size: number;
  readonly blockSize: number;
  /** Bytes of snapshot store in all, split evenly over the partitions (sparse). */
  readonly storeSize: number;
  readonly partitions: number;
  readonly processors: number;
  readonly stripeUnit: number;
}

/** Bytes of the VirtualVolume's own store file (sparse: its catalog takes a few KiB). */
const VOLUME_STORE_BYTES = 16 * 1024 * 1024;

/** The file names a VirtualVolume volume of `partitions` partitions keeps. */
export function virtualLayerOf(
  options: Pick<VirtualCreateOptions, 'partitions' | 'processors' | 'stripeUnit'>,
): VirtualLayer {
  return {
    layer: 'virtual',
    store: 'volume.store',
    processors: options.processors,
    stripeUnit: options.stripeUnit,
    partitions: Array.from({ length: options.partitions }, (_, i) => ({
      origin: `partition-${i}.img`,
      store: `partition-${i}.cow`,
    })),
  };
}

/** Checks the counts before any file is made. @throws `EINVAL`. */
export function checkVirtualGeometry(options: VirtualCreateOptions): void {
  const { size, blockSize, partitions, processors, stripeUnit } = options;
  if (!Number.isSafeInteger(partitions) || partitions < 1 || partitions > 1024) {
    throw new BlockDeviceError(
      'EINVAL',
      `--partitions ${partitions}: a whole number from 1 to 1024`,
    );
  }
  if (!Number.isSafeInteger(processors) || processors < 0 || processors > 256) {
    throw new BlockDeviceError(
      'EINVAL',
      `--processors ${processors}: a whole number from 0 to 256`,
    );
  }
  const each = size / partitions;
  if (!Number.isSafeInteger(each) || each % blockSize !== 0) {
    throw new BlockDeviceError(
      'EINVAL',
      `--size ${size} does not split into ${partitions} partitions of whole ${blockSize}-byte blocks`,
    );
  }
  if (stripeUnit !== 0 && (stripeUnit % blockSize !== 0 || each % stripeUnit !== 0)) {
    throw new BlockDeviceError(
      'EINVAL',
      `--stripe ${stripeUnit}: a multiple of the block size ${blockSize} that divides each partition's ${each} bytes`,
    );
  }
}

function specs(dir: string, layer: VirtualLayer, blockSize: number, sizes?: [number, number]) {
  return layer.partitions.map(
    (p): PartitionSpec => ({
      origin: { file: resolve(dir, p.origin), blockSize, size: sizes?.[0] },
      store: { file: resolve(dir, p.store), blockSize, size: sizes?.[1] },
    }),
  );
}

/**
 * Formats the VirtualVolume of a new volume directory: its store file, and
 * every partition's files, made and formatted by the processors that own
 * them. The caller removes the files if it fails.
 */
export async function createVirtual(
  dir: string,
  layer: VirtualLayer,
  options: VirtualCreateOptions,
): Promise<void> {
  const each = options.size / options.partitions;
  const storeEach =
    Math.ceil(options.storeSize / options.partitions / options.blockSize) * options.blockSize;
  const store = await FileDevice.open(resolve(dir, layer.store), {
    size: VOLUME_STORE_BYTES,
    blockSize: options.blockSize,
    create: true,
  });
  let volume: VirtualVolume;
  try {
    volume = await VirtualVolume.create({
      store,
      partitions: specs(dir, layer, options.blockSize, [each, storeEach]),
      processors: options.processors,
      stripeUnit: options.stripeUnit,
    });
  } catch (err) {
    await store.close().catch(() => {});
    throw err;
  }
  await volume.close();
}

/**
 * Opens the VirtualVolume of a volume directory on the manifest's
 * processors. The store file's lock keeps a second opener off the volume.
 */
export async function openVirtual(
  dir: string,
  layer: VirtualLayer,
  blockSize: number,
): Promise<VirtualVolume> {
  const store = await FileDevice.open(resolve(dir, layer.store), { blockSize });
  try {
    const volume = await VirtualVolume.open({
      store,
      partitions: specs(dir, layer, blockSize),
      processors: layer.processors,
    });
    // A worker's death also fails every call on its partitions with EIO,
    // which the command reports; an orphan a failed delete left is removed
    // by the next open. Unheard, the event would kill the command instead.
    volume.on('error', () => {});
    return volume;
  } catch (err) {
    await store.close().catch(() => {});
    throw err;
  }
}

/** Checks a manifest's virtual layer: counts, and every file a plain name of the directory. */
export function virtualLayerProblem(layer: Partial<VirtualLayer>): string | undefined {
  if (!Number.isSafeInteger(layer.processors) || (layer.processors ?? -1) < 0) {
    return 'no valid processor count';
  }
  if (!Number.isSafeInteger(layer.stripeUnit) || (layer.stripeUnit ?? -1) < 0) {
    return 'no valid stripe unit';
  }
  if (!Array.isArray(layer.partitions) || layer.partitions.length === 0) {
    return 'no partitions';
  }
  return undefined;
}

/** The files of a virtual layer: its store, then each partition's origin and store. */
export function virtualFiles(layer: VirtualLayer): string[] {
  return [layer.store, ...layer.partitions.flatMap((p) => [p.origin, p.store])];
}
