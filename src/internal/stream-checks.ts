import { BlockDeviceError } from '../errors.js';
import { checksum } from './metadata-codec.js';
import { checkFrameTail, FRAME_TAIL, hex32 } from './stream-format.js';

/*
 * The check of a frame `applyStream` has read, before it is written: its
 * data CRC against its tail (and its manifest entry). The applier checks
 * each frame as soon as it is read, and writes it only once it passed: a
 * damaged frame is never written, nor any frame after it.
 *
 * The CRC is computed here, on the main thread, right after the frame was
 * assembled (its bytes still in cache): a worker thread for it measured no
 * faster on 2 cores (bench stream-apply-file), and a library should not
 * start threads without need.
 */

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
 * from byte 0, against its tail and, if given, the new-content CRC its
 * manifest entry lists (`expected`).
 * @throws `ECORRUPT` for a damaged frame.
 */
export function checkFrame(
  number: number,
  offset: number,
  length: number,
  buffer: Uint8Array,
  skip: boolean,
  expected: number | undefined,
): CheckedFrame {
  const data = buffer.subarray(0, length);
  const crc = checksum(data);
  checkFrameTail(buffer.subarray(length, length + FRAME_TAIL), number, crc);
  if (expected !== undefined && crc !== expected) {
    throw new BlockDeviceError(
      'ECORRUPT',
      `frame ${number}: data CRC ${hex32(crc)} differs from the new-content CRC its manifest entry lists`,
    );
  }
  return { number, offset, data, buffer, skip };
}
