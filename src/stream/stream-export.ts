import { randomUUID } from 'node:crypto';
import type { ReadableStreamDefaultController } from 'node:stream/web';
import { checkGeometry, forEachConcurrently } from '../base/index.js';
import { checksum, fletcher4 } from '../checksum/index.js';
import type { ChangeTracking, Extent, Snapshot } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import {
  canFreezeSnapshots,
  SNAPSHOT_FREEZE,
  type SnapshotFreeze,
  STORED_CHECKSUM,
} from '../snapshot/index.js';
import type { ExportStreamOptions } from './stream.js';
import {
  encodeHeader,
  FRAME_DATA_MAX,
  MAX_ID_BYTES,
  pieces,
  type StreamHeader,
  uuidBytes,
} from './stream-format.js';
import { encodeFrameHead, encodeFrameTail, encodeTrailer } from './stream-frames.js';
import { encodeManifest, Manifest } from './stream-manifest.js';

/*
 * The export side of the stream format: what `exportStream` sends, and the
 * pull source that reads it from the device one frame at a time.
 */

/** Pieces whose base and new content the manifest pass reads at once (up to two reads each). */
const READS_IN_FLIGHT = 4;
/**
 * Bytes of snapshot `to`'s new content that the manifest pass keeps
 * for the frames, so that they are not read a second time: an incremental
 * of up to this much change reads its changed blocks once. Reading was most
 * of an incremental export's time once its checksum got cheap (bench row
 * stream-export-incremental). As much as a copy job
 * buffers (copy-stream-sink.ts); freed frame by frame as they are sent.
 */
export const KEEP_FOR_FRAMES = 16 << 20;

/** What an export will send, settled before the stream exists. */
export interface ExportPlan {
  header: StreamHeader;
  streamId: Uint8Array;
  /** Ascending, disjoint, coalesced: what the frames carry. */
  extents: Extent[];
  /** Incremental streams: what the base snapshot `from` holds (ascending, coalesced). */
  baseHolds: Extent[];
  /**
   * A writable `to`, held still from the `exportStream` call until the
   * export ends: `extents` are settled again once the writes called before
   * the freeze have landed, and the frames carry that one state.
   */
  freeze: SnapshotFreeze | undefined;
}

/**
 * Checks `exportStream`'s arguments and settles what the stream carries,
 * before anything is read: the device's change tables are memory lookups.
 * @throws `EINVAL`, `ENOENT`, `ECLOSED`.
 */
export function planExport(device: ChangeTracking, options: ExportStreamOptions): ExportPlan {
  const methods = ['changedExtents', 'snapshotExtents', 'openSnapshot'] as const;
  if (
    typeof device !== 'object' ||
    device === null ||
    methods.some((m) => typeof device[m] !== 'function')
  ) {
    throw new BlockDeviceError(
      'EINVAL',
      'exportStream: device must be change-tracking (changedExtents, snapshotExtents, openSnapshot)',
    );
  }
  checkGeometry('exportStream: device', device.size, device.blockSize);
  if (typeof options !== 'object' || options === null) {
    throw new BlockDeviceError('EINVAL', `exportStream: options must be an object, got ${options}`);
  }
  const { to, from, signal } = options;
  checkSnapshotId('to', to);
  if (from !== undefined) checkSnapshotId('from', from);
  checkSignal('exportStream', signal);
  // Both calls are memory lookups, and throw ENOENT for an unknown id now.
  const extents = extentsToSend(device, from, to);
  const streamId = randomUUID();
  return {
    header: {
      incremental: from !== undefined,
      deviceSize: device.size,
      blockSize: device.blockSize,
      maxFrameData: FRAME_DATA_MAX,
      streamId,
      from,
      to,
    },
    streamId: uuidBytes(streamId),
    extents,
    baseHolds:
      from === undefined ? [] : coalesce(device.snapshotExtents(from), device, 'snapshotExtents'),
    // Last: nothing above may throw once the snapshot is held.
    freeze: freezeIfWritable(device, to),
  };
}

/** What the frames carry: all `to` holds, or what changed since `from`, from the change tables. */
function extentsToSend(device: ChangeTracking, from: string | undefined, to: string): Extent[] {
  return from === undefined
    ? coalesce(device.snapshotExtents(to), device, 'snapshotExtents')
    : coalesce(device.changedExtents(from, to), device, 'changedExtents');
}

/**
 * Holds `to` still if it is writable, so the stream carries one state of it:
 * writes to it called after this fail `EBUSY` until the export ends. A
 * device that cannot hold a snapshot still cannot export a writable one:
 * a write during the export would land in some frames and not in others.
 */
function freezeIfWritable(device: ChangeTracking, to: string): SnapshotFreeze | undefined {
  const info = device.listSnapshots().find((s) => s.id === to);
  if (info === undefined || !info.writable) return undefined;
  if (!canFreezeSnapshots(device)) {
    throw new BlockDeviceError(
      'EINVAL',
      `exportStream: snapshot ${to} is writable and this device cannot hold a snapshot's writes during an export; export a read-only snapshot`,
    );
  }
  return device[SNAPSHOT_FREEZE](to);
}

function checkSnapshotId(what: string, id: unknown): void {
  if (typeof id !== 'string' || id.length === 0) {
    throw new BlockDeviceError('EINVAL', `exportStream: ${what} must be a snapshot id, got ${id}`);
  }
  if (Buffer.byteLength(id) > MAX_ID_BYTES) {
    throw new BlockDeviceError(
      'EINVAL',
      `exportStream: ${what} id is longer than ${MAX_ID_BYTES} UTF-8 bytes`,
    );
  }
}

/** Throws `EINVAL` unless `signal` is undefined or an AbortSignal. */
export function checkSignal(what: string, signal: unknown): void {
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new BlockDeviceError('EINVAL', `${what}: signal must be an AbortSignal`);
  }
}

/**
 * Checks the extents a device reported — whole blocks, inside it, ascending
 * and disjoint — and merges adjacent ones, so that the trailer's extent
 * count is what a reader can recount from the frames.
 */
function coalesce(extents: readonly Extent[], device: ChangeTracking, source: string): Extent[] {
  const bs = device.blockSize;
  const out: { offset: number; length: number }[] = [];
  let end = 0;
  for (const extent of extents) {
    const { offset, length } = extent ?? {};
    if (
      !Number.isSafeInteger(offset) ||
      !Number.isSafeInteger(length) ||
      offset % bs !== 0 ||
      length % bs !== 0 ||
      length <= 0 ||
      offset < end ||
      offset + length > device.size
    ) {
      throw new BlockDeviceError(
        'EINVAL',
        `exportStream: device.${source} returned [${offset}, +${length}), not whole ${bs}-byte blocks after ${end} inside ${device.size}`,
      );
    }
    const last = out[out.length - 1];
    if (last !== undefined && last.offset + last.length === offset) last.length += length;
    else out.push({ offset, length });
    end = offset + length;
  }
  return out;
}

/**
 * The pull side of an export: header, then (incremental) the manifest, then
 * one frame per pull, then the trailer. Owns the snapshot handles it opens.
 */
export class StreamExporter {
  readonly #device: ChangeTracking;
  readonly #plan: ExportPlan;
  readonly #signal: AbortSignal | undefined;
  #controller!: ReadableStreamDefaultController<Uint8Array>;
  #to: Snapshot | undefined;
  #from: Snapshot | undefined;
  #manifest: Manifest | undefined;
  /** Full streams: the pieces still to send. */
  #pieces: Iterator<Extent> | undefined;
  #frame = 0;
  #dataBytes = 0;
  /** Content the manifest pass read, by frame number, not yet sent (see KEEP_FOR_FRAMES). */
  readonly #kept = new Map<number, Uint8Array>();
  #keptBytes = 0;
  #stage: 'header' | 'manifest' | 'frames' | 'done' = 'header';
  #stopped = false;
  readonly #onAbort = (): void => {
    this.#controller.error(this.#signal!.reason);
    void this.stop();
  };

  constructor(device: ChangeTracking, plan: ExportPlan, signal: AbortSignal | undefined) {
    this.#device = device;
    this.#plan = plan;
    this.#signal = signal;
  }

  start(controller: ReadableStreamDefaultController<Uint8Array>): void {
    this.#controller = controller;
    this.#signal?.addEventListener('abort', this.#onAbort, { once: true });
  }

  async pull(controller: ReadableStreamDefaultController<Uint8Array>): Promise<void> {
    try {
      this.#signal?.throwIfAborted();
      switch (this.#stage) {
        case 'header':
          await this.#openHandles();
          this.#enqueue(encodeHeader(this.#plan.header));
          this.#stage = this.#plan.header.incremental ? 'manifest' : 'frames';
          return;
        case 'manifest':
          await this.#sendManifest();
          this.#stage = 'frames';
          return;
        case 'frames':
          await this.#sendFrame(controller);
          return;
        case 'done':
          return;
      }
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  /** Closes the handles; idempotent. A cancelled or failed export ends here. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#stage = 'done';
    this.#kept.clear();
    this.#keptBytes = 0;
    this.#signal?.removeEventListener('abort', this.#onAbort);
    this.#plan.freeze?.release();
    const handles = [this.#to, this.#from];
    this.#to = undefined;
    this.#from = undefined;
    // Nothing waits for a cancelled stream's cleanup: a failure to close a
    // handle has no one to go to, and the handle is unusable either way.
    await Promise.allSettled(handles.map((h) => h?.close()));
  }

  async #openHandles(): Promise<void> {
    const { from, to, incremental } = this.#plan.header;
    const freeze = this.#plan.freeze;
    if (freeze !== undefined) {
      // A write called before exportStream() and still in flight is in the
      // export: once it has landed, the change tables say what to send.
      await freeze.settled;
      this.#plan.extents = extentsToSend(this.#device, from, to);
    }
    this.#to = await this.#device.openSnapshot(to);
    if (incremental) {
      this.#from = await this.#device.openSnapshot(from!);
      this.#manifest = Manifest.forExtents(
        this.#plan.extents,
        FRAME_DATA_MAX,
        this.#plan.baseHolds,
      );
    } else {
      this.#pieces = pieces(this.#plan.extents, FRAME_DATA_MAX);
    }
    if (this.#stopped) throw new BlockDeviceError('ECLOSED', 'export was cancelled');
  }

  /**
   * Records, for every piece, its CRC-32 as `from` (where `from` holds it)
   * and its Fletcher-4 as `to`; then sends the manifest. A base CRC the
   * snapshot's store already keeps (see {@link STORED_CHECKSUM}) is taken
   * from there: the base of an incremental is mostly preserved blocks, so it
   * is proved without being read. The rest, and every piece of `to`, is read;
   * some of `to`'s is kept for the frames (KEEP_FOR_FRAMES).
   */
  async #sendManifest(): Promise<void> {
    const manifest = this.#manifest!;
    const from = this.#from!;
    const to = this.#to!;
    await forEachConcurrently(manifest.count, READS_IN_FLIGHT, this.#signal, async (i) => {
      const offset = manifest.offset(i);
      const length = manifest.length(i);
      const held = manifest.baseHeld(i);
      const [base, next] = await Promise.all([
        held ? crcOf(from, offset, length) : 0,
        to.read(offset, length),
      ]);
      manifest.setChecksums(i, base, fletcher4(next));
      // Nothing once stopped: stop() has let go of what was kept.
      if (!this.#stopped && this.#keptBytes + length <= KEEP_FOR_FRAMES) {
        this.#kept.set(i, next);
        this.#keptBytes += length;
      }
    });
    for (const part of encodeManifest(manifest, this.#plan.streamId)) this.#enqueue(part);
  }

  async #sendFrame(controller: ReadableStreamDefaultController<Uint8Array>): Promise<void> {
    const piece = this.#nextPiece();
    if (piece === undefined) {
      const totals = {
        frames: this.#frame,
        dataBytes: this.#dataBytes,
        extents: this.#plan.extents.length,
      };
      this.#enqueue(encodeTrailer(totals, this.#plan.streamId));
      await this.stop();
      controller.close();
      return;
    }
    const { offset, length } = piece;
    const to = this.#to!;
    const n = this.#frame;
    let data = this.#kept.get(n);
    if (data !== undefined) {
      this.#kept.delete(n);
      this.#keptBytes -= length;
    } else {
      data = await to.read(offset, length);
    }
    this.#signal?.throwIfAborted();
    const manifest = this.#manifest;
    // `to` cannot change during the export (read-only, or a writable one
    // held still), so the manifest's checksum of it is the frame's: one pass
    // fewer. Were a device to break that promise, the data would not match
    // its tail and applyStream would refuse the frame — never apply it.
    const sum = manifest !== undefined ? manifest.newSum(n) : fletcher4(data);
    const streamId = this.#plan.streamId;
    // Control data before and after the block (seed 004, claim 44).
    this.#enqueue(encodeFrameHead(n, offset, length, streamId));
    this.#enqueue(data);
    this.#enqueue(encodeFrameTail(n, sum));
    this.#frame++;
    this.#dataBytes += length;
  }

  #nextPiece(): Extent | undefined {
    const manifest = this.#manifest;
    if (manifest !== undefined) {
      const i = this.#frame;
      return i < manifest.count
        ? { offset: manifest.offset(i), length: manifest.length(i) }
        : undefined;
    }
    const next = this.#pieces!.next();
    return next.done ? undefined : next.value;
  }

  #enqueue(bytes: Uint8Array): void {
    // A cancel or abort that arrived while this pull awaited a read: drop the bytes.
    if (!this.#stopped) this.#controller.enqueue(bytes);
  }
}

/** The CRC-32 of `snapshot`'s bytes `[offset, offset+length)`: from its store's records if it keeps them, else read. */
async function crcOf(snapshot: Snapshot, offset: number, length: number): Promise<number> {
  const stored = (snapshot as Partial<StoredChecksumSource>)[STORED_CHECKSUM]?.(offset, length);
  return stored ?? checksum(await snapshot.read(offset, length));
}

type StoredChecksumSource = {
  [STORED_CHECKSUM](offset: number, length: number): number | undefined;
};
