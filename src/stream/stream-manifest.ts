import { checksum, FLETCHER4_BYTES } from '../checksum/index.js';
import type { Extent } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import {
  checkPiece,
  corrupt,
  getU64,
  hex32,
  pieces,
  type StreamHeader,
  sameBytes,
  setU64,
  viewOf,
} from './stream-format.js';

/*
 * The manifest of an incremental stream (docs/stream-format.md, "Manifest"):
 * right after the header, before any frame, one entry per frame with the
 * CRC-32 of its extent in the base snapshot and the Fletcher-4 of it in the
 * new one, which is what lets applyStream prove the target's base before
 * writing anything. The base's is a CRC-32 because stores keep one per
 * preserved block (cow-store.ts), from which an extent's is combined without
 * reading it; the new content's is what its frame's tail carries.
 */

/** Manifest bytes before its entries. */
export const MANIFEST_HEAD = 36;
/** One manifest entry: offset u64, length u32, flags u32, base CRC-32, new content's Fletcher-4. */
export const MANIFEST_ENTRY = 20 + FLETCHER4_BYTES;
/** Where an entry's new-content Fletcher-4 starts. */
const NEW_SUM = 20;
/** The CRC after the manifest's entries. */
export const MANIFEST_CRC = 4;
/**
 * Entry flag: the base snapshot does not hold the extent (a selective `from`
 * that designates less than `to`), so there is no base content to prove
 * there: the frame is written whatever the target holds.
 */
export const BASE_NOT_HELD = 1;
const KNOWN_ENTRY_FLAGS = BASE_NOT_HELD;
const MANIFEST_MAGIC = 0x464d5342; // "BSMF"

/**
 * The manifest of an incremental stream: one entry per frame, in frame
 * order, with the checksums of the target's content before (the base,
 * CRC-32) and after (the new content, Fletcher-4). Kept as its encoded
 * entries and read in place, so a manifest of millions of entries costs
 * {@link MANIFEST_ENTRY} bytes each, not an object each.
 */
export class Manifest {
  /** Entries, back to back. */
  readonly entries: Uint8Array;
  readonly count: number;
  readonly #view: DataView;

  constructor(entries: Uint8Array) {
    this.entries = entries;
    this.count = entries.length / MANIFEST_ENTRY;
    this.#view = viewOf(entries);
  }

  /**
   * A manifest listing the pieces of `extents` (see {@link pieces}), each
   * also cut where `baseHolds` (what the base snapshot holds) begins or
   * ends, so that the base holds all of a piece or none of it. Checksums
   * are still 0, for an exporter to fill in.
   */
  static forExtents(
    extents: readonly Extent[],
    maxData: number,
    baseHolds: readonly Extent[],
  ): Manifest {
    let count = 0;
    for (const _ of splitByHolds(pieces(extents, maxData), baseHolds)) count++;
    const manifest = new Manifest(new Uint8Array(count * MANIFEST_ENTRY));
    const view = manifest.#view;
    let at = 0;
    for (const piece of splitByHolds(pieces(extents, maxData), baseHolds)) {
      setU64(view, at, piece.offset);
      view.setUint32(at + 8, piece.length, true);
      view.setUint32(at + 12, piece.held ? 0 : BASE_NOT_HELD, true);
      at += MANIFEST_ENTRY;
    }
    return manifest;
  }

  offset(i: number): number {
    return getU64(this.#view, i * MANIFEST_ENTRY, `manifest entry ${i} offset`);
  }

  length(i: number): number {
    return this.#view.getUint32(i * MANIFEST_ENTRY + 8, true);
  }

  /** Whether the base snapshot holds entry `i`'s extent (so its content there can be proved). */
  baseHeld(i: number): boolean {
    return (this.flags(i) & BASE_NOT_HELD) === 0;
  }

  /** CRC of the extent in the base snapshot (0 where it does not hold it). */
  baseCrc(i: number): number {
    return this.#view.getUint32(i * MANIFEST_ENTRY + 16, true);
  }

  /** Fletcher-4 of the extent in the new snapshot: a view of the entry. */
  newSum(i: number): Uint8Array {
    const at = i * MANIFEST_ENTRY + NEW_SUM;
    return this.entries.subarray(at, at + FLETCHER4_BYTES);
  }

  /** Sets entry `i`'s base CRC-32 and new content's Fletcher-4. */
  setChecksums(i: number, baseCrc: number, newSum: Uint8Array): void {
    this.#view.setUint32(i * MANIFEST_ENTRY + 16, baseCrc, true);
    this.entries.set(newSum, i * MANIFEST_ENTRY + NEW_SUM);
  }

  /** Entry `i`'s flags ({@link BASE_NOT_HELD}). */
  flags(i: number): number {
    return this.#view.getUint32(i * MANIFEST_ENTRY + 12, true);
  }

  /** Sum of the entries' lengths. */
  totalBytes(): number {
    let total = 0;
    for (let i = 0; i < this.count; i++) total += this.length(i);
    return total;
  }
}

/**
 * Encodes a manifest: head, entries, and the CRC of the entries, each a
 * buffer of its own: the stream's consumer may keep or transfer them, and
 * the entries are a copy since the export goes on reading the manifest's own.
 */
export function encodeManifest(manifest: Manifest, streamId: Uint8Array): Uint8Array[] {
  const head = new Uint8Array(MANIFEST_HEAD);
  const view = viewOf(head);
  view.setUint32(0, MANIFEST_MAGIC, true);
  view.setUint32(4, manifest.count, true);
  setU64(view, 8, manifest.totalBytes());
  head.set(streamId, 16);
  const headCrc = checksum(head.subarray(0, 32));
  view.setUint32(32, headCrc, true);
  const crc = new Uint8Array(MANIFEST_CRC);
  // Chained from the head's CRC: entries are bound to the head they follow.
  viewOf(crc).setUint32(0, checksum(manifest.entries, headCrc), true);
  return [head, manifest.entries.slice(), crc];
}

/**
 * Checks a manifest head; returns how many entries follow and the CRC the
 * entries' CRC continues from. The head has a CRC of its own so that the
 * count is known to be intact before the reader waits for that many bytes.
 * @throws `ECORRUPT`.
 */
export function decodeManifestHead(
  head: Uint8Array,
  header: StreamHeader,
  streamId: Uint8Array,
): { count: number; totalBytes: number; headCrc: number } {
  const view = viewOf(head);
  if (view.getUint32(0, true) !== MANIFEST_MAGIC) corrupt('manifest does not follow the header');
  const stored = view.getUint32(32, true);
  const headCrc = checksum(head.subarray(0, 32));
  if (stored !== headCrc) {
    corrupt(`manifest head CRC is ${hex32(headCrc)}, the head says ${hex32(stored)}`);
  }
  if (!sameBytes(head.subarray(16, 32), streamId)) corrupt('manifest belongs to another stream');
  const count = view.getUint32(4, true);
  const totalBytes = getU64(view, 8, 'manifest total');
  if (count > header.deviceSize / header.blockSize) {
    corrupt(`manifest lists ${count} extents, more than the device has blocks`);
  }
  return { count, totalBytes, headCrc };
}

/**
 * Checks a manifest's entries against their CRC and the header: ascending,
 * disjoint, whole blocks inside the device, no larger than a frame.
 * @throws `ECORRUPT`.
 */
export function decodeManifest(
  entries: Uint8Array,
  crc: Uint8Array,
  head: { count: number; totalBytes: number; headCrc: number },
  header: StreamHeader,
): Manifest {
  const stored = viewOf(crc).getUint32(0, true);
  const actual = checksum(entries, head.headCrc);
  if (stored !== actual) {
    corrupt(`manifest entries CRC is ${hex32(actual)}, the manifest says ${hex32(stored)}`);
  }
  const manifest = new Manifest(entries);
  let end = 0;
  let total = 0;
  for (let i = 0; i < manifest.count; i++) {
    const offset = manifest.offset(i);
    const length = manifest.length(i);
    checkPiece(`manifest entry ${i}`, offset, length, end, header);
    const flags = manifest.flags(i);
    if ((flags & ~KNOWN_ENTRY_FLAGS) !== 0) {
      // Intact (the CRC matched) but not understood: a newer writer's.
      throw new BlockDeviceError('EINVAL', `manifest entry ${i} has unknown flags ${hex32(flags)}`);
    }
    end = offset + length;
    total += length;
  }
  if (total !== head.totalBytes) {
    corrupt(`manifest entries cover ${total} bytes, its head says ${head.totalBytes}`);
  }
  return manifest;
}

/**
 * Cuts ascending `pieces` where ascending `holds` begin and end, telling
 * for each part whether `holds` covers it.
 */
function* splitByHolds(
  pieces: Iterable<Extent>,
  holds: readonly Extent[],
): Generator<Extent & { held: boolean }> {
  let h = 0;
  for (const piece of pieces) {
    const end = piece.offset + piece.length;
    let at = piece.offset;
    while (at < end) {
      while (h < holds.length && holds[h]!.offset + holds[h]!.length <= at) h++;
      const hold = holds[h];
      let stop: number;
      let held: boolean;
      if (hold === undefined || hold.offset >= end) [stop, held] = [end, false];
      else if (hold.offset > at) [stop, held] = [hold.offset, false];
      else [stop, held] = [Math.min(end, hold.offset + hold.length), true];
      yield { offset: at, length: stop - at, held };
      at = stop;
    }
  }
}
