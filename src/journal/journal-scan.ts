import { availableParallelism } from 'node:os';
import { SECTOR } from '../base/index.js';
import { CrcWorkers } from '../checksum/index.js';
import type { BlockDevice, ProgressEvent } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import { ScanReader } from '../store/index.js';
import { DURABLE_MARK_AT, readDurableMark } from './durable-mark.js';
import {
  headerBytes,
  JOURNAL_FRAME_MAGIC,
  type JournalSuper,
  RING_START,
} from './journal-format.js';
import { decodeFrameHeader, type FrameHeader, RecordColumns } from './journal-frame.js';
import type { JournalNote } from './journal-notes.js';
import { parallelReplay, type ReplayCursor, replayAhead } from './replay-ahead.js';
import { type CheckedFrame, readCachedFrame, readFrame } from './replay-frame.js';

/** Replay reports progress about this often (bytes of journal). */
const PROGRESS_EVERY = 4 << 20;

/**
 * Called for each replayed record, in sequence order: a write of `blocks`
 * blocks from `firstBlock` (a note: 0 blocks, and the note), whose data
 * starts at ring sector `sector`.
 */
export type OnRecord = (
  seq: number,
  firstBlock: number,
  blocks: number,
  note: JournalNote | undefined,
  sector: number,
  time: number,
) => void;

/** Free-ring bytes the attestation scan takes at once, as one view. */
const SCAN_SPAN = 256 << 10;

/** Where replay left the journal. */
export interface ReplayResult {
  /** Absolute position of the first live frame (the superblock's head, or the next lap's start). */
  headAbs: number;
  /** Absolute position just past the last replayed frame. */
  tailAbs: number;
  /** Sequence number the next record gets. */
  nextSeq: number;
  /** Link of the last replayed frame (the superblock's head link if none). */
  link: number;
  /** Time of the last replayed record (the superblock's head time if none). */
  lastTime: number;
}

/**
 * Reads the journal back from the head, frame by frame, checking every header
 * and record checksum and that each frame continues the chain (sequence
 * numbers and link), and hands each record to `onRecord`.
 *
 * The recovery rule. Replay stops at the first frame that is missing, damaged
 * or does not continue the chain; it and everything after it are dropped.
 * That is right for a torn tail: records not yet covered by a completed
 * flush may be missing, torn or (a disk reorders what it was not told to
 * flush) present out of order after a power cut. It is wrong if a completed
 * flush had made the damaged record durable, which open detects two ways:
 * - the journal was closed cleanly through `tailSeq` (superblock): every
 *   record up to it was durable, so stopping short of it is `ECORRUPT`; and
 *   a store closed by this version also names where its last frame ends
 *   (`tailAbs`): replay must end exactly there, so a damaged frame holding
 *   no record (an attestation) is `ECORRUPT` too, and so is a frame
 *   chaining on past it (none may: close waits for the writer to be idle,
 *   and open clears the mark before it writes a frame);
 * - the superblock says a checkpoint through `applyingSeq` had begun: its
 *   records were durable before that superblock was written, so stopping
 *   short of `applyingSeq` is `ECORRUPT` (a damaged record, or a damaged
 *   newest superblock: the one before it names a head whose ring space a
 *   later checkpoint freed and new frames reused);
 * - any intact frame header elsewhere in the ring whose `durableSeq` reaches
 *   the damaged record — written only after a flush covering that record had
 *   completed — proves it was durable: `ECORRUPT` naming it. (Headers left by
 *   an older lap or a dropped tail never reach it: their `durableSeq` is
 *   below the head or below the point where that tail was dropped.)
 * A damaged record that a completed flush covered but that no surviving
 * header attests (the power was cut after the flush and before any later
 * frame landed) cannot be told from a torn tail and is dropped.
 *
 * @throws `ECORRUPT` naming the damaged record and its store offset.
 */
export async function replayJournal(
  store: BlockDevice,
  sb: JournalSuper,
  onRecord: OnRecord,
  onProgress?: (event: ProgressEvent) => void,
): Promise<ReplayResult> {
  const c = sb.capacity;
  // Shared windows, so worker threads can check the records in them.
  const reader = new ScanReader(store, RING_START, RING_START + c, { shared: true });
  const bs = sb.blockSize;
  let headAbs = sb.headAbs;
  const cursor: ReplayCursor = { abs: headAbs, seq: sb.headSeq, link: sb.headLink };
  let lastTime = sb.headTime;
  let reported = 0;
  // Exact after a clean close (the close recorded where the last frame
  // ends); after a power cut only the ring's size bounds it, and the last
  // event says what replay found.
  const bound = sb.clean && sb.tailAbs !== undefined ? sb.tailAbs - sb.headAbs : c;
  const known = bound === c ? 0 : bound;
  /** Moves the cursor past the frame at `at` just taken. */
  const passed = (at: number, bytes: number, count: number, link: number): void => {
    cursor.abs = at + bytes;
    cursor.seq += count;
    cursor.link = link;
    const done = cursor.abs - headAbs;
    if (onProgress !== undefined && done - reported >= PROGRESS_EVERY) {
      reported = done;
      onProgress({ operation: 'replay', done, total: Math.max(bound, done) });
    }
  };
  // A frame checked by replayAhead (records as objects, kept until judged).
  const accept = (
    at: number,
    frame: FrameHeader,
    notes: (JournalNote | undefined)[] | undefined,
  ): void => {
    const records = frame.records;
    let sector = (at % c) / SECTOR + headerBytes(records.length) / SECTOR;
    for (let i = 0; i < records.length; i++) {
      const r = records[i]!;
      const note = notes === undefined ? undefined : notes[i];
      if (note === undefined) onRecord(r.seq, r.offset / bs, r.length / bs, note, sector, r.time);
      else onRecord(r.seq, 0, 0, note, sector, r.time);
      sector += r.length / SECTOR;
      lastTime = r.time;
    }
    passed(at, frame.bytes, records.length, frame.link);
  };
  // A frame checked here: its records are still in `columns`.
  const columns = new RecordColumns();
  const acceptColumns = (at: number, { frame, notes }: CheckedFrame): void => {
    const count = frame.count;
    const { time, offset, length } = columns;
    let sector = (at % c) / SECTOR + headerBytes(count) / SECTOR;
    for (let i = 0; i < count; i++) {
      const note = notes === undefined ? undefined : notes[i];
      const seq = frame.firstSeq + i;
      if (note === undefined)
        onRecord(seq, offset[i]! / bs, length[i]! / bs, note, sector, time[i]!);
      else onRecord(seq, 0, 0, note, sector, time[i]!);
      sector += length[i]! / SECTOR;
    }
    if (count > 0) lastTime = time[count - 1]!;
    passed(at, frame.bytes, count, frame.link);
  };
  let workers: CrcWorkers | undefined;
  let startWorkers = true;
  let damage = '';
  try {
    for (;;) {
      if (
        startWorkers &&
        Math.max(known, cursor.abs - headAbs) >= parallelReplay.minBytes &&
        availableParallelism() >= parallelReplay.minCpus
      ) {
        startWorkers = false;
        workers = CrcWorkers.start();
      }
      // As many frames as check out, their records checked on workers too;
      // it stops before any frame it does not take, which the code below
      // reads again and judges.
      if (workers !== undefined) await replayAhead(reader, sb, cursor, accept, workers);
      let at = cursor.abs;
      let frame =
        readCachedFrame(reader, sb, at % c, cursor.seq, cursor.link, columns) ??
        (await readFrame(reader, sb, at % c, cursor.seq, cursor.link, columns));
      if (typeof frame === 'string' && at % c !== 0) {
        // The writer starts a frame that does not fit before the ring's end at
        // the next lap; the chain (sequence and link) tells it from stale data.
        const wrapped = await readFrame(reader, sb, 0, cursor.seq, cursor.link, columns);
        if (typeof wrapped !== 'string') {
          const next = at - (at % c) + c;
          if (at === headAbs) headAbs = next;
          at = next;
          frame = wrapped;
        }
      }
      if (typeof frame === 'string') {
        damage = frame;
        break;
      }
      acceptColumns(at, frame);
    }
  } finally {
    workers?.close();
  }
  const abs = cursor.abs;
  const seq = cursor.seq;
  const link = cursor.link;

  // Always, so a progress bar ends at done === total.
  onProgress?.({ operation: 'replay', done: abs - headAbs, total: abs - headAbs });
  const where = `journal record ${seq} at store offset ${RING_START + (abs % c)}`;
  if (seq <= sb.applyingSeq) {
    // A checkpoint writes `applyingSeq` only once every record through it
    // is durable, and frees their ring space only under a later superblock:
    // stopping short of it is damage, or a newer superblock lost (this one
    // is older, and the ring was reused after it), never a torn tail.
    throw new BlockDeviceError(
      'ECORRUPT',
      `${where} is missing or damaged (${damage}), but the superblock says a checkpoint through record ${sb.applyingSeq} had begun, so every record through it was durable`,
    );
  }
  if (sb.clean) {
    if (seq - 1 < sb.tailSeq) {
      throw new BlockDeviceError(
        'ECORRUPT',
        `${where} is damaged (${damage}), but the journal was closed cleanly through record ${sb.tailSeq}`,
      );
    }
    if (sb.tailAbs !== undefined) checkCleanTail(sb, sb.tailAbs, abs, seq, damage);
  } else {
    const marked = await readDurableMark(store, sb.epoch);
    if (seq <= marked) {
      throw new BlockDeviceError(
        'ECORRUPT',
        `${where} is damaged (${damage}), but the durable mark at store offset ${DURABLE_MARK_AT} says a completed flush made every record through ${marked} durable`,
      );
    }
    const proof = await findAttestation(reader, sb, abs % c, c - (abs - headAbs), seq);
    if (proof !== undefined) {
      throw new BlockDeviceError(
        'ECORRUPT',
        `${where} is damaged (${damage}), but the frame at store offset ${proof} shows a completed flush had made it durable`,
      );
    }
  }
  return { headAbs, tailAbs: abs, nextSeq: seq, link, lastTime };
}

/**
 * After a clean close that recorded its tail: replay, which ended at `abs`
 * before record `seq`, must have ended exactly at `tailAbs`. Short of it,
 * the frame at `abs` is damaged (`damage` says how); past it, frames chain
 * on that no clean close left.
 * @throws `ECORRUPT` naming the frame's store offset.
 */
function checkCleanTail(
  sb: JournalSuper,
  tailAbs: number,
  abs: number,
  seq: number,
  damage: string,
): void {
  const c = sb.capacity;
  const closedAt = `store offset ${RING_START + (tailAbs % c)} (through record ${sb.tailSeq})`;
  if (abs < tailAbs) {
    throw new BlockDeviceError(
      'ECORRUPT',
      `journal frame at store offset ${RING_START + (abs % c)} is damaged (${damage}), but the journal was closed cleanly with its frames ending at ${closedAt}`,
    );
  }
  if (abs > tailAbs || seq - 1 > sb.tailSeq) {
    throw new BlockDeviceError(
      'ECORRUPT',
      `journal frames continue to store offset ${RING_START + (abs % c)} (record ${seq - 1}), past where the journal was closed cleanly: ${closedAt}`,
    );
  }
}

/**
 * Looks at every sector of the `length` ring bytes from `pos` (wrapping) for
 * an intact frame header whose `durableSeq` reaches `seq`; returns its store
 * offset. Takes the ring in spans, with one DataView a span, so a sector
 * that holds no header (nearly all of them) costs two loads and no object.
 */
async function findAttestation(
  reader: ScanReader,
  sb: JournalSuper,
  pos: number,
  length: number,
  seq: number,
): Promise<number | undefined> {
  const c = sb.capacity;
  let k = 0;
  scan: while (k < length) {
    const p = (pos + k) % c;
    const n = Math.min(SCAN_SPAN, length - k, c - p);
    const span = reader.cached(RING_START + p, n) ?? (await reader.read(RING_START + p, n));
    const view = new DataView(span.buffer, span.byteOffset, span.byteLength);
    for (let s = 0; s < n; s += SECTOR) {
      if (
        view.getUint32(s, true) !== JOURNAL_FRAME_MAGIC ||
        view.getUint32(s + 4, true) !== sb.epoch
      )
        continue;
      const count = view.getUint32(s + 12, true);
      const bytes = headerBytes(count);
      if (p + s + bytes > c) continue;
      if (s + bytes <= n) {
        const header = decodeFrameHeader(span.subarray(s, s + bytes), sb);
        if (typeof header !== 'string' && header.durableSeq >= seq) return RING_START + p + s;
        continue;
      }
      // The header runs past this span: read it whole (which may move the
      // reader's window), then go on with a new span after its first sector.
      const header = decodeFrameHeader(await reader.read(RING_START + p + s, bytes), sb);
      if (typeof header !== 'string' && header.durableSeq >= seq) return RING_START + p + s;
      k += s + SECTOR;
      continue scan;
    }
    k += n;
  }
  return undefined;
}
