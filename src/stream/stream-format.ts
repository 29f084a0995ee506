import { MAX_BLOCK_SIZE, MIN_BLOCK_SIZE } from '../base/index.js';
import { checksum } from '../checksum/index.js';
import type { Extent } from '../device.js';
import { BlockDeviceError } from '../errors.js';

/*
 * The byte layout of a blocksnap stream (docs/stream-format.md is the
 * reference; this module, stream-frames.ts and stream-manifest.ts only say
 * what the bytes are, never when they are read or written):
 *
 *   header · [manifest, incremental streams only] · frame* · trailer
 *
 * Every integer is little-endian. Every structure carries its own CRC-32 —
 * frame data its Fletcher-4 (fletcher4.ts: it is checked on the path every
 * applied byte takes) — so damage is reported where it is, and every
 * structure after the header names the stream id, so pieces of two streams
 * cannot be spliced together unseen. This module holds the header, what all
 * structures share, and how extents are cut into frames; stream-frames.ts
 * the frames and the trailer.
 */

/**
 * First bytes of every stream. As PNG's signature does, it starts with a
 * byte above 0x7F and holds CR LF, SUB and LF, so a transfer that strips the
 * high bit or translates line endings fails at the first bytes, not deep in
 * a frame.
 */
export const STREAM_MAGIC = Uint8Array.of(0x89, 0x42, 0x53, 0x4e, 0x0d, 0x0a, 0x1a, 0x0a);
/**
 * The format version this module writes. Version 3 added zero frames and
 * the header's total; this module still reads version 2 (whose streams
 * carry neither). Version 1, never released, checked frame data with CRC-32.
 */
export const STREAM_VERSION = 3;
/** The oldest version this module reads. */
const OLDEST_READ_VERSION = 2;
/** Header flag: the stream changes only what differs from its base (`from`). */
export const FLAG_INCREMENTAL = 1;
const KNOWN_FLAGS = FLAG_INCREMENTAL;

/** Bytes a reader needs to learn the header's length: magic, version, length. */
export const HEADER_PREFIX = 12;
/** Header bytes before the two snapshot ids, by version: version 3 added the total at 48. */
const HEADER_FIXED = 60;
const HEADER_FIXED_V2 = 52;
/** The longest snapshot id, in UTF-8 bytes, a stream can name. */
export const MAX_ID_BYTES = 1024;
/** The longest header any version may have: bounds what a reader buffers before its CRC. */
const MAX_HEADER = 4096;

/**
 * The most data a frame holds, what exportStream writes and the most a
 * reader accepts: one I/O's worth, so memory stays bounded, and the size up
 * to which Fletcher-4 catches every change of up to three bits (over it,
 * some three-bit patterns cancel out: test/fletcher4.test.ts).
 */
export const FRAME_DATA_MAX = 1 << 20;

const TWO_32 = 2 ** 32;
const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** What a stream's header says. */
export interface StreamHeader {
  /** The format version the stream was written in ({@link STREAM_VERSION} for every stream written now). */
  readonly version: number;
  /**
   * Bytes the frames cover in all, zero frames included (version 3); what a
   * progress total is. Undefined for a version-2 stream, whose header does not say.
   */
  readonly totalBytes: number | undefined;
  /** Whether the stream carries a manifest and changes only what differs from `from`. */
  readonly incremental: boolean;
  /** Size in bytes of the device the stream was exported from; the target's must match. */
  readonly deviceSize: number;
  /** Block size of that device; the target's must match. */
  readonly blockSize: number;
  /** The largest data a frame of this stream holds. */
  readonly maxFrameData: number;
  /** Random UUID of this export; every later structure repeats it. */
  readonly streamId: string;
  /** Id of the base snapshot (incremental streams only). */
  readonly from: string | undefined;
  /** Id of the snapshot the stream brings a target to. */
  readonly to: string;
}

/** Throws `ECORRUPT` with `message`. */
export function corrupt(message: string): never {
  throw new BlockDeviceError('ECORRUPT', message);
}

/** A CRC or magic as 8 hex digits, as messages quote them. */
export function hex32(n: number): string {
  return `0x${(n >>> 0).toString(16).padStart(8, '0')}`;
}

// Offsets reach 2^53; two u32 halves avoid a BigInt per frame.
export function setU64(view: DataView, at: number, value: number): void {
  view.setUint32(at, value % TWO_32, true);
  view.setUint32(at + 4, Math.floor(value / TWO_32), true);
}

/** Reads a u64 written by {@link setU64}; `ECORRUPT` past 2^53, naming `where`. */
export function getU64(view: DataView, at: number, where: string): number {
  const value = view.getUint32(at, true) + view.getUint32(at + 4, true) * TWO_32;
  if (!Number.isSafeInteger(value)) corrupt(`${where}: value ${value} is past 2^53`);
  return value;
}

export function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** The 16 bytes of a UUID in its textual (RFC 9562) byte order. */
export function uuidBytes(id: string): Uint8Array {
  const digits = id.replaceAll('-', '');
  if (!/^[0-9a-f]{32}$/i.test(digits)) {
    throw new BlockDeviceError('EINVAL', `stream id ${id} is not a UUID`);
  }
  const out = new Uint8Array(16);
  for (let i = 0; i < 16; i++) out[i] = Number.parseInt(digits.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function uuidText(bytes: Uint8Array): string {
  const h = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** UTF-8 of a snapshot id, checked against what the header can hold. */
function idBytes(what: string, id: string): Uint8Array {
  const bytes = encoder.encode(id);
  if (bytes.length === 0 || bytes.length > MAX_ID_BYTES) {
    throw new BlockDeviceError(
      'EINVAL',
      `${what} snapshot id ${JSON.stringify(id)} must be 1 to ${MAX_ID_BYTES} UTF-8 bytes`,
    );
  }
  return bytes;
}

// -------------------------------------------------------------------- header

/** What a writer says in a header: the version is always {@link STREAM_VERSION}, and it knows its total. */
export type HeaderFields = Omit<StreamHeader, 'version' | 'totalBytes'> & {
  readonly totalBytes: number;
};

/**
 * Encodes a header, of version {@link STREAM_VERSION}.
 * @throws `EINVAL` for an id that is not 1 to {@link MAX_ID_BYTES} UTF-8 bytes.
 */
export function encodeHeader(header: HeaderFields): Uint8Array {
  const from = header.from === undefined ? new Uint8Array(0) : idBytes('from', header.from);
  const to = idBytes('to', header.to);
  const length = HEADER_FIXED + from.length + to.length + 4;
  const out = new Uint8Array(length);
  const view = viewOf(out);
  out.set(STREAM_MAGIC, 0);
  view.setUint16(8, STREAM_VERSION, true);
  view.setUint16(10, length, true);
  view.setUint32(12, header.incremental ? FLAG_INCREMENTAL : 0, true);
  setU64(view, 16, header.deviceSize);
  view.setUint32(24, header.blockSize, true);
  view.setUint32(28, header.maxFrameData, true);
  out.set(uuidBytes(header.streamId), 32);
  setU64(view, 48, header.totalBytes);
  view.setUint16(56, from.length, true);
  view.setUint16(58, to.length, true);
  out.set(from, HEADER_FIXED);
  out.set(to, HEADER_FIXED + from.length);
  view.setUint32(length - 4, checksum(out.subarray(0, length - 4)), true);
  return out;
}

/**
 * Reads the header's length from its first {@link HEADER_PREFIX} bytes, so
 * the reader knows how much to read before it can check the CRC.
 * @throws `ECORRUPT` if the bytes are not a blocksnap stream or the length
 *   is impossible.
 */
export function headerLength(prefix: Uint8Array): number {
  if (prefix.length < HEADER_PREFIX || !sameBytes(prefix.subarray(0, 8), STREAM_MAGIC)) {
    corrupt('stream does not start with the blocksnap stream signature');
  }
  const length = viewOf(prefix).getUint16(10, true);
  if (length < HEADER_FIXED_V2 + 1 + 4 || length > MAX_HEADER) {
    corrupt(`stream header claims ${length} bytes`);
  }
  return length;
}

/**
 * Decodes and checks a whole header. The CRC is checked first, so a damaged
 * header is always `ECORRUPT`; only an intact header from a newer writer is
 * `EINVAL`.
 * @throws `ECORRUPT` for a damaged header, `EINVAL` for a version or flags
 *   this reader does not know.
 */
export function decodeHeader(bytes: Uint8Array): StreamHeader {
  const length = headerLength(bytes);
  if (bytes.length !== length) corrupt(`stream header is ${bytes.length} of ${length} bytes`);
  const view = viewOf(bytes);
  const stored = view.getUint32(length - 4, true);
  const actual = checksum(bytes.subarray(0, length - 4));
  if (stored !== actual) {
    corrupt(`stream header CRC is ${hex32(actual)}, the header says ${hex32(stored)}`);
  }
  const version = view.getUint16(8, true);
  if (version < OLDEST_READ_VERSION || version > STREAM_VERSION) {
    throw new BlockDeviceError(
      'EINVAL',
      `stream format version ${version} is not one this blocksnap reads (${OLDEST_READ_VERSION} to ${STREAM_VERSION})`,
    );
  }
  // Version 2 had no total: its ids start 8 bytes earlier.
  const fixed = version === 2 ? HEADER_FIXED_V2 : HEADER_FIXED;
  const flags = view.getUint32(12, true);
  if ((flags & ~KNOWN_FLAGS) !== 0) {
    throw new BlockDeviceError('EINVAL', `stream uses unknown flags ${hex32(flags)}`);
  }
  const deviceSize = getU64(view, 16, 'stream header device size');
  const blockSize = view.getUint32(24, true);
  const maxFrameData = view.getUint32(28, true);
  const totalBytes = version === 2 ? undefined : getU64(view, 48, 'stream header total');
  const fromLength = view.getUint16(fixed - 4, true);
  const toLength = view.getUint16(fixed - 2, true);
  const incremental = (flags & FLAG_INCREMENTAL) !== 0;
  // The CRC matched, so anything below is a writer's bug: still ECORRUPT,
  // since the stream cannot be applied as it stands.
  if (
    blockSize < MIN_BLOCK_SIZE ||
    blockSize > MAX_BLOCK_SIZE ||
    (blockSize & (blockSize - 1)) !== 0 ||
    deviceSize % blockSize !== 0
  ) {
    corrupt(`stream header has device size ${deviceSize} and block size ${blockSize}`);
  }
  if (maxFrameData < blockSize || maxFrameData > FRAME_DATA_MAX || maxFrameData % blockSize) {
    corrupt(`stream header has frames of up to ${maxFrameData} bytes`);
  }
  if (totalBytes !== undefined && totalBytes > deviceSize) {
    corrupt(`stream header has a total of ${totalBytes} bytes, past the device size ${deviceSize}`);
  }
  if (fixed + fromLength + toLength + 4 !== length || toLength === 0) {
    corrupt(`stream header ids (${fromLength} and ${toLength} bytes) do not fill its ${length}`);
  }
  if (incremental !== fromLength > 0) {
    corrupt('stream header flags and base snapshot id disagree');
  }
  let from: string | undefined;
  let to: string;
  try {
    from = incremental ? decoder.decode(bytes.subarray(fixed, fixed + fromLength)) : undefined;
    to = decoder.decode(bytes.subarray(fixed + fromLength, fixed + fromLength + toLength));
  } catch {
    corrupt('stream header snapshot ids are not UTF-8');
  }
  return {
    version,
    totalBytes,
    incremental,
    deviceSize,
    blockSize,
    maxFrameData,
    streamId: uuidText(bytes.subarray(32, 48)),
    from,
    to,
  };
}

/**
 * The checks every piece of a stream passes, in the manifest and in frame
 * heads: whole blocks, inside the device, after the previous piece.
 */
export function checkPiece(
  where: string,
  offset: number,
  length: number,
  previousEnd: number,
  header: StreamHeader,
): void {
  const bs = header.blockSize;
  if (length === 0 || length > header.maxFrameData || offset % bs !== 0 || length % bs !== 0) {
    corrupt(`${where}: [${offset}, +${length}) is not whole blocks of ${bs} up to a frame's size`);
  }
  if (offset < previousEnd) corrupt(`${where}: offset ${offset} is before ${previousEnd}`);
  if (offset + length > header.deviceSize) {
    corrupt(
      `${where}: [${offset}, ${offset + length}) ends past the device size ${header.deviceSize}`,
    );
  }
}

// -------------------------------------------------------------------- pieces

/**
 * Splits ascending extents into the pieces frames carry: at most `maxData`
 * bytes each, cut at multiples of `maxData` from the extent's start (whole
 * blocks, since `maxData` is a multiple of the block size).
 */
export function* pieces(extents: readonly Extent[], maxData: number): Generator<Extent> {
  for (const extent of extents) {
    const end = extent.offset + extent.length;
    for (let at = extent.offset; at < end; at += maxData) {
      yield { offset: at, length: Math.min(maxData, end - at) };
    }
  }
}
