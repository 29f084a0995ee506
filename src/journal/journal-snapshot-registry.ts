import { io } from '../base/index.js';
import type {
  BlockDevice,
  JournalSnapshotInfo,
  Snapshot,
  SnapshotCapable,
  SnapshotInfo,
} from '../device.js';
import { BlockDeviceError, wrapIO } from '../errors.js';
import { type CatalogEntry, checkCatalogEntry } from './journal-catalog.js';
import type { JournalNote } from './journal-notes.js';
import type { ChangesTable } from './journal-table.js';

/** A production device that can take snapshots (the snapshot API of docs/ARCHITECTURE.md). */
export type SnapshotCapableDevice = BlockDevice & SnapshotCapable;

/** Whether `device` offers the snapshot API a journal device materializes into. */
export function isSnapshotCapable(device: BlockDevice): device is SnapshotCapableDevice {
  const d = device as unknown as Record<string, unknown>;
  return ['snapshot', 'listSnapshots', 'openSnapshot', 'deleteSnapshot', 'restore'].every(
    (m) => typeof d[m] === 'function',
  );
}

/** The name a journal snapshot's production snapshot gets, so a cut short checkpoint finds it again. */
export function productionName(id: string): string {
  return `journal:${id}`;
}

/** One snapshot of a journal device, pending (a marker in the journal) or materialized. */
export interface JournalSnapshot {
  /** Local key its handles use. */
  readonly key: number;
  readonly id: string;
  readonly name: string | undefined;
  readonly createdAt: number;
  readonly writable: boolean;
  /** Sequence number of its marker. */
  readonly sequence: number;
  /** Its production snapshot's id, once materialized. */
  productionId: string | undefined;
  /** A handle on the production snapshot, opened on first use. */
  production: Promise<Snapshot> | undefined;
  deleted: boolean;
  /** For reads while pending: the changes table as of its marker, and the checkpoint generation it was built in. */
  table: ChangesTable | undefined;
  generation: number;
}

/**
 * Every live snapshot of a journal device, oldest first: those the catalog
 * holds (materialized) and those whose markers are still in the journal
 * (pending). Notes change it in sequence order, the same way when they land
 * and when `open` replays them, so the two always agree.
 */
export class SnapshotRegistry {
  readonly maxSnapshots: number;
  readonly #byId = new Map<string, JournalSnapshot>();
  readonly #byKey = new Map<number, JournalSnapshot>();
  #nextKey = 1;
  /** `snapshot()` calls whose markers have not landed yet: they count against `maxSnapshots`. */
  reserved = 0;
  /** Counts the materializations and deletions that changed the catalog. */
  #catalogVersion = 0;
  /** The {@link catalogVersion} the durable superblock's catalog holds. */
  #durableCatalogVersion = 0;

  constructor(maxSnapshots: number, catalog: readonly CatalogEntry[]) {
    this.maxSnapshots = maxSnapshots;
    for (const e of catalog)
      this.#add(e.id, e.name, e.createdAt, e.writable, e.sequence, e.productionId);
  }

  /** The catalog changed since the durable superblock's catalog was written. */
  get catalogDirty(): boolean {
    return this.#catalogVersion !== this.#durableCatalogVersion;
  }

  /** Which change of the catalog {@link catalog} shows now: read it together with the catalog. */
  get catalogVersion(): number {
    return this.#catalogVersion;
  }

  /**
   * A superblock naming the catalog as of `version` is now durable. Only
   * then is the catalog clean, and only up to `version`: a write that failed
   * leaves it dirty for the next one to retry, and a change made while that
   * superblock was being written keeps it dirty.
   */
  catalogDurable(version: number): void {
    this.#durableCatalogVersion = version;
  }

  /** Live snapshots, and markers on their way. */
  get count(): number {
    return this.#byId.size + this.reserved;
  }

  /** A note landed (or was replayed) as record `seq`. */
  noteLanded(seq: number, note: JournalNote): void {
    if (note.kind === 'snapshot') {
      this.#add(note.id, note.name, note.createdAt, note.writable, seq, undefined);
    } else if (note.kind === 'delete') {
      // A delete note removes a pending snapshot. One whose marker a
      // checkpoint already took is deleted through the catalog instead.
      const snap = this.#byId.get(note.id);
      if (snap !== undefined && snap.productionId === undefined) this.#remove(snap);
    }
  }

  /** The live snapshot `id`. @throws `ENOENT`. */
  get(id: string): JournalSnapshot {
    const snap = typeof id === 'string' ? this.#byId.get(id) : undefined;
    if (snap === undefined) throw new BlockDeviceError('ENOENT', `no snapshot ${String(id)}`);
    return snap;
  }

  /** The live snapshot a handle with `key` shows. @throws `ENOENT` once deleted. */
  byKey(key: number): JournalSnapshot {
    const snap = this.#byKey.get(key);
    if (snap === undefined) throw new BlockDeviceError('ENOENT', 'the snapshot was deleted');
    return snap;
  }

  /** The live snapshot `id`, if any. */
  find(id: string): JournalSnapshot | undefined {
    return this.#byId.get(id);
  }

  /** Live snapshots, oldest first. */
  all(): JournalSnapshot[] {
    return [...this.#byId.values()].sort((a, b) => a.sequence - b.sequence);
  }

  /** Sequence numbers of pending markers in `from..to`, ascending. */
  markersBetween(from: number, to: number): number[] {
    const out: number[] = [];
    for (const s of this.#byId.values()) {
      if (s.productionId === undefined && s.sequence >= from && s.sequence <= to) {
        out.push(s.sequence);
      }
    }
    return out.sort((a, b) => a - b);
  }

  /** The pending snapshot whose marker is record `seq`, if it is still live. */
  pendingAt(seq: number): JournalSnapshot | undefined {
    for (const s of this.#byId.values()) {
      if (s.sequence === seq && s.productionId === undefined) return s;
    }
    return undefined;
  }

  /** Whether a pending snapshot's marker is at or before `seq`. */
  hasPendingThrough(seq: number): boolean {
    for (const s of this.#byId.values()) {
      if (s.productionId === undefined && s.sequence <= seq) return true;
    }
    return false;
  }

  /** The materialized snapshots, as the catalog stores them. */
  catalog(): CatalogEntry[] {
    const out: CatalogEntry[] = [];
    for (const s of this.#byId.values()) {
      if (s.productionId === undefined) continue;
      const { id, name, createdAt, writable, sequence, productionId } = s;
      out.push({ id, name, createdAt, writable, sequence, productionId });
    }
    return out;
  }

  /**
   * Production now holds exactly the records before the marker at `seq`:
   * takes its snapshot's production snapshot — or adopts the one a
   * checkpoint cut short by a power cut already took (found by its name).
   * Does nothing if the snapshot was deleted meanwhile.
   * @throws `EIO` if production fails.
   */
  async materializeAt(seq: number, production: BlockDevice): Promise<void> {
    const snap = this.pendingAt(seq);
    if (snap === undefined) return;
    if (!isSnapshotCapable(production)) {
      throw new BlockDeviceError('EINVAL', 'the production device cannot take snapshots');
    }
    const name = productionName(snap.id);
    let productionId: string | undefined;
    try {
      productionId = production.listSnapshots().find((i) => i.name === name)?.id;
      if (productionId === undefined) {
        const taken = await production.snapshot({ name, writable: snap.writable });
        productionId = taken.id;
        snap.production = Promise.resolve(taken);
      }
    } catch (err) {
      throw wrapIO('production snapshot', err);
    }
    checkCatalogEntry({ ...snap, productionId });
    snap.productionId = productionId;
    snap.table = undefined;
    this.#catalogVersion++;
  }

  /** The handle on `snap`'s production snapshot (materialized), opened once. */
  productionHandle(snap: JournalSnapshot, production: SnapshotCapableDevice): Promise<Snapshot> {
    if (snap.production === undefined) {
      const opening = production.openSnapshot(snap.productionId!);
      snap.production = opening;
      // A failed open is retried by the next caller.
      opening.catch(() => {
        if (snap.production === opening) snap.production = undefined;
      });
    }
    return snap.production;
  }

  /** Forgets `snap` (deleted); closes its production handle. */
  async forget(snap: JournalSnapshot): Promise<void> {
    if (snap.productionId !== undefined) this.#catalogVersion++;
    this.#remove(snap);
    await closeHandle(snap);
  }

  /** Closes every production handle (the device is closing). */
  async closeAll(): Promise<void> {
    await Promise.all([...this.#byId.values()].map(closeHandle));
  }

  /** What listSnapshots shows for `snap`. */
  info(snap: JournalSnapshot, production: readonly SnapshotInfo[]): JournalSnapshotInfo {
    const own = production.find((i) => i.id === snap.productionId);
    return {
      id: snap.id,
      name: snap.name,
      createdAt: new Date(snap.createdAt),
      writable: snap.writable,
      privateBytes: own?.privateBytes ?? 0,
      sequence: snap.sequence,
      materialized: snap.productionId !== undefined,
    };
  }

  #add(
    id: string,
    name: string | undefined,
    createdAt: number,
    writable: boolean,
    sequence: number,
    productionId: string | undefined,
  ): void {
    const snap: JournalSnapshot = {
      key: this.#nextKey++,
      id,
      name,
      createdAt,
      writable,
      sequence,
      productionId,
      production: undefined,
      deleted: false,
      table: undefined,
      generation: -1,
    };
    this.#byId.set(id, snap);
    this.#byKey.set(snap.key, snap);
  }

  #remove(snap: JournalSnapshot): void {
    snap.deleted = true;
    snap.table = undefined;
    this.#byId.delete(snap.id);
    this.#byKey.delete(snap.key);
  }
}

async function closeHandle(snap: JournalSnapshot): Promise<void> {
  const handle = snap.production;
  snap.production = undefined;
  if (handle === undefined) return;
  let opened: Snapshot;
  try {
    opened = await handle;
  } catch {
    // An open that failed has nothing to close (its caller saw the failure).
    return;
  }
  // A writable handle's close flushes the COW store: its failure is the
  // caller's to see, or a lost flush would pass for a clean close.
  await io('close production snapshot', opened.close());
}

/**
 * Checks the catalog against production's snapshots at open, and deletes a
 * production snapshot taken for a journal snapshot that no longer exists
 * (a deletion cut short by a power cut). One taken for a pending snapshot
 * is kept: the next checkpoint adopts it.
 * @throws `EINVAL` if materialized snapshots exist and production cannot take
 *   snapshots; `ECORRUPT` if production lacks one of them.
 */
export async function reconcileSnapshots(
  registry: SnapshotRegistry,
  production: BlockDevice,
  repair = false,
): Promise<JournalRepair[]> {
  const repairs: JournalRepair[] = [];
  const catalog = registry.catalog();
  if (!isSnapshotCapable(production)) {
    if (catalog.length > 0) {
      throw new BlockDeviceError(
        'EINVAL',
        `the journal holds ${catalog.length} materialized snapshot(s), but the production device cannot take snapshots`,
      );
    }
    return repairs;
  }
  const infos = production.listSnapshots();
  for (const e of catalog) {
    if (infos.some((i) => i.id === e.productionId)) continue;
    const what = `snapshot ${e.id} was materialized as production snapshot ${e.productionId}, which production no longer has`;
    if (!repair) {
      throw new BlockDeviceError(
        'ECORRUPT',
        `${what}: open with { repair: true } to drop it from the journal (its content is gone)`,
      );
    }
    // Its content lived only in that production snapshot: nothing can
    // bring it back, so the repair drops it rather than invent any.
    await registry.forget(registry.find(e.id)!);
    repairs.push({ snapshot: e.id, name: e.name, what: `dropped: ${what}` });
  }
  for (const info of infos) {
    const id = info.name?.startsWith('journal:') ? info.name.slice('journal:'.length) : undefined;
    if (id === undefined) continue;
    const snap = registry.find(id);
    if (snap === undefined || (snap.productionId !== undefined && snap.productionId !== info.id)) {
      await deleteProductionSnapshot(production, info.id);
    }
  }
  return repairs;
}

/** What a repairing `JournalDevice.open` changed. */
export interface JournalRepair {
  /** The journal snapshot it concerns. */
  snapshot: string;
  name: string | undefined;
  /** What was wrong and what the repair did. */
  what: string;
}

/** Deletes the production snapshot taken for journal snapshot `id`, if there is one. */
export async function deleteOrphan(production: SnapshotCapableDevice, id: string): Promise<void> {
  const name = productionName(id);
  const orphan = production.listSnapshots().find((i) => i.name === name);
  if (orphan !== undefined) await deleteProductionSnapshot(production, orphan.id);
}

async function deleteProductionSnapshot(
  production: SnapshotCapableDevice,
  id: string,
): Promise<void> {
  try {
    await production.deleteSnapshot(id);
  } catch (err) {
    throw wrapIO('production delete snapshot', err);
  }
}
