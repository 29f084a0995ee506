import { immediateWriter, io, ownedWriter, SECTOR } from '../base/index.js';
import { checksum } from '../checksum/index.js';
import type { BlockDevice } from '../device.js';
import { BlockDeviceError, wrapIO } from '../errors.js';
import {
  alignUp,
  logOffset,
  readSuperblock,
  SUPERBLOCK_SLOT,
  type Superblock,
  SuperblockSlots,
  tableOffset,
} from '../store/index.js';
import { CommitGate } from './commit-gate.js';
import { type Pending, resolveAll, takeBatch } from './commit-queue.js';
import {
  type CommitData,
  type CommitWriters,
  writeCommitData,
  writeFrame,
} from './commit-writes.js';
import {
  type EntryCodec,
  encodeFrame,
  encodeTable,
  FRAME_HEADER,
  formatLog,
  type LogLayout,
  type LogPosition,
  MAX_FRAME,
} from './log-format.js';
import { recoverFrames, type VerifyLastFrame } from './log-recovery.js';

/** What `MetadataLog.open` recovered. */
export interface RecoveredLog<E> {
  log: MetadataLog<E>;
  /** The owner's parameters given at format time. */
  params: Uint8Array;
  /** Every durable entry, checkpoint table first, then the log in order. */
  entries: E[];
}

/**
 * Crash-safe metadata on a store device: two superblock slots, two checkpoint
 * tables and an append-only log of checksummed frames, with group commit.
 *
 * Ordering rules, which recovery relies on:
 * - A frame is written only after every earlier frame is durable, so after a
 *   power cut at most the last valid frame can be incomplete; a damaged frame
 *   followed by an intact one is corruption (`ECORRUPT`), not a torn tail.
 * - A checkpoint writes the inactive table, makes it durable, and only then
 *   switches the superblock (alternating slots, highest valid generation
 *   wins) to it and to a new log epoch; until that superblock is durable the
 *   old table and old log are untouched, so a power cut leaves old or new.
 * - Entries are handed to `onDurable` only once durable, in log order — the
 *   same order replay applies them in.
 * - `seal` (at a clean close) writes a superblock that records how many
 *   frames the log holds, after every one of them is durable; such a store
 *   has no torn tail, so `open` reports a last frame that does not verify as
 *   `ECORRUPT` instead of dropping it. The first frame (or checkpoint) after
 *   that open is written only once a superblock without the mark is durable,
 *   so a power cut can tear a frame only where the mark is gone.
 * - `attest` (at a `flush()`) writes a superblock, not flushed, that records
 *   how many frames are durable (`attestedFrames`; each frame was flushed
 *   when committed). Only frames after them can be a torn tail, so damage to
 *   one a flush covered is `ECORRUPT` even without a clean close — unless a
 *   power cut also lost that superblock (docs/ARCHITECTURE.md, "Crash
 *   ordering", gives the window).
 */
export class MetadataLog<E> {
  readonly #store: BlockDevice;
  /** The store's fast paths, for appends' data ({@link writeCommitData}) and small frames. */
  readonly #writers: CommitWriters;
  readonly #codec: EntryCodec<E>;
  readonly #checkpointEntries: () => E[];
  readonly #onDurable: (entries: E[]) => void;
  readonly #slots: SuperblockSlots;
  #tail: number;
  #seq: number;
  #queue: Pending<E>[] = [];
  #pumping: Promise<void> | undefined;
  /** Holds commits while `check()` reads the store ({@link quiesced}). */
  readonly #gate = new CommitGate();
  #failed: BlockDeviceError | undefined;

  private constructor(
    store: BlockDevice,
    codec: EntryCodec<E>,
    sb: Superblock,
    tail: number,
    seq: number,
    checkpointEntries: () => E[],
    onDurable: (entries: E[]) => void,
  ) {
    this.#store = store;
    this.#writers = { owned: ownedWriter(store), immediate: immediateWriter(store) };
    this.#codec = codec;
    this.#slots = new SuperblockSlots(store, sb);
    this.#tail = tail;
    this.#seq = seq;
    this.#checkpointEntries = checkpointEntries;
    this.#onDurable = onDurable;
  }

  /** Bytes at the start of the store the log occupies; the owner's data follows. */
  static reservedBytes(layout: LogLayout): number {
    return 2 * SUPERBLOCK_SLOT + 2 * layout.tableCapacity + layout.logCapacity;
  }

  /**
   * Formats `store`: an initial table holding `initial`, an empty log, and the
   * owner's `params`. Resolves only once the format is durable.
   */
  static async format<E>(
    store: BlockDevice,
    kind: number,
    layout: LogLayout,
    params: Uint8Array,
    codec: EntryCodec<E>,
    initial: E[],
  ): Promise<void> {
    await formatLog(
      store,
      kind,
      layout,
      params,
      encodeTable(codec, initial, layout.tableCapacity),
      initial.length,
    );
  }

  /**
   * Reads the metadata back: the newest valid superblock, its table, then the
   * log up to its torn tail. `verifyLast` is asked about the last intact frame
   * (whose data may not have reached the disk before a power cut) and answers
   * what fails, or `undefined`. After a power cut, a frame that fails is
   * dropped and its header erased, as it was never acknowledged — unless it
   * is known durable: the store was closed cleanly (see {@link seal}), a
   * flush attested it (see {@link attest}), or `verifyLast` gives evidence;
   * then a missing or damaged frame, or one whose data fails, is `ECORRUPT`.
   * @throws `ECORRUPT` naming the damaged structure and its store offset.
   */
  static async open<E>(
    store: BlockDevice,
    kind: number,
    codec: EntryCodec<E>,
    verifyLast: VerifyLastFrame<E>,
    checkpointEntries: () => E[],
    onDurable: (entries: E[]) => void,
  ): Promise<RecoveredLog<E>> {
    const sb = await readSuperblock(store, kind);
    const tableAt = tableOffset(sb, sb.active);
    const table = await io('store read table', store.read(tableAt, sb.tableBytes));
    if (checksum(table) !== sb.tableCrc) {
      throw new BlockDeviceError(
        'ECORRUPT',
        `metadata table ${sb.active} at store offset ${tableAt} fails its checksum`,
      );
    }
    const entries = codec.decode(table, sb.tableCount, `metadata table at ${tableAt}`);

    const { tail, seq } = await recoverFrames(store, sb, codec, verifyLast, entries);
    const log = new MetadataLog(store, codec, sb, tail, seq, checkpointEntries, onDurable);
    return { log, params: sb.params, entries };
  }

  /**
   * Appends entries in one group commit with whatever else is waiting;
   * resolves once they are durable and handed to `onDurable`. `data`, what
   * the entries name on the store, is written by the commit before the
   * frame and made durable by the same flush.
   * @throws `EIO` if writing `data` failed (only this append fails; the log
   *   goes on), or a frame or its flush did (the log then refuses all
   *   appends: reopen to recover); `ENOSPC` if a checkpoint cannot fit.
   */
  append(entries: E[], data?: readonly CommitData[]): Promise<void> {
    if (this.#failed) return Promise.reject(this.#failed);
    return new Promise((resolve, reject) => {
      this.#queue.push({ entries, data, resolve, reject });
      this.#wake();
    });
  }

  /** The failure that made the log refuse appends until reopened: a store write's, or {@link stop}'s. */
  get failed(): BlockDeviceError | undefined {
    return this.#failed;
  }

  /** Makes the log refuse appends with `err` until reopened (the owner's fail-stop). */
  stop(err: BlockDeviceError): void {
    this.#failed ??= err;
  }

  /** Resolves once nothing is queued or in flight. */
  async idle(): Promise<void> {
    while (this.#pumping !== undefined) await this.#pumping;
  }

  /**
   * Marks the store closed cleanly: once everything queued is durable, a new
   * superblock generation records how many frames the log holds. Call it
   * last; an append after it clears the mark first. Writes nothing if the
   * store already carries the mark, or if the log has failed (a frame may
   * have landed torn: the store must stay unmarked).
   */
  async seal(): Promise<void> {
    await this.idle();
    if (this.#failed !== undefined || this.#slots.current.closedFrames === this.#seq) return;
    await this.#slots.update(
      { closedFrames: this.#seq, attestedFrames: undefined },
      'store superblock write',
    );
  }

  /** Flushes the store once every queued append is durable, then {@link attest}s. @throws `EIO`. */
  async flush(): Promise<void> {
    await this.idle();
    await this.#slots.flush('store flush');
    await this.attest();
  }

  /**
   * Records how many log frames are durable (all committed ones) in a
   * superblock written but not flushed, so `open` takes damage to them for
   * damage, not a torn tail. Queued behind appends; writes nothing if the
   * store already counts them or the log has failed.
   * @throws `EIO` if the store fails (the log goes on: the other slot holds the previous generation).
   */
  attest(): Promise<void> {
    if (this.#failed) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.#queue.push({ entries: [], attest: true, resolve, reject });
      this.#wake();
    });
  }

  /**
   * Runs `fn` once the commit in progress is durable and applied, writing no
   * frame, checkpoint or superblock until it settles (appends queue): what
   * it reads of the store is exactly `position`. For `check()`; it must not append.
   */
  quiesced<T>(fn: (position: LogPosition) => Promise<T>): Promise<T> {
    return this.#gate.hold(() =>
      fn({ superblock: this.#slots.current, frames: this.#seq, tail: this.#tail }),
    );
  }

  /** Writes a checkpoint now (the whole state into the inactive table, new log epoch). */
  async checkpoint(): Promise<void> {
    await this.idle();
    await this.#checkpoint();
  }

  /**
   * Starts an idle pump one microtask later, so the appends of one turn (and
   * those their first reactions make: preserves resolving together, a
   * worker's ring turn) share the first commit; a busy pump batches them.
   */
  #wake(): void {
    if (this.#pumping === undefined) this.#pumping = Promise.resolve().then(() => this.#pump());
  }

  async #pump(): Promise<void> {
    /** The last batch committed, resolved once the next commit has issued its flush. */
    let durable: Pending<E>[] = [];
    try {
      while (this.#queue.length > 0) {
        if (this.#gate.held !== undefined) {
          durable = resolveAll(durable);
          await this.#gate.held;
          continue;
        }
        if (this.#queue[0]!.attest) {
          durable = resolveAll(durable);
          const p = this.#queue.shift()!;
          const attesting = this.#attest();
          this.#gate.started(attesting);
          await attesting.then(p.resolve, (err: unknown) =>
            p.reject(BlockDeviceError.is(err) ? err : wrapIO('metadata attest', err)),
          );
          continue;
        }
        const batch = takeBatch(this.#queue, this.#codec);
        // On a store with WRITE_NOW this call writes the batch's data and
        // frame and issues its flush before it returns; only then are the
        // appends of the batch before released, whose callers' origin writes
        // would otherwise go ahead of that flush in libuv's thread pool.
        const commit = this.#commitBatch(batch);
        this.#gate.started(commit);
        durable = resolveAll(durable);
        try {
          await commit;
        } catch (err) {
          this.#failed = BlockDeviceError.is(err) ? err : wrapIO('metadata commit', err);
          for (const p of batch) p.reject(this.#failed);
          for (const p of this.#queue.splice(0)) p.reject(this.#failed);
          return;
        }
        durable = batch;
      }
      resolveAll(durable);
    } finally {
      this.#pumping = undefined;
    }
  }

  /**
   * Commits a batch: its appends' data, then the frames of those whose data
   * landed (the others are rejected and leave `batch`; the log goes on),
   * then their flush. A failed frame or flush rejects: the pump fails the log.
   */
  async #commitBatch(batch: Pending<E>[]): Promise<void> {
    if (batch.some((p) => p.data !== undefined)) {
      // Awaited only when it went to the thread pool: see #pump.
      const written = writeCommitData(this.#store, this.#writers, batch);
      const landed = Array.isArray(written) ? written : await written;
      if (landed.length < batch.length) batch.splice(0, batch.length, ...landed);
    }
    await this.#commit(batch.flatMap((p) => p.entries));
  }

  async #commit(entries: E[]): Promise<void> {
    // Split into frames that fit; each is durable before the next is written.
    let start = 0;
    while (start < entries.length) {
      const sb = this.#slots.current;
      const limit = Math.min(MAX_FRAME, sb.logCapacity) - FRAME_HEADER;
      let bytes = 0;
      let end = start;
      while (end < entries.length) {
        const size = this.#codec.size(entries[end]!);
        if (bytes + size > limit) break;
        bytes += size;
        end++;
      }
      if (end === start) throw new BlockDeviceError('ENOSPC', 'metadata entry larger than the log');
      const frameEntries = entries.slice(start, end);
      const size = alignUp(FRAME_HEADER + bytes, SECTOR);
      if (this.#tail + size > logOffset(sb) + sb.logCapacity) {
        await this.#checkpoint();
      }
      const epoch = this.#slots.current.epoch;
      const frame = encodeFrame(this.#codec, frameEntries, bytes, epoch, this.#seq);
      // A frame written under the clean-close mark could be torn by a power
      // cut and then read as damage: the unmarked superblock goes first.
      // Chunk writes before this point only reach chunks no frame names.
      if (this.#slots.current.closedFrames !== undefined) {
        await this.#slots.update(
          { closedFrames: undefined, attestedFrames: this.#seq },
          'store superblock write',
        );
      }
      const writing = writeFrame(this.#store, this.#writers, this.#tail, frame);
      if (writing !== undefined) await writing;
      await this.#slots.flush('store log flush');
      this.#tail += size;
      this.#seq++;
      this.#onDurable(frameEntries);
      start = end;
    }
  }

  async #checkpoint(): Promise<void> {
    const entries = this.#checkpointEntries();
    const sb = this.#slots.current;
    const table = encodeTable(this.#codec, entries, sb.tableCapacity);
    const active = 1 - sb.active;
    await io('store checkpoint table', this.#store.write(tableOffset(sb, active), table));
    // The table is durable before the superblock that names it can be.
    await this.#slots.flush('store checkpoint flush');
    await this.#slots.update(
      {
        // A new epoch starts an empty log: a mark or count, if any, was the old one's.
        closedFrames: undefined,
        attestedFrames: undefined,
        active,
        tableBytes: table.length,
        tableCount: entries.length,
        tableCrc: checksum(table),
        epoch: (sb.epoch % 0xfffffffe) + 1,
      },
      'store checkpoint superblock',
    );
    this.#tail = logOffset(this.#slots.current);
    this.#seq = 0;
  }

  /** The attestation superblock (see {@link attest}); runs in the pump, between frames. */
  async #attest(): Promise<void> {
    const sb = this.#slots.current;
    const counted = sb.closedFrames ?? sb.attestedFrames ?? 0;
    if (this.#failed !== undefined || this.#seq <= counted) return;
    await this.#slots.update(
      { closedFrames: undefined, attestedFrames: this.#seq },
      'store superblock write',
      false,
    );
  }
}
