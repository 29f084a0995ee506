import type { BlockDevice } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import { io } from './lower-io.js';
import { checksum } from './metadata-codec.js';
import type { EntryCodec } from './metadata-log.js';

/*
 * The on-store format of a metadata log: superblock slots, checkpoint tables
 * and log frames, and the scan that reads frames back. MetadataLog decides
 * when each is written; this module only says what the bytes are.
 */

export const SUPERBLOCK_SLOT = 4096;
export const SUPERBLOCK_BYTES = 512;
export const SECTOR = 512;
export const MAGIC = 0x4b4e5342; // "BSNK" little-endian
export const FRAME_MAGIC = 0x474c5342; // "BSLG"
export const FORMAT_VERSION = 1;
export const FRAME_HEADER = 32;
export const MAX_PARAMS = 256;
/** A frame larger than this is split; keeps one commit's I/O bounded. */
export const MAX_FRAME = 1 << 20;

export interface Superblock {
  kind: number;
  generation: number;
  tableCapacity: number;
  logCapacity: number;
  active: number;
  tableBytes: number;
  tableCount: number;
  tableCrc: number;
  epoch: number;
  params: Uint8Array;
}

export function tableOffset(sb: { tableCapacity: number }, which: number): number {
  return 2 * SUPERBLOCK_SLOT + which * sb.tableCapacity;
}

export function logOffset(sb: { tableCapacity: number }): number {
  return 2 * SUPERBLOCK_SLOT + 2 * sb.tableCapacity;
}

export function alignUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

export function frameChecksum(frame: Uint8Array, bytes: number): number {
  // Covers the header up to the checksum field, then the entries.
  return checksum(
    frame.subarray(FRAME_HEADER, FRAME_HEADER + bytes),
    checksum(frame.subarray(0, 20)),
  );
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

export function encodeSuperblock(sb: Superblock): Uint8Array {
  const out = new Uint8Array(SUPERBLOCK_BYTES);
  const view = new DataView(out.buffer);
  view.setUint32(0, MAGIC, true);
  view.setUint32(4, FORMAT_VERSION, true);
  view.setUint32(8, sb.kind, true);
  view.setFloat64(12, sb.generation, true);
  view.setFloat64(20, sb.tableCapacity, true);
  view.setFloat64(28, sb.logCapacity, true);
  view.setUint8(36, sb.active);
  view.setUint32(40, sb.tableBytes, true);
  view.setUint32(44, sb.tableCount, true);
  view.setUint32(48, sb.tableCrc, true);
  view.setUint32(52, sb.epoch, true);
  view.setUint16(56, sb.params.length, true);
  out.set(sb.params, 64);
  view.setUint32(SUPERBLOCK_BYTES - 4, checksum(out.subarray(0, SUPERBLOCK_BYTES - 4)), true);
  return out;
}

export function decodeSuperblock(bytes: Uint8Array): Superblock | string {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(0, true) !== MAGIC) return 'no blocksnap magic';
  const crc = view.getUint32(SUPERBLOCK_BYTES - 4, true);
  if (checksum(bytes.subarray(0, SUPERBLOCK_BYTES - 4)) !== crc) return 'checksum mismatch';
  const version = view.getUint32(4, true);
  if (version !== FORMAT_VERSION)
    return `format version ${version}, this library reads ${FORMAT_VERSION}`;
  const paramsLength = view.getUint16(56, true);
  if (paramsLength > MAX_PARAMS) return 'params length out of range';
  return {
    kind: view.getUint32(8, true),
    generation: view.getFloat64(12, true),
    tableCapacity: view.getFloat64(20, true),
    logCapacity: view.getFloat64(28, true),
    active: view.getUint8(36),
    tableBytes: view.getUint32(40, true),
    tableCount: view.getUint32(44, true),
    tableCrc: view.getUint32(48, true),
    epoch: view.getUint32(52, true),
    params: bytes.slice(64, 64 + paramsLength),
  };
}

export async function readSuperblock(store: BlockDevice, kind: number): Promise<Superblock> {
  if (store.size < 2 * SUPERBLOCK_SLOT) {
    throw new BlockDeviceError(
      'ECORRUPT',
      `store of ${store.size} bytes is too small to hold metadata`,
    );
  }
  const both = await io('store read superblocks', store.read(0, 2 * SUPERBLOCK_SLOT));
  const slots = [0, 1].map((i) =>
    decodeSuperblock(both.subarray(i * SUPERBLOCK_SLOT, i * SUPERBLOCK_SLOT + SUPERBLOCK_BYTES)),
  );
  const valid = slots.filter((s): s is Superblock => typeof s !== 'string');
  if (valid.length === 0) {
    throw new BlockDeviceError(
      'ECORRUPT',
      `no valid superblock at store offsets 0 (${slots[0]}) or ${SUPERBLOCK_SLOT} (${slots[1]})`,
    );
  }
  const sb = valid.reduce((a, b) => (b.generation > a.generation ? b : a));
  if (sb.kind !== kind) {
    throw new BlockDeviceError(
      'EINVAL',
      `store holds a different kind of device (0x${sb.kind.toString(16)}, expected 0x${kind.toString(16)})`,
    );
  }
  if (
    logOffset(sb) + sb.logCapacity > store.size ||
    sb.active > 1 ||
    sb.tableBytes > sb.tableCapacity
  ) {
    throw new BlockDeviceError('ECORRUPT', 'superblock layout does not fit the store');
  }
  return sb;
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
    if (view.getUint32(0, true) !== FRAME_MAGIC || view.getUint32(4, true) !== sb.epoch) continue;
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
  const head = await reader.read(pos, FRAME_HEADER);
  const view = new DataView(head.buffer, head.byteOffset, FRAME_HEADER);
  if (view.getUint32(0, true) !== FRAME_MAGIC) return undefined;
  if (view.getUint32(4, true) !== epoch || view.getUint32(8, true) !== seq) return undefined;
  const count = view.getUint32(12, true);
  const bytes = view.getUint32(16, true);
  const size = alignUp(FRAME_HEADER + bytes, SECTOR);
  if (pos + size > end) return undefined;
  const frame = await reader.read(pos, FRAME_HEADER + bytes);
  if (frameChecksum(frame, bytes) !== view.getUint32(20, true)) return undefined;
  return { size, count, payload: frame.slice(FRAME_HEADER) };
}

/**
 * Sequential reads of a region through 1 MiB windows, so replay is a few
 * large I/Os; the window after the current one is read ahead while the
 * caller checks this one, so a scan waits for the store only when it runs
 * ahead of it (replay spent ~40 % of its time idle, waiting, without). One
 * read at a time: a scan awaits each before it asks for the next.
 */
export class WindowReader {
  static readonly WINDOW = 1 << 20;
  #start = 0;
  #data: Uint8Array = new Uint8Array(0);
  /** The window right after the current one, being read. */
  #ahead: { start: number; data: Promise<Uint8Array> } | undefined;

  constructor(
    private readonly store: BlockDevice,
    private readonly begin: number,
    private readonly end: number,
  ) {}

  /**
   * `[pos, pos + length)` as a view of the current window, without I/O, or
   * undefined if the window does not hold all of it: a scan takes this
   * before it awaits {@link read}, so the bytes of most records cost no
   * promise at all.
   */
  cached(pos: number, length: number): Uint8Array | undefined {
    const at = pos - this.#start;
    if (at < 0 || at + length > this.#data.length) return undefined;
    return this.#data.subarray(at, at + length);
  }

  /**
   * `[pos, pos + length)`: a view of a window, or (for bytes that run from
   * one window into the next) a copy of its own. Views stay valid: every
   * window is a buffer of its own, never written again.
   */
  async read(pos: number, length: number): Promise<Uint8Array> {
    const hit = this.cached(pos, length);
    if (hit !== undefined) return hit;
    const current = this.#start + this.#data.length;
    if (this.#ahead !== undefined && pos >= this.#start && pos < current + WindowReader.WINDOW) {
      // The scan went on past this window, into the one read ahead.
      const head = pos < current ? this.#data.subarray(pos - this.#start) : undefined;
      await this.#advance();
      if (head === undefined) {
        const next = this.cached(pos, length);
        if (next !== undefined) return next;
      } else if (pos + length <= this.#start + this.#data.length) {
        const out = new Uint8Array(length);
        out.set(head);
        out.set(this.#data.subarray(0, length - head.length), head.length);
        return out;
      }
    }
    const from = Math.max(this.begin, pos);
    const to = Math.min(this.end, Math.max(pos + length, from + WindowReader.WINDOW));
    this.#ahead = undefined;
    this.#data = await io('store read log', this.store.read(from, to - from));
    this.#start = from;
    this.#readAhead();
    return this.#data.subarray(pos - from, pos - from + length);
  }

  /** Makes the window read ahead the current one, and reads the next ahead. */
  async #advance(): Promise<void> {
    const ahead = this.#ahead!;
    this.#ahead = undefined;
    this.#data = await io('store read log', ahead.data);
    this.#start = ahead.start;
    this.#readAhead();
  }

  #readAhead(): void {
    const from = this.#start + this.#data.length;
    if (from >= this.end) return;
    let data: Promise<Uint8Array>;
    try {
      data = this.store.read(from, Math.min(WindowReader.WINDOW, this.end - from));
    } catch {
      return; // A device that throws instead of rejecting: the scan reads it when it gets there.
    }
    // Read on spec: a failure matters only to a caller that gets there (then
    // rethrown by #advance); the scan may stop first, or jump elsewhere.
    data.catch(() => {});
    this.#ahead = { start: from, data };
  }
}
