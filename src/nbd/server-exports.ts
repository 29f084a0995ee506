import type { BlockDevice, Snapshot, SnapshotCapable, SnapshotInfo } from '../device.js';
import { BlockDeviceError } from '../errors.js';

/** An export with settings of its own (a bare BlockDevice is an export with the defaults). */
export interface NbdExport {
  /** The device the export reads and writes. The server never closes it. */
  readonly device: BlockDevice;
  /**
   * Whether clients may only read: the export is announced `READ_ONLY` and
   * writes, zeroes and trims fail with `EPERM` before reaching the device.
   * A read-only device is always exported read-only. @default false
   */
  readonly readOnly?: boolean | undefined;
  /** A line for humans, sent as `NBD_INFO_DESCRIPTION` and in `NBD_OPT_LIST`. @default undefined */
  readonly description?: string | undefined;
}

/** What a resolver returns for a name it knows: an export, and how to let it go. */
export interface ResolvedNbdExport extends NbdExport {
  /**
   * Called once when the last connection using this export ends (or the
   * server closes): the resolver's chance to close a handle it opened for
   * the export. Never called while a connection still uses it.
   */
  readonly release?: (() => void | Promise<void>) | undefined;
}

/**
 * Exports chosen by name when a client asks: returns the export for `name`,
 * or undefined for a name it does not know (the client gets
 * `NBD_REP_ERR_UNKNOWN`). The server calls it once per name while any
 * connection uses that name, and shares what it returned among all of them
 * (so flushes on one connection cover writes made on another, and the
 * export can be announced `CAN_MULTI_CONN`); `release` is called when the
 * last of them ends.
 */
export interface NbdExportResolver {
  (
    name: string,
  ):
    | BlockDevice
    | ResolvedNbdExport
    | undefined
    | Promise<BlockDevice | ResolvedNbdExport | undefined>;
  /** The names `NBD_OPT_LIST` shows (`nbdinfo --list`); without it the list is empty. */
  list?: (() => readonly string[]) | undefined;
}

/**
 * What a server serves: a fixed map of export names to devices (or
 * {@link NbdExport}s), as a `Map` or a plain object, or a resolver.
 */
export type NbdExports =
  | ReadonlyMap<string, BlockDevice | NbdExport>
  | Readonly<Record<string, BlockDevice | NbdExport>>
  | NbdExportResolver;

/** One connection's hold on an export; `release` exactly once. */
export interface ExportLease {
  /** The canonical name (the default export's real name for the empty name). */
  readonly name: string;
  readonly device: BlockDevice;
  readonly readOnly: boolean;
  readonly description: string | undefined;
  release(): void;
}

interface CacheEntry {
  readonly resolved: Promise<ResolvedNbdExport | undefined>;
  refs: number;
}

/**
 * The server's exports: looks names up, and for a resolver keeps one
 * resolved export per name while connections use it (reference counted),
 * so every connection to a name shares one device object.
 */
export class ExportTable {
  readonly #exports: NbdExports;
  readonly #defaultName: string | undefined;
  readonly #onReleaseError: (err: unknown) => void;
  readonly #cache = new Map<string, CacheEntry>();

  constructor(
    exports: NbdExports,
    defaultName: string | undefined,
    onReleaseError: (err: unknown) => void,
  ) {
    this.#exports = exports;
    this.#defaultName = defaultName;
    this.#onReleaseError = onReleaseError;
  }

  /** The export names `NBD_OPT_LIST` shows, with their descriptions. */
  list(): { name: string; description: string | undefined }[] {
    const exports = this.#exports;
    if (typeof exports === 'function') {
      return (exports.list?.() ?? []).map((name) => ({ name, description: undefined }));
    }
    const entries = exports instanceof Map ? [...exports] : Object.entries(exports);
    return entries.map(([name, target]) => ({ name, description: describe(target) }));
  }

  /**
   * The export `name` means, held until the lease is released; undefined
   * for an unknown name.
   * @throws what the resolver threw, or `EINVAL` if it returned no device.
   */
  async acquire(requested: string): Promise<ExportLease | undefined> {
    const name =
      requested === '' && this.#defaultName !== undefined ? this.#defaultName : requested;
    const exports = this.#exports;
    if (typeof exports !== 'function') {
      const target =
        exports instanceof Map
          ? (exports as ReadonlyMap<string, BlockDevice | NbdExport>).get(name)
          : ownValue(exports as Readonly<Record<string, BlockDevice | NbdExport>>, name);
      if (target === undefined) return undefined;
      return lease(name, toExport(target, name), () => {});
    }
    let entry = this.#cache.get(name);
    if (entry === undefined) {
      const resolved = Promise.resolve()
        .then(() => exports(name))
        .then((target) => (target === undefined ? undefined : toExport(target, name)));
      entry = { resolved, refs: 0 };
      this.#cache.set(name, entry);
    }
    const held = entry;
    held.refs++;
    let resolved: ResolvedNbdExport | undefined;
    try {
      resolved = await held.resolved;
    } catch (err) {
      this.#drop(name, held);
      throw err;
    }
    if (resolved === undefined) {
      this.#drop(name, held);
      return undefined;
    }
    return lease(name, resolved, () => this.#drop(name, held));
  }

  #drop(name: string, entry: CacheEntry): void {
    entry.refs--;
    if (entry.refs > 0) return;
    if (this.#cache.get(name) === entry) this.#cache.delete(name);
    entry.resolved
      .then((resolved) => resolved?.release?.())
      .catch((err: unknown) => this.#onReleaseError(err));
  }
}

/**
 * The snapshot `key` names: the one with that id, else the newest with that
 * name (snapshots are listed oldest first).
 */
export function snapshotNamed(
  snapshots: readonly SnapshotInfo[],
  key: string,
): SnapshotInfo | undefined {
  const byId = snapshots.find((s) => s.id === key);
  if (byId !== undefined) return byId;
  for (let i = snapshots.length - 1; i >= 0; i--) {
    const info = snapshots[i] as SnapshotInfo;
    if (info.name === key) return info;
  }
  return undefined;
}

function lease(name: string, target: ResolvedNbdExport, release: () => void): ExportLease {
  let released = false;
  return {
    name,
    device: target.device,
    readOnly: target.readOnly === true || target.device.readOnly,
    description: target.description,
    release() {
      if (released) return;
      released = true;
      release();
    },
  };
}

function ownValue<T>(record: Readonly<Record<string, T>>, key: string): T | undefined {
  return Object.hasOwn(record, key) ? record[key] : undefined;
}

function describe(target: BlockDevice | NbdExport): string | undefined {
  return isBlockDevice(target) ? undefined : target.description;
}

function isBlockDevice(value: unknown): value is BlockDevice {
  if (typeof value !== 'object' || value === null) return false;
  const d = value as Partial<BlockDevice>;
  return (
    typeof d.read === 'function' &&
    typeof d.write === 'function' &&
    typeof d.flush === 'function' &&
    typeof d.size === 'number' &&
    typeof d.blockSize === 'number'
  );
}

function toExport(target: BlockDevice | ResolvedNbdExport, name: string): ResolvedNbdExport {
  if (isBlockDevice(target)) return { device: target };
  if (typeof target === 'object' && target !== null && isBlockDevice(target.device)) return target;
  throw new BlockDeviceError('EINVAL', `export ${JSON.stringify(name)} has no BlockDevice`);
}

/** Checks an `exports` option before the server starts. @throws `EINVAL`. */
export function checkExports(exports: unknown): NbdExports {
  if (typeof exports === 'function') return exports as NbdExportResolver;
  if (typeof exports !== 'object' || exports === null || Array.isArray(exports)) {
    throw new BlockDeviceError(
      'EINVAL',
      'serveNbd: exports must be a Map, an object or a function',
    );
  }
  const entries =
    exports instanceof Map ? [...exports] : Object.entries(exports as Record<string, unknown>);
  for (const [name, target] of entries) {
    if (typeof name !== 'string' || Buffer.byteLength(name) > 4096 || name.includes('\0')) {
      throw new BlockDeviceError(
        'EINVAL',
        `serveNbd: export name ${JSON.stringify(name)} is not valid`,
      );
    }
    toExport(target as BlockDevice, name);
  }
  return exports as NbdExports;
}

/**
 * A resolver that serves `device` as `name` and each of its snapshots as
 * `name@<snapshot name or id>`, read-only (an id matches first; a name
 * several snapshots share means the newest of them). A snapshot's handle is
 * opened when a client first asks for it, shared by every connection to
 * it, and closed when the last one ends or the server closes; `device`
 * itself is never closed.
 */
export function snapshotExports(
  name: string,
  device: BlockDevice & SnapshotCapable,
): NbdExportResolver {
  if (typeof name !== 'string' || name.includes('@')) {
    throw new BlockDeviceError(
      'EINVAL',
      `snapshotExports: name ${JSON.stringify(name)} must be a string without '@'`,
    );
  }
  const handles = new Map<string, { handle: Promise<Snapshot>; refs: number }>();
  const prefix = `${name}@`;
  const resolve = async (requested: string): Promise<ResolvedNbdExport | undefined> => {
    if (requested === name) return { device };
    if (!requested.startsWith(prefix)) return undefined;
    const key = requested.slice(prefix.length);
    const info = snapshotNamed(device.listSnapshots(), key);
    if (info === undefined) return undefined;
    let entry = handles.get(info.id);
    if (entry === undefined) {
      entry = { handle: device.openSnapshot(info.id), refs: 0 };
      handles.set(info.id, entry);
    }
    const held = entry;
    held.refs++;
    const closeIfLast = async (): Promise<void> => {
      held.refs--;
      if (held.refs > 0) return;
      if (handles.get(info.id) === held) handles.delete(info.id);
      await (await held.handle).close();
    };
    let handle: Snapshot;
    try {
      handle = await held.handle;
    } catch (err) {
      held.refs--;
      if (held.refs === 0 && handles.get(info.id) === held) handles.delete(info.id);
      throw err;
    }
    return {
      device: handle,
      readOnly: true,
      description: `snapshot ${info.id} of ${name}`,
      release: closeIfLast,
    };
  };
  return Object.assign(resolve, {
    list: () => [name, ...device.listSnapshots().map((s) => `${prefix}${s.name ?? s.id}`)],
  });
}
