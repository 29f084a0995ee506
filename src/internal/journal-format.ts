import { randomInt } from 'node:crypto';
import type { BlockDevice } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import {
  encodeSuperblock,
  readSuperblock,
  SECTOR,
  SUPERBLOCK_BYTES,
  SUPERBLOCK_SLOT,
} from './log-format.js';
import { io } from './lower-io.js';
import { checksum } from './metadata-codec.js';

/*
 * The on-store format of a journal device. JournalWriter and the replay scan
 * decide when each piece is written or read; this module only says what the
 * bytes are.
 *
 *   [0, 8 KiB)        two superblock slots (log-format's, kind JOURNAL_KIND),
 *                     alternating by generation; the newest valid one wins
 *   [8 KiB, +ring)    the ring: frames, each one write to the store
 *
 * A frame is a header (one or more 512-byte sectors) followed by its records'
 * data, back to back:
 *
 *   header  magic u32 · epoch u32 · session u32 · count u32 · firstSeq f64 ·
 *           durableSeq f64 · prevLink u32 · sectors u32 · crc u32 · 0 u32,
 *           then per record: seq f64 · time f64 · offset f64 · length f64 ·
 *           crc u32 · 0 u32
 *   data    each record's bytes: whole production blocks, so every record
 *           starts on a sector
 *
 * `crc` covers the header (the record table included, so transitively every
 * record's data through the record crcs) and is the frame's *link*: the next
 * frame stores it as `prevLink`. Positions are *absolute* byte counts since
 * format (ring position = absolute % capacity), so a frame that does not fit
 * before the ring's end simply starts at the next multiple of the capacity.
 */

/** Identifies a journal store ("JRN1"). */
export const JOURNAL_KIND = 0x314e524a;
/** "BSJF" little-endian. */
export const FRAME_MAGIC = 0x464a5342;
/** Where the ring starts on the store: right after the two superblock slots. */
export const RING_START = 2 * SUPERBLOCK_SLOT;
/** Ring positions are kept in 32-bit sector counts: at most 2 TiB of ring. */
export const MAX_RING = 2 ** 32 * SECTOR - SECTOR;
export const FRAME_FIXED = 48;
export const RECORD_HEADER = 40;
const PARAMS_BYTES = 64;

/** What the superblock says; everything but the head is fixed at format time. */
export interface JournalSuper {
  generation: number;
  /** Random per format: frames of an earlier format never replay. */
  epoch: number;
  /** Ring bytes (a multiple of 512). */
  capacity: number;
  productionSize: number;
  blockSize: number;
  /** Absolute position of the first frame not yet applied to production. */
  headAbs: number;
  /** Sequence number of the first record not yet applied. */
  headSeq: number;
  /** Link (header crc) of the frame before the head: the head frame's `prevLink`. */
  headLink: number;
  /** Time of the last applied record (0 before any checkpoint). */
  headTime: number;
  /** Closed cleanly: every record through `tailSeq` was durable and nothing follows. */
  clean: boolean;
  tailSeq: number;
  /**
   * A checkpoint through this record has begun writing production (at least
   * `headSeq - 1`): points in time before it are gone, even if a power cut
   * stops the checkpoint before it moves the head.
   */
  applyingSeq: number;
}

/** Bytes of ring a store of `storeSize` bytes holds. */
export function ringCapacity(storeSize: number): number {
  const bytes = Math.floor((storeSize - RING_START) / SECTOR) * SECTOR;
  return Math.min(Math.max(bytes, 0), MAX_RING);
}

/** Size in bytes of a frame header holding `count` records. */
export function headerBytes(count: number): number {
  return Math.ceil((FRAME_FIXED + count * RECORD_HEADER) / SECTOR) * SECTOR;
}

/**
 * Writes the superblock into slot `generation % 2` and flushes, so the other
 * slot keeps the previous one until this one is durable.
 */
export async function writeJournalSuper(store: BlockDevice, sb: JournalSuper): Promise<void> {
  const params = new Uint8Array(PARAMS_BYTES);
  const view = new DataView(params.buffer);
  view.setFloat64(0, sb.productionSize, true);
  view.setUint32(8, sb.blockSize, true);
  view.setUint8(12, sb.clean ? 1 : 0);
  view.setFloat64(16, sb.headAbs, true);
  view.setFloat64(24, sb.headSeq, true);
  view.setUint32(32, sb.headLink, true);
  view.setFloat64(40, sb.headTime, true);
  view.setFloat64(48, sb.tailSeq, true);
  view.setFloat64(56, sb.applyingSeq, true);
  const bytes = encodeSuperblock({
    kind: JOURNAL_KIND,
    generation: sb.generation,
    tableCapacity: 0,
    logCapacity: sb.capacity,
    active: 0,
    tableBytes: 0,
    tableCount: 0,
    tableCrc: 0,
    epoch: sb.epoch,
    params,
  });
  await io('journal superblock write', store.write((sb.generation % 2) * SUPERBLOCK_SLOT, bytes));
  await io('journal superblock flush', store.flush());
}

/**
 * Formats `journal` for a production device of `production`'s geometry: an
 * empty ring and a superblock of generation 1, durable when this resolves.
 * @throws `EINVAL` if the ring cannot hold one record of one block.
 */
export async function formatJournal(
  journal: BlockDevice,
  production: { size: number; blockSize: number },
): Promise<void> {
  const capacity = ringCapacity(journal.size);
  const needed = headerBytes(1) + production.blockSize;
  if (capacity < needed) {
    throw new BlockDeviceError(
      'EINVAL',
      `journal of ${journal.size} bytes is too small: it needs at least ${RING_START + needed}`,
    );
  }
  // Erase slot 0 first: a stale superblock of an earlier format there must
  // never outrank ours (generation 1 goes to slot 1).
  await io('journal format', journal.write(0, new Uint8Array(SUPERBLOCK_BYTES)));
  await io('journal format flush', journal.flush());
  await writeJournalSuper(journal, {
    generation: 1,
    // Random, so frames left on a reused store by an earlier format never replay.
    epoch: randomInt(1, 0xffffffff),
    capacity,
    productionSize: production.size,
    blockSize: production.blockSize,
    headAbs: 0,
    headSeq: 1,
    headLink: randomInt(0, 0xffffffff),
    headTime: 0,
    clean: true,
    tailSeq: 0,
    applyingSeq: 0,
  });
}

/**
 * Reads the newest valid superblock of a journal store.
 * @throws `ECORRUPT` if neither slot is valid or the head is malformed,
 *   `EINVAL` if the store holds another kind of device.
 */
export async function readJournalSuper(store: BlockDevice): Promise<JournalSuper> {
  const sb = await readSuperblock(store, JOURNAL_KIND);
  const view = new DataView(sb.params.buffer, sb.params.byteOffset, sb.params.byteLength);
  if (sb.params.length < PARAMS_BYTES) {
    throw new BlockDeviceError('ECORRUPT', 'journal superblock parameters are truncated');
  }
  const out: JournalSuper = {
    generation: sb.generation,
    epoch: sb.epoch,
    capacity: sb.logCapacity,
    productionSize: view.getFloat64(0, true),
    blockSize: view.getUint32(8, true),
    clean: view.getUint8(12) === 1,
    headAbs: view.getFloat64(16, true),
    headSeq: view.getFloat64(24, true),
    headLink: view.getUint32(32, true),
    headTime: view.getFloat64(40, true),
    tailSeq: view.getFloat64(48, true),
    applyingSeq: view.getFloat64(56, true),
  };
  const ints = [
    out.capacity,
    out.productionSize,
    out.headAbs,
    out.headSeq,
    out.tailSeq,
    out.applyingSeq,
  ];
  if (
    !ints.every((n) => Number.isSafeInteger(n) && n >= 0) ||
    out.headSeq < 1 ||
    out.capacity % SECTOR !== 0 ||
    out.capacity === 0 ||
    out.capacity > MAX_RING ||
    out.headAbs % SECTOR !== 0
  ) {
    throw new BlockDeviceError('ECORRUPT', 'journal superblock holds an impossible head or layout');
  }
  return out;
}

/** One record of a frame, as the header lists it. */
export interface RecordHeader {
  seq: number;
  time: number;
  /** Byte offset on production (block aligned). */
  offset: number;
  /** Bytes (whole blocks). */
  length: number;
  crc: number;
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
 * Builds a frame: header and the records' data, in one buffer `out` of
 * exactly `headerBytes(n) + Σ lengths` bytes (zero-filled). Returns its link.
 */
export function encodeFrame(
  out: Uint8Array,
  fields: FrameFields,
  records: readonly (RecordHeader & { data: Uint8Array })[],
): number {
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  view.setUint32(0, FRAME_MAGIC, true);
  view.setUint32(4, fields.epoch, true);
  view.setUint32(8, fields.session, true);
  view.setUint32(12, records.length, true);
  view.setFloat64(16, fields.firstSeq, true);
  view.setFloat64(24, fields.durableSeq, true);
  view.setUint32(32, fields.prevLink, true);
  view.setUint32(36, out.length / SECTOR, true);
  let at = headerBytes(records.length);
  for (let i = 0; i < records.length; i++) {
    const r = records[i]!;
    const h = FRAME_FIXED + i * RECORD_HEADER;
    view.setFloat64(h, r.seq, true);
    view.setFloat64(h + 8, r.time, true);
    view.setFloat64(h + 16, r.offset, true);
    view.setFloat64(h + 24, r.length, true);
    view.setUint32(h + 32, r.crc, true);
    out.set(r.data, at);
    at += r.length;
  }
  const link = headerChecksum(out, records.length);
  view.setUint32(40, link, true);
  return link;
}

function headerChecksum(header: Uint8Array, count: number): number {
  const end = FRAME_FIXED + count * RECORD_HEADER;
  return checksum(header.subarray(44, end), checksum(header.subarray(0, 40)));
}

/** A record to put in a frame: where its whole blocks go, and their bytes. */
export interface FrameRecord {
  firstBlock: number;
  data: Uint8Array;
  /** When its write was called. */
  time: number;
}

/**
 * Builds the frame for `records` (their sequence numbers follow
 * `fields.firstSeq`) into one zero-filled buffer, ready for one write. Record
 * times are clamped to never go backwards from `lastTime`, so a time maps to
 * a sequence number by binary search.
 */
export function buildFrame(
  fields: FrameFields,
  records: readonly FrameRecord[],
  blockSize: number,
  lastTime: number,
  allocate: (length: number) => Uint8Array,
): { frame: Uint8Array; link: number; headers: RecordHeader[] } {
  let time = lastTime;
  let dataBytes = 0;
  const headers = records.map((r, i): RecordHeader & { data: Uint8Array } => {
    time = Math.max(time, r.time);
    dataBytes += r.data.length;
    return {
      seq: fields.firstSeq + i,
      time,
      offset: r.firstBlock * blockSize,
      length: r.data.length,
      crc: checksum(r.data),
      data: r.data,
    };
  });
  const frame = allocate(headerBytes(records.length) + dataBytes);
  return { frame, link: encodeFrame(frame, fields, headers), headers };
}

/** Records a frame header of the first sector claims to hold, or -1 if it is not a frame of `epoch`. */
export function peekFrame(sector: Uint8Array, epoch: number): number {
  const view = new DataView(sector.buffer, sector.byteOffset, sector.byteLength);
  if (view.getUint32(0, true) !== FRAME_MAGIC || view.getUint32(4, true) !== epoch) return -1;
  return view.getUint32(12, true);
}

/**
 * Decodes a frame header (all of its sectors) and checks it against itself:
 * crc, sizes, consecutive sequence numbers, records that are whole blocks
 * inside production. Returns a reason string if anything is off.
 */
export function decodeFrameHeader(
  header: Uint8Array,
  geometry: { productionSize: number; blockSize: number },
): FrameHeader | string {
  const view = new DataView(header.buffer, header.byteOffset, header.byteLength);
  const count = view.getUint32(12, true);
  if (header.length < headerBytes(count)) return 'header truncated';
  const link = view.getUint32(40, true);
  if (headerChecksum(header, count) !== link) return 'header checksum mismatch';
  const firstSeq = view.getFloat64(16, true);
  const bytes = view.getUint32(36, true) * SECTOR;
  const records: RecordHeader[] = [];
  let dataBytes = 0;
  for (let i = 0; i < count; i++) {
    const h = FRAME_FIXED + i * RECORD_HEADER;
    const r: RecordHeader = {
      seq: view.getFloat64(h, true),
      time: view.getFloat64(h + 8, true),
      offset: view.getFloat64(h + 16, true),
      length: view.getFloat64(h + 24, true),
      crc: view.getUint32(h + 32, true),
    };
    const { productionSize, blockSize } = geometry;
    if (
      r.seq !== firstSeq + i ||
      !Number.isSafeInteger(r.offset) ||
      !Number.isSafeInteger(r.length) ||
      r.length <= 0 ||
      r.offset % blockSize !== 0 ||
      r.length % blockSize !== 0 ||
      r.offset + r.length > productionSize
    ) {
      return `record ${i} is malformed`;
    }
    dataBytes += r.length;
    records.push(r);
  }
  if (headerBytes(count) + dataBytes !== bytes) return 'frame size does not match its records';
  return {
    epoch: view.getUint32(4, true),
    session: view.getUint32(8, true),
    firstSeq,
    durableSeq: view.getFloat64(24, true),
    prevLink: view.getUint32(32, true),
    bytes,
    link,
    records,
  };
}
