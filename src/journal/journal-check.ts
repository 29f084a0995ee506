import { CheckReportBuilder, io, isZeroed, SECTOR } from '../base/index.js';
import { checksum } from '../checksum/index.js';
import type {
  BlockDevice,
  CheckOptions,
  CheckReport,
  Extent,
  JournalSnapshotInfo,
} from '../device.js';
import { BlockDeviceError } from '../errors.js';
import {
  decodeSuperblock,
  SUPERBLOCK_BYTES,
  SUPERBLOCK_SLOT,
  WindowReader,
} from '../store/index.js';
import { decodeCatalog } from './journal-catalog.js';
import type { JournalCore } from './journal-core.js';
import {
  catalogOffset,
  headerBytes,
  type JournalSuper,
  RECORD_WRITE,
  RING_START,
} from './journal-format.js';
import { decodeFrameHeader, type FrameHeader, peekFrame } from './journal-frame.js';
import { decodeNote } from './journal-notes.js';

/*
 * `check()` of a journal store (docs/ARCHITECTURE.md, "check()"): the
 * superblock slots and the snapshot catalog are read under the admin lock
 * (every superblock and catalog write holds it), with the ring's head and
 * the end of the last landed frame; then the ring is walked from that head
 * to that end with the device running, checking every frame header, its
 * chain, and every record's data. A frame is rewritten only after a
 * checkpoint has moved the durable head past it, so a frame the head has
 * not passed once its bytes are read was read as it landed: damage there
 * is damage. One the head passed meanwhile is skipped, and the walk goes
 * on from the new head.
 */

/** A record a frame header lists, as the walk saw it. */
interface WalkedRecord {
  seq: number;
  kind: number;
  offset: number;
  length: number;
}

/** Ring bytes walked between two progress calls: a bar moves smoothly, a small frame costs no call. */
const PROGRESS_EVERY = 1 << 20;

/** What the walk starts from: the durable superblock and where the last landed frame ends. */
interface WalkStart {
  sb: JournalSuper;
  tailAbs: number;
  tailSeq: number;
  snapshots: JournalSnapshotInfo[];
}

/**
 * Walks the journal store of an open device; see JournalDevice.check.
 * @throws `EIO` (with `cause`) if a store read fails.
 */
export async function checkJournalStore(
  core: JournalCore,
  listSnapshots: () => JournalSnapshotInfo[],
  options: CheckOptions = {},
): Promise<CheckReport> {
  const report = new CheckReportBuilder();
  const start = await core.admin.runExclusive(async (): Promise<WalkStart> => {
    const sb = core.superblock;
    await checkSuperblocks(core.journal, sb, report);
    await checkCatalog(core.journal, sb, report);
    const tail = core.writer.landed();
    return { sb, tailAbs: tail.abs, tailSeq: tail.seq, snapshots: listSnapshots() };
  });
  // Progress counts ring bytes walked over, damaged or skipped ones too, so
  // its total is known from the first call: superblocks and catalog read,
  // plus the ring span from the head to the last landed frame.
  const metadata = report.counts.bytes;
  const total = metadata + (start.tailAbs - start.sb.headAbs);
  const onProgress = options.onProgress;
  const progress =
    onProgress &&
    ((ringDone: number) =>
      onProgress({ operation: 'check', done: Math.min(total, metadata + ringDone), total }));
  progress?.(0);
  const { walked, damaged } = await walkRing(core, start, report, progress);
  progress?.(total - metadata);
  const bs = start.sb.blockSize;
  return report.build(
    damagedExtents(walked, damaged, Number.POSITIVE_INFINITY, bs),
    start.snapshots.map((snap) => ({
      id: snap.id,
      // A pending snapshot reads every record before its marker through the
      // journal; a materialized one lives on production.
      damaged: snap.materialized ? [] : damagedExtents(walked, damaged, snap.sequence - 1, bs),
    })),
  );
}

/** Both slots: the in-use one holds the generation the device last wrote, the other an older one (or zeros). */
async function checkSuperblocks(
  store: BlockDevice,
  sb: JournalSuper,
  report: CheckReportBuilder,
): Promise<void> {
  const both = report.read(
    await io('journal read superblocks', store.read(0, 2 * SUPERBLOCK_SLOT)),
  );
  for (const slot of [0, 1]) {
    const at = slot * SUPERBLOCK_SLOT;
    const bytes = both.subarray(at, at + SUPERBLOCK_BYTES);
    const inUse = slot === sb.generation % 2;
    report.counts.superblocks++;
    if (!inUse && isZeroed(bytes)) continue;
    const where = `journal superblock slot ${slot} at store offset ${at}${inUse ? ' (in use)' : ''}`;
    const decoded = decodeSuperblock(bytes);
    if (typeof decoded === 'string') {
      report.problem('superblock', at, `${where}: ${decoded}`, inUse);
    } else if (
      inUse &&
      (decoded.generation !== sb.generation ||
        decoded.epoch !== sb.epoch ||
        decoded.tableCrc !== sb.catalogCrc ||
        decoded.active !== sb.catalogActive)
    ) {
      report.problem(
        'superblock',
        at,
        `${where} holds generation ${decoded.generation}, not the generation ${sb.generation} the device wrote`,
        true,
      );
    } else if (!inUse && decoded.generation >= sb.generation) {
      report.problem(
        'superblock',
        at,
        `${where} holds generation ${decoded.generation}, newer than the ${sb.generation} in use`,
        true,
      );
    }
  }
}

/** The catalog slot the superblock names, against the CRC-32 the superblock keeps for it. */
async function checkCatalog(
  store: BlockDevice,
  sb: JournalSuper,
  report: CheckReportBuilder,
): Promise<void> {
  if (sb.catalogBytes === 0) return;
  const at = catalogOffset(sb, sb.catalogActive);
  const bytes = report.read(await io('journal catalog read', store.read(at, sb.catalogBytes)));
  report.counts.tables++;
  const where = `journal snapshot catalog ${sb.catalogActive} at store offset ${at}`;
  if (checksum(bytes) !== sb.catalogCrc) {
    report.problem('catalog', at, `${where} fails its checksum`, true);
    return;
  }
  try {
    report.counts.records += decodeCatalog(bytes, sb.catalogCount).length;
  } catch (err) {
    if (!BlockDeviceError.is(err, 'ECORRUPT')) throw err;
    report.problem('catalog', at, `${where}: ${err.message}`, true);
  }
}

/**
 * Every frame from the head to the captured tail: headers, chain, and each
 * record's data. Returns the records the intact headers list, and those
 * whose data (or note) is damaged.
 */
async function walkRing(
  core: JournalCore,
  start: WalkStart,
  report: CheckReportBuilder,
  progress: ((ringDone: number) => void) | undefined,
): Promise<{ walked: WalkedRecord[]; damaged: WalkedRecord[] }> {
  const { sb } = start;
  let reported = 0;
  const advance = (to: number): void => {
    if (progress === undefined || to - sb.headAbs - reported < PROGRESS_EVERY) return;
    reported = to - sb.headAbs;
    progress(reported);
  };
  const c = sb.capacity;
  const reader = new WindowReader(core.journal, RING_START, RING_START + c);
  const walked: WalkedRecord[] = [];
  const damaged: WalkedRecord[] = [];
  let abs = sb.headAbs;
  let seq = sb.headSeq;
  let link = sb.headLink;
  while (abs < start.tailAbs) {
    let at = abs;
    let frame = await readHeader(reader, sb, at % c, seq, link);
    if (typeof frame === 'string' && at % c !== 0) {
      // A frame that did not fit before the ring's end starts the next lap.
      const wrapped = await readHeader(reader, sb, 0, seq, link);
      if (typeof wrapped !== 'string') {
        at = at - (at % c) + c;
        frame = wrapped;
      }
    }
    const bad = typeof frame === 'string' ? [] : await checkRecords(reader, at % c, frame);
    // Read; if a checkpoint has moved the head past it meanwhile, its space
    // may hold a newer frame by now: go on from the new head instead.
    const head = core.superblock;
    if (head.headAbs > at) {
      report.skipped++;
      abs = head.headAbs;
      seq = head.headSeq;
      link = head.headLink;
      advance(abs);
      continue;
    }
    const where = RING_START + (at % c);
    if (typeof frame === 'string') {
      const next = await nextFrame(reader, sb, at, seq, start);
      const upTo = next === undefined ? start.tailSeq : next.firstSeq - 1;
      report.problem(
        'journal-frame',
        where,
        `journal frame of records ${seq} to ${upTo} at store offset ${where} is damaged: ${frame}`,
        true,
      );
      if (next === undefined || core.superblock.headAbs > at) break;
      abs = next.abs;
      seq = next.firstSeq;
      link = next.prevLink;
      advance(abs);
      continue;
    }
    report.counts.frames++;
    report.counts.bytes += frame.bytes;
    report.counts.records += frame.records.length;
    for (const r of frame.records) walked.push(r);
    for (const { record, offset, reason } of bad) {
      const note = record.kind !== RECORD_WRITE;
      report.problem(
        note ? 'journal-note' : 'journal-record',
        offset,
        `journal ${note ? 'note' : 'record'} ${record.seq} at store offset ${offset} ${reason}`,
        true,
      );
      damaged.push(record);
    }
    abs = at + frame.bytes;
    seq += frame.records.length;
    link = frame.link;
    advance(abs);
  }
  return { walked, damaged };
}

/** The header at ring position `pos` if it starts record `seq` and follows `link`; why not otherwise. */
async function readHeader(
  reader: WindowReader,
  sb: JournalSuper,
  pos: number,
  seq: number,
  link: number,
): Promise<FrameHeader | string> {
  const frame = await decodeHeaderAt(reader, sb, pos);
  if (typeof frame === 'string') return frame;
  if (frame.firstSeq !== seq) return `it is a frame of record ${frame.firstSeq}, not ${seq}`;
  if (frame.prevLink !== link) return 'it does not follow the frame before it';
  return frame;
}

async function decodeHeaderAt(
  reader: WindowReader,
  sb: JournalSuper,
  pos: number,
): Promise<FrameHeader | string> {
  const count = peekFrame(await reader.read(RING_START + pos, SECTOR), sb.epoch);
  if (count < 0) return 'no frame header of this journal there';
  const size = headerBytes(count);
  if (pos + size > sb.capacity) return 'its header runs past the ring end';
  const frame = decodeFrameHeader(await reader.read(RING_START + pos, size), sb);
  if (typeof frame === 'string') return frame;
  if (pos + frame.bytes > sb.capacity) return 'it runs past the ring end';
  return frame;
}

/** Each record of `frame` whose data fails its CRC-32, or whose note does not decode, with its store offset. */
async function checkRecords(
  reader: WindowReader,
  pos: number,
  frame: FrameHeader,
): Promise<{ record: WalkedRecord; offset: number; reason: string }[]> {
  const bad: { record: WalkedRecord; offset: number; reason: string }[] = [];
  let at = pos + headerBytes(frame.records.length);
  for (const r of frame.records) {
    const data = await reader.read(RING_START + at, r.length);
    let reason: string | undefined;
    if (checksum(data) !== r.crc) reason = 'fails its checksum';
    else if (r.kind !== RECORD_WRITE) {
      const note = decodeNote(r.kind, data);
      if (typeof note === 'string') reason = `does not decode: ${note}`;
    }
    if (reason !== undefined) bad.push({ record: r, offset: RING_START + at, reason });
    at += r.length;
  }
  return bad;
}

/**
 * After a damaged header, the next intact frame of this journal between it
 * and the tail (searched sector by sector), so the walk can go on.
 */
async function nextFrame(
  reader: WindowReader,
  sb: JournalSuper,
  at: number,
  seq: number,
  start: WalkStart,
): Promise<{ abs: number; firstSeq: number; prevLink: number } | undefined> {
  const c = sb.capacity;
  for (let probe = at + SECTOR; probe < start.tailAbs; probe += SECTOR) {
    const frame = await decodeHeaderAt(reader, sb, probe % c);
    if (typeof frame === 'string') continue;
    if (frame.firstSeq > seq && frame.firstSeq <= start.tailSeq + 1) {
      return { abs: probe, firstSeq: frame.firstSeq, prevLink: frame.prevLink };
    }
  }
  return undefined;
}

/**
 * The production bytes a reader as of record `through` reads from a
 * damaged record: the blocks of damaged write records no later record up
 * to `through` overwrote.
 */
function damagedExtents(
  walked: WalkedRecord[],
  damaged: WalkedRecord[],
  through: number,
  blockSize: number,
): Extent[] {
  const newest = new Map<number, number>();
  for (const r of walked) {
    if (r.kind !== RECORD_WRITE || r.seq > through) continue;
    for (let b = r.offset / blockSize; b < (r.offset + r.length) / blockSize; b++) {
      newest.set(b, Math.max(newest.get(b) ?? 0, r.seq));
    }
  }
  const blocks: number[] = [];
  for (const r of damaged) {
    if (r.kind !== RECORD_WRITE || r.seq > through) continue;
    for (let b = r.offset / blockSize; b < (r.offset + r.length) / blockSize; b++) {
      if (newest.get(b) === r.seq) blocks.push(b);
    }
  }
  blocks.sort((a, b) => a - b);
  const extents: { offset: number; length: number }[] = [];
  for (const b of blocks) {
    const last = extents[extents.length - 1];
    if (last !== undefined && last.offset + last.length === b * blockSize) last.length += blockSize;
    else extents.push({ offset: b * blockSize, length: blockSize });
  }
  return extents;
}
