import { io } from '../base/index.js';
import { checksum } from '../checksum/index.js';
import type { BlockDevice } from '../device.js';
import { BlockDeviceError } from '../errors.js';

/*
 * The superblock every metadata store here starts with (the COW store, the
 * journal): two slots, written alternately by generation, so a torn write of
 * one leaves the other; the newest valid slot wins. `kind` says which device
 * formatted the store. See docs/ARCHITECTURE.md, "On-disk formats".
 */

export const SUPERBLOCK_SLOT = 4096;
export const SUPERBLOCK_BYTES = 512;
export const STORE_MAGIC = 0x4b4e5342; // "BSNK" little-endian
export const FORMAT_VERSION = 1;
export const MAX_PARAMS = 256;
/**
 * Byte of the flags field: bit 0 says the store was closed cleanly (then
 * `closedFrames` is at 60), bit 1 that a flush attested frames (then
 * `attestedFrames` is there); never both.
 */
const FLAGS_AT = 37;
const CLOSED_CLEANLY = 1;
const FRAMES_ATTESTED = 2;
const FRAME_COUNT_AT = 60;

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
  /**
   * Set only in a superblock written by a clean close: how many log frames of
   * this epoch the store was closed with, all of them verified durable. Absent
   * while the store is in use, and in every superblock written before the
   * mark existed (those bytes were zero), which therefore reads as "not
   * closed cleanly".
   */
  closedFrames?: number | undefined;
  /**
   * Set in a superblock a `flush()` wrote while the store is in use (not
   * flushed itself): this many log frames of this epoch were durable. Only
   * frames after them can be a torn tail. Absent when `closedFrames` is set.
   */
  attestedFrames?: number | undefined;
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

export function encodeSuperblock(sb: Superblock): Uint8Array {
  const out = new Uint8Array(SUPERBLOCK_BYTES);
  const view = new DataView(out.buffer);
  view.setUint32(0, STORE_MAGIC, true);
  view.setUint32(4, FORMAT_VERSION, true);
  view.setUint32(8, sb.kind, true);
  view.setFloat64(12, sb.generation, true);
  view.setFloat64(20, sb.tableCapacity, true);
  view.setFloat64(28, sb.logCapacity, true);
  view.setUint8(36, sb.active);
  if (sb.closedFrames !== undefined) {
    view.setUint8(FLAGS_AT, CLOSED_CLEANLY);
    view.setUint32(FRAME_COUNT_AT, sb.closedFrames, true);
  } else if (sb.attestedFrames !== undefined) {
    view.setUint8(FLAGS_AT, FRAMES_ATTESTED);
    view.setUint32(FRAME_COUNT_AT, sb.attestedFrames, true);
  }
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
  if (view.getUint32(0, true) !== STORE_MAGIC) return 'no blocksnap magic';
  const crc = view.getUint32(SUPERBLOCK_BYTES - 4, true);
  if (checksum(bytes.subarray(0, SUPERBLOCK_BYTES - 4)) !== crc) return 'checksum mismatch';
  const version = view.getUint32(4, true);
  if (version !== FORMAT_VERSION)
    return `format version ${version}, this library reads ${FORMAT_VERSION}`;
  const paramsLength = view.getUint16(56, true);
  if (paramsLength > MAX_PARAMS) return 'params length out of range';
  const flags = view.getUint8(FLAGS_AT);
  const frameCount = view.getUint32(FRAME_COUNT_AT, true);
  const closedCleanly = (flags & CLOSED_CLEANLY) !== 0;
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
    closedFrames: closedCleanly ? frameCount : undefined,
    attestedFrames: !closedCleanly && (flags & FRAMES_ATTESTED) !== 0 ? frameCount : undefined,
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
