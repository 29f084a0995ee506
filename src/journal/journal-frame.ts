import { SECTOR } from '../base/index.js';
import { checksum } from '../checksum/index.js';
import {
  FRAME_FIXED,
  headerBytes,
  JOURNAL_FRAME_MAGIC,
  NOTE_BYTES,
  RECORD_HEADER,
  RECORD_RESTORE,
  RECORD_WRITE,
} from './journal-format.js';

/*
 * Frames of the journal ring (the layout is described in journal-format.ts):
 * building one for a batch of records, and decoding and checking a header.
 */

/** One record of a frame, as the header lists it. */
export interface RecordHeader {
  seq: number;
  time: number;
  /** Byte offset on production (block aligned). */
  offset: number;
  /** Bytes (whole blocks; a note's sector). */
  length: number;
  crc: number;
  /** RECORD_WRITE, or the kind of note. */
  kind: number;
}

/** A decoded frame header. */
export interface FrameHeader {
  epoch: number;
  session: number;
  firstSeq: number;
  durableSeq: number;
  prevLink: number;
  /** Whole frame, header included, in bytes. */
  bytes: number;
  /** The header crc: the next frame's `prevLink`. */
  link: number;
  records: RecordHeader[];
}

/** What a frame's header says apart from its records. */
export interface FrameFields {
  epoch: number;
  session: number;
  firstSeq: number;
  durableSeq: number;
  prevLink: number;
}

/**
 * Encodes a frame's header into `out`, which holds at least its
 * `headerBytes(n)` bytes (zero-filled); `frameBytes` is the whole frame's
 * size, header and the records' data. Returns its link.
 */
function encodeFrameHeader(
  out: Uint8Array,
  fields: FrameFields,
  records: readonly RecordHeader[],
  frameBytes: number,
): number {
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  view.setUint32(0, JOURNAL_FRAME_MAGIC, true);
  view.setUint32(4, fields.epoch, true);
  view.setUint32(8, fields.session, true);
  view.setUint32(12, records.length, true);
  view.setFloat64(16, fields.firstSeq, true);
  view.setFloat64(24, fields.durableSeq, true);
  view.setUint32(32, fields.prevLink, true);
  view.setUint32(36, frameBytes / SECTOR, true);
  for (let i = 0; i < records.length; i++) {
    const r = records[i]!;
    const h = FRAME_FIXED + i * RECORD_HEADER;
    view.setFloat64(h, r.seq, true);
    view.setFloat64(h + 8, r.time, true);
    view.setFloat64(h + 16, r.offset, true);
    view.setFloat64(h + 24, r.length, true);
    view.setUint32(h + 32, r.crc, true);
    view.setUint32(h + 36, r.kind, true);
  }
  const link = headerChecksum(out, records.length);
  view.setUint32(40, link, true);
  return link;
}

function headerChecksum(header: Uint8Array, count: number): number {
  const end = FRAME_FIXED + count * RECORD_HEADER;
  return checksum(header.subarray(44, end), checksum(header.subarray(0, 40)));
}

/** A record to put in a frame: where its whole blocks go, and their bytes; or a note. */
export interface FrameRecord {
  /** RECORD_WRITE, or a note kind (whose data is its NOTE_BYTES sector). */
  kind: number;
  firstBlock: number;
  data: Uint8Array;
  /** When its write was called. */
  time: number;
}

/** A frame ready to write: its bytes in pieces, back to back. */
export interface BuiltFrame {
  /**
   * The frame: one buffer holding all of it (`gather`), or its header
   * followed by each record's own data buffer, uncopied.
   */
  pieces: Uint8Array[];
  /** Bytes of the whole frame. */
  length: number;
  link: number;
  headers: RecordHeader[];
}

/**
 * Builds the frame for `records` (their sequence numbers follow
 * `fields.firstSeq`), ready for one write: gathered into one zero-filled
 * buffer, or (`gather` false, for a store that writes pieces in one
 * vectored I/O) as a header followed by the records' data. Record times are
 * clamped to never go backwards from `lastTime`, so a time maps to a
 * sequence number by binary search.
 */
export function buildFrame(
  fields: FrameFields,
  records: readonly FrameRecord[],
  blockSize: number,
  lastTime: number,
  allocate: (length: number) => Uint8Array,
  gather: boolean,
): BuiltFrame {
  let time = lastTime;
  let dataBytes = 0;
  const headers = records.map((r, i): RecordHeader & { data: Uint8Array } => {
    time = Math.max(time, r.time);
    dataBytes += r.data.length;
    return {
      seq: fields.firstSeq + i,
      time,
      kind: r.kind,
      offset: r.kind === RECORD_WRITE ? r.firstBlock * blockSize : 0,
      length: r.data.length,
      crc: checksum(r.data),
      data: r.data,
    };
  });
  const head = headerBytes(records.length);
  const length = head + dataBytes;
  if (!gather) {
    const header = allocate(head);
    const link = encodeFrameHeader(header, fields, headers, length);
    const pieces = [header];
    for (const r of records) pieces.push(r.data);
    return { pieces, length, link, headers };
  }
  const frame = allocate(length);
  const link = encodeFrameHeader(frame, fields, headers, length);
  let at = head;
  for (const r of records) {
    frame.set(r.data, at);
    at += r.data.length;
  }
  return { pieces: [frame], length, link, headers };
}

/** Records a frame header of the first sector claims to hold, or -1 if it is not a frame of `epoch`. */
export function peekFrame(sector: Uint8Array, epoch: number): number {
  const view = new DataView(sector.buffer, sector.byteOffset, sector.byteLength);
  if (view.getUint32(0, true) !== JOURNAL_FRAME_MAGIC || view.getUint32(4, true) !== epoch)
    return -1;
  return view.getUint32(12, true);
}

/**
 * The record table of a frame header, decoded into columns (record `i`'s
 * sequence number is the frame's `firstSeq + i`, which decoding checks).
 * Replay decodes every frame into one of these, reused: an object per
 * record was a large part of what replay spent besides the CRCs
 * (docs/ARCHITECTURE.md, Performance notes, "Replay").
 */
export class RecordColumns {
  /** Records of the frame last decoded into it. */
  count = 0;
  time = new Float64Array(0);
  /** Byte offset on production (block aligned; 0 for a note). */
  offset = new Float64Array(0);
  /** Bytes (whole blocks; a note's sector). */
  length = new Float64Array(0);
  crc = new Uint32Array(0);
  /** RECORD_WRITE, or the kind of note. */
  kind = new Uint32Array(0);

  /** Makes room for `n` records (what they held before is lost). */
  reserve(n: number): void {
    if (this.time.length >= n) return;
    const size = Math.max(n, 2 * this.time.length, 64);
    this.time = new Float64Array(size);
    this.offset = new Float64Array(size);
    this.length = new Float64Array(size);
    this.crc = new Uint32Array(size);
    this.kind = new Uint32Array(size);
  }
}

/** A decoded frame header's own fields; its records are in a {@link RecordColumns}. */
export interface FrameSummary extends FrameFields {
  /** Records in the frame. */
  count: number;
  /** Whole frame, header included, in bytes. */
  bytes: number;
  /** The header crc: the next frame's `prevLink`. */
  link: number;
}

/**
 * Decodes a frame header (all of its sectors) into `into` and checks it
 * against itself: crc, sizes, consecutive sequence numbers, records that
 * are whole blocks inside production. Returns a reason string if anything
 * is off (then `into` holds no meaningful records).
 */
export function decodeFrameInto(
  header: Uint8Array,
  geometry: { productionSize: number; blockSize: number },
  into: RecordColumns,
): FrameSummary | string {
  const view = new DataView(header.buffer, header.byteOffset, header.byteLength);
  const count = view.getUint32(12, true);
  if (header.length < headerBytes(count)) return 'header truncated';
  const link = view.getUint32(40, true);
  if (headerChecksum(header, count) !== link) return 'header checksum mismatch';
  const firstSeq = view.getFloat64(16, true);
  const bytes = view.getUint32(36, true) * SECTOR;
  const { productionSize, blockSize } = geometry;
  into.reserve(count);
  into.count = count;
  const { time, offset: offsets, length: lengths, crc, kind: kinds } = into;
  let dataBytes = 0;
  for (let i = 0; i < count; i++) {
    const h = FRAME_FIXED + i * RECORD_HEADER;
    const offset = view.getFloat64(h + 16, true);
    const length = view.getFloat64(h + 24, true);
    const kind = view.getUint32(h + 36, true);
    if (view.getFloat64(h, true) !== firstSeq + i || kind > RECORD_RESTORE) {
      return `record ${i} is malformed`;
    }
    if (kind !== RECORD_WRITE) {
      if (offset !== 0 || length !== NOTE_BYTES) return `record ${i} is a malformed note`;
    } else if (
      !Number.isSafeInteger(offset) ||
      !Number.isSafeInteger(length) ||
      length <= 0 ||
      offset % blockSize !== 0 ||
      length % blockSize !== 0 ||
      offset + length > productionSize
    ) {
      return `record ${i} is malformed`;
    }
    time[i] = view.getFloat64(h + 8, true);
    offsets[i] = offset;
    lengths[i] = length;
    crc[i] = view.getUint32(h + 32, true);
    kinds[i] = kind;
    dataBytes += length;
  }
  if (headerBytes(count) + dataBytes !== bytes) return 'frame size does not match its records';
  return {
    epoch: view.getUint32(4, true),
    session: view.getUint32(8, true),
    firstSeq,
    durableSeq: view.getFloat64(24, true),
    prevLink: view.getUint32(32, true),
    count,
    bytes,
    link,
  };
}

/**
 * The frame `decodeFrameInto` decoded, its records left in `columns`, as
 * objects: for the callers that decode a few headers or keep them.
 */
export function frameHeaderOf(frame: FrameSummary, columns: RecordColumns): FrameHeader {
  const records: RecordHeader[] = [];
  for (let i = 0; i < frame.count; i++) {
    records.push({
      seq: frame.firstSeq + i,
      time: columns.time[i]!,
      offset: columns.offset[i]!,
      length: columns.length[i]!,
      crc: columns.crc[i]!,
      kind: columns.kind[i]!,
    });
  }
  return {
    epoch: frame.epoch,
    session: frame.session,
    firstSeq: frame.firstSeq,
    durableSeq: frame.durableSeq,
    prevLink: frame.prevLink,
    bytes: frame.bytes,
    link: frame.link,
    records,
  };
}

/** Columns {@link decodeFrameHeader} decodes into before it makes its objects. */
const scratchColumns = new RecordColumns();

/**
 * {@link decodeFrameInto}, with the records as objects: for the callers
 * that decode a few headers (`check()`, the attestation search) or keep
 * them (replay with CRC workers).
 */
export function decodeFrameHeader(
  header: Uint8Array,
  geometry: { productionSize: number; blockSize: number },
): FrameHeader | string {
  const frame = decodeFrameInto(header, geometry, scratchColumns);
  return typeof frame === 'string' ? frame : frameHeaderOf(frame, scratchColumns);
}
