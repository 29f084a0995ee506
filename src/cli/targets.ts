import { stat } from 'node:fs/promises';
import {
  type BlockDevice,
  BlockDeviceError,
  FileDevice,
  type SnapshotCapable,
  type SnapshotInfo,
} from '../index.js';
import { isVolume, type OpenVolume, openVolume } from './volume.js';

/*
 * What a command line names: a volume (`./vm1`), one of its snapshots
 * (`./vm1@nightly`), or a plain image file; and where data goes (`apply`'s
 * and `copy`'s target: a volume or a file — an NBD URL is one more kind of
 * target here once `NbdDevice` is in the public API).
 */

/** A volume path with an optional snapshot: `./vm1@nightly`. */
export interface SnapshotRef {
  readonly volume: string;
  readonly snapshot: string | undefined;
}

/**
 * Splits `<volume>@<snapshot>` at its last `@`, unless the whole text names
 * a volume (a directory may have `@` in its name).
 */
export async function parseRef(text: string): Promise<SnapshotRef> {
  const at = text.lastIndexOf('@');
  if (at <= 0 || (await isVolume(text))) return { volume: text, snapshot: undefined };
  return { volume: text.slice(0, at), snapshot: text.slice(at + 1) };
}

/**
 * The snapshot a user named: by id, else by name (which must be unique),
 * else by a unique id prefix of at least 4 characters.
 * @throws `ENOENT` naming what exists, `EINVAL` for an ambiguous name.
 */
export function findSnapshot(device: SnapshotCapable, ref: string, volume: string): SnapshotInfo {
  const all = device.listSnapshots();
  const byId = all.find((s) => s.id === ref);
  if (byId !== undefined) return byId;
  const byName = all.filter((s) => s.name === ref);
  if (byName.length === 1) return byName[0]!;
  if (byName.length > 1) {
    throw new BlockDeviceError(
      'EINVAL',
      `${byName.length} snapshots of ${volume} are named '${ref}': name one by its id (${byName.map((s) => s.id).join(', ')})`,
    );
  }
  const byPrefix = ref.length >= 4 ? all.filter((s) => s.id.startsWith(ref)) : [];
  if (byPrefix.length === 1) return byPrefix[0]!;
  const known = all.map((s) => (s.name === undefined ? s.id : `${s.name} (${s.id})`)).join(', ');
  throw new BlockDeviceError(
    'ENOENT',
    `no snapshot '${ref}' in ${volume}${all.length === 0 ? ' (it has none)' : `; it has: ${known}`}`,
  );
}

/** A device a command reads or writes, and how to let go of it. */
export interface OpenTarget {
  readonly device: BlockDevice;
  /** The volume, when the target is one. */
  readonly volume: OpenVolume | undefined;
  /** Whether the command created the file (a failure before any data landed may remove it). */
  readonly created: boolean;
  close(): Promise<void>;
}

/** Whether a path exists at all. */
export async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Opens where data goes: a volume directory (its top device), or an image
 * file, created sparse with `geometry` when it does not exist.
 * @param geometry - size and block size the data needs; an existing file is
 *   opened with this block size.
 */
export async function openTarget(
  path: string,
  geometry: { readonly size: number; readonly blockSize: number },
): Promise<OpenTarget> {
  if (await isVolume(path)) {
    const volume = await openVolume(path);
    return { device: volume.top, volume, created: false, close: () => volume.close() };
  }
  const created = !(await exists(path));
  const file = await FileDevice.open(path, {
    blockSize: geometry.blockSize,
    ...(created ? { size: geometry.size, create: true } : {}),
  });
  return { device: file, volume: undefined, created, close: () => file.close() };
}
