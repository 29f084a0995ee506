import { readResultBuffer } from '../base/index.js';
import { checksum, FLETCHER4_BYTES } from '../checksum/index.js';
import {
  checkPiece,
  corrupt,
  getU64,
  hex32,
  type StreamHeader,
  sameBytes,
  setU64,
  viewOf,
} from './stream-format.js';

/*
 * The frames and the trailer of a blocksnap stream (docs/stream-format.md,
 * "Frame" and "Trailer"): the control data before and after each frame's
 * data (seed 004, claim 44), and the totals that end the stream. As
 * stream-format.ts, this only says what the bytes are.
 */

/** A frame head and the trailer have the same size, so a reader reads one and looks at its magic. */
export const RECORD_HEAD = 40;
/** Bytes after a frame's data: data checksum (Fletcher-4), frame number, tail magic. */
export const FRAME_TAIL = FLETCHER4_BYTES + 8;

// ASCII tags read as little-endian u32s.
const STREAM_FRAME_MAGIC = 0x52465342; // "BSFR"
/** A zero frame's head: no data and no tail follow it (version 3 on). */
export const ZERO_FRAME_MAGIC = 0x465a5342; // "BSZF"
const TAIL_MAGIC = 0x45465342; // "BSFE"
const TRAILER_MAGIC = 0x4e455342; // "BSEN"

/**
 * What a record head turned out to be: the head of a frame (`'frame'`, its
 * data and tail follow), of a zero frame (`'zero'`: its extent holds only
 * zero bytes, and nothing follows the head), or the trailer.
 */
export type RecordHead =
  | {
      readonly kind: 'frame' | 'zero';
      readonly number: number;
      readonly offset: number;
      readonly length: number;
    }
  | {
      readonly kind: 'trailer';
      readonly frames: number;
      readonly dataBytes: number;
      readonly extents: number;
    };

/**
 * Encodes the head of frame `number` (0-based) carrying `length` bytes for
 * `offset`; with `zero`, of a zero frame: those bytes are all zero, and the
 * head is the whole frame. A zero frame is numbered and CRC'd as any other,
 * so dropping, repeating, reordering or splicing one is caught as for a
 * data frame; its content needs no checksum, since its head says what it is.
 */
export function encodeFrameHead(
  number: number,
  offset: number,
  length: number,
  streamId: Uint8Array,
  zero = false,
): Uint8Array {
  const out = new Uint8Array(RECORD_HEAD);
  writeFrameHead(out, number, offset, length, streamId, zero);
  return out;
}

/**
 * {@link encodeFrameHead}'s bytes, written to `out`'s first
 * {@link RECORD_HEAD} bytes: for a frame built in one buffer, head, data
 * and tail (see {@link frameBuffer}).
 */
export function writeFrameHead(
  out: Uint8Array,
  number: number,
  offset: number,
  length: number,
  streamId: Uint8Array,
  zero = false,
): void {
  const view = viewOf(out);
  view.setUint32(0, zero ? ZERO_FRAME_MAGIC : STREAM_FRAME_MAGIC, true);
  view.setUint32(4, number, true);
  setU64(view, 8, offset);
  view.setUint32(16, length, true);
  out.set(streamId, 20);
  view.setUint32(36, checksum(out.subarray(0, 36)), true);
}

/**
 * Encodes the control data after a frame's data: its Fletcher-4 checksum
 * (`dataSum`, {@link FLETCHER4_BYTES} bytes) and the frame number again.
 */
export function encodeFrameTail(number: number, dataSum: Uint8Array): Uint8Array {
  const out = new Uint8Array(FRAME_TAIL);
  out.set(dataSum);
  writeFrameTailEnd(out, 0, number);
  return out;
}

/**
 * Writes the frame number and tail magic of a tail that starts at `at` in
 * `out`, whose Fletcher-4 (its first {@link FLETCHER4_BYTES}) is already
 * there: a frame built in one buffer gets its checksum written in place.
 */
export function writeFrameTailEnd(out: Uint8Array, at: number, number: number): void {
  const view = viewOf(out);
  view.setUint32(at + FLETCHER4_BYTES, number, true);
  view.setUint32(at + FLETCHER4_BYTES + 4, TAIL_MAGIC, true);
}

/**
 * A buffer for one whole data frame of `length` data bytes: head at 0,
 * data at {@link RECORD_HEAD}, tail after the data. Its ArrayBuffer is its
 * own, so the stream's consumer, who gets it whole, may keep or transfer
 * it; not zero-filled, since the head, the data and the tail overwrite
 * every byte before it is sent (docs/ARCHITECTURE.md, "Buffers: who owns
 * what").
 */
export function frameBuffer(length: number): Uint8Array {
  return readResultBuffer(RECORD_HEAD + length + FRAME_TAIL);
}

/** Encodes the trailer: the totals a reader checks its own counts against. */
export function encodeTrailer(
  totals: { frames: number; dataBytes: number; extents: number },
  streamId: Uint8Array,
): Uint8Array {
  const out = new Uint8Array(RECORD_HEAD);
  const view = viewOf(out);
  view.setUint32(0, TRAILER_MAGIC, true);
  view.setUint32(4, totals.frames, true);
  setU64(view, 8, totals.dataBytes);
  view.setUint32(16, totals.extents, true);
  out.set(streamId, 20);
  view.setUint32(36, checksum(out.subarray(0, 36)), true);
  return out;
}

/**
 * Decodes what follows the manifest or a frame: the next frame's head or the
 * trailer, checked against its CRC and the stream id. A frame head is also
 * checked as a piece: whole blocks, in the device, after `previousEnd`.
 * @throws `ECORRUPT`, naming `where`.
 */
export function decodeRecordHead(
  bytes: Uint8Array,
  header: StreamHeader,
  streamId: Uint8Array,
  previousEnd: number,
  where: string,
): RecordHead {
  const view = viewOf(bytes);
  const magic = view.getUint32(0, true);
  // Version 2 has no zero frames: there, their magic is as unknown as any.
  const zeroFrames = header.version >= 3;
  if (
    magic !== STREAM_FRAME_MAGIC &&
    magic !== TRAILER_MAGIC &&
    (magic !== ZERO_FRAME_MAGIC || !zeroFrames)
  ) {
    corrupt(`${where}: neither a frame nor the trailer (magic ${hex32(magic)})`);
  }
  const stored = view.getUint32(36, true);
  const actual = checksum(bytes.subarray(0, 36));
  if (stored !== actual)
    corrupt(`${where}: head CRC is ${hex32(actual)}, the head says ${hex32(stored)}`);
  if (!sameBytes(bytes.subarray(20, 36), streamId)) corrupt(`${where}: belongs to another stream`);
  if (magic === TRAILER_MAGIC) {
    return {
      kind: 'trailer',
      frames: view.getUint32(4, true),
      dataBytes: getU64(view, 8, `${where}: trailer data bytes`),
      extents: view.getUint32(16, true),
    };
  }
  const number = view.getUint32(4, true);
  const offset = getU64(view, 8, `${where}: frame offset`);
  const length = view.getUint32(16, true);
  checkPiece(`${where}: frame ${number}`, offset, length, previousEnd, header);
  return { kind: magic === ZERO_FRAME_MAGIC ? 'zero' : 'frame', number, offset, length };
}

/**
 * Checks a frame's data, by its Fletcher-4 checksum `dataSum`, against the
 * control data after it.
 * @throws `ECORRUPT` if the data checksum or the repeated frame number differs.
 */
export function checkFrameTail(tail: Uint8Array, number: number, dataSum: Uint8Array): void {
  const view = viewOf(tail);
  if (view.getUint32(FLETCHER4_BYTES + 4, true) !== TAIL_MAGIC) {
    corrupt(`frame ${number}: tail magic is damaged`);
  }
  const repeated = view.getUint32(FLETCHER4_BYTES, true);
  if (repeated !== number) corrupt(`frame ${number}: its tail names frame ${repeated}`);
  const stored = tail.subarray(0, FLETCHER4_BYTES);
  if (!sameBytes(stored, dataSum)) {
    corrupt(
      `frame ${number}: data checksum is ${hexBytes(dataSum)}, the tail says ${hexBytes(stored)}`,
    );
  }
}

/** A checksum longer than a u32 (Fletcher-4's 32 bytes) as messages quote it: hex, in stream byte order. */
export function hexBytes(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}
