import type { AccessGate } from '../base/index.js';
import { io, SECTOR } from '../base/index.js';
import type { BlockDevice, CheckpointEvent } from '../device.js';
import { type JournalSuper, RING_START } from './journal-format.js';
import type { RecordIndex } from './journal-index.js';
import type { ChangesTable } from './journal-table.js';
import type { JournalWriter } from './journal-writer.js';

/** Largest production write a checkpoint issues (a run of adjacent blocks). */
const MAX_RUN = 1 << 20;
/**
 * Runs in flight at once. Scattered small writes (a random workload's
 * checkpoint is mostly single blocks) need many in flight to keep the thread
 * pool and the disk queue busy (bench row jd-write-checkpointing measured 32
 * against 4; bench/results.md has the figures).
 */
const RUNS_IN_FLIGHT = 32;
/** Bytes of run images in memory at once: large coalesced runs stay few. */
const BYTES_IN_FLIGHT = 8 << 20;

/** What applying the journal to production needs. */
export interface ApplyJob {
  /** Blocks to write, ascending. */
  keys: Float64Array;
  /** Each block's journal sector, as of the checkpoint's cut; never changes meanwhile. */
  table: ChangesTable;
  journal: BlockDevice;
  production: BlockDevice;
  blockSize: number;
  /** Called after each run with blocks done so far and in all. */
  onProgress(done: number, total: number): void;
}

/**
 * Copies each listed block's newest journal image to its place on
 * production, in address order, adjacent blocks coalesced into writes of up
 * to 1 MiB (and adjacent journal images into one read). Idempotent: the
 * same images to the same places, so a checkpoint cut short by a crash is
 * simply done again by replay and the next checkpoint. Stops issuing new
 * runs after the first failure, and settles every run before it rejects.
 */
export async function applyJournal(job: ApplyJob): Promise<void> {
  const { keys, table, journal, production, blockSize: bs } = job;
  const perRun = Math.max(1, Math.floor(MAX_RUN / bs));
  const sectorsPerBlock = bs / SECTOR;
  let next = 0;
  let done = 0;
  let failure: { err: unknown } | undefined;

  const applyRun = async (start: number, end: number): Promise<void> => {
    const image = new Uint8Array((end - start) * bs);
    const reads: Promise<void>[] = [];
    for (let i = start; i < end; ) {
      const sector = table.get(keys[i]!);
      let j = i + 1;
      while (j < end && table.get(keys[j]!) === sector + (j - i) * sectorsPerBlock) j++;
      const at = (i - start) * bs;
      reads.push(
        io('journal read', journal.read(RING_START + sector * SECTOR, (j - i) * bs)).then((data) =>
          image.set(data, at),
        ),
      );
      i = j;
    }
    await Promise.all(reads);
    await io('production write', production.write(keys[start]! * bs, image));
  };

  let bytesInFlight = 0;
  const waitingForRoom: (() => void)[] = [];

  const worker = async (): Promise<void> => {
    while (next < keys.length && failure === undefined) {
      const start = next;
      let end = start + 1;
      while (end < keys.length && end - start < perRun && keys[end] === keys[end - 1]! + 1) end++;
      next = end;
      const bytes = (end - start) * bs;
      while (bytesInFlight > 0 && bytesInFlight + bytes > BYTES_IN_FLIGHT) {
        await new Promise<void>((wake) => waitingForRoom.push(wake));
      }
      if (failure !== undefined) return;
      bytesInFlight += bytes;
      try {
        await applyRun(start, end);
      } catch (err) {
        failure ??= { err };
        return;
      } finally {
        bytesInFlight -= bytes;
        for (const wake of waitingForRoom.splice(0)) wake();
      }
      done += end - start;
      job.onProgress(done, keys.length);
    }
  };

  await Promise.all(Array.from({ length: RUNS_IN_FLIGHT }, worker));
  if (failure !== undefined) throw failure.err;
}

/** What a checkpoint needs from the journal device it runs for. */
export interface CheckpointHost {
  readonly journal: BlockDevice;
  readonly production: BlockDevice;
  readonly blockSize: number;
  readonly writer: JournalWriter;
  /** The changes table. */
  readonly table: ChangesTable;
  readonly index: RecordIndex;
  /** Reads enter it shared. */
  readonly gate: AccessGate;
  /** The durable superblock. */
  readonly superblock: JournalSuper;
  /** Makes `sb` the durable superblock (after the snapshot catalog, if that changed). */
  persist(sb: JournalSuper): Promise<void>;
  /**
   * Views of records before `seq`, and snapshots whose marker is at or
   * before it, are retired; true if one is open (its reads must drain first).
   */
  retire(seq: number): boolean;
  /** Sequence numbers of the snapshot markers among records `from..to` still to materialize, ascending. */
  markersBetween(from: number, to: number): number[];
  /**
   * Production now holds exactly the records before the marker at `seq`:
   * take its production snapshot (unless a delete landed meanwhile).
   */
  materialize(seq: number): Promise<void>;
  /** Applied records' journal space was freed: views must rebuild their tables. */
  freed(): void;
  progress(done: number, total: number): void;
}

/** Records `from..to` applied as one step, then the snapshot marker `marker` (if any) materialized. */
interface Segment {
  table: ChangesTable;
  keys: Float64Array;
  marker: number | undefined;
}

/**
 * One checkpoint through every record landed when it starts (the cut).
 * Returns what it did, or undefined if nothing had landed since the head.
 *
 * Ordering rules: the cut's records, and a superblock saying points before
 * the cut are gone, are durable before production is touched, so a power
 * cut from then on replays them all over whatever reached production, and
 * no view can show a mix. Snapshot markers split the cut into segments
 * (seed 000, claim 52): each segment's records are applied, then production takes
 * the marker's snapshot, so the snapshot holds exactly the records before
 * its marker and production preserves a chunk for it just before the next
 * segment overwrites it. Production is flushed before a superblock (naming
 * the new snapshots in the catalog) moves the head past the cut; their
 * journal space is freed, and their changes-table entries dropped (unless a
 * newer write replaced them), only once that superblock is durable — under
 * the read gate, so no read still uses a location a new frame may
 * overwrite. Replaying a cut short checkpoint again is harmless: each
 * segment writes the same images, and `materialize` adopts a production
 * snapshot the cut short run already took.
 */
export async function runCheckpoint(host: CheckpointHost): Promise<CheckpointEvent | undefined> {
  const { writer, index, journal, production, blockSize } = host;
  const cut = writer.landed();
  const oldHead = writer.headAbs;
  const oldHeadSeq = host.superblock.headSeq;
  if (cut.abs <= oldHead) return undefined;
  // The changes table holds exactly the records up to the cut right now.
  const table = host.table.clone();
  const keys = table.sortedKeys();
  const segments = segmentsOf(host, table, keys, oldHeadSeq, cut.seq);
  if (host.retire(cut.seq)) (await host.gate.exclusive())();
  await writer.sync();
  if (cut.seq > host.superblock.applyingSeq) {
    const sb = host.superblock;
    await host.persist({ ...sb, generation: sb.generation + 1, applyingSeq: cut.seq });
  }
  const total = segments.reduce((n, s) => n + s.keys.length, 0);
  let done = 0;
  for (const segment of segments) {
    await applyJournal({
      keys: segment.keys,
      table: segment.table,
      journal,
      production,
      blockSize,
      onProgress: (n) => host.progress(done + n, total),
    });
    done += segment.keys.length;
    if (segment.marker !== undefined) await host.materialize(segment.marker);
  }
  await io('production flush', production.flush());
  const sb = host.superblock;
  await host.persist({
    ...sb,
    generation: sb.generation + 1,
    headAbs: cut.abs,
    headSeq: cut.seq + 1,
    headLink: cut.link,
    headTime: cut.seq >= oldHeadSeq ? index.timeOf(cut.seq) : sb.headTime,
  });
  const release = await host.gate.exclusive();
  try {
    for (const key of keys) host.table.delete(key, table.get(key));
    index.dropThrough(cut.seq);
    writer.release(cut.abs);
    host.freed();
  } finally {
    release();
  }
  return {
    sequence: cut.seq,
    records: cut.seq - oldHeadSeq + 1,
    blocks: total,
    bytes: total * blockSize,
    freedBytes: cut.abs - oldHead,
    snapshots: segments.length - 1,
  };
}

/**
 * The cut's records split at its snapshot markers. Without markers, one
 * segment: the changes table itself, each block's newest image once.
 */
function segmentsOf(
  host: CheckpointHost,
  table: ChangesTable,
  keys: Float64Array,
  headSeq: number,
  cutSeq: number,
): Segment[] {
  const markers = host.markersBetween(headSeq, cutSeq);
  if (markers.length === 0) return [{ table, keys, marker: undefined }];
  const perBlock = host.blockSize / SECTOR;
  const segments: Segment[] = [];
  let from = headSeq;
  for (const marker of [...markers, undefined]) {
    const to = marker === undefined ? cutSeq : marker - 1;
    const part = host.index.tableBetween(from, to, perBlock);
    segments.push({ table: part, keys: part.sortedKeys(), marker });
    if (marker !== undefined) from = marker + 1;
  }
  return segments;
}
