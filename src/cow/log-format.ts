import { randomInt } from 'node:crypto';
import { io, SECTOR } from '../base/index.js';
import { checksum } from '../checksum/index.js';
import type { BlockDevice } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import {
  alignUp,
  encodeSuperblock,
  logOffset,
  MAX_PARAMS,
  SUPERBLOCK_BYTES,
  SUPERBLOCK_SLOT,
  type Superblock,
  tableOffset,
  WindowReader,
} from '../store/index.js';

/*
 * The on-store format of the COW store's metadata log: checkpoint tables and
 * log frames (after the store's superblock slots), and the scan that reads
 * frames back. MetadataLog decides
 * when each is written; this module only says what the bytes are.
 */

/** How a layer encodes its metadata entries. */
export interface EntryCodec<E> {
  /** Encoded size of one entry in bytes. */
  size(entry: E): number;
  /** Encodes entries back to back at `pos`; returns the end. */
  encode(entries: readonly E[], out: Uint8Array, pos: number): number;
  /** Decodes `count` entries (checksum already verified); `ECORRUPT` naming `where` if malformed. */
  decode(bytes: Uint8Array, count: number, where: string): E[];
}

/** Where the log keeps things on the store; fixed at format time. */
export interface LogLayout {
  /** Bytes reserved for each of the two checkpoint tables. */
  tableCapacity: number;
  /** Bytes reserved for the append-only log. */
  logCapacity: number;
}

export const LOG_FRAME_MAGIC = 0x474c5342; // "BSLG"
export const FRAME_HEADER = 32;
/** A frame larger than this is split; keeps one commit's I/O bounded. */
export const MAX_FRAME = 1 << 20;

export function frameChecksum(frame: Uint8Array, bytes: number): number {
  // Covers the header up to the checksum field, then the entries.
  return checksum(
    frame.subarray(FRAME_HEADER, FRAME_HEADER + bytes),
    checksum(frame.subarray(0, 20)),
  );
}

/**
 * One log frame holding `entries` (`bytes` of them encoded), padded to whole
 * sectors: the header (magic, log epoch, frame sequence number, entry
 * count, entry bytes, checksum), then the entries.
 */
export function encodeFrame<E>(
  codec: EntryCodec<E>,
  entries: readonly E[],
  bytes: number,
  epoch: number,
  seq: number,
): Uint8Array {
  const frame = new Uint8Array(alignUp(FRAME_HEADER + bytes, SECTOR));
  const view = new DataView(frame.buffer);
  view.setUint32(0, LOG_FRAME_MAGIC, true);
  view.setUint32(4, epoch, true);
  view.setUint32(8, seq, true);
  view.setUint32(12, entries.length, true);
  view.setUint32(16, bytes, true);
  codec.encode(entries, frame, FRAME_HEADER);
  view.setUint32(20, frameChecksum(frame, bytes), true);
  return frame;
}

export function encodeTable<E>(
  codec: EntryCodec<E>,
  entries: readonly E[],
  capacity: number,
): Uint8Array {
  const size = entries.reduce((s, e) => s + codec.size(e), 0);
  if (size > capacity) {
    throw new BlockDeviceError('ENOSPC', `metadata table needs ${size} bytes, has ${capacity}`);
  }
  const out = new Uint8Array(size);
  codec.encode(entries, out, 0);
  return out;
}

/** Where a metadata log stands on its store: its superblock, and its frames up to `tail`. */
export interface LogPosition {
  /** The superblock last written. */
  superblock: Superblock;
  /** Frames of the current epoch, all durable. */
  frames: number;
  /** Store offset just past the last of them. */
  tail: number;
}

export interface ScannedFrame<E> {
  offset: number;
  size: number;
  entries: E[];
}

/**
 * Reads frames of the current epoch from the start of the log until the
 * first one that is missing or damaged. If an intact frame with a later
 * sequence number follows it, the damage is in a frame a flush had already
 * made durable: `ECORRUPT`.
 */
export async function scanLog<E>(
  store: BlockDevice,
  sb: Superblock,
  codec: EntryCodec<E>,
): Promise<ScannedFrame<E>[]> {
  const start = logOffset(sb);
  const end = start + sb.logCapacity;
  const reader = new WindowReader(store, start, end);
  const frames: ScannedFrame<E>[] = [];
  let pos = start;
  while (pos + FRAME_HEADER <= end) {
    const frame = await readFrame(reader, pos, sb.epoch, frames.length, end);
    if (frame === undefined) break;
    const entries = codec.decode(
      frame.payload,
      frame.count,
      `log frame ${frames.length} at store offset ${pos}`,
    );
    frames.push({ offset: pos, size: frame.size, entries });
    pos += frame.size;
  }
  for (let probe = pos + SECTOR; probe + FRAME_HEADER <= end; probe += SECTOR) {
    const head = reader.cached(probe, FRAME_HEADER) ?? (await reader.read(probe, FRAME_HEADER));
    const view = new DataView(head.buffer, head.byteOffset, FRAME_HEADER);
    if (view.getUint32(0, true) !== LOG_FRAME_MAGIC || view.getUint32(4, true) !== sb.epoch)
      continue;
    const seq = view.getUint32(8, true);
    if (seq <= frames.length) continue;
    if ((await readFrame(reader, probe, sb.epoch, seq, end)) !== undefined) {
      throw new BlockDeviceError(
        'ECORRUPT',
        `log frame ${frames.length} at store offset ${pos} is damaged, but frame ${seq} at ${probe} after it is intact`,
      );
    }
  }
  return frames;
}

export async function readFrame(
  reader: WindowReader,
  pos: number,
  epoch: number,
  seq: number,
  end: number,
): Promise<{ size: number; count: number; payload: Uint8Array } | undefined> {
  const frame = await inspectFrame(reader, pos, epoch, seq, end);
  return typeof frame === 'string' ? undefined : frame;
}

/**
 * Reads the frame that must be frame `seq` of `epoch` at `pos`: the frame,
 * or why it is not one (a scan stops there; `check()` reports it).
 */
export async function inspectFrame(
  reader: WindowReader,
  pos: number,
  epoch: number,
  seq: number,
  end: number,
): Promise<{ size: number; count: number; payload: Uint8Array } | string> {
  const head = await reader.read(pos, FRAME_HEADER);
  const view = new DataView(head.buffer, head.byteOffset, FRAME_HEADER);
  if (view.getUint32(0, true) !== LOG_FRAME_MAGIC) return 'its header has no frame magic';
  if (view.getUint32(4, true) !== epoch)
    return `its header names epoch ${view.getUint32(4, true)}, not ${epoch}`;
  if (view.getUint32(8, true) !== seq)
    return `its header names frame ${view.getUint32(8, true)}, not ${seq}`;
  const count = view.getUint32(12, true);
  const bytes = view.getUint32(16, true);
  const size = alignUp(FRAME_HEADER + bytes, SECTOR);
  if (pos + size > end) return `its header claims ${bytes} entry bytes, past the log's end`;
  const frame = await reader.read(pos, FRAME_HEADER + bytes);
  if (frameChecksum(frame, bytes) !== view.getUint32(20, true)) {
    return 'its header and entries fail their checksum';
  }
  return { size, count, payload: frame.slice(FRAME_HEADER) };
}

/**
 * Formats `store` for a metadata log: `table` (of `count` entries) as the
 * initial checkpoint table, an empty log, the owner's `params`, and a
 * superblock of generation 1. Resolves only once the format is durable.
 */
export async function formatLog(
  store: BlockDevice,
  kind: number,
  layout: { tableCapacity: number; logCapacity: number },
  params: Uint8Array,
  table: Uint8Array,
  count: number,
): Promise<void> {
  if (params.length > MAX_PARAMS) throw new Error('metadata params too large');
  const sb: Superblock = {
    kind,
    generation: 1,
    tableCapacity: layout.tableCapacity,
    logCapacity: layout.logCapacity,
    active: 0,
    tableBytes: table.length,
    tableCount: count,
    tableCrc: checksum(table),
    // A random epoch, so frames left on a reused store by an earlier format never replay.
    epoch: randomInt(1, 0xffffffff),
    params,
  };
  await io('store format table', store.write(tableOffset(sb, 0), table));
  // Invalidate the first log sector and slot 0: stale contents from an
  // earlier format must never be mistaken for ours. Generation 1 goes to
  // slot 1 (generation % 2), so the first checkpoint (generation 2) writes
  // slot 0 and never overwrites the only valid superblock.
  await io('store format log', store.write(logOffset(sb), new Uint8Array(SECTOR)));
  await io('store format superblock', store.write(0, new Uint8Array(SUPERBLOCK_BYTES)));
  await io('store format flush', store.flush());
  await io('store format superblock', store.write(SUPERBLOCK_SLOT, encodeSuperblock(sb)));
  await io('store format flush', store.flush());
}
