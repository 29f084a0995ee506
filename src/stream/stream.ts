import { ByteLengthQueuingStrategy, ReadableStream } from 'node:stream/web';
import { checkGeometry, checkOptions } from '../base/index.js';
import type { BlockDevice, ChangeTracking, ProgressEvent } from '../device.js';
import { BlockDeviceError, type BlockDeviceErrorCode } from '../errors.js';
import { StreamApplier } from './stream-apply.js';
import { type ByteSource, ChunkReader } from './stream-chunks.js';
import { StreamExporter } from './stream-export.js';
import { FRAME_DATA_MAX } from './stream-format.js';
import { planExport } from './stream-plan.js';

export type { ByteSource } from './stream-chunks.js';

/** Options for {@link exportStream}. */
export interface ExportStreamOptions {
  /** Id of the snapshot the stream brings a target to. */
  to: string;
  /**
   * Id of a snapshot the target already holds: the stream then carries only
   * the blocks that differ between `from` and `to` (an incremental stream).
   * @default undefined (a full stream: everything `to` holds)
   */
  from?: string | undefined;
  /**
   * Stops the export: the stream errors with the signal's reason and the
   * snapshot handles are closed. @default undefined
   */
  signal?: AbortSignal | undefined;
  /**
   * Called as the export goes, with `{ operation: 'export', done, total }`
   * in bytes of the device the stream covers (zero extents included).
   *
   * Guarantees: `total` is known from the first call (`done: 0`, made when
   * the header is read) and never changes; `done` never decreases, counts
   * the extents whose frames the stream has been given, is reported at
   * least every MiB, and ends equal to `total` once the last frame is in the
   * stream. Called synchronously from the stream's pull: a callback that
   * throws errors the stream with what it threw (snapshot handles closed,
   * a writable `to` released), as a Node stream is destroyed with the error
   * its transform throws; the stream then never ends as if it were whole.
   * @default undefined
   */
  onProgress?: ((event: ProgressEvent) => void) | undefined;
}

/** Options for {@link applyStream}. */
export interface ApplyStreamOptions {
  /**
   * Stops applying between frames: the promise rejects with the signal's
   * reason once the writes already issued have settled. @default undefined
   */
  signal?: AbortSignal | undefined;
  /**
   * Called as the apply goes, with `{ operation: 'apply', done, total }` in
   * bytes of the device the stream covers (zero frames and frames the target
   * already held included).
   *
   * Guarantees: `total` is known from the first call (`done: 0`, once the
   * header, and an incremental stream's manifest, were read and checked):
   * the header's total, or the manifest's for a version-2 incremental
   * stream; a version-2 full stream does not say its total, so it is then the
   * device size until the last call, where it becomes what the stream
   * covered. `done` never decreases, counts the frames the target holds
   * (written, or found already there), is reported at least every MiB, and
   * ends equal to `total` before the final flush. A callback that throws
   * stops the apply as an abort does: the promise rejects with what it threw
   * once the writes issued have settled, and the target holds a prefix of
   * the stream's frames (applying the stream again finishes the job).
   * @default undefined
   */
  onProgress?: ((event: ProgressEvent) => void) | undefined;
}

/** What {@link applyStream} did, once all of it is durable on the target. */
export interface ApplyReport {
  /** The random UUID the export gave the stream. */
  readonly streamId: string;
  /** The base snapshot's id (incremental streams), as the exporting device knows it. */
  readonly from: string | undefined;
  /** The id of the snapshot the target now holds, as the exporting device knows it. */
  readonly to: string;
  /** Whether the stream was incremental (carried only what differs from `from`). */
  readonly incremental: boolean;
  /** Frames in the stream, every one checked. */
  readonly frames: number;
  /**
   * Frames not written because the target already held their new content
   * (an incremental stream applied again, or after it was cut off).
   */
  readonly framesSkipped: number;
  /** Data bytes the stream carries. */
  readonly dataBytes: number;
  /** Bytes written to the target. */
  readonly bytesWritten: number;
  /** Extents (runs of contiguous blocks) the stream covers. */
  readonly extents: number;
}

/** How far {@link applyStream} got before it failed. */
export interface AppliedProgress {
  /**
   * Frames from the start of the stream whose content the target holds
   * (written, or already there): always a prefix of the stream.
   */
  readonly frames: number;
  /** Bytes written for them. */
  readonly bytes: number;
}

/**
 * The error {@link applyStream} rejects with (an abort aside): a
 * BlockDeviceError whose `applied` says how far the stream was applied.
 * `ECORRUPT`: the stream is damaged, truncated, or its frames are missing,
 * repeated or out of order. `EINVAL`: a bad argument, a target of another
 * size or block size, a stream format this version does not read, or a
 * target that does not hold the stream's base. Other codes come from the
 * target, whose error is the `cause`.
 */
export class StreamApplyError extends BlockDeviceError {
  /** How far the stream was applied; `{ frames: 0, bytes: 0 }` if nothing was written. */
  readonly applied: AppliedProgress;

  constructor(
    code: BlockDeviceErrorCode,
    message: string,
    applied: AppliedProgress,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
    this.name = 'StreamApplyError';
    this.applied = applied;
  }
}

const NOTHING_APPLIED: AppliedProgress = { frames: 0, bytes: 0 };

// ------------------------------------------------------------------- export

/**
 * Exports snapshot `to` of `device` as a verified stream (the format of
 * docs/stream-format.md): everything `to` holds, or with `from` only the
 * blocks that differ between `from` and `to`, found from the device's
 * change tables (`changedExtents`) without reading anything else.
 *
 * Guarantees: the stream is pulled — one piece (at most 1 MiB of data) is
 * read from the device when the consumer wants more, so memory stays
 * bounded whatever the device size. Extents of zeros go as zero frames,
 * without their bytes (a full stream's pieces are cut at runs of all-zero
 * 4 KiB units; an incremental stream's extents whose new content is zeros),
 * so a mostly empty volume's stream is about what was written to it. An incremental stream reads every changed
 * block up to three times: as `from` and as `to` for the manifest (the
 * checksums that let `applyStream` prove the target's base; a base CRC the
 * snapshot store keeps is not read), and as `to` again for its frame, except
 * the first 16 MiB of `to`, kept from the manifest pass (so an
 * incremental holds up to 16 MiB more while its manifest goes out); it
 * reads nothing else. Data is read through snapshot handles
 * opened on the first pull and closed at the end, on cancel, on abort and on
 * error.
 *
 * A writable `to` is frozen from this call until the stream ends, errors or
 * is cancelled: every write to it called meanwhile, through any handle,
 * rejects `EBUSY` and changes nothing; writes called before this call are
 * in the stream. The stream carries exactly one state of the snapshot, never
 * a mix. Read the stream to its end or cancel it: one left unread keeps the
 * snapshot frozen. A device that cannot freeze a snapshot (one outside this
 * library) cannot export a writable one (`EINVAL`).
 *
 * For Node streams, `Readable.fromWeb(exportStream(...))` gives a Readable
 * (to pipe into a file or socket); the web stream is also async-iterable.
 *
 * @throws (synchronously, before anything is read) `EINVAL` for a device
 *   that is not change-tracking, a bad option, or extents the device reports
 *   that are not whole ascending blocks, or a writable `to` the device
 *   cannot freeze; `ENOENT` for an unknown snapshot; `ECLOSED`. The stream
 *   errors with `ENOENT` if a snapshot is deleted during the export, the
 *   device's own errors, or the signal's reason.
 */
export function exportStream(
  device: ChangeTracking,
  options: ExportStreamOptions,
): ReadableStream<Uint8Array> {
  const plan = planExport(device, options);
  const exporter = new StreamExporter(device, plan, options);
  return new ReadableStream<Uint8Array>(
    {
      start: (controller) => exporter.start(controller),
      pull: (controller) => exporter.pull(controller),
      cancel: () => exporter.stop(),
    },
    // Two frames: one the consumer is taking while the next is read.
    new ByteLengthQueuingStrategy({ highWaterMark: 2 * FRAME_DATA_MAX }),
  );
}

// -------------------------------------------------------------------- apply

/**
 * Applies a stream made by {@link exportStream} to `target`, checking all of
 * it: afterwards the target holds snapshot `to` (on the extents the stream
 * covers), durably.
 *
 * Guarantees:
 * - Nothing unchecked is written. Every frame is checked in full — head CRC,
 *   stream id, frame number in sequence, offset inside the target (and, for
 *   an incremental stream, equal to its manifest entry), data checksum
 *   (Fletcher-4) — before it is written. A damaged, truncated, reordered, repeated or spliced
 *   stream fails with `ECORRUPT` and whatever it wrote is a prefix of the
 *   stream's frames (`err.applied`), made durable (best effort).
 * - The base is proved before anything is written. An incremental stream's
 *   manifest is read first, and the target's content of every extent it
 *   lists is read and must have the CRC-32 of the base (snapshot `from`) or
 *   the Fletcher-4 of the new content; otherwise `EINVAL` ("target does not hold the stream's
 *   base") with the target untouched. The proof covers the extents the
 *   stream changes: a target that differs from the base elsewhere cannot be
 *   seen, and CRC-32 tells contents apart with a 2^-32 chance of a miss per
 *   extent.
 * - Idempotent and resumable: applying a stream again, or again after it was
 *   cut off, ends with the same target content; an incremental stream skips
 *   (reads and checks, but does not write) frames whose extent already holds
 *   the new content.
 * - Sparse: a zero frame's extent is read from the target and zeros are
 *   written only over its 4 KiB units (or blocks, if larger) that are not
 *   zero already, so a target that is zero there (a new sparse file) is not
 *   written and stays sparse.
 * - Streams of format versions 2 and 3 are read; another version is
 *   `EINVAL` before anything is written.
 * - The target's size and block size must equal the exporting device's
 *   (`EINVAL` before anything is written). The target is flushed before
 *   the promise resolves.
 * - The input may be chunked anywhere (down to one byte per chunk). It may be
 *   a web `ReadableStream` or any `AsyncIterable<Uint8Array>`, a Node
 *   `Readable` (a file's `createReadStream()`, a socket) included. A stream
 *   not read to its end is cancelled.
 *
 * @throws {@link StreamApplyError}: `ECORRUPT`, `EINVAL` (bad arguments
 *   too), `EROFS` for a read-only target, or the target's own error code
 *   (its error as `cause`). An abort rejects with the signal's reason.
 */
export async function applyStream(
  stream: ByteSource,
  target: BlockDevice,
  options: ApplyStreamOptions = {},
): Promise<ApplyReport> {
  let reader: ChunkReader;
  try {
    checkTarget(target);
    checkOptions(options, { signal: 'signal', onProgress: 'function' }, 'applyStream');
    reader = new ChunkReader(stream);
  } catch (err) {
    throw asApplyError(err, NOTHING_APPLIED);
  }
  const applier = new StreamApplier(reader, target, options);
  try {
    return await applier.run();
  } catch (err) {
    await reader.release(err);
    const { cause, applied } = await applier.stop(err);
    // An abort rejects with the caller's own reason, as the platform's APIs
    // do, and so does a progress callback's throw.
    if (options.signal?.aborted === true && cause === options.signal.reason) throw cause;
    if (applier.progressFailed(cause)) throw cause;
    throw asApplyError(cause, applied);
  }
}

function checkTarget(target: BlockDevice): void {
  const methods = ['read', 'write', 'flush'] as const;
  if (
    typeof target !== 'object' ||
    target === null ||
    methods.some((m) => typeof target[m] !== 'function')
  ) {
    throw new BlockDeviceError('EINVAL', 'applyStream: target must be a BlockDevice');
  }
  checkGeometry('applyStream: target', target.size, target.blockSize);
  if (target.readOnly) throw new BlockDeviceError('EROFS', 'applyStream: target is read-only');
}

function asApplyError(err: unknown, applied: AppliedProgress): StreamApplyError {
  if (err instanceof StreamApplyError) return err;
  if (BlockDeviceError.is(err)) {
    // The code leads the message already; keep the message without it.
    const message = err.message.startsWith(`${err.code}: `)
      ? err.message.slice(err.code.length + 2)
      : err.message;
    return new StreamApplyError(err.code, message, applied, { cause: err });
  }
  const detail = err instanceof Error ? err.message : String(err);
  return new StreamApplyError('EIO', `applyStream failed: ${detail}`, applied, { cause: err });
}
