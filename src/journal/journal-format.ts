import { randomInt } from 'node:crypto';
import { io, SECTOR } from '../base/index.js';
import type { BlockDevice } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import {
  encodeSuperblock,
  readSuperblock,
  refuseReformat,
  SUPERBLOCK_BYTES,
  SUPERBLOCK_SLOT,
} from '../store/index.js';

/*
 * The on-store format of a journal device. JournalWriter and the replay scan
 * decide when each piece is written or read; this module only says what the
 * bytes are.
 *
 *   [0, 8 KiB)        two superblock slots (store/superblock.ts, kind JOURNAL_KIND),
 *                     alternating by generation; the newest valid one wins
 *   [8 KiB, +ring)    the ring: frames, each one write to the store
 *   [ring end, +2·C)  two snapshot catalog slots of C bytes (C = 0 without
 *                     snapshots); the superblock names the valid one
 *
 * A frame is a header (one or more 512-byte sectors) followed by its records'
 * data, back to back:
 *
 *   header  magic u32 · epoch u32 · session u32 · count u32 · firstSeq f64 ·
 *           durableSeq f64 · prevLink u32 · sectors u32 · crc u32 · 0 u32,
 *           then per record: seq f64 · time f64 · offset f64 · length f64 ·
 *           crc u32 · kind u32
 *   data    each record's bytes: for a write, whole production blocks; for
 *           a note (a snapshot, its deletion, a restore), one 512-byte
 *           sector saying what — so every record starts on a sector
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
export const JOURNAL_FRAME_MAGIC = 0x464a5342;
/** Where the ring starts on the store: right after the two superblock slots. */
export const RING_START = 2 * SUPERBLOCK_SLOT;
/** Ring positions are kept in 32-bit sector counts: at most 2 TiB of ring. */
export const MAX_RING = 2 ** 32 * SECTOR - SECTOR;
export const FRAME_FIXED = 48;
export const RECORD_HEADER = 40;
/**
 * Params bytes this version writes. Stores written before the clean-close
 * tail position existed hold 64 (no `tailAbs`); both are read.
 */
const PARAMS_BYTES = 72;
const PARAMS_BYTES_BEFORE_TAIL = 64;

/** Record kinds: a write of whole blocks, or a note of one sector. */
export const RECORD_WRITE = 0;
export const RECORD_SNAPSHOT = 1;
export const RECORD_DELETE = 2;
export const RECORD_RESTORE = 3;
/** Bytes of data a note record holds. */
export const NOTE_BYTES = SECTOR;
/** Catalog bytes reserved per snapshot: the largest entry journal-catalog encodes. */
export const CATALOG_ENTRY_MAX = 600;

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
   * Set only with `clean`, by a close (or format) of this version: the
   * absolute ring position just past the last frame, every frame up to it
   * durable, so replay must end exactly there. Undefined while the journal
   * is in use, and in a store closed by a version before it (then only
   * `tailSeq` is checked).
   */
  tailAbs: number | undefined;
  /**
   * A checkpoint through this record has begun writing production (at least
   * `headSeq - 1`): points in time before it are gone, even if a power cut
   * stops the checkpoint before it moves the head.
   */
  applyingSeq: number;
  /** Bytes of each of the two snapshot catalog slots (0: no snapshots). */
  catalogCapacity: number;
  /** Which slot holds the catalog, its bytes, entries and checksum. */
  catalogActive: number;
  catalogBytes: number;
  catalogCount: number;
  catalogCrc: number;
}

/** Store offset of catalog slot `which`: right after the ring. */
export function catalogOffset(sb: JournalSuper, which: number): number {
  return RING_START + sb.capacity + which * sb.catalogCapacity;
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
  view.setFloat64(64, sb.tailAbs ?? 0, true);
  const bytes = encodeSuperblock({
    kind: JOURNAL_KIND,
    generation: sb.generation,
    // log-format puts its tables before the log; ours follow the ring, so
    // RING_START never moves — the sizes add up the same for its checks.
    tableCapacity: sb.catalogCapacity,
    logCapacity: sb.capacity,
    active: sb.catalogActive,
    tableBytes: sb.catalogBytes,
    tableCount: sb.catalogCount,
    tableCrc: sb.catalogCrc,
    epoch: sb.epoch,
    params,
  });
  await io('journal superblock write', store.write((sb.generation % 2) * SUPERBLOCK_SLOT, bytes));
  await io('journal superblock flush', store.flush());
}

/**
 * Bytes of one of the two snapshot catalog slots that follow the ring: room
 * for `maxSnapshots` entries of at most CATALOG_ENTRY_MAX bytes, in whole
 * sectors.
 */
export function catalogSlotBytes(maxSnapshots: number): number {
  return Math.ceil((maxSnapshots * CATALOG_ENTRY_MAX) / SECTOR) * SECTOR;
}

/**
 * Formats `journal` for a production device of `production`'s geometry: an
 * empty ring, room for `maxSnapshots` catalog entries, and a superblock of
 * generation 1, durable when this resolves.
 * @throws `EINVAL` if the ring cannot hold one record of one block.
 */
export async function formatJournal(
  journal: BlockDevice,
  production: { size: number; blockSize: number },
  maxSnapshots: number,
  force = false,
): Promise<void> {
  const catalogCapacity = catalogSlotBytes(maxSnapshots);
  const capacity = ringCapacity(journal.size - 2 * catalogCapacity);
  const needed = headerBytes(1) + production.blockSize;
  if (capacity < needed) {
    throw new BlockDeviceError(
      'EINVAL',
      `journal of ${journal.size} bytes is too small: it needs at least ${RING_START + needed + 2 * catalogCapacity}`,
    );
  }
  await refuseReformat(journal, 'journal', force);
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
    tailAbs: 0,
    applyingSeq: 0,
    catalogCapacity,
    catalogActive: 0,
    catalogBytes: 0,
    catalogCount: 0,
    catalogCrc: 0,
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
  if (sb.params.length < PARAMS_BYTES_BEFORE_TAIL) {
    throw new BlockDeviceError('ECORRUPT', 'journal superblock parameters are truncated');
  }
  const clean = view.getUint8(12) === 1;
  const out: JournalSuper = {
    generation: sb.generation,
    epoch: sb.epoch,
    capacity: sb.logCapacity,
    productionSize: view.getFloat64(0, true),
    blockSize: view.getUint32(8, true),
    clean,
    headAbs: view.getFloat64(16, true),
    headSeq: view.getFloat64(24, true),
    headLink: view.getUint32(32, true),
    headTime: view.getFloat64(40, true),
    tailSeq: view.getFloat64(48, true),
    tailAbs: clean && sb.params.length >= PARAMS_BYTES ? view.getFloat64(64, true) : undefined,
    applyingSeq: view.getFloat64(56, true),
    catalogCapacity: sb.tableCapacity,
    catalogActive: sb.active,
    catalogBytes: sb.tableBytes,
    catalogCount: sb.tableCount,
    catalogCrc: sb.tableCrc,
  };
  const ints = [
    out.capacity,
    out.productionSize,
    out.headAbs,
    out.headSeq,
    out.tailSeq,
    out.applyingSeq,
    out.catalogCapacity,
    out.tailAbs ?? 0,
  ];
  if (
    !ints.every((n) => Number.isSafeInteger(n) && n >= 0) ||
    out.headSeq < 1 ||
    out.capacity % SECTOR !== 0 ||
    out.capacity === 0 ||
    out.capacity > MAX_RING ||
    out.catalogCapacity % SECTOR !== 0 ||
    out.headAbs % SECTOR !== 0 ||
    (out.tailAbs !== undefined && (out.tailAbs % SECTOR !== 0 || out.tailAbs < out.headAbs))
  ) {
    throw new BlockDeviceError('ECORRUPT', 'journal superblock holds an impossible head or layout');
  }
  return out;
}
