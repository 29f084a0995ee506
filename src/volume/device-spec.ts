import type { BlockDevice } from '../device.js';
import { FileDevice, MemoryDevice, NbdDevice } from '../devices/index.js';
import { BlockDeviceError } from '../errors.js';

/*
 * Device specs: a partition's origin or store described by plain data, so
 * that whichever processor owns the partition — this thread or a worker —
 * opens the device itself (docs/ARCHITECTURE.md, "VirtualVolume"). A spec is
 * structured-cloneable and is what the volume's store records; a BlockDevice
 * object instead keeps its partition in this thread.
 */

/** A regular file, opened (and at `create`, created when `size` is given) by the owning processor. */
export interface FileSpec {
  /** Path of the file. */
  readonly file: string;
  /** Size in bytes; creates the file at `VirtualVolume.create` if it does not exist. @default the file's size */
  readonly size?: number | undefined;
  /** Block size in bytes. @default 4096 */
  readonly blockSize?: number | undefined;
}

/**
 * Memory of the processor that owns the partition: gone when the volume
 * closes or that processor's worker dies, so a volume over memory specs
 * cannot be opened again (tests and benchmarks use it).
 */
export interface MemorySpec {
  readonly memory: {
    /** Size in bytes. */
    readonly size: number;
    /** Block size in bytes. @default 4096 */
    readonly blockSize?: number | undefined;
  };
}

/**
 * An NBD export — another machine's blocksnap server, qemu-nbd, nbdkit, a
 * Ceph RBD image behind `qemu-nbd rbd:…` — connected to by the owning
 * processor.
 */
export interface NbdSpec {
  /** Its URL: `nbd://host[:port]/name`, `nbd+unix:///name?socket=path`, `nbds://…`. */
  readonly nbd: string;
}

/** A device any processor can open: a file, memory, or an NBD export. */
export type DeviceSpec = FileSpec | MemorySpec | NbdSpec;

/** How a partition's origin or store is given: a spec any processor opens, or a device of this thread. */
export type DeviceSource = DeviceSpec | BlockDevice;

/** Whether `source` is a spec (plain data) rather than a device object. */
export function isSpec(source: DeviceSource): source is DeviceSpec {
  return typeof (source as Partial<BlockDevice>).read !== 'function';
}

/**
 * Checks a spec's shape before anything is opened.
 * @throws `EINVAL` naming `what`.
 */
export function checkSpec(spec: unknown, what: string): asserts spec is DeviceSpec {
  if (typeof spec !== 'object' || spec === null) {
    throw new BlockDeviceError('EINVAL', `${what} must be a device spec or a BlockDevice`);
  }
  const s = spec as Record<string, unknown>;
  const number = (v: unknown) => v === undefined || (typeof v === 'number' && v > 0);
  if ('file' in s) {
    if (
      typeof s.file !== 'string' ||
      s.file.length === 0 ||
      !number(s.size) ||
      !number(s.blockSize)
    ) {
      throw new BlockDeviceError(
        'EINVAL',
        `${what}: { file } needs a non-empty path, and size and blockSize positive numbers when given`,
      );
    }
    return;
  }
  if ('memory' in s) {
    const m = s.memory as Record<string, unknown> | null;
    if (typeof m !== 'object' || m === null || typeof m.size !== 'number' || !number(m.blockSize)) {
      throw new BlockDeviceError('EINVAL', `${what}: { memory } needs { size, blockSize? }`);
    }
    return;
  }
  if ('nbd' in s) {
    if (typeof s.nbd !== 'string' || s.nbd.length === 0) {
      throw new BlockDeviceError('EINVAL', `${what}: { nbd } needs the export's URL`);
    }
    return;
  }
  throw new BlockDeviceError(
    'EINVAL',
    `${what}: unknown device spec with keys ${Object.keys(s).join(', ') || '(none)'}; expected { file }, { memory } or { nbd }`,
  );
}

/**
 * Opens the device a spec describes, in the calling thread. Files are opened
 * without FileDevice's lock file: threads share one process id, so a worker
 * that dies could never release its locks, and the volume store's own lock
 * (when it is a FileDevice) already keeps a second opener off the volume.
 * Adding a kind of spec is one case here and one in {@link checkSpec}. An
 * NBD export keeps its own openers apart (docs/ARCHITECTURE.md, "Layers",
 * exclusive open): blocksnap cannot see another client of it.
 * @param create - at `VirtualVolume.create`: a file spec with a size is created when missing.
 */
export async function openSpec(spec: DeviceSpec, create: boolean): Promise<BlockDevice> {
  if ('file' in spec) {
    return FileDevice.open(spec.file, {
      size: spec.size,
      blockSize: spec.blockSize,
      create: create && spec.size !== undefined,
      lock: false,
    });
  }
  if ('nbd' in spec) return NbdDevice.connect(spec.nbd);
  return MemoryDevice.create({ size: spec.memory.size, blockSize: spec.memory.blockSize ?? 4096 });
}

/** How the volume store records a partition's origin or store. */
export type SpecRecord = DeviceSpec | { readonly object: true };

/** The record of `source`: the spec itself, or a mark that the caller passes a device object at open. */
export function recordOf(source: DeviceSource): SpecRecord {
  if (!isSpec(source)) return { object: true };
  if ('file' in source) return { file: source.file, blockSize: source.blockSize };
  if ('nbd' in source) return { nbd: source.nbd };
  return { memory: { size: source.memory.size, blockSize: source.memory.blockSize } };
}
