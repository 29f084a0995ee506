import { ownedWriter, readerInto } from '../base/index.js';
import type { BlockDevice } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import type { AppliedProgress, ApplyReport, ApplyStreamOptions } from './stream.js';
import { HOLDS_NEW, proveBase, targetError } from './stream-base-proof.js';
import {
  type CheckedFrame,
  checkAgainstManifest,
  checkFrame,
  checkZeroAgainstManifest,
} from './stream-checks.js';
import type { ChunkReader } from './stream-chunks.js';
import { type StreamHeader, uuidBytes } from './stream-format.js';
import { decodeRecordHead, FRAME_TAIL, RECORD_HEAD } from './stream-frames.js';
import type { Manifest } from './stream-manifest.js';
import { StreamProgress } from './stream-progress.js';
import { readExact, readHeader, readManifest } from './stream-read.js';
import { zeroRuns, zeroUnit } from './stream-zeros.js';

/*
 * The apply side of the stream format: reading a stream, checking every
 * structure before it is trusted and every frame before it is written,
 * proving an incremental stream's base, and knowing how far it got.
 *
 * Frames flow through a pipeline: each is read into a buffer of ours and
 * checked (stream-checks.ts), then written from that buffer without a
 * further copy, in stream order, a few writes in flight while the next
 * frames are read and checked; an early flush now and then starts the
 * target's write-back meanwhile (WRITEBACK_EVERY).
 */

/** Frames being written to the target at once, while the next one is read and checked. */
const WRITES_IN_FLIGHT = 4;
/**
 * Bytes written between flushes issued while the stream goes on. Without
 * them a file's data all reaches the disk in the final flush, after the last
 * frame was checked: an fdatasync as long as half a raw write, overlapping
 * with nothing. An early flush starts that
 * write-back while later frames are read and checked, so the final one finds
 * little left to do (bench stream-apply-file). At most one is in flight.
 */
const WRITEBACK_EVERY = 16 * 1024 * 1024;

/** How a frame's I/O on the target failed. */
interface TargetFailure {
  readonly err: unknown;
  /** A zero frame reads the target before it writes. */
  readonly what: 'read' | 'write';
}

/** A frame handed to the target: its I/O's outcome (never rejecting), and its size. */
interface IssuedFrame {
  /** Settles with the bytes written (0: the target held the content already), or the failure. */
  readonly written: Promise<number | TargetFailure>;
  /** Bytes of the device the frame covers. */
  readonly length: number;
  /** The buffer the frame was assembled in, free again once the write settled; none for a zero frame. */
  readonly buffer: Uint8Array | undefined;
  /** A zero frame, whose write may find nothing to do. */
  readonly zero: boolean;
}

/** One run of {@link applyStream}: reads, checks and writes, and knows how far it got. */
export class StreamApplier {
  readonly #reader: ChunkReader;
  readonly #target: BlockDevice;
  readonly #signal: AbortSignal | undefined;
  readonly #onProgress: ApplyStreamOptions['onProgress'];
  /** Set up once the header (and manifest) say the total. */
  #progress: StreamProgress | undefined;
  /** Frames the target held already: skipped by the base proof, or zero frames over zeros. */
  #skipped = 0;
  /** Writes issued and not yet counted as applied, oldest first. */
  readonly #issued: IssuedFrame[] = [];
  /**
   * Frame buffers whose writes have settled, for the next frames to be read
   * into: a few more than WRITES_IN_FLIGHT ever exist (those being written,
   * and the one being read), so a long stream allocates (and collects) no
   * frame-sized buffer per frame.
   */
  readonly #spare: Uint8Array[] = [];
  #applied = { frames: 0, bytes: 0 };
  /** Bytes applied since the last early flush was issued. */
  #unflushed = 0;
  /** The early flush in flight: settles with its failure, if any, and never rejects. */
  #flushing: Promise<{ err: unknown } | undefined> | undefined;
  /** An early flush that failed: the run fails with it. */
  #flushFailure: { err: unknown } | undefined;
  /** The target's `readInto`, for a zero frame's extent, read into a frame buffer. */
  readonly #readInto: ((offset: number, buffer: Uint8Array) => Promise<Uint8Array>) | undefined;
  /** The target's WRITE_OWNED, for frames assembled in a buffer of ours. */
  readonly #writeOwned:
    | ((offset: number, blocks: readonly Uint8Array[]) => Promise<void>)
    | undefined;

  constructor(
    reader: ChunkReader,
    target: BlockDevice,
    options: Pick<ApplyStreamOptions, 'signal' | 'onProgress'>,
  ) {
    this.#reader = reader;
    this.#target = target;
    this.#signal = options.signal;
    this.#onProgress = options.onProgress;
    this.#writeOwned = ownedWriter(target);
    this.#readInto = readerInto(target);
  }

  /** A buffer for a frame: a spare one, or a new one (see #spare). */
  #frameBuffer(header: StreamHeader): Uint8Array {
    return this.#spare.pop() ?? new Uint8Array(header.maxFrameData + FRAME_TAIL);
  }

  /** Whether `err` is what the progress callback threw. */
  progressFailed(err: unknown): boolean {
    return this.#progress?.failed(err) === true;
  }

  async run(): Promise<ApplyReport> {
    const header = await readHeader(this.#reader);
    const streamId = uuidBytes(header.streamId);
    const target = this.#target;
    if (target.size !== header.deviceSize || target.blockSize !== header.blockSize) {
      throw new BlockDeviceError(
        'EINVAL',
        `target is ${target.size} bytes in ${target.blockSize}-byte blocks; the stream is for ${header.deviceSize} in ${header.blockSize}`,
      );
    }
    const manifest = header.incremental
      ? await readManifest(this.#reader, header, streamId)
      : undefined;
    const holds =
      manifest === undefined
        ? undefined
        : await proveBase(this.#target, manifest, header, this.#signal);
    // A version-2 full stream does not say what it covers: the device bounds it.
    const total = header.totalBytes ?? manifest?.totalBytes() ?? header.deviceSize;
    this.#progress = new StreamProgress('apply', total, this.#onProgress);
    this.#progress.start();

    let frames = 0;
    let dataBytes = 0;
    let extents = 0;
    let end = 0;
    for (;;) {
      const where = `stream byte ${this.#reader.position}`;
      const head = decodeRecordHead(
        await readExact(this.#reader, RECORD_HEAD, `the head of frame ${frames} or the trailer`),
        header,
        streamId,
        end,
        where,
      );
      if (head.kind === 'trailer') {
        this.#checkTrailer(head, { frames, dataBytes, extents }, manifest, header);
        break;
      }
      if (head.number !== frames) {
        throw new BlockDeviceError(
          'ECORRUPT',
          `${where}: frame ${head.number} where frame ${frames} belongs (frames missing, repeated or out of order)`,
        );
      }
      if (manifest !== undefined) checkAgainstManifest(manifest, frames, head, where);
      if (dataBytes + head.length > total) {
        throw new BlockDeviceError(
          'ECORRUPT',
          `${where}: frame ${frames} ends past the ${total} bytes the stream says it covers`,
        );
      }
      if (head.offset !== end || frames === 0) extents++;
      end = head.offset + head.length;
      dataBytes += head.length;
      const skip = holds !== undefined && holds[frames] === HOLDS_NEW;
      if (head.kind === 'zero') {
        if (manifest !== undefined) checkZeroAgainstManifest(manifest, frames, where);
        this.#signal?.throwIfAborted();
        frames++;
        // The target's extent is read into a frame buffer: no allocation per frame.
        const buffer = skip ? undefined : this.#frameBuffer(header);
        await this.#zeroChecked(head.offset, head.length, buffer);
        continue;
      }
      // Data and tail in one read, into a buffer of ours: a source may
      // reuse a chunk's buffer for the next one, and the frame is checked
      // and written after later chunks were pulled. The buffer is reused
      // only once its write settled.
      const buffer = this.#frameBuffer(header);
      const body = await readExact(
        this.#reader,

        head.length + FRAME_TAIL,
        `frame ${frames}'s data`,
        buffer,
      );
      if (body.buffer !== buffer.buffer) buffer.set(body);
      // Checked here, not between reads: a frame read after the abort is
      // not written; those read before it were checked and issued already.
      this.#signal?.throwIfAborted();
      const checked = checkFrame(
        frames,
        head.offset,
        head.length,
        buffer,
        skip,
        manifest?.newSum(frames),
      );
      frames++;
      await this.#writeChecked(checked);
    }
    if (!(await this.#reader.atEnd())) {
      throw new BlockDeviceError(
        'ECORRUPT',
        `stream goes on past its trailer, at byte ${this.#reader.position}`,
      );
    }
    while (this.#issued.length > 0) await this.#settleOldest();
    this.#progress.end();
    await this.#flushing;
    try {
      if (this.#flushFailure !== undefined) throw this.#flushFailure.err;
      await target.flush();
    } catch (err) {
      throw targetError('flush', err);
    }
    return {
      streamId: header.streamId,
      from: header.from,
      to: header.to,
      incremental: header.incremental,
      frames,
      framesSkipped: this.#skipped,
      dataBytes,
      bytesWritten: this.#applied.bytes,
      extents,
    };
  }

  /**
   * Ends a failed run, once every write issued has settled: how far the
   * stream got is then known, and made durable (best effort: the target's
   * flush may be what failed) so that a later resume finds it. Returns what
   * to report — a target write that failed before `err` is what went wrong
   * first — and the prefix of frames applied.
   */
  async stop(err: unknown): Promise<{ cause: unknown; applied: AppliedProgress }> {
    const outcomes = await Promise.all(this.#issued.map((f) => f.written));
    // Nothing of ours is left in flight on the target once this returns.
    await this.#flushing;
    let firstFailure: TargetFailure | undefined;
    for (const outcome of outcomes) {
      if (typeof outcome !== 'number') {
        firstFailure = outcome;
        break;
      }
      this.#applied.frames++;
      this.#applied.bytes += outcome;
    }
    this.#issued.length = 0;
    if (this.#applied.bytes > 0) await this.#target.flush().catch(() => {});
    const aborted = this.#signal?.aborted === true && err === this.#signal.reason;
    const cause =
      firstFailure === undefined || aborted
        ? err
        : targetError(firstFailure.what, firstFailure.err);
    return { cause, applied: { ...this.#applied } };
  }

  #checkTrailer(
    trailer: { frames: number; dataBytes: number; extents: number },
    counted: { frames: number; dataBytes: number; extents: number },
    manifest: Manifest | undefined,
    header: StreamHeader,
  ): void {
    const listed = manifest?.count ?? counted.frames;
    // Version 3 says its total in the header too: frames dropped at the end
    // with a trailer made to match them still cover less than it.
    const stated = header.totalBytes ?? counted.dataBytes;
    if (
      trailer.frames !== counted.frames ||
      trailer.dataBytes !== counted.dataBytes ||
      trailer.extents !== counted.extents ||
      listed !== counted.frames ||
      stated !== counted.dataBytes
    ) {
      throw new BlockDeviceError(
        'ECORRUPT',
        `stream trailer counts ${trailer.frames} frames, ${trailer.dataBytes} bytes, ${trailer.extents} extents` +
          `${manifest === undefined ? '' : ` (manifest: ${listed} frames)`}` +
          `${header.totalBytes === undefined ? '' : ` (header: ${stated} bytes)`}; the stream had ${counted.frames}, ${counted.dataBytes} and ${counted.extents}`,
      );
    }
  }

  /**
   * Starts a write whose outcome is captured at once, so a failure is never
   * an unhandled rejection; `data` stays unchanged until it settles.
   */
  #write(offset: number, data: Uint8Array): Promise<number | TargetFailure> {
    const op =
      this.#writeOwned !== undefined
        ? this.#writeOwned(offset, [data])
        : this.#target.write(offset, data);
    return op.then(
      () => data.length,
      (err: unknown) => ({ err, what: 'write' as const }),
    );
  }

  /** Writes a frame that passed its checks, unless the target already holds it. */
  async #writeChecked(frame: CheckedFrame): Promise<void> {
    if (frame.skip) this.#skipped++;
    // The data is in our buffer, unchanged until the write settles (only
    // then does the buffer go back to #spare): the target need not copy it.
    const written = frame.skip ? Promise.resolve(0) : this.#write(frame.offset, frame.data);
    await this.#issue({ written, length: frame.data.length, buffer: frame.buffer, zero: false });
  }

  /**
   * Applies a zero frame: reads the target's extent (into `buffer`) and
   * writes zeros only over its units (see zeroUnit) that are not zero
   * already, so a sparse target stays sparse and a target already holding
   * zeros is not written. Without `buffer`, the base proof found the extent
   * zero already: nothing to do. Frames are disjoint, so the read sees
   * nothing of the writes in flight.
   */
  async #zeroChecked(
    offset: number,
    length: number,
    buffer: Uint8Array | undefined,
  ): Promise<void> {
    if (buffer === undefined) this.#skipped++;
    const written =
      buffer === undefined ? Promise.resolve(0) : this.#writeZeros(offset, length, buffer);
    await this.#issue({ written, length, buffer, zero: buffer !== undefined });
  }

  async #writeZeros(
    offset: number,
    length: number,
    buffer: Uint8Array,
  ): Promise<number | TargetFailure> {
    let content: Uint8Array;
    try {
      content =
        this.#readInto !== undefined
          ? await this.#readInto(offset, buffer.subarray(0, length))
          : await this.#target.read(offset, length);
    } catch (err) {
      return { err, what: 'read' };
    }
    let bytes = 0;
    // One write at a time: a frame's writes fail or succeed in order, so a
    // failure leaves zeros over a prefix of the runs (as a torn data write).
    for (const run of zeroRuns(content, zeroUnit(this.#target.blockSize))) {
      if (run.zero) continue;
      const outcome = await this.#write(offset + run.start, new Uint8Array(run.length));
      if (typeof outcome !== 'number') return outcome;
      bytes += outcome;
    }
    return bytes;
  }

  /** Queues an issued frame, first settling the oldest if too many are in flight. */
  async #issue(frame: IssuedFrame): Promise<void> {
    this.#issued.push(frame);
    while (this.#issued.length > WRITES_IN_FLIGHT) await this.#settleOldest();
  }

  /**
   * Waits for the oldest issued frame and counts it as applied, then
   * reports progress; a failed write throws, and so does the progress callback.
   */
  async #settleOldest(): Promise<void> {
    const frame = this.#issued[0]!;
    const outcome = await frame.written;
    if (typeof outcome !== 'number') throw targetError(outcome.what, outcome.err);
    this.#issued.shift();
    if (frame.buffer !== undefined) this.#spare.push(frame.buffer);
    if (frame.zero && outcome === 0) this.#skipped++;
    this.#applied.frames++;
    this.#applied.bytes += outcome;
    this.#unflushed += outcome;
    if (this.#flushFailure !== undefined) throw targetError('flush', this.#flushFailure.err);
    if (this.#unflushed >= WRITEBACK_EVERY && this.#flushing === undefined) this.#writeBack();
    this.#progress!.advance(frame.length);
  }

  /** Issues an early flush of the frames applied so far (see WRITEBACK_EVERY). */
  #writeBack(): void {
    this.#unflushed = 0;
    const flushing = this.#target.flush().then(
      () => undefined,
      (err: unknown) => ({ err }),
    );
    this.#flushing = flushing;
    void flushing.then((outcome) => {
      this.#flushing = undefined;
      this.#flushFailure ??= outcome;
    });
  }
}
