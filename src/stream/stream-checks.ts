import { FLETCHER4_BYTES, fletcher4 } from '../checksum/index.js';
import { BlockDeviceError } from '../errors.js';
import { sameBytes } from './stream-format.js';
import { checkFrameTail, FRAME_TAIL, hexBytes } from './stream-frames.js';
import type { Manifest } from './stream-manifest.js';
import { isZeroSum } from './stream-zeros.js';

/*
 * The check of a frame `applyStream` has read, before it is written: its
 * data's Fletcher-4 against its tail (and its manifest entry). The applier
 * checks each frame as soon as it is read, and writes it only once it
 * passed: a damaged frame is never written, nor any frame after it.
 *
 * The checksum is computed here, on the main thread, right after the frame
 * was assembled (its bytes still in cache). With CRC-32 (format version 1)
 * this was most of an apply's main-thread time and held it below a raw
 * write (bench stream-apply-file); a worker thread for the CRC measured no
 * faster on 2 cores.
 */

/** The checksum of the frame being checked: frames are checked one at a time. */
const dataSum = new Uint8Array(FLETCHER4_BYTES);

/** A frame that passed its checks, to be written. */
export interface CheckedFrame {
  readonly number: number;
  /** Where the frame's data goes on the target. */
  readonly offset: number;
  /** The frame's data: a view of `buffer`. */
  readonly data: Uint8Array;
  /** The buffer the frame was read into, whole: the caller's to reuse once written. */
  readonly buffer: Uint8Array;
  /** The target already holds the new content (a resumed incremental apply). */
  readonly skip: boolean;
}

/**
 * Checks frame `number`, whose data (`length` bytes) and tail fill `buffer`
 * from byte 0, against its tail and, if given, the new content's
 * Fletcher-4 its manifest entry lists (`expected`).
 * @throws `ECORRUPT` for a damaged frame.
 */
export function checkFrame(
  number: number,
  offset: number,
  length: number,
  buffer: Uint8Array,
  skip: boolean,
  expected: Uint8Array | undefined,
): CheckedFrame {
  const data = buffer.subarray(0, length);
  fletcher4(data, dataSum);
  checkFrameTail(buffer.subarray(length, length + FRAME_TAIL), number, dataSum);
  if (expected !== undefined && !sameBytes(dataSum, expected)) {
    throw new BlockDeviceError(
      'ECORRUPT',
      `frame ${number}: data checksum ${hexBytes(dataSum)} differs from the new content's its manifest entry lists`,
    );
  }
  return { number, offset, data, buffer, skip };
}

/** A frame head must be the next extent the manifest lists. @throws `ECORRUPT`. */
export function checkAgainstManifest(
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

/**
 * A zero frame of an incremental stream must be one whose manifest entry
 * lists zeros as the new content (a Fletcher-4 of zeros, which says so
 * exactly): the check a data frame's checksum gets against its entry.
 * @throws `ECORRUPT`.
 */
export function checkZeroAgainstManifest(manifest: Manifest, frame: number, where: string): void {
  if (!isZeroSum(manifest.newSum(frame))) {
    throw new BlockDeviceError(
      'ECORRUPT',
      `${where}: frame ${frame} is a zero frame, its manifest entry lists content that is not zeros`,
    );
  }
}
