import { CrcBatch, type CrcWorkers } from '../checksum/index.js';
import type { ScanReader } from '../store/index.js';
import { headerBytes, type JournalSuper, RECORD_WRITE, RING_START } from './journal-format.js';
import { type FrameHeader, RecordColumns } from './journal-frame.js';
import type { JournalNote } from './journal-notes.js';
import { checkRecord, readFrameHeader } from './replay-frame.js';

/**
 * When replay checks record CRCs on worker threads as well. @internal
 * (tests lower `minBytes` and turn `callerHelps` off, so a worker checks
 * every record of a batch).
 */
export const parallelReplay = {
  /** Bytes of frames replayed (or, after a clean close, known to be there) before workers start: below it a worker's start-up costs more than it saves. */
  minBytes: 64 << 20,
  /**
   * CPUs the machine must have: on two, the replaying thread and the
   * thread-pool reads already fill both, and a worker only adds its costs
   * (bench jd-replay on the 2-core bench machine: 0.16× against 0.19×
   * without it, 0.08× against 0.15× after a power cut; measured again with
   * replay three times faster, the worker cut the replaying thread's CPU
   * by up to 40 % but added about a fifth to all of it, and open was no
   * faster: docs/ARCHITECTURE.md, Performance notes, "Replay").
   */
  minCpus: 3,
  /** The replaying thread checks what no worker has claimed yet before it waits for a batch. */
  callerHelps: true,
  /** Batches (windows of records) handed out and not yet judged. */
  inFlight: 2,
  /** Batches whose verdict a worker thread gave, counted (what the tests check ran). */
  workerVerdicts: 0,
};

/** Where replay stands: the frame it takes next starts at `abs`, with record `seq`, after the frame whose link is `link`. */
export interface ReplayCursor {
  abs: number;
  seq: number;
  link: number;
}

/** A frame whose header checked out, its records' verdicts still coming. */
interface ParsedFrame {
  at: number;
  header: FrameHeader;
  notes: (JournalNote | undefined)[] | undefined;
  /** Index (counted from this call's first record) just past its last record. */
  end: number;
  /** Serial of the last batch holding one of its records (-1: none, all checked here). */
  lastBatch: number;
}

/** A batch of one window's records and the hold that keeps the window's bytes. */
interface OpenBatch {
  batch: CrcBatch;
  /** Indexes of its ranges' records, in order (records checked here are not in it). */
  records: number[];
  start: number;
  serial: number;
  release: () => void;
}

/**
 * Replays frames from `cursor` for as long as each one checks out, with
 * their record CRCs checked on worker threads and this one: the headers are
 * read and checked here in order, each window's records go out as one batch
 * over the window's shared buffer, and a frame is handed to `accept` only
 * once every one of its records has passed — in order, so the table sees
 * exactly the frames a one-thread replay would take.
 *
 * `accept` moves `cursor` past each frame it takes. This returns, with
 * `cursor` so at the start of the frame it did not take, at
 * the first frame whose header does not check out or that holds a record
 * failing its check, wherever that check ran (frames parsed past it are
 * never handed on). The caller reads that frame again the careful way
 * (`readFrame`, the wrap to the ring's start, the recovery rule): so every
 * decision about a damaged or missing frame is the one-thread code's.
 */
export async function replayAhead(
  reader: ScanReader,
  sb: JournalSuper,
  cursor: ReplayCursor,
  accept: (at: number, header: FrameHeader, notes: (JournalNote | undefined)[] | undefined) => void,
  workers: CrcWorkers,
): Promise<void> {
  const c = sb.capacity;
  const frames: ParsedFrame[] = [];
  const columns = new RecordColumns();
  const batches: OpenBatch[] = [];
  /** `records` arrays of judged batches, for the next ones. */
  const spareRecords: number[][] = [];
  let open: OpenBatch | undefined;
  let serials = 0;
  /** Batches judged so far (they are judged in order). */
  let judged = 0;
  /** Lowest index of a record known to fail. */
  let failAt = Number.POSITIVE_INFINITY;
  let index = 0;
  let at = cursor.abs;
  let seq = cursor.seq;
  let link = cursor.link;

  const acceptJudged = (): void => {
    while (frames.length > 0) {
      const f = frames[0]!;
      if (f.lastBatch >= judged || f.end > failAt) return;
      frames.shift();
      accept(f.at, f.header, f.notes);
    }
  };
  const judgeOldest = async (): Promise<void> => {
    const b = batches.shift()!;
    try {
      const bad = await b.batch.finish(parallelReplay.callerHelps);
      if (b.batch.byWorker) parallelReplay.workerVerdicts++;
      if (bad >= 0) failAt = Math.min(failAt, b.records[bad]!);
    } finally {
      b.release();
    }
    b.records.length = 0;
    spareRecords.push(b.records);
    judged = b.serial + 1;
    acceptJudged();
  };

  try {
    while (failAt === Number.POSITIVE_INFINITY) {
      const pos = at % c;
      const header = await readFrameHeader(reader, sb, pos, seq, link, columns);
      if (typeof header === 'string') break;
      const records = header.records;
      let lastBatch = -1;
      let notes: (JournalNote | undefined)[] | undefined;
      let p = RING_START + pos + headerBytes(records.length);
      for (let i = 0; i < records.length; i++, index++) {
        const r = records[i]!;
        const w = r.kind === RECORD_WRITE ? reader.sharedWindow(p, r.length) : undefined;
        if (w !== undefined) {
          if (
            open === undefined ||
            open.start !== w.start ||
            open.batch.count === CrcBatch.MAX_RANGES
          ) {
            if (open !== undefined) {
              open.batch.submit();
              batches.push(open);
              open = undefined;
            }
            while (batches.length >= parallelReplay.inFlight) await judgeOldest();
            open = {
              batch: workers.batch(w.data),
              records: spareRecords.pop() ?? [],
              start: w.start,
              serial: serials++,
              release: w.hold(),
            };
          }
          open.batch.add(p - w.start, r.length, r.crc);
          open.records.push(index);
          lastBatch = open.serial;
        } else {
          // A note, or a record running from one window into the next:
          // checked here, now (the gathered bytes are not in a shared buffer).
          const checked = checkRecord(
            r.seq,
            r.crc,
            r.kind,
            reader.cached(p, r.length) ?? (await reader.read(p, r.length)),
          );
          if (checked !== undefined) {
            if ('damage' in checked) {
              failAt = index;
              index++;
              break;
            }
            notes ??= new Array<JournalNote | undefined>(records.length);
            notes[i] = checked;
          }
        }
        p += r.length;
      }
      frames.push({ at, header, notes, end: index, lastBatch });
      at += header.bytes;
      seq += records.length;
      link = header.link;
      acceptJudged();
    }
    if (open !== undefined) {
      open.batch.submit();
      batches.push(open);
      open = undefined;
    }
    while (batches.length > 0) await judgeOldest();
    acceptJudged();
  } finally {
    // Only on a throw (a failed read) is anything left: its verdict no
    // longer matters, but its window's buffer must not be reused under a
    // worker still reading it.
    open?.release();
    for (const b of batches) b.batch.finish(false).finally(b.release);
  }
}
