import { randomUUID } from 'node:crypto';
import { io, readInto } from '../base/index.js';
import type { JournalSnapshotInfo, Snapshot, SnapshotInfo, SnapshotOptions } from '../device.js';
import { BlockDeviceError, wrapIO } from '../errors.js';
import {
  type SnapshotFreeze,
  SnapshotFreezes,
  SnapshotHandle,
  type SnapshotHost,
} from '../snapshot/index.js';
import type { JournalCore } from './journal-core.js';
import { encodeNote, type JournalNote } from './journal-notes.js';
import {
  deleteOrphan,
  isSnapshotCapable,
  type JournalSnapshot,
  type SnapshotCapableDevice,
  type SnapshotRegistry,
} from './journal-snapshot-registry.js';

/**
 * The snapshot side of a journal device (seed 000, claim 52): taking, listing,
 * deleting and restoring snapshots, and serving their handles' I/O —
 * through the journal while a snapshot is pending, through its production
 * snapshot once a checkpoint has materialized it.
 */
export class JournalSnapshots {
  readonly #core: JournalCore;
  readonly #registry: SnapshotRegistry;
  readonly #size: number;
  readonly #handles = new Set<SnapshotHandle>();
  /** A snapshot handle wrote to production since the last flush. */
  #productionDirty = false;
  /**
   * Ids whose `deleteSnapshot()` was called: operations and handle I/O
   * called from then on see them gone (`ENOENT`), as on the COW devices.
   */
  readonly #deleting = new Set<string>();
  /** Writable snapshots an export holds still, by key. */
  readonly #freezes = new SnapshotFreezes();
  /** Handle reads and writes in flight, by snapshot key: a delete or restore called after them waits for them. */
  readonly #handleIO = new Map<number, Set<Promise<unknown>>>();
  readonly #host: SnapshotHost = {
    readSnapshot: (key, offset, length) => this.#track(key, this.#read(key, offset, length)),
    readSnapshotInto: (key, offset, target) =>
      this.#track(key, this.#read(key, offset, target.length, target)),
    // Behind a restore called before it, like a write to the device: a
    // restore of this clone holds only the writes called before it.
    writeSnapshot: (key, offset, data) => {
      const dead = this.#checkLive(key);
      if (dead !== undefined) return Promise.reject(dead);
      // Checked at the call: call order decides what an export carries.
      if (this.#freezes.isFrozen(key)) return Promise.reject(frozenError(offset, data.length));
      const write = this.#core.afterBarrier(() => this.#write(key, offset, data));
      return this.#track(key, write);
    },
    flushSnapshots: () => this.flushProduction(),
    releaseHandle: (handle) => this.#handles.delete(handle),
  };

  constructor(core: JournalCore, size: number) {
    this.#core = core;
    this.#registry = core.registry;
    this.#size = size;
  }

  /** Production, if it can take snapshots. @throws `EINVAL` otherwise, saying why. */
  production(): SnapshotCapableDevice {
    const production = this.#core.production;
    if (!isSnapshotCapable(production)) {
      throw new BlockDeviceError(
        'EINVAL',
        'the production device cannot take snapshots, which journal snapshots are materialized into: ' +
          'wrap it in a CowSnapshotDevice',
      );
    }
    return production;
  }

  /**
   * The live snapshot `id`, as operations called now must see it.
   * @throws `ENOENT` for an unknown id, or one whose delete was called.
   */
  live(id: string): JournalSnapshot {
    const snap = this.#registry.get(id);
    if (this.#deleting.has(id)) throw deletedError(id);
    return snap;
  }

  /** Holds snapshot `id` still for an export (see SNAPSHOT_FREEZE in src/snapshot). @throws `ENOENT`. */
  freeze(id: string): SnapshotFreeze {
    const key = this.live(id).key;
    // Handle I/O is tracked already (#handleIO): the freeze waits on that.
    return this.#freezes.freeze(key, this.#settled(key));
  }

  /** Checks that one more snapshot may be taken. @throws `EINVAL`, `ENOSPC`. */
  checkRoom(): void {
    this.production();
    if (this.#registry.count >= this.#registry.maxSnapshots) {
      throw new BlockDeviceError(
        'ENOSPC',
        `already ${this.#registry.maxSnapshots} snapshots (maxSnapshots)`,
      );
    }
  }

  /**
   * Appends a snapshot marker now (after a running restore), in call order;
   * resolves with its info and a handle once the marker is durable.
   */
  take(options: SnapshotOptions, createdAt: number): Promise<[JournalSnapshotInfo, Snapshot]> {
    const core = this.#core;
    const note: JournalNote = {
      kind: 'snapshot',
      id: randomUUID(),
      name: options.name,
      createdAt,
      writable: options.writable ?? false,
    };
    this.#registry.reserved++;
    const landed = core.afterBarrier(() => core.writer.appendNote(note, createdAt));
    return (async () => {
      try {
        await landed;
      } catch (err) {
        this.#registry.reserved--;
        throw err;
      }
      await core.writer.syncAttested();
      const snap = this.#registry.get(note.id);
      return [this.#registry.info(snap, this.#productionInfos()), this.open(note.id)];
    })();
  }

  /** Every live snapshot, oldest first. */
  list(): JournalSnapshotInfo[] {
    const production = this.#productionInfos();
    return this.#registry.all().map((snap) => this.#registry.info(snap, production));
  }

  /** A new handle on snapshot `id`. @throws `ENOENT`. */
  open(id: string): Snapshot {
    const snap = this.live(id);
    const { key, name, createdAt, writable } = snap;
    const handle = new SnapshotHandle(
      this.#host,
      { seq: key, id, name, createdAt, writable },
      this.#size,
      this.#core.blockSize,
    );
    this.#handles.add(handle);
    return handle;
  }

  /**
   * Appends a delete record now (after a running restore), makes it durable
   * — for a pending snapshot that is the deletion — then, for a
   * materialized one, deletes it from the catalog and then from production.
   */
  delete(id: string): Promise<void> {
    const core = this.#core;
    let key: number;
    try {
      key = this.live(id).key;
    } catch (err) {
      return Promise.reject(err);
    }
    this.#deleting.add(id);
    // Handle I/O called before the delete completes first (its record would
    // make them fail once it landed); what is called after is refused.
    const before = this.#settled(key);
    const note: JournalNote = { kind: 'delete', id };
    // The record keeps its place in call order (sequence numbers are what
    // point-in-time views count) while that I/O finishes.
    const landed = core.afterBarrier(() => {
      const { entry, landed } = core.writer.reserveNote(note, Date.now());
      void before.then(() => core.writer.fill(entry, encodeNote(note)));
      return landed;
    });
    return (async () => {
      try {
        await landed;
      } catch (err) {
        // No delete record: the snapshot stays, and a delete may be retried.
        this.#deleting.delete(id);
        throw err;
      }
      // The record landed: the delete has happened even if the flush that
      // makes it durable fails (docs/ARCHITECTURE.md, "After an I/O
      // error"), so a materialized snapshot still leaves the catalog and
      // production; then that failure is reported.
      const unsynced = await core.writer.syncAttested().then(
        () => undefined,
        (err: unknown) => ({ err }),
      );
      await core.admin.runExclusive(async () => {
        const production = this.production();
        const snap = this.#registry.find(id);
        if (snap === undefined || snap.productionId === undefined) {
          // Pending: its delete record did it. A checkpoint that a power cut
          // interrupted may have taken its production snapshot.
          await deleteOrphan(production, id);
          return;
        }
        // Catalog first: a power cut before production's delete leaves a
        // snapshot `open` finds by name and deletes.
        await this.#registry.forget(snap);
        await core.bumpSuperblock({});
        await io('production delete snapshot', production.deleteSnapshot(snap.productionId));
      });
      // Gone from the registry, which now answers ENOENT itself.
      this.#deleting.delete(id);
      if (unsynced !== undefined) throw unsynced.err;
    })();
  }

  /**
   * Appends a restore record now, holds writes and notes called after it,
   * checkpoints through it (materializing every snapshot before it), then
   * restores production from the snapshot's production snapshot with reads
   * held, so none sees it half done.
   */
  restore(id: string): Promise<void> {
    const core = this.#core;
    let production: SnapshotCapableDevice;
    let before: Promise<void>;
    try {
      production = this.production();
      // Writes through the snapshot's handles called before this are in it.
      before = this.#settled(this.live(id).key);
    } catch (err) {
      return Promise.reject(err);
    }
    const note: JournalNote = { kind: 'restore', id };
    const landed = core.afterBarrier(() => core.writer.appendNote(note, Date.now()));
    const lift = core.raiseBarrier();
    return (async () => {
      try {
        await landed;
        await before;
        // Nothing else lands before the barrier lifts: this is the restore record.
        const through = core.writer.writtenSeq;
        await core.admin.runExclusive(async () => {
          while (core.superblock.headSeq <= through) await core.checkpointLocked();
          const { productionId } = this.#registry.get(id);
          const release = await core.readGate.exclusive();
          try {
            await io('production restore', production.restore(productionId!));
          } catch (err) {
            // Production may be half restored, and its open may finish the
            // restore (a COW device's fail-stop): a write acknowledged now
            // would be replayed over a restore that reads here did not show.
            // So the journal refuses writes and notes until reopened too
            // (docs/ARCHITECTURE.md, "After an I/O error").
            if (BlockDeviceError.is(err, 'EIO')) core.writer.stop(err);
            throw err;
          } finally {
            release();
          }
        });
      } finally {
        lift();
      }
    })();
  }

  /** Makes writes through snapshot handles durable: they went to production's snapshots. */
  async flushProduction(): Promise<void> {
    this.#productionDirty = false;
    await io('production flush', this.#core.production.flush());
  }

  /** Flushes production if a snapshot handle wrote to it since the last flush. */
  async flushIfDirty(): Promise<void> {
    if (this.#productionDirty) await this.flushProduction();
  }

  /** Closes every handle and every production snapshot handle (the device is closing). */
  async close(): Promise<void> {
    await Promise.all([...this.#handles].map((handle) => handle.close()));
    await this.#registry.closeAll();
  }

  #productionInfos(): SnapshotInfo[] {
    const production = this.#core.production;
    return isSnapshotCapable(production) ? production.listSnapshots() : [];
  }

  /** Tracks a handle's `op` on snapshot `key` until it settles. */
  #track<T>(key: number, op: Promise<T>): Promise<T> {
    let ops = this.#handleIO.get(key);
    if (ops === undefined) {
      ops = new Set();
      this.#handleIO.set(key, ops);
    }
    const tracked = op.finally(() => {
      ops.delete(tracked);
      if (ops.size === 0 && this.#handleIO.get(key) === ops) this.#handleIO.delete(key);
    });
    ops.add(tracked);
    return tracked;
  }

  /** Resolves once the handle I/O on `key` in flight now has settled (not what starts later). */
  async #settled(key: number): Promise<void> {
    await Promise.allSettled([...(this.#handleIO.get(key) ?? [])]);
  }

  /** `ENOENT` if the snapshot a handle with `key` shows is deleted or being deleted. */
  #checkLive(key: number): BlockDeviceError | undefined {
    try {
      const snap = this.#registry.byKey(key);
      return this.#deleting.has(snap.id) ? deletedError(snap.id) : undefined;
    } catch (err) {
      return err as BlockDeviceError;
    }
  }

  /**
   * Serves a handle's read: through the journal while pending, from
   * production's snapshot after. With `into` (a handle's `readInto`), the
   * bytes go into it: straight from production's snapshot handle, copied
   * from a read through the journal.
   */
  async #read(key: number, offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    const core = this.#core;
    const dead = this.#checkLive(key);
    if (dead !== undefined) throw dead;
    for (;;) {
      const snap = this.#registry.byKey(key);
      if (snap.productionId !== undefined) {
        const handle = await this.#registry.productionHandle(snap, this.production());
        const read =
          into === undefined ? handle.read(offset, length) : readInto(handle, offset, into);
        return read.catch((err: unknown) => {
          throw snap.deleted ? deletedError(snap.id) : snapshotError(snap.id, 'read', err);
        });
      }
      // A checkpoint has begun materializing it: read once that is done.
      const retired = (seq: number) => snap.deleted || seq <= core.snapshotsRetiredBelow;
      const data = retired(snap.sequence)
        ? undefined
        : await core.readPoint(snap, offset, length, retired);
      if (data !== undefined) {
        if (into === undefined) return data;
        into.set(data);
        return into;
      }
      try {
        await core.startCheckpoint();
      } catch (err) {
        // A failed checkpoint gives the snapshots it did not materialize
        // back to the journal (JournalCore.checkpointLocked): read it there.
        if (snap.productionId === undefined && retired(snap.sequence)) throw err;
      }
    }
  }

  /** Serves a writable handle's write: materializes the snapshot first if pending. */
  async #write(key: number, offset: number, data: Uint8Array): Promise<void> {
    for (;;) {
      const snap = this.#registry.byKey(key);
      if (snap.productionId === undefined) {
        await this.#core.startCheckpoint();
        continue;
      }
      const handle = await this.#registry.productionHandle(snap, this.production());
      this.#productionDirty = true;
      return handle.write(offset, data).catch((err: unknown) => {
        throw snap.deleted ? deletedError(snap.id) : snapshotError(snap.id, 'write', err);
      });
    }
  }
}

/**
 * What a materialized snapshot's failure in production becomes: damage
 * stays `ECORRUPT` (production's snapshot is this snapshot's content, so its
 * damage is this snapshot's, and a caller must not take it for a failing
 * device); anything else is `EIO`. Both keep production's error as `cause`.
 */
function snapshotError(id: string, op: 'read' | 'write', err: unknown): BlockDeviceError {
  if (!BlockDeviceError.is(err, 'ECORRUPT')) return wrapIO(`snapshot ${op}`, err);
  return new BlockDeviceError('ECORRUPT', `snapshot ${id} ${op}: ${err.message}`, { cause: err });
}

function deletedError(id: string): BlockDeviceError {
  return new BlockDeviceError('ENOENT', `snapshot ${id} was deleted`);
}

function frozenError(offset: number, length: number): BlockDeviceError {
  return new BlockDeviceError(
    'EBUSY',
    `write of ${length} bytes at ${offset}: the snapshot is being exported, and takes no writes until the export ends`,
  );
}
