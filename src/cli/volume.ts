import { mkdir, open, readdir, readFile, rename, rm, rmdir } from 'node:fs/promises';
import { basename, join } from 'node:path';
import {
  type BlockDevice,
  BlockDeviceError,
  type ChangeTracking,
  CowSnapshotDevice,
  FileDevice,
  JournalDevice,
  type ProgressEvent,
  SelectiveSnapshotDevice,
  type VirtualVolume,
} from '../index.js';
import {
  checkVirtualGeometry,
  createVirtual,
  openVirtual,
  type VirtualCreateOptions,
  type VirtualLayer,
  virtualFiles,
  virtualLayerOf,
  virtualLayerProblem,
} from './virtual-volume-dir.js';

/*
 * A volume on disk is a directory: a manifest naming its stack, top layer
 * first (or one VirtualVolume, virtual-volume-dir.ts), and the files each
 * layer keeps, all inside the directory so the
 * directory is the volume (move or copy it whole). The manifest is written
 * last, atomically, so a directory holds a volume exactly when it holds a
 * manifest: a `create` cut short leaves no half-made volume that opens.
 */

/** The manifest's file name inside a volume directory. */
export const MANIFEST_NAME = 'blocksnap-volume.json';
const FORMAT = 'blocksnap-volume';
const VERSION = 1;

/** One layer of a volume's stack, as its manifest names it. */
export type ManifestLayer =
  | { readonly layer: 'journal'; readonly store: string }
  | { readonly layer: 'cow' | 'selective'; readonly store: string }
  | { readonly layer: 'file'; readonly path: string }
  | VirtualLayer;

/** The manifest of a volume directory (version 1). */
export interface VolumeManifest {
  readonly format: typeof FORMAT;
  readonly version: typeof VERSION;
  /** Bytes of the volume. */
  readonly size: number;
  /** Block size of every file of the stack (a FileDevice does not record it). */
  readonly blockSize: number;
  /** Top layer first: an optional journal, then the snapshot layer, then the data file; or one VirtualVolume. */
  readonly stack: readonly ManifestLayer[];
  /** When `create` made it (ISO 8601). */
  readonly createdAt: string;
}

/** What `blocksnap create` makes. */
export interface VolumeCreateOptions {
  readonly size: number;
  readonly blockSize: number;
  /** Bytes of the snapshot store (sparse: only what snapshots keep takes disk space). */
  readonly storeSize: number;
  /** Bytes of the journal, or undefined for no journal. */
  readonly journalSize: number | undefined;
  readonly selective: boolean;
  /** A VirtualVolume of this many partitions instead of one data file, or undefined. */
  readonly virtual?: Omit<VirtualCreateOptions, 'size' | 'blockSize' | 'storeSize'> | undefined;
}

/** An open volume: its top device and the layers below it, closed together by `close()`. */
export interface OpenVolume {
  readonly dir: string;
  readonly manifest: VolumeManifest;
  /** The device to read, write, snapshot and export: the journal if there is one. */
  readonly top: BlockDevice & ChangeTracking;
  /** The copy-on-write layer, or undefined for a VirtualVolume. */
  readonly snapshots: CowSnapshotDevice | SelectiveSnapshotDevice | undefined;
  /** The VirtualVolume, when the stack is one. */
  readonly virtual: VirtualVolume | undefined;
  /** The journal, if the volume has one. */
  readonly journal: JournalDevice | undefined;
  /** Closes the top of the stack, which closes every layer and file below it. */
  close(): Promise<void>;
}

/** Whether `dir` holds a volume manifest. */
export async function isVolume(dir: string): Promise<boolean> {
  try {
    await readFile(join(dir, MANIFEST_NAME));
    return true;
  } catch {
    return false;
  }
}

/** Reads and checks a volume's manifest. @throws `ENOENT` (no volume), `ECORRUPT` (unreadable), `EINVAL` (a version or layer this command does not know). */
export async function readManifest(dir: string): Promise<VolumeManifest> {
  let text: string;
  try {
    text = await readFile(join(dir, MANIFEST_NAME), 'utf8');
  } catch (err) {
    throw new BlockDeviceError('ENOENT', `no volume at ${dir} (no ${MANIFEST_NAME})`, {
      cause: err,
    });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new BlockDeviceError('ECORRUPT', `${join(dir, MANIFEST_NAME)} is not valid JSON`, {
      cause: err,
    });
  }
  return checkManifest(raw, dir);
}

function checkManifest(raw: unknown, dir: string): VolumeManifest {
  const where = join(dir, MANIFEST_NAME);
  const m = raw as Partial<VolumeManifest> | null;
  if (typeof m !== 'object' || m === null || m.format !== FORMAT) {
    throw new BlockDeviceError('ECORRUPT', `${where} is not a blocksnap volume manifest`);
  }
  if (m.version !== VERSION) {
    throw new BlockDeviceError(
      'EINVAL',
      `${where} has version ${String(m.version)}; this blocksnap reads version ${VERSION}`,
    );
  }
  const stack = Array.isArray(m.stack) ? m.stack : [];
  const kinds = stack.map((l: ManifestLayer) => l?.layer).join(',');
  if (!/^((journal,)?(cow|selective),file|virtual)$/.test(kinds)) {
    throw new BlockDeviceError(
      'EINVAL',
      `${where} names the stack [${kinds}]; this blocksnap opens [journal,](cow|selective),file or virtual`,
    );
  }
  const files: unknown[] = [];
  for (const layer of stack) {
    if (layer.layer === 'virtual') {
      const problem = virtualLayerProblem(layer);
      if (problem !== undefined) {
        throw new BlockDeviceError('ECORRUPT', `${where}: its virtual layer has ${problem}`);
      }
      files.push(...virtualFiles(layer));
    } else files.push(layer.layer === 'file' ? layer.path : layer.store);
  }
  for (const file of files) {
    // Every file lives inside the directory: the directory is the volume.
    if (typeof file !== 'string' || file !== basename(file) || file.startsWith('.')) {
      throw new BlockDeviceError(
        'ECORRUPT',
        `${where} names the file '${String(file)}' outside the volume`,
      );
    }
  }
  if (!Number.isSafeInteger(m.size) || !Number.isSafeInteger(m.blockSize)) {
    throw new BlockDeviceError('ECORRUPT', `${where} has no valid size and blockSize`);
  }
  return m as VolumeManifest;
}

/**
 * Makes a volume directory: its files (sparse), each layer formatted, then
 * the manifest. If anything fails, what it made is removed again.
 * @throws `EBUSY` if `dir` exists and is not empty, and what the layers'
 *   `create` throws (`EINVAL` for a bad geometry or a store too small).
 */
export async function createVolume(
  dir: string,
  options: VolumeCreateOptions,
): Promise<VolumeManifest> {
  if (options.virtual !== undefined) {
    checkVirtualGeometry({ ...options, ...options.virtual });
    return createVirtualVolume(dir, { ...options, ...options.virtual });
  }
  const madeDir = await prepareDirectory(dir);
  const snapshotLayer = options.selective ? 'selective' : 'cow';
  const stack: ManifestLayer[] = [
    ...(options.journalSize === undefined
      ? []
      : [{ layer: 'journal', store: 'journal.img' } as const]),
    { layer: snapshotLayer, store: 'snapshots.img' },
    { layer: 'file', path: 'data.img' },
  ];
  const manifest: VolumeManifest = {
    format: FORMAT,
    version: VERSION,
    size: options.size,
    blockSize: options.blockSize,
    stack,
    createdAt: new Date().toISOString(),
  };
  const made: string[] = [];
  const file = async (name: string, size: number) => {
    const device = await FileDevice.open(join(dir, name), {
      size,
      blockSize: options.blockSize,
      create: true,
    });
    made.push(name);
    return device;
  };
  let top: BlockDevice | undefined;
  try {
    const data = await file('data.img', options.size);
    const store = await file('snapshots.img', options.storeSize).catch(async (err) => {
      await data.close();
      throw err;
    });
    const snapshots = await createSnapshotLayer(snapshotLayer, data, store).catch(async (err) => {
      await Promise.allSettled([data.close(), store.close()]);
      throw err;
    });
    top = snapshots;
    if (options.journalSize !== undefined) {
      const journal = await file('journal.img', options.journalSize);
      top = await JournalDevice.create(snapshots, journal).catch(async (err) => {
        await Promise.allSettled([journal.close()]);
        throw err;
      });
    }
    await top.close();
    await writeManifest(dir, manifest);
    return manifest;
  } catch (err) {
    await top?.close().catch(() => {});
    for (const name of made) await rm(join(dir, name), { force: true });
    if (madeDir) await rmdir(dir).catch(() => {});
    throw err;
  }
}

/** {@link createVolume} for a VirtualVolume: its files, then the manifest; all removed on a failure. */
async function createVirtualVolume(
  dir: string,
  options: VirtualCreateOptions,
): Promise<VolumeManifest> {
  const madeDir = await prepareDirectory(dir);
  const layer = virtualLayerOf(options);
  const manifest: VolumeManifest = {
    format: FORMAT,
    version: VERSION,
    size: options.size,
    blockSize: options.blockSize,
    stack: [layer],
    createdAt: new Date().toISOString(),
  };
  try {
    await createVirtual(dir, layer, options);
    await writeManifest(dir, manifest);
    return manifest;
  } catch (err) {
    for (const name of virtualFiles(layer)) await rm(join(dir, name), { force: true });
    if (madeDir) await rmdir(dir).catch(() => {});
    throw err;
  }
}

function createSnapshotLayer(
  layer: 'cow' | 'selective',
  data: BlockDevice,
  store: BlockDevice,
): Promise<CowSnapshotDevice | SelectiveSnapshotDevice> {
  return layer === 'cow'
    ? CowSnapshotDevice.create(data, store)
    : SelectiveSnapshotDevice.create(data, store);
}

/** Creates `dir`, or accepts an empty one; returns whether it made it. */
async function prepareDirectory(dir: string): Promise<boolean> {
  try {
    await mkdir(dir);
    return true;
  } catch (err) {
    if ((err as { code?: string }).code !== 'EEXIST') throw err;
  }
  const entries = await readdir(dir);
  if (entries.includes(MANIFEST_NAME)) {
    throw new BlockDeviceError('EBUSY', `${dir} already holds a volume`);
  }
  if (entries.length > 0) {
    throw new BlockDeviceError(
      'EBUSY',
      `${dir} is not empty: a volume needs a directory of its own`,
    );
  }
  return false;
}

/** Writes the manifest under a temporary name, syncs it, renames it into place, syncs the directory. */
async function writeManifest(dir: string, manifest: VolumeManifest): Promise<void> {
  const temporary = join(dir, `.${MANIFEST_NAME}.tmp`);
  const handle = await open(temporary, 'w');
  try {
    await handle.writeFile(`${JSON.stringify(manifest, null, 2)}\n`);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(temporary, join(dir, MANIFEST_NAME));
  const directory = await open(dir, 'r');
  try {
    await directory.sync();
  } finally {
    await directory.close();
  }
}

/**
 * Opens a volume's stack bottom up, each layer over the ones below (which it
 * then owns). If a layer fails to open, the files opened so far are closed
 * again and the error is the layer's (`ECORRUPT` for a damaged store).
 * @param onReplay - the journal's replay progress, if it has one.
 */
export async function openVolume(
  dir: string,
  onReplay?: (event: ProgressEvent) => void,
): Promise<OpenVolume> {
  const manifest = await readManifest(dir);
  const first = manifest.stack[0]!;
  if (first.layer === 'virtual') {
    const virtual = await openVirtual(dir, first, manifest.blockSize);
    return {
      dir,
      manifest,
      top: virtual,
      snapshots: undefined,
      journal: undefined,
      virtual,
      close: () => virtual.close(),
    };
  }
  const byLayer = new Map(manifest.stack.map((l) => [l.layer, l]));
  const fileOf = (layer: ManifestLayer) =>
    join(dir, layer.layer === 'file' ? layer.path : layer.store);
  const openFile = (layer: ManifestLayer) =>
    FileDevice.open(fileOf(layer), { blockSize: manifest.blockSize });
  const snapshotLayer = (byLayer.get('cow') ?? byLayer.get('selective'))!;
  const data = await openFile(byLayer.get('file')!);
  let store: FileDevice;
  let snapshots: CowSnapshotDevice | SelectiveSnapshotDevice;
  try {
    store = await openFile(snapshotLayer);
  } catch (err) {
    await data.close();
    throw err;
  }
  try {
    snapshots =
      snapshotLayer.layer === 'selective'
        ? await SelectiveSnapshotDevice.open(data, store)
        : await CowSnapshotDevice.open(data, store);
  } catch (err) {
    await Promise.allSettled([data.close(), store.close()]);
    throw err;
  }
  const journalLayer = byLayer.get('journal');
  let journal: JournalDevice | undefined;
  if (journalLayer !== undefined) {
    const journalFile = await openFile(journalLayer).catch(async (err) => {
      await snapshots.close();
      throw err;
    });
    journal = await JournalDevice.open(snapshots, journalFile, { onProgress: onReplay }).catch(
      async (err) => {
        await Promise.allSettled([snapshots.close(), journalFile.close()]);
        throw err;
      },
    );
  }
  const top = journal ?? snapshots;
  return { dir, manifest, top, snapshots, journal, virtual: undefined, close: () => top.close() };
}

/** The files of a volume, top layer first, as paths. */
export function volumeFiles(volume: { dir: string; manifest: VolumeManifest }): string[] {
  return volume.manifest.stack
    .flatMap((l) =>
      l.layer === 'virtual' ? virtualFiles(l) : [l.layer === 'file' ? l.path : l.store],
    )
    .map((name) => join(volume.dir, name));
}
