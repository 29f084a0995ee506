/**
 * A block device: a fixed-size array of bytes read and written asynchronously.
 *
 * Every blocksnap device implements this, and every blocksnap layer accepts any
 * object that does — a user's own device included.
 */
export interface BlockDevice extends AsyncDisposable {
  /** Size in bytes; a multiple of {@link BlockDevice.blockSize}. */
  readonly size: number;
  /** The natural I/O unit in bytes: a power of two from 512 to 1 MiB. */
  readonly blockSize: number;
  /** Whether writes fail with `EROFS`. */
  readonly readOnly: boolean;
  /**
   * Reads `length` bytes at `offset`. Any range inside `[0, size)` is valid.
   *
   * Resolves with a fresh buffer the caller owns: a Uint8Array over an
   * ArrayBuffer of its own, exactly `length` bytes at `byteOffset` 0 — never
   * a view into memory the device or another caller uses. The caller may
   * keep it, change it, or transfer its buffer (to a worker, with
   * `postMessage` or `structuredClone`) without changing anything else, and a
   * kept result holds no more memory than its own bytes. A layer may return
   * the result of a device below it as is: that device owes the same.
   * @throws `ERANGE`, `ECLOSED`, `EIO`.
   */
  read(offset: number, length: number): Promise<Uint8Array>;
  /**
   * Reads `target.length` bytes at `offset` into `target`, the caller's
   * buffer, and resolves with `target` itself: what `read` returns, without
   * a fresh buffer per read. Optional: a device may leave it out, and a
   * caller over any device uses the `readInto(device, offset, target)`
   * function, which falls back to `read` and a copy.
   *
   * `target` is any Uint8Array (a Buffer, or a `subarray` view into a
   * larger buffer: only its own bytes are written). While the promise is
   * pending the device writes into it, and the caller must not read,
   * change or transfer it; once it resolves, `target` holds the bytes at
   * `offset`. Checks and errors are `read`'s, made before any byte of
   * `target` is touched: a bad range (`ERANGE`), a `target` that is not a
   * Uint8Array (`EINVAL`) or a closed device (`ECLOSED`) reject with
   * `target` unchanged. After a failure below (`EIO`, `ECORRUPT`,
   * `EEXCLUDED`…) what `target` holds is undefined.
   * @throws `ERANGE`, `EINVAL`, `ECLOSED`, `EIO`.
   */
  readInto?(offset: number, target: Uint8Array): Promise<Uint8Array>;
  /**
   * Writes `data` at `offset`. The device takes what it needs of `data` —
   * a copy, or the bytes handed to the device below, which owes the same —
   * before `write` returns, and never hands `data` to anyone: the caller may
   * reuse, change or transfer `data` as soon as the promise is created.
   * Acknowledged writes are durable after the next `flush()`.
   * @throws `ERANGE`, `EINVAL`, `EROFS`, `ECLOSED`, `ENOSPC`, `EIO`.
   */
  write(offset: number, data: Uint8Array): Promise<void>;
  /** Makes every write acknowledged before this call durable. */
  flush(): Promise<void>;
  /** Waits for in-flight I/O, flushes, releases resources. Idempotent. */
  close(): Promise<void>;
}

/** Options for taking a snapshot. */
export interface SnapshotOptions {
  /** A human-readable name (at most 255 UTF-8 bytes). @default undefined */
  name?: string | undefined;
  /** Whether the snapshot accepts writes of its own (a clone). @default false */
  writable?: boolean | undefined;
}

/** What a device knows about one of its snapshots. */
export interface SnapshotInfo {
  /** Stable identifier, unique per device. */
  readonly id: string;
  /** The name given at creation, if any. */
  readonly name: string | undefined;
  /** When `snapshot()` was called. */
  readonly createdAt: Date;
  /** Whether the snapshot accepts writes. */
  readonly writable: boolean;
  /** Bytes of store space held by this snapshot alone (its own writes). */
  readonly privateBytes: number;
}

/** A point-in-time image of a device, itself a block device. */
export interface Snapshot extends BlockDevice {
  /** Same as {@link SnapshotInfo.id}. */
  readonly id: string;
  /** Same as {@link SnapshotInfo.name}. */
  readonly name: string | undefined;
  /** Same as {@link SnapshotInfo.createdAt}. */
  readonly createdAt: Date;
}

/** The snapshot operations every snapshot-capable device offers (the snapshot rules 1–5). */
export interface SnapshotCapable {
  /** Takes a point-in-time snapshot; a durability point. */
  snapshot(options?: SnapshotOptions): Promise<Snapshot>;
  /** The live snapshots, oldest first. */
  listSnapshots(): SnapshotInfo[];
  /** Opens a handle on an existing snapshot. @throws `ENOENT`. */
  openSnapshot(id: string): Promise<Snapshot>;
  /** Deletes a snapshot and frees what no other needs; a durability point. @throws `ENOENT`. */
  deleteSnapshot(id: string): Promise<void>;
  /** Makes the device's content equal the snapshot's; a durability point. @throws `ENOENT`. */
  restore(id: string): Promise<void>;
}

/** A byte range of a device: `[offset, offset + length)`. */
export interface Extent {
  /** First byte. */
  readonly offset: number;
  /** Bytes in the range; always more than 0. */
  readonly length: number;
}

/**
 * A snapshot-capable device that knows, from its own change tables, which
 * blocks differ between two of its points: what incremental backup
 * (`exportStream` with `from`) is built on.
 */
export interface ChangeTracking extends SnapshotCapable {
  /** Size in bytes. */
  readonly size: number;
  /** Block size in bytes: extents are whole blocks. */
  readonly blockSize: number;
  /**
   * The coalesced byte extents, ascending, whose content may differ between
   * snapshot `fromId` and snapshot `toId` (or the live device, `'live'`):
   * read from the change tables, never by reading or comparing data, so it
   * costs memory lookups only. Exact at block granularity: a block written
   * back with its old bytes still counts. Stays exact across reopen and power
   * cuts. Where a snapshot holds only some ranges (a selective snapshot), the
   * extents lie within what `toId` holds (for `'live'`, what `fromId` holds),
   * and a block `toId` holds that `fromId` does not counts as changed.
   * @throws `ENOENT` for an unknown id, `ECLOSED`.
   */
  changedExtents(fromId: string, toId: string | 'live'): Extent[];
  /**
   * The byte extents snapshot `id` holds, coalesced and ascending: the whole
   * device for a full snapshot, its designated ranges for a selective one.
   * @throws `ENOENT` for an unknown id, `ECLOSED`.
   */
  snapshotExtents(id: string): Extent[];
}

/** Payload of the `preserve` event: a block copied to the store before its first overwrite. */
export interface PreserveEvent {
  /** Index of the block on the origin (offset / blockSize). */
  readonly block: number;
  /** Store chunk that now holds the old content. */
  readonly chunk: number;
}

/** Payload of the `progress` event of a long operation, and of the streams' `onProgress`. */
export interface ProgressEvent {
  /**
   * Which operation: e.g. `'restore'`, `'checkpoint'`, `'replay'` (units as
   * the emitter documents them), `'export'` or `'apply'` (`exportStream`'s
   * and `applyStream`'s `onProgress`, in bytes of the device the stream covers).
   */
  readonly operation: string;
  /** Units done so far. */
  readonly done: number;
  /** Units in all. */
  readonly total: number;
}

/** The typed events of snapshot-capable devices. */
export type BlockDeviceEvents = {
  /** A snapshot was taken. */
  snapshot: (info: SnapshotInfo) => void;
  /** A snapshot was deleted. */
  'snapshot-deleted': (id: string) => void;
  /** A block was preserved before its first overwrite. */
  preserve: (event: PreserveEvent) => void;
  /** A long operation advanced. */
  progress: (event: ProgressEvent) => void;
  /** A background failure no caller could receive. */
  error: (err: Error) => void;
};

/** Payload of the `checkpoint` event: a checkpoint applied the journal to production. */
export interface CheckpointEvent {
  /** The last sequence number applied; `pointInTime` accepts this and later ones. */
  readonly sequence: number;
  /** Journal records applied. */
  readonly records: number;
  /** Distinct blocks written to production (each once, newest content). */
  readonly blocks: number;
  /** Bytes written to production. */
  readonly bytes: number;
  /** Journal bytes freed for reuse. */
  readonly freedBytes: number;
  /** Snapshots materialized: taken on the production device at their markers. */
  readonly snapshots: number;
}

/** What a journal device knows about one of its snapshots. */
export interface JournalSnapshotInfo extends SnapshotInfo {
  /** Sequence number of its marker: the snapshot holds every record before it. */
  readonly sequence: number;
  /**
   * Whether a checkpoint has taken it on the production device yet (until
   * then it reads through the journal).
   */
  readonly materialized: boolean;
}

/** The typed events of a journal device. */
export type JournalDeviceEvents = {
  /** A snapshot was taken (its marker is durable in the journal). */
  snapshot: (info: JournalSnapshotInfo) => void;
  /** A snapshot was deleted. */
  'snapshot-deleted': (id: string) => void;
  /** A checkpoint finished: the journal up to `sequence` is in production. */
  checkpoint: (event: CheckpointEvent) => void;
  /** A long operation (`'checkpoint'`, `'restore'`) advanced; `done`/`total` count blocks. */
  progress: (event: ProgressEvent) => void;
  /**
   * A background failure no caller could receive: an automatic checkpoint
   * failed, or the empty frame that attests flushed records did (the journal
   * then refuses writes until reopened).
   */
  error: (err: Error) => void;
};

/** A read-only view of a journal device as it was right after one journal record. */
export interface PointInTime extends BlockDevice {
  /** The last record the view includes (0: none, the production device as formatted). */
  readonly sequence: number;
  /** When that record's write was called (for a checkpointed point: the last applied record's). */
  readonly time: Date;
}

/** Options of a persistent device's `check()`. */
export interface CheckOptions {
  /**
   * Whether to read and verify the data the metadata names (COW chunks'
   * CRC-32s), not only the metadata; the data is most of the store, so
   * `false` makes a quick metadata-only check. @default true
   */
  readonly verifyData?: boolean | undefined;
  /**
   * Called as the check walks the store, with `{ operation: 'check', done,
   * total }` in bytes of store walked (docs/ARCHITECTURE.md, "check()").
   *
   * Guarantees: `total` never changes once given and `done` never decreases
   * nor passes it; the last call always comes, with `done === total`, once
   * the walk is over (before the promise settles). `total` is the bytes the
   * check walks: a COW device's equals the report's `checked.bytes`; a
   * journal's is its superblocks and catalog plus the ring span from the
   * head to the last landed frame, which is `checked.bytes` unless the walk
   * went over damaged frames, frames a checkpoint freed meanwhile, or the
   * unused end of the ring a frame wrapped past (those are walked over, not
   * verified); a VirtualVolume's is the sum of its volume store's and its
   * partitions' `checked.bytes`. How often it is called is the
   * device's: a COW device after its metadata and after each chunk read
   * (at most 1 MiB), a journal at least every MiB of ring, a VirtualVolume
   * once each partition's check and the volume store's are done. Called
   * synchronously from the walk: a callback that throws ends the check, whose
   * promise rejects with what it threw once the reads in flight settled (a
   * check writes nothing, so nothing is left half done). @default undefined
   */
  readonly onProgress?: ((event: ProgressEvent) => void) | undefined;
}

/**
 * Which on-store structure a {@link CheckProblem} is in (docs/ARCHITECTURE.md,
 * "On-disk formats", describes each): a superblock slot, the COW checkpoint
 * table, a COW log frame (header or entries), a COW chunk (a preserved block
 * or a writable snapshot's own block), the COW free-space accounting (a chunk
 * named twice, past the store, or named and free), a journal frame header, a
 * journal write record's data, a journal note (snapshot, delete, restore), the
 * journal's snapshot catalog, or a copy job's map slot.
 */
export type CheckStructure =
  | 'superblock'
  | 'table'
  | 'log-frame'
  | 'chunk'
  | 'free-space'
  | 'journal-frame'
  | 'journal-record'
  | 'journal-note'
  | 'catalog'
  | 'copy-map';

/** One thing `check()` found wrong on a store. */
export interface CheckProblem {
  /** The structure that is damaged or inconsistent. */
  readonly structure: CheckStructure;
  /** Store offset of the structure (its first byte; for a chunk, the chunk's). */
  readonly offset: number;
  /** What is wrong, naming the structure and what it holds. */
  readonly message: string;
}

/** How much `check()` walked: every count is of structures whose checksum it verified. */
export interface CheckCounts {
  /** Superblock slots (or copy-map slots) read. */
  readonly superblocks: number;
  /** Checkpoint tables and snapshot catalogs read. */
  readonly tables: number;
  /** Log or journal frames read. */
  readonly frames: number;
  /** Metadata entries (COW) or journal records decoded. */
  readonly records: number;
  /** COW store chunks whose data was read and checked against its CRC-32. */
  readonly chunks: number;
  /** Bytes read from the store in all. */
  readonly bytes: number;
}

/** What a store still serves despite the problems `check()` found. */
export interface CheckReadable {
  /**
   * Whether `open` would read the store's metadata back as it is: false when
   * the superblock in use, the table, a log frame or journal record the
   * device holds, or every copy-map slot is damaged.
   */
  readonly reopens: boolean;
  /**
   * Byte extents of the live device whose stored content is damaged (a read
   * there fails `ECORRUPT`), ascending; empty when all of it reads back. A
   * COW device's live content is its origin, which holds no checksums, so
   * this is empty for it.
   */
  readonly live: Extent[];
  /**
   * Every live snapshot with the byte extents of it whose stored content is
   * damaged, ascending; a snapshot with none reads back in full.
   */
  readonly snapshots: { readonly id: string; readonly damaged: Extent[] }[];
}

/**
 * What `check()` found: like `qemu-img check` or `zpool scrub`, a walk of
 * every structure a store holds with every checksum verified, read-only.
 */
export interface CheckReport {
  /** How much was walked. */
  readonly checked: CheckCounts;
  /** Everything found damaged or inconsistent, in store order per structure; empty: none. */
  readonly problems: CheckProblem[];
  /** What is still readable. */
  readonly readable: CheckReadable;
  /**
   * Structures that the live device freed and reused while the check ran
   * (their content changed for a reason other than damage), so they were not
   * judged.
   */
  readonly skipped: number;
}
