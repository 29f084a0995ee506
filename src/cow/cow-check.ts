import { CheckReportBuilder, forEachConcurrently, io, SECTOR } from '../base/index.js';
import { checksum } from '../checksum/index.js';
import type { CheckOptions, CheckReport } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import { checkSuperblocks, logOffset, tableOffset, WindowReader } from '../store/index.js';
import { rangesOfBlocks, rangesToExtents } from './block-ranges.js';
import { cowCodec } from './cow-layout.js';
import { CowState } from './cow-state.js';
import type { CowStore } from './cow-store.js';
import { FRAME_HEADER, inspectFrame, LOG_FRAME_MAGIC, type LogPosition } from './log-format.js';
import type { CowEntry } from './metadata-codec.js';

/*
 * `check()` of a COW store (docs/ARCHITECTURE.md, "check()"): the superblock
 * slots, the active checkpoint table and every log frame the device holds
 * are read while the metadata log stands still (MetadataLog.quiesced), so
 * what is on the store is exactly what the device has applied; then every
 * chunk the metadata names is read and checked against its CRC-32 with the
 * device running. A chunk in use is never written, so a chunk whose data
 * changed is damage — unless the device released it meanwhile (it may then
 * have been reused), which the allocator's release watch tells.
 */

/** A chunk the metadata names, and what it must hold. */
interface NamedChunk {
  chunk: number;
  crc: number;
  block: number;
  /** What it holds, for messages: "preserved block 7 (epoch 2)". */
  what: string;
}

/** An entry read back, with the store offset of the table or frame it came from. */
interface PlacedEntry {
  entry: CowEntry;
  at: number;
  structure: 'table' | 'log-frame';
}

/** Chunk data read per I/O, and reads in flight. */
const CHUNK_READ_BYTES = 1 << 20;
const CHUNK_READS_IN_FLIGHT = 4;

/**
 * Walks the COW store of a device that is open and may be in use; see
 * CowDeviceBase.check for what it reports.
 * @throws `EIO` (with `cause`) if a store read fails.
 */
export async function checkCowStore(cow: CowStore, options: CheckOptions): Promise<CheckReport> {
  const report = new CheckReportBuilder();
  const { state, named, watch } = await cow.log.quiesced(async (position) => {
    const watch = cow.state.allocator.watchReleases();
    try {
      await checkSuperblocks(cow.store, position.superblock, report);
      const entries = await readMetadata(cow, position, report);
      // Damaged metadata cannot be replayed: judge the chunks by what the
      // device holds in memory instead, which the store held until the damage.
      const state =
        (entries !== undefined && replay(cow, entries, report)) ||
        replay(
          cow,
          cow.state.entries().map((entry) => ({ entry, at: 0, structure: 'table' as const })),
          report,
        )!;
      return { state, named: checkFreeSpace(cow, state, report), watch };
    } catch (err) {
      watch.stop();
      throw err;
    }
  });
  let damaged: NamedChunk[] = [];
  try {
    // The chunk reads are planned before the first progress call, so its
    // total is every byte the check reads and never changes after.
    const runs = options.verifyData === false ? [] : chunkRuns(cow, named);
    const bs = cow.layout.blockSize;
    const total = report.counts.bytes + runs.reduce((sum, run) => sum + runBytes(run, bs), 0);
    const progress = options.onProgress;
    progress?.({ operation: 'check', done: report.counts.bytes, total });
    damaged = await checkChunks(cow, runs, watch.released, report, (done) =>
      progress?.({ operation: 'check', done, total }),
    );
  } finally {
    watch.stop();
  }
  return report.build([], affectedSnapshots(state, damaged, cow.layout.blockSize));
}

/**
 * The active table and the log's frames `0..position.frames - 1`, each
 * checked; returns their entries in replay order, or undefined if any is
 * damaged (the walk goes on past damage to report all of it).
 */
async function readMetadata(
  cow: CowStore,
  position: LogPosition,
  report: CheckReportBuilder,
): Promise<PlacedEntry[] | undefined> {
  const sb = position.superblock;
  const entries: PlacedEntry[] = [];
  let intact = true;
  const take = (
    bytes: Uint8Array,
    count: number,
    at: number,
    structure: PlacedEntry['structure'],
    what: string,
  ): void => {
    try {
      for (const entry of cowCodec.decode(bytes, count, what))
        entries.push({ entry, at, structure });
      report.counts.records += count;
    } catch (err) {
      if (!BlockDeviceError.is(err, 'ECORRUPT')) throw err;
      report.problem(structure, at, err.message, true);
      intact = false;
    }
  };

  const tableAt = tableOffset(sb, sb.active);
  const table =
    sb.tableBytes === 0
      ? new Uint8Array(0)
      : report.read(await io('store read table', cow.store.read(tableAt, sb.tableBytes)));
  report.counts.tables++;
  const tableName = `checkpoint table ${sb.active} at store offset ${tableAt}`;
  if (checksum(table) !== sb.tableCrc) {
    report.problem('table', tableAt, `${tableName} fails its checksum`, true);
    intact = false;
  } else {
    take(table, sb.tableCount, tableAt, 'table', tableName);
  }

  const start = logOffset(sb);
  const end = start + sb.logCapacity;
  const reader = new WindowReader(cow.store, start, end);
  let pos = start;
  for (let seq = 0; seq < position.frames; ) {
    const frame = await inspectFrame(reader, pos, sb.epoch, seq, end);
    if (typeof frame !== 'string') {
      report.counts.frames++;
      report.counts.bytes += frame.size;
      if (intact) {
        take(
          frame.payload,
          frame.count,
          pos,
          'log-frame',
          `log frame ${seq} at store offset ${pos}`,
        );
      }
      pos += frame.size;
      seq++;
      continue;
    }
    intact = false;
    // Its size is unknown: find the next frame by its header, as scanLog probes.
    const next = await nextFrame(reader, pos, sb.epoch, seq, position);
    const last = (next?.seq ?? position.frames) - 1;
    report.problem(
      'log-frame',
      pos,
      `log frame ${seq}${last > seq ? ` (and the frames up to ${last} after it)` : ''} at store offset ${pos}: ${frame}`,
      true,
    );
    if (next === undefined) break;
    pos = next.pos;
    seq = next.seq;
  }
  return intact ? entries : undefined;
}

/** The first intact frame of the epoch after `seq`, searched sector by sector from `pos` to the tail. */
async function nextFrame(
  reader: WindowReader,
  pos: number,
  epoch: number,
  seq: number,
  position: LogPosition,
): Promise<{ pos: number; seq: number } | undefined> {
  const end = logOffset(position.superblock) + position.superblock.logCapacity;
  for (let probe = pos + SECTOR; probe + FRAME_HEADER <= position.tail; probe += SECTOR) {
    const head = await reader.read(probe, FRAME_HEADER);
    const view = new DataView(head.buffer, head.byteOffset, FRAME_HEADER);
    if (view.getUint32(0, true) !== LOG_FRAME_MAGIC || view.getUint32(4, true) !== epoch) continue;
    const found = view.getUint32(8, true);
    if (found <= seq || found >= position.frames) continue;
    if (typeof (await inspectFrame(reader, probe, epoch, found, end)) !== 'string') {
      return { pos: probe, seq: found };
    }
  }
  return undefined;
}

/** Replays `entries` into a state of its own, or reports why they do not replay. */
function replay(
  cow: CowStore,
  entries: PlacedEntry[],
  report: CheckReportBuilder,
): CowState | undefined {
  const { chunkCount } = cow.layout;
  const state = new CowState(chunkCount);
  for (const { entry, at, structure } of entries) {
    if ((entry.kind === 'preserve' || entry.kind === 'private') && entry.chunk >= chunkCount) {
      report.problem(
        'free-space',
        at,
        `the entry for block ${entry.block} at store offset ${at} names chunk ${entry.chunk}, past the store's ${chunkCount}`,
      );
      continue;
    }
    try {
      state.apply(entry);
    } catch (err) {
      if (!BlockDeviceError.is(err, 'ECORRUPT')) throw err;
      report.problem(
        structure,
        at,
        `the entries at store offset ${at} do not replay: ${err.message}`,
        true,
      );
      return undefined;
    }
  }
  return state;
}

/**
 * Free-space accounting: every chunk `state` names is named once, and is in
 * use in the device's allocator (the allocator is derived from the
 * metadata, never stored, so the two must agree). Returns what it names.
 */
function checkFreeSpace(cow: CowStore, state: CowState, report: CheckReportBuilder): NamedChunk[] {
  const named: NamedChunk[] = [];
  const owners = new Map<number, string>();
  const allocator = cow.state.allocator;
  for (const entry of state.entries()) {
    if (entry.kind !== 'preserve' && entry.kind !== 'private') continue;
    const what =
      entry.kind === 'preserve'
        ? `preserved block ${entry.block} (epoch ${entry.epoch})`
        : `snapshot #${entry.seq}'s own block ${entry.block}`;
    const at = chunkOffset(cow, entry.chunk);
    const other = owners.get(entry.chunk);
    if (other !== undefined) {
      report.problem(
        'free-space',
        at,
        `store chunk ${entry.chunk} at store offset ${at} is named twice: ${other} and ${what}`,
      );
    }
    owners.set(entry.chunk, what);
    if (!allocator.isUsed(entry.chunk)) {
      report.problem(
        'free-space',
        at,
        `store chunk ${entry.chunk} at store offset ${at} holds ${what}, but the device counts it free`,
      );
    }
    named.push({ chunk: entry.chunk, crc: entry.crc, block: entry.block, what });
  }
  return named.sort((a, b) => a.chunk - b.chunk);
}

/**
 * The named chunks grouped into reads: ascending, contiguous ones together
 * up to CHUNK_READ_BYTES (a chunk named twice joins its own run).
 */
function chunkRuns(cow: CowStore, named: NamedChunk[]): NamedChunk[][] {
  const perRead = Math.max(1, Math.floor(CHUNK_READ_BYTES / cow.layout.blockSize));
  const runs: NamedChunk[][] = [];
  for (const item of named) {
    const run = runs[runs.length - 1];
    const last = run?.[run.length - 1];
    if (run !== undefined && last!.chunk + 1 === item.chunk && run.length < perRead) run.push(item);
    else if (run !== undefined && last!.chunk === item.chunk) run.push(item);
    else runs.push([item]);
  }
  return runs;
}

/** Bytes one run's read covers. */
function runBytes(run: NamedChunk[], blockSize: number): number {
  return (run[run.length - 1]!.chunk - run[0]!.chunk + 1) * blockSize;
}

/**
 * Reads every run and checks each chunk's CRC-32; returns the damaged
 * ones. `released` holds the chunks the device freed since the metadata
 * was read: their content may have changed legitimately, so they are
 * skipped, not judged. `advanced` gets the store bytes read so far after
 * each run.
 */
async function checkChunks(
  cow: CowStore,
  runs: NamedChunk[][],
  released: ReadonlySet<number>,
  report: CheckReportBuilder,
  advanced: (bytesRead: number) => void,
): Promise<NamedChunk[]> {
  const bs = cow.layout.blockSize;
  const damaged: NamedChunk[] = [];
  await forEachConcurrently(runs.length, CHUNK_READS_IN_FLIGHT, undefined, async (r) => {
    const run = runs[r]!;
    const first = run[0]!.chunk;
    const count = run[run.length - 1]!.chunk - first + 1;
    const at = chunkOffset(cow, first);
    const data = report.read(await io('store read chunk', cow.store.read(at, count * bs)));
    for (const item of run) {
      const within = (item.chunk - first) * bs;
      report.counts.chunks++;
      if (checksum(data.subarray(within, within + bs)) === item.crc) continue;
      // Checked after the read: a chunk released before it ended may hold anything.
      if (released.has(item.chunk)) {
        report.skipped++;
        continue;
      }
      const offset = chunkOffset(cow, item.chunk);
      report.problem(
        'chunk',
        offset,
        `store chunk ${item.chunk} (${item.what}) at store offset ${offset} fails its checksum`,
      );
      damaged.push(item);
    }
    advanced(report.counts.bytes);
  });
  return damaged.sort((a, b) => a.chunk - b.chunk);
}

/** Each live snapshot of `state` with the bytes a damaged chunk leaves unreadable. */
function affectedSnapshots(
  state: CowState,
  damaged: NamedChunk[],
  blockSize: number,
): { id: string; damaged: ReturnType<typeof rangesToExtents> }[] {
  return state.infos(blockSize).map(({ id }) => {
    const seq = state.byId(id).seq;
    const blocks = damaged
      .filter((d) => state.holds(seq, d.block) && state.locate(seq, d.block)?.chunk === d.chunk)
      .map((d) => d.block)
      .sort((a, b) => a - b);
    return { id, damaged: rangesToExtents(rangesOfBlocks([...new Set(blocks)]), blockSize) };
  });
}

function chunkOffset(cow: CowStore, chunk: number): number {
  return cow.layout.dataOffset + chunk * cow.layout.blockSize;
}
