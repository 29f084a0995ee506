import type { ReadableStreamDefaultController } from 'node:stream/web';
import { forEachConcurrently, readInto } from '../base/index.js';
import { checksum, FLETCHER4_BYTES, fletcher4 } from '../checksum/index.js';
import type { ChangeTracking, Extent, Snapshot } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import { type ExportPreparing, PREPARE_EXPORT, STORED_CHECKSUM } from '../snapshot/index.js';
import type { ExportStreamOptions } from './stream.js';
import { encodeHeader, FRAME_DATA_MAX, pieces } from './stream-format.js';
import {
  encodeFrameHead,
  encodeFrameTail,
  encodeTrailer,
  frameBuffer,
  RECORD_HEAD,
  writeFrameHead,
  writeFrameTailEnd,
} from './stream-frames.js';
import { encodeManifest, Manifest } from './stream-manifest.js';
import { type ExportPlan, extentsToSend } from './stream-plan.js';
import { StreamProgress, type StreamProgressCallback } from './stream-progress.js';
import { isZeroSum, zeroRuns, zeroUnit } from './stream-zeros.js';

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
 * buffers (copy-stream-sink.ts); read straight into the frames they are
 * sent in, each handed to the consumer as it is sent.
 */
export const KEEP_FOR_FRAMES = 16 << 20;

/**
 * The pull side of an export: header, then (incremental) the manifest, then
 * one frame per pull, then the trailer. Owns the snapshot handles it opens.
 */
export class StreamExporter {
  readonly #device: ChangeTracking;
  readonly #plan: ExportPlan;
  readonly #signal: AbortSignal | undefined;
  readonly #onProgress: StreamProgressCallback | undefined;
  /** Bytes of the extents sent so far, set up once the extents are settled. */
  #progress: StreamProgress | undefined;
  #controller!: ReadableStreamDefaultController<Uint8Array>;
  #to: Snapshot | undefined;
  #from: Snapshot | undefined;
  #manifest: Manifest | undefined;
  /** Full streams: the pieces still to send. */
  #pieces: Iterator<Extent> | undefined;
  #frame = 0;
  #dataBytes = 0;
  /**
   * Frames the manifest pass built, by frame number, not yet sent (see
   * KEEP_FOR_FRAMES): each a {@link frameBuffer} holding the data and its
   * Fletcher-4, head and the rest of the tail written when it is sent.
   */
  readonly #kept = new Map<number, Uint8Array>();
  #keptBytes = 0;
  #stage: 'header' | 'manifest' | 'frames' | 'done' = 'header';
  #stopped = false;
  readonly #onAbort = (): void => {
    this.#controller.error(this.#signal!.reason);
    void this.stop();
  };

  constructor(
    device: ChangeTracking,
    plan: ExportPlan,
    options: Pick<ExportStreamOptions, 'signal' | 'onProgress'>,
  ) {
    this.#device = device;
    this.#plan = plan;
    this.#signal = options.signal;
    this.#onProgress = options.onProgress;
  }

  start(controller: ReadableStreamDefaultController<Uint8Array>): void {
    this.#controller = controller;
    this.#signal?.addEventListener('abort', this.#onAbort, { once: true });
  }

  async pull(controller: ReadableStreamDefaultController<Uint8Array>): Promise<void> {
    try {
      this.#signal?.throwIfAborted();
      switch (this.#stage) {
        case 'header': {
          await this.#openHandles();
          const totalBytes = this.#plan.extents.reduce((sum, e) => sum + e.length, 0);
          this.#enqueue(encodeHeader({ ...this.#plan.header, totalBytes }));
          this.#stage = this.#plan.header.incremental ? 'manifest' : 'frames';
          this.#progress = new StreamProgress('export', totalBytes, this.#onProgress);
          this.#progress.start();
          return;
        }
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
    const { freeze, prepare } = this.#plan;
    // A write called before exportStream() and still in flight is in the
    // export: once it has landed (and the device has prepared the
    // snapshots), the change tables say what to send.
    if (freeze !== undefined) await freeze.settled;
    if (prepare) {
      await (this.#device as unknown as ExportPreparing)[PREPARE_EXPORT](
        from === undefined ? [to] : [from, to],
      );
    }
    if (freeze !== undefined || prepare) {
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
   * some of `to`'s is read into its frame and kept (KEEP_FOR_FRAMES), the
   * rest into reused scratch, since only its checksum is wanted now.
   */
  async #sendManifest(): Promise<void> {
    const manifest = this.#manifest!;
    const from = this.#from!;
    const to = this.#to!;
    // Buffers for the pieces not kept, reused: only their checksum is
    // wanted now, and nothing outside this pass ever sees them.
    const spares: Uint8Array[] = [];
    await forEachConcurrently(manifest.count, READS_IN_FLIGHT, this.#signal, async (i) => {
      const offset = manifest.offset(i);
      const length = manifest.length(i);
      const held = manifest.baseHeld(i);
      // Reserved before the read, so the reads in flight never keep more than the bound.
      let frame: Uint8Array | undefined;
      let spare: Uint8Array | undefined;
      let data: Uint8Array;
      if (this.#keptBytes + length <= KEEP_FOR_FRAMES) {
        this.#keptBytes += length;
        frame = frameBuffer(length);
        data = frame.subarray(RECORD_HEAD, RECORD_HEAD + length);
      } else {
        spare = spares.pop();
        if (spare === undefined || spare.length < length) spare = new Uint8Array(length);
        data = spare.subarray(0, length);
      }
      try {
        const [base] = await Promise.all([
          held ? crcOf(from, offset, length) : 0,
          readInto(to, offset, data),
        ]);
        // A kept frame's checksum is written straight into its tail.
        const sum =
          frame === undefined
            ? fletcher4(data)
            : fletcher4(data, frame, RECORD_HEAD + length).subarray(
                RECORD_HEAD + length,
                RECORD_HEAD + length + FLETCHER4_BYTES,
              );
        manifest.setChecksums(i, base, sum);
        // Nothing once stopped: stop() has let go of what was kept. Zeros
        // are not kept: their frame is a zero frame, sent without them.
        if (frame !== undefined && !this.#stopped && !isZeroSum(sum)) {
          this.#kept.set(i, frame);
          frame = undefined;
        }
      } finally {
        if (frame !== undefined && !this.#stopped) this.#keptBytes -= length;
        if (spare !== undefined) spares.push(spare);
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
    const manifest = this.#manifest;
    if (manifest !== undefined) await this.#sendListedFrame(manifest, piece);
    else await this.#sendPiece(piece);
    this.#progress!.advance(piece.length);
  }

  /**
   * An incremental stream's frame `n`, as its manifest entry lists it: a
   * zero frame, unread, if the entry's new content is zeros (its checksum
   * says so exactly), else a data frame whose checksum is the entry's.
   */
  async #sendListedFrame(manifest: Manifest, piece: Extent): Promise<void> {
    const { offset, length } = piece;
    const n = this.#frame;
    let frame = this.#kept.get(n);
    if (frame !== undefined) {
      this.#kept.delete(n);
      this.#keptBytes -= length;
    }
    const sum = manifest.newSum(n);
    if (isZeroSum(sum)) {
      this.#sendZeroFrame(offset, length);
      return;
    }
    if (frame === undefined) {
      frame = frameBuffer(length);
      await readInto(this.#to!, offset, frame.subarray(RECORD_HEAD, RECORD_HEAD + length));
      frame.set(sum, RECORD_HEAD + length);
    }
    this.#signal?.throwIfAborted();
    // `to` cannot change during the export (read-only, or a writable one
    // held still), so the manifest's checksum of it is the frame's: one pass
    // fewer. Were a device to break that promise, the data would not match
    // its tail and applyStream would refuse the frame — never apply it.
    // The whole frame is one chunk: from here on it is the consumer's, and
    // this exporter keeps no reference to it.
    writeFrameHead(frame, n, offset, length, this.#plan.streamId);
    writeFrameTailEnd(frame, RECORD_HEAD + length, n);
    this.#enqueue(frame);
    this.#frame++;
    this.#dataBytes += length;
  }

  /**
   * A full stream's piece: read, then sent as frames, its runs of zero
   * units (see zeroUnit) as zero frames and the rest as data frames.
   */
  async #sendPiece(piece: Extent): Promise<void> {
    const { offset } = piece;
    const data = await this.#to!.read(offset, piece.length);
    this.#signal?.throwIfAborted();
    for (const run of zeroRuns(data, zeroUnit(this.#plan.header.blockSize))) {
      if (run.zero) this.#sendZeroFrame(offset + run.start, run.length);
      else {
        const part = data.subarray(run.start, run.start + run.length);
        this.#sendDataFrame(offset + run.start, part, fletcher4(part));
      }
    }
  }

  #sendDataFrame(offset: number, data: Uint8Array, sum: Uint8Array): void {
    const n = this.#frame;
    // Control data before and after the block (seed 004, claim 44).
    this.#enqueue(encodeFrameHead(n, offset, data.length, this.#plan.streamId));
    this.#enqueue(data);
    this.#enqueue(encodeFrameTail(n, sum));
    this.#frame++;
    this.#dataBytes += data.length;
  }

  /** A zero frame: its head alone, which says the extent holds zeros. */
  #sendZeroFrame(offset: number, length: number): void {
    this.#enqueue(encodeFrameHead(this.#frame, offset, length, this.#plan.streamId, true));
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
