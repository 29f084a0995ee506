import { forEachConcurrently, ownedWriter } from '../base/index.js';
import { checksum, fletcher4 } from '../checksum/index.js';
import type { BlockDevice } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import type { AppliedProgress, ApplyReport } from './stream.js';
import { type CheckedFrame, checkFrame } from './stream-checks.js';
import type { ChunkReader } from './stream-chunks.js';
import {
  decodeHeader,
  HEADER_PREFIX,
  headerLength,
  hex32,
  type StreamHeader,
  sameBytes,
  uuidBytes,
} from './stream-format.js';
import { decodeRecordHead, FRAME_TAIL, hexBytes, RECORD_HEAD } from './stream-frames.js';
import {
  decodeManifest,
  decodeManifestHead,
  MANIFEST_CRC,
  MANIFEST_ENTRY,
  MANIFEST_HEAD,
  type Manifest,
} from './stream-manifest.js';

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

/** Manifest extents of the target read at once for the base proof. */
const READS_IN_FLIGHT = 4;
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

/** Wraps a failure of the target so it is told apart from a damaged stream. */
export function targetError(what: string, err: unknown): BlockDeviceError {
  const detail = err instanceof Error ? err.message : String(err);
  const code = BlockDeviceError.is(err) ? err.code : 'EIO';
  return new BlockDeviceError(code, `target ${what} failed: ${detail}`, { cause: err });
}

/** A frame handed to the target: its write's outcome (never rejecting), and its size. */
interface IssuedFrame {
  /** Settles once the write did; undefined for a frame the target already held. */
  readonly written: Promise<{ err: unknown } | undefined> | undefined;
  readonly bytes: number;
  /** The buffer the frame was assembled in, free again once the write settled. */
  readonly buffer: Uint8Array;
}

/** Extent state during a base proof: what the target holds there. */
const HOLDS_BASE = 0;
const HOLDS_NEW = 1;

/** One run of {@link applyStream}: reads, checks and writes, and knows how far it got. */
export class StreamApplier {
  readonly #reader: ChunkReader;
  readonly #target: BlockDevice;
  readonly #signal: AbortSignal | undefined;
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
  /** The target's WRITE_OWNED, for frames assembled in a buffer of ours. */
  readonly #writeOwned:
    | ((offset: number, blocks: readonly Uint8Array[]) => Promise<void>)
    | undefined;

  constructor(reader: ChunkReader, target: BlockDevice, signal: AbortSignal | undefined) {
    this.#reader = reader;
    this.#target = target;
    this.#signal = signal;
    this.#writeOwned = ownedWriter(target);
  }

  async run(): Promise<ApplyReport> {
    const header = await this.#readHeader();
    const streamId = uuidBytes(header.streamId);
    const target = this.#target;
    if (target.size !== header.deviceSize || target.blockSize !== header.blockSize) {
      throw new BlockDeviceError(
        'EINVAL',
        `target is ${target.size} bytes in ${target.blockSize}-byte blocks; the stream is for ${header.deviceSize} in ${header.blockSize}`,
      );
    }
    const manifest = header.incremental ? await this.#readManifest(header, streamId) : undefined;
    const holds = manifest === undefined ? undefined : await this.#proveBase(manifest, header);

    let frames = 0;
    let skipped = 0;
    let dataBytes = 0;
    let extents = 0;
    let end = 0;
    for (;;) {
      const where = `stream byte ${this.#reader.position}`;
      const head = decodeRecordHead(
        await this.#readExact(RECORD_HEAD, `the head of frame ${frames} or the trailer`),
        header,
        streamId,
        end,
        where,
      );
      if (head.kind === 'trailer') {
        this.#checkTrailer(head, { frames, dataBytes, extents }, manifest);
        break;
      }
      if (head.number !== frames) {
        throw new BlockDeviceError(
          'ECORRUPT',
          `${where}: frame ${head.number} where frame ${frames} belongs (frames missing, repeated or out of order)`,
        );
      }
      if (manifest !== undefined) checkAgainstManifest(manifest, frames, head, where);
      // Data and tail in one read, into a buffer of ours: a source may
      // reuse a chunk's buffer for the next one, and the frame is checked
      // and written after later chunks were pulled. The buffer is reused
      // only once its write settled.
      const buffer = this.#spare.pop() ?? new Uint8Array(header.maxFrameData + FRAME_TAIL);
      const body = await this.#readExact(
        head.length + FRAME_TAIL,
        `frame ${frames}'s data`,
        buffer,
      );
      if (body.buffer !== buffer.buffer) buffer.set(body);
      // Checked here, not between reads: a frame read after the abort is
      // not written; those read before it were checked and issued already.
      this.#signal?.throwIfAborted();
      if (head.offset !== end || frames === 0) extents++;
      end = head.offset + head.length;
      dataBytes += head.length;
      const skip = holds !== undefined && holds[frames] === HOLDS_NEW;
      if (skip) skipped++;
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
      framesSkipped: skipped,
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
    let firstFailure: unknown;
    for (const [i, outcome] of outcomes.entries()) {
      if (outcome !== undefined) {
        firstFailure = outcome.err;
        break;
      }
      this.#applied.frames++;
      this.#applied.bytes += this.#issued[i]!.bytes;
    }
    this.#issued.length = 0;
    if (this.#applied.bytes > 0) await this.#target.flush().catch(() => {});
    const aborted = this.#signal?.aborted === true && err === this.#signal.reason;
    const cause = firstFailure === undefined || aborted ? err : targetError('write', firstFailure);
    return { cause, applied: { ...this.#applied } };
  }

  async #readExact(length: number, what: string, scratch?: Uint8Array): Promise<Uint8Array> {
    const bytes = await this.#reader.read(length, scratch);
    if (bytes.length < length) {
      throw new BlockDeviceError(
        'ECORRUPT',
        `stream ends at byte ${this.#reader.position}, in ${what} (truncated)`,
      );
    }
    return bytes;
  }

  async #readHeader(): Promise<StreamHeader> {
    const prefix = await this.#reader.read(HEADER_PREFIX);
    if (prefix.length === 0) throw new BlockDeviceError('ECORRUPT', 'stream is empty');
    if (prefix.length < HEADER_PREFIX) {
      throw new BlockDeviceError('ECORRUPT', `stream ends at byte ${prefix.length}, in its header`);
    }
    const length = headerLength(prefix);
    // Copied: the prefix may be a view of a chunk the next read replaces.
    const bytes = new Uint8Array(length);
    bytes.set(prefix);
    bytes.set(await this.#readExact(length - HEADER_PREFIX, 'the header'), HEADER_PREFIX);
    return decodeHeader(bytes);
  }

  async #readManifest(header: StreamHeader, streamId: Uint8Array): Promise<Manifest> {
    const head = decodeManifestHead(
      await this.#readExact(MANIFEST_HEAD, 'the manifest head'),
      header,
      streamId,
    );
    const entries = (await this.#readExact(head.count * MANIFEST_ENTRY, 'the manifest')).slice();
    const crc = await this.#readExact(MANIFEST_CRC, 'the manifest CRC');
    return decodeManifest(entries, crc, head, header);
  }

  /**
   * Reads the target's content of every manifest extent and classifies it:
   * the base (to be written) or the new content (already applied). Anything
   * else means the target is not at the stream's base: refused before any
   * write. An extent the base snapshot does not hold has no base to prove:
   * it is written whatever the target holds there.
   */
  async #proveBase(manifest: Manifest, header: StreamHeader): Promise<Uint8Array> {
    const holds = new Uint8Array(manifest.count);
    await forEachConcurrently(manifest.count, READS_IN_FLIGHT, this.#signal, async (i) => {
      if (!manifest.baseHeld(i)) return;
      const offset = manifest.offset(i);
      const length = manifest.length(i);
      let content: Uint8Array;
      try {
        content = await this.#target.read(offset, length);
      } catch (err) {
        throw targetError('read', err);
      }
      const sum = fletcher4(content);
      if (sameBytes(sum, manifest.newSum(i))) {
        holds[i] = HOLDS_NEW;
        return;
      }
      const crc = checksum(content);
      if (crc === manifest.baseCrc(i)) holds[i] = HOLDS_BASE;
      else {
        throw new BlockDeviceError(
          'EINVAL',
          `target does not hold the stream's base (snapshot ${header.from}): its content at [${offset}, ${offset + length}) has CRC ${hex32(crc)} where the base's is ${hex32(manifest.baseCrc(i))}, and Fletcher-4 ${hexBytes(sum)} where the new content's is ${hexBytes(manifest.newSum(i))}`,
        );
      }
    });
    return holds;
  }

  #checkTrailer(
    trailer: { frames: number; dataBytes: number; extents: number },
    counted: { frames: number; dataBytes: number; extents: number },
    manifest: Manifest | undefined,
  ): void {
    const listed = manifest?.count ?? counted.frames;
    if (
      trailer.frames !== counted.frames ||
      trailer.dataBytes !== counted.dataBytes ||
      trailer.extents !== counted.extents ||
      listed !== counted.frames
    ) {
      throw new BlockDeviceError(
        'ECORRUPT',
        `stream trailer counts ${trailer.frames} frames, ${trailer.dataBytes} bytes, ${trailer.extents} extents` +
          `${manifest === undefined ? '' : ` (manifest: ${listed} frames)`}; the stream had ${counted.frames}, ${counted.dataBytes} and ${counted.extents}`,
      );
    }
  }

  /**
   * Starts a write whose outcome is captured at once, so a failure is never
   * an unhandled rejection; `data` stays unchanged until it settles.
   */
  #write(offset: number, data: Uint8Array): Promise<{ err: unknown } | undefined> {
    const op =
      this.#writeOwned !== undefined
        ? this.#writeOwned(offset, [data])
        : this.#target.write(offset, data);
    return op.then(
      () => undefined,
      (err: unknown) => ({ err }),
    );
  }

  /** Writes a frame that passed its checks, unless the target already holds it. */
  async #writeChecked(frame: CheckedFrame): Promise<void> {
    if (frame.skip) {
      await this.#issue({ written: undefined, bytes: 0, buffer: frame.buffer });
      return;
    }
    // The data is in our buffer, unchanged until the write settles (only
    // then does the buffer go back to #spare): the target need not copy it.
    const written = this.#write(frame.offset, frame.data);
    await this.#issue({ written, bytes: frame.data.length, buffer: frame.buffer });
  }

  /** Queues an issued frame, first settling the oldest if too many are in flight. */
  async #issue(frame: IssuedFrame): Promise<void> {
    this.#issued.push(frame);
    while (this.#issued.length > WRITES_IN_FLIGHT) await this.#settleOldest();
  }

  /** Waits for the oldest issued frame and counts it as applied; a failed write throws. */
  async #settleOldest(): Promise<void> {
    const frame = this.#issued[0]!;
    const outcome = await frame.written;
    if (outcome !== undefined) throw targetError('write', outcome.err);
    this.#issued.shift();
    this.#spare.push(frame.buffer);
    this.#applied.frames++;
    this.#applied.bytes += frame.bytes;
    this.#unflushed += frame.bytes;
    if (this.#flushFailure !== undefined) throw targetError('flush', this.#flushFailure.err);
    if (this.#unflushed >= WRITEBACK_EVERY && this.#flushing === undefined) this.#writeBack();
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

/** A frame head must be the next extent the manifest lists. @throws `ECORRUPT`. */
function checkAgainstManifest(
  manifest: Manifest,
  frame: number,
  head: { offset: number; length: number },
  where: string,
): void {
  if (frame >= manifest.count) {
    throw new BlockDeviceError(
      'ECORRUPT',
      `${where}: frame ${frame} is past the ${manifest.count} the manifest lists`,
    );
  }
  if (head.offset !== manifest.offset(frame) || head.length !== manifest.length(frame)) {
    throw new BlockDeviceError(
      'ECORRUPT',
      `${where}: frame ${frame} is for [${head.offset}, +${head.length}), its manifest entry for [${manifest.offset(frame)}, +${manifest.length(frame)})`,
    );
  }
}
