/**
 * The JournalDevice rows: durable and buffered 4 KiB random writes against
 * FileDevice, the write cost of pending snapshots, reads with 1 M entries in
 * the changes table, replay speed on open, and the changes table's memory
 * per changed block. Same machinery as workloads.ts: every file a row uses is
 * preconditioned right before it, offsets come from the same seeded
 * generators, and the load is a closed loop of `cfg.inFlight` workers.
 *
 * The journal store is always its own file (`journal.img`, made and removed
 * by the row); the production device is the data file every FileDevice row
 * uses, or — for the snapshot row — a CowSnapshotDevice in memory.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { BlockDevice, FileDevice, JournalDevice, Snapshot } from '../src/index.js';
import { alternating, describeBursts, rate, type Side, sideResult } from './alternating.js';
import {
  closedLoop,
  createSparse,
  permutation,
  precondition,
  promised,
  Rng,
  readFileOnce,
  workerRngs,
} from './harness.js';
import {
  type BenchConfig,
  EXTENT,
  formatBytes,
  paths,
  type Row,
  type RowResult,
  result,
  run,
  storeSizeFor,
  workload,
} from './workloads.js';

const MiB = 1 << 20;
/** The changes-table size the read and memory rows are about. */
const MILLION = 1 << 20;
/** Bytes before the journal ring on its store (the two superblock slots). */
const RING_START = 8192;
/** A frame header is whole 512-byte sectors: one record's frame costs its data plus this. */
const SECTOR = 512;
/** The empty frame `JournalDevice.open` ends a replayed journal with (one sector). */
const SEAL_BYTES = SECTOR;
/** Block size of the journal store: frames are sector-aligned, not block-aligned. */
const JOURNAL_STORE_BLOCK = 512;

function journalPath(cfg: BenchConfig): string {
  return join(cfg.dir, 'journal.img');
}

/** Journal bytes a write of `bytes` takes at most: its data plus a frame of its own. */
function worstRecord(bytes: number): number {
  return bytes + SECTOR;
}

/** Rounds up to whole MiB, so every block size divides it. */
function wholeMiB(bytes: number): number {
  return Math.ceil(bytes / MiB) * MiB;
}

/**
 * Geometry of the read row: the largest block size (512 B .. 4 KiB) at which
 * the data file holds 1 M blocks, and the region that 1 M blocks (or the
 * whole file, if smaller) cover.
 */
function tableReadGeometry(cfg: BenchConfig): {
  blockSize: number;
  changedBytes: number;
  journalSize: number;
} {
  let blockSize = 4096;
  while (blockSize > 512 && cfg.size / blockSize < MILLION) blockSize /= 2;
  const changedBytes = Math.min(cfg.size, MILLION * blockSize);
  // Filled with 4 KiB writes: at worst one record per frame.
  const journalSize = wholeMiB(
    RING_START + (changedBytes / cfg.blockSize) * worstRecord(cfg.blockSize),
  );
  return { blockSize, changedBytes, journalSize };
}

/** The buffered-write row with room: twice production, at least 1 GiB. */
function roomyJournalSize(cfg: BenchConfig): number {
  return Math.max(2 * cfg.size, 1 << 30);
}

/** The largest journal file any row makes (for the free-space check). */
export function journalFileSize(cfg: BenchConfig): number {
  return Math.max(roomyJournalSize(cfg), tableReadGeometry(cfg).journalSize);
}

interface JournalRig {
  device: JournalDevice;
  /** Checkpoints completed since the device was made. */
  checkpoints(): number;
  /** Closes the device and removes the journal file. */
  dispose(): Promise<void>;
}

/**
 * Preconditions the data file and a fresh journal file of `journalSize`
 * bytes, and formats a JournalDevice over them (FileDevices on both).
 */
async function journalOnFiles(
  cfg: BenchConfig,
  options: { journalSize: number; blockSize?: number; checkpointAt?: number },
): Promise<JournalRig> {
  const { data } = paths(cfg);
  const journal = journalPath(cfg);
  precondition(data, cfg.size, cfg.seed);
  createSparse(journal, options.journalSize);
  precondition(journal, options.journalSize, cfg.seed + 5);
  const bs = options.blockSize ?? cfg.blockSize;
  const production = await cfg.lib.FileDevice.open(data, { lock: false, blockSize: bs });
  const store = await cfg.lib.FileDevice.open(journal, {
    lock: false,
    blockSize: JOURNAL_STORE_BLOCK,
  });
  let device: JournalDevice;
  try {
    device = await cfg.lib.JournalDevice.create(
      production,
      store,
      options.checkpointAt === undefined ? {} : { checkpointAt: options.checkpointAt },
    );
  } catch (err) {
    await Promise.allSettled([production.close(), store.close()]);
    fs.rmSync(journal, { force: true });
    throw err;
  }
  return withCounter(device, async () => fs.rmSync(journal, { force: true }));
}

function withCounter(device: JournalDevice, after: () => Promise<void>): JournalRig {
  let checkpoints = 0;
  device.on('checkpoint', () => {
    checkpoints++;
  });
  return {
    device,
    checkpoints: () => checkpoints,
    dispose: async () => {
      try {
        await device.close();
      } finally {
        await after();
      }
    },
  };
}

function percent(part: number, whole: number): string {
  return `${((100 * part) / whole).toFixed(0)} %`;
}

// ------------------------------------------------------------ durable writes

/** The durable loop both durable rows run: each worker writes a block, then awaits `flush()`. */
function runDurable(cfg: BenchConfig, device: BlockDevice) {
  const { offset, buffers } = workload(cfg);
  return run(
    cfg,
    promised(async (w) => {
      await device.write(offset(w), buffers[w]!);
      await device.flush();
    }),
  );
}

/**
 * Each worker writes one 4 KiB block and awaits `flush()`, in a loop: an op
 * is a write plus the flush that makes it durable.
 */
async function fileDeviceDurableRow(cfg: BenchConfig): Promise<RowResult> {
  const { data } = paths(cfg);
  precondition(data, cfg.size, cfg.seed);
  const device = await cfg.lib.FileDevice.open(data, { lock: false, blockSize: cfg.blockSize });
  try {
    const r = await runDurable(cfg, device);
    return result(r, [
      `each of ${cfg.inFlight} workers: write 4 KiB, then await flush() (one fdatasync per flush call), in a loop; an op is a write and its flush`,
    ]);
  } finally {
    await device.close();
  }
}

/** The durable loop as one side of an {@link alternating} measurement. */
function durableSide(cfg: BenchConfig, device: BlockDevice): Side {
  const { offset, buffers } = workload(cfg);
  return {
    issue: promised(async (w) => {
      await device.write(offset(w), buffers[w]!);
      await device.flush();
    }),
  };
}

/**
 * The same loop on a JournalDevice with the default checkpointAt (0.75), on
 * a journal of at least 1 GiB, which the row's writes keep below 75 % on
 * this kind of machine: group commit alone (the note says how many
 * checkpoints ran; the buffered rows below show what checkpoints cost). Its
 * ratio: against the FileDevice loop on the data file in alternating bursts,
 * since an fdatasync's cost drifts with the disk (the FileDevice row's rate
 * moved 5,000–8,500 ops/s between runs of one day).
 */
async function journalDurableRow(cfg: BenchConfig): Promise<RowResult> {
  const journalSize = Math.max(cfg.size, 1 << 30);
  const rig = await journalOnFiles(cfg, { journalSize });
  // The baseline: a second handle on the data file, which the journal's writes never touch.
  const file = await cfg.lib.FileDevice.open(paths(cfg).data, {
    lock: false,
    blockSize: cfg.blockSize,
  });
  try {
    const { device } = rig;
    const r = await alternating(cfg, [durableSide(cfg, device), durableSide(cfg, file)]);
    return sideResult(r, 0, [
      `same loop as the FileDevice row; production the data file, journal a ${formatBytes(journalSize)} file (FileDevice, its flush is fdatasync), default checkpointAt (0.75)`,
      `against the FileDevice loop on the data file (one fdatasync per flush), measured alongside: ${Math.round(rate(r, 1)).toLocaleString('en-US')} ops/s; ${describeBursts(cfg, r)}`,
      `${rig.checkpoints()} checkpoint(s) during warm-up + measured run; journal ${percent(device.journalUsed, device.journalCapacity)} full at the end`,
    ]);
  } finally {
    await file.close();
    await rig.dispose();
  }
}

// ----------------------------------------------------------- buffered writes

/**
 * 4 KiB random writes, no flush. `roomy`: a journal twice production's size
 * (at least 1 GiB) and `checkpointAt: 1`, with the row's op budget capped so
 * the journal never fills (no checkpoint runs): the journal's own cost.
 * Otherwise: the default `checkpointAt` (0.75) on a journal a quarter of
 * production's size, so checkpoints run in the background during the
 * measured time, and writes wait for one when the journal fills: the
 * sustained rate users get once the journal has filled.
 */
async function journalWriteRow(cfg: BenchConfig, roomy: boolean): Promise<RowResult> {
  const journalSize = roomy ? roomyJournalSize(cfg) : wholeMiB(cfg.size / 4);
  const rig = await journalOnFiles(cfg, roomy ? { journalSize, checkpointAt: 1 } : { journalSize });
  try {
    const { device } = rig;
    const { offset, buffers } = workload(cfg);
    const capacity = device.journalCapacity;
    const limit = roomy
      ? Math.floor(capacity / worstRecord(cfg.blockSize)) - cfg.inFlight
      : undefined;
    const r = await run(
      cfg,
      promised((w) => device.write(offset(w), buffers[w]!)),
      limit,
    );
    const notes = [
      roomy
        ? `journal a ${formatBytes(journalSize)} file, checkpointAt 1 (no background checkpoints), op budget ${limit} so the journal never fills`
        : `journal a ${formatBytes(journalSize)} file (¼ of production), default checkpointAt 0.75: checkpoints run in the background during the measured time and writes wait when the journal is full`,
      `${rig.checkpoints()} checkpoint(s) during warm-up + measured run; journal ${percent(device.journalUsed, capacity)} full at the end`,
    ];
    if (limit !== undefined && r.warmupOps + r.ops >= limit) {
      notes.push(`stopped at the op budget after ${r.seconds.toFixed(2)} s`);
    }
    if (roomy && rig.checkpoints() > 0) throw new Error('a checkpoint ran in the roomy row');
    return result(r, notes);
  } finally {
    await rig.dispose();
  }
}

// ---------------------------------------------------------- pending snapshots

interface SnapshotStack {
  device: JournalDevice;
  taken: Snapshot[];
  /** Ops the stack's journal has room for. */
  budget: number;
  checkpoints(): number;
}

/**
 * A JournalDevice whose production is a CowSnapshotDevice, all in memory
 * (the library's CPU cost, no disk noise), with `pending` snapshots taken
 * through the journal and not yet materialized (checkpointAt 1, and a
 * journal with room for every write the row makes).
 */
async function snapshotStack(
  cfg: BenchConfig,
  pending: number,
  journalSize: number,
): Promise<SnapshotStack> {
  const { MemoryDevice, CowSnapshotDevice, JournalDevice } = cfg.lib;
  const bs = cfg.blockSize;
  const origin = await MemoryDevice.create({ size: cfg.size, blockSize: bs });
  const cowStore = await MemoryDevice.create({ size: storeSizeFor(cfg.size, bs), blockSize: bs });
  const production = await CowSnapshotDevice.create(origin, cowStore);
  // Sparse: only the frames written take memory; 1 MiB blocks keep the object count low.
  const journal = await MemoryDevice.create({ size: journalSize, blockSize: MiB });
  const device = await JournalDevice.create(production, journal, { checkpointAt: 1 });
  const rig = withCounter(device, async () => {});
  const taken: Snapshot[] = [];
  for (let i = 0; i < pending; i++) taken.push(await device.snapshot());
  const budget =
    Math.floor((device.journalCapacity - device.journalUsed) / worstRecord(bs)) - cfg.inFlight;
  return { device, taken, budget, checkpoints: rig.checkpoints };
}

/**
 * Buffered 4 KiB random writes with 10 pending snapshots against none: two
 * identical stacks built side by side and measured in alternating bursts.
 * The row's ops/s is the 10-snapshot stack's; its ratio the write cost.
 */
async function journalSnapshotPairRow(cfg: BenchConfig): Promise<RowResult> {
  // Room for every write both sides make (~180 k writes/s for 2.25 s each,
  // a record of ~4.1 KiB): with 1 GiB the journals filled after about half
  // the bursts, and a median of 8 pairs swung the ratio by ±5 %.
  const journalSize = 2 ** 31;
  const none = await snapshotStack(cfg, 0, journalSize);
  let ten: SnapshotStack | undefined;
  try {
    ten = await snapshotStack(cfg, 10, journalSize);
    const side = (stack: SnapshotStack): Side => {
      const { offset, buffers } = workload(cfg);
      return {
        issue: promised((w) => stack.device.write(offset(w), buffers[w]!)),
        budget: stack.budget,
      };
    };
    const r = await alternating(cfg, [side(none), side(ten)]);
    for (const stack of [none, ten]) {
      if (stack.checkpoints() > 0) {
        throw new Error('a checkpoint ran: the snapshots are no longer pending');
      }
      for (const s of stack.taken) await s.close();
    }
    return sideResult(r, 1, [
      `production a CowSnapshotDevice over MemoryDevices, journal a ${formatBytes(journalSize)} MemoryDevice, checkpointAt 1 (no checkpoint ran)`,
      '10 snapshots taken through the journal right before the run, all still pending (not yet materialized by a checkpoint), against an identical stack with none',
      `${Math.round(rate(r, 1)).toLocaleString('en-US')} ops/s with 10, ${Math.round(rate(r, 0)).toLocaleString('en-US')} with none; cost = median over burst pairs of (ops/s with none ÷ ops/s with 10) = ${r.ratio.toFixed(3)}×`,
      describeBursts(cfg, r),
    ]);
  } finally {
    await ten?.device.close();
    await none.device.close();
  }
}

// ------------------------------------------------------ reads with 1 M entries

/**
 * Fills the journal with distinct blocks (4 KiB writes in a random order
 * over the changed region, 1 M blocks of the row's block size), then reads
 * 4 KiB at random offsets in that region — every read a changes-table
 * lookup that hits — in alternating bursts with FileDevice reads of the data
 * file (same size, same offsets, preconditioned): the row's ratio.
 */
async function journalTableReadRow(cfg: BenchConfig): Promise<RowResult> {
  const { blockSize, changedBytes, journalSize } = tableReadGeometry(cfg);
  const rig = await journalOnFiles(cfg, { journalSize, blockSize, checkpointAt: 1 });
  let file: FileDevice | undefined;
  try {
    const { device } = rig;
    const unit = cfg.blockSize;
    const writes = changedBytes / unit;
    const order = permutation(writes, new Rng(cfg.seed + 6));
    const { buffers } = workload(cfg);
    const t0 = performance.now();
    await closedLoop(
      promised((w, i) => device.write(order[i]! * unit, buffers[w]!)),
      { inFlight: cfg.inFlight, seconds: Number.POSITIVE_INFINITY, limit: writes },
    );
    await device.flush();
    const fillSeconds = (performance.now() - t0) / 1000;
    const entries = device.changedBlocks;
    if (entries !== changedBytes / blockSize || rig.checkpoints() > 0) {
      throw new Error(
        `setup left ${entries} changes-table entries (${rig.checkpoints()} checkpoints), not ${changedBytes / blockSize}`,
      );
    }
    readFileOnce(journalPath(cfg));
    // The baseline: a second handle on the data file, which the journal's reads never touch.
    file = await cfg.lib.FileDevice.open(paths(cfg).data, { lock: false, blockSize: unit });
    const baseline = file;
    const reads = (dev: { read(offset: number, length: number): Promise<Uint8Array> }): Side => {
      const rngs = workerRngs(cfg.seed, cfg.inFlight);
      const slots = changedBytes / unit;
      return { issue: promised((w) => dev.read(rngs[w]!.below(slots) * unit, unit)) };
    };
    const r = await alternating(cfg, [reads(device), reads(baseline)]);
    return sideResult(r, 0, [
      `${entries.toLocaleString('en-US')} changes-table entries (${formatBytes(blockSize)} blocks; ${(device.changesTableBytes / entries).toFixed(1)} bytes each)`,
      `setup: ${writes} writes of 4 KiB in a random order over ${formatBytes(changedBytes)} (${fillSeconds.toFixed(1)} s), flush, journal read once; journal a ${formatBytes(journalSize)} file, ${percent(device.journalUsed, device.journalCapacity)} used, checkpointAt 1`,
      `each read covers ${unit / blockSize} block(s), adjacent in the journal: one journal read`,
      `FileDevice reads of the ${formatBytes(cfg.size)} data file (preconditioned), same offsets, measured alongside: ${Math.round(rate(r, 1)).toLocaleString('en-US')} ops/s; ratio = median over burst pairs of (journal ops/s ÷ FileDevice ops/s) = ${r.ratio.toFixed(3)}×`,
      describeBursts(cfg, r),
    ]);
  } finally {
    await file?.close();
    await rig.dispose();
  }
}

// ------------------------------------------------------------------- replay

/**
 * Passes everything through until {@link cut}; from then on writes and
 * flushes are lost, as in a power cut, so the journal stays as it was.
 */
class PowerCut implements BlockDevice {
  readonly size: number;
  readonly blockSize: number;
  readonly readOnly: boolean;
  #cut = false;
  #writing = 0;

  constructor(private readonly inner: BlockDevice) {
    this.size = inner.size;
    this.blockSize = inner.blockSize;
    this.readOnly = inner.readOnly;
  }

  cut(): void {
    this.#cut = true;
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    return this.inner.read(offset, length);
  }

  /** Writes passed to the inner device that have not settled yet. */
  get writesInFlight(): number {
    return this.#writing;
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    if (this.#cut) return Promise.resolve();
    this.#writing++;
    const done = (): void => {
      this.#writing--;
    };
    const op = this.inner.write(offset, data);
    op.then(done, done);
    return op;
  }

  flush(): Promise<void> {
    return this.#cut ? Promise.resolve() : this.inner.flush();
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** Reads `[0, length)` of a file in 1 MiB reads, one at a time (callback fs.read). */
function readSequentially(path: string, length: number): Promise<void> {
  const fd = fs.openSync(path, 'r');
  const buffer = Buffer.allocUnsafe(EXTENT);
  return new Promise<void>((resolve, reject) => {
    let pos = 0;
    const next = (): void => {
      if (pos >= length) {
        resolve();
        return;
      }
      fs.read(fd, buffer, 0, Math.min(EXTENT, length - pos), pos, (err, n) => {
        if (err) reject(err);
        else if (n === 0) reject(new Error(`unexpected end of file at ${pos}`));
        else {
          pos += n;
          next();
        }
      });
    };
    next();
  }).finally(() => fs.closeSync(fd));
}

/**
 * Fills a journal as large as production with 4 KiB random writes, flushes,
 * then closes it cleanly or cuts the power; reads the journal file once (so
 * it is cached, as every row's files are), then times a raw sequential read
 * of the ring bytes in use and `JournalDevice.open`, which replays them.
 *
 * Replay reads and checks every record either way (journal-scan.ts). After
 * a clean close that is all; after a power cut it then scans every sector of
 * the free ring for a frame header attesting a damaged record, so that row
 * fills the journal only half: a crash leaves a partly used journal (the
 * default checkpointAt keeps it below 75 %), and half shows both costs.
 */
async function journalReplayRow(cfg: BenchConfig, clean: boolean): Promise<RowResult> {
  const { data } = paths(cfg);
  const journal = journalPath(cfg);
  const journalSize = cfg.size;
  precondition(data, cfg.size, cfg.seed);
  createSparse(journal, journalSize);
  precondition(journal, journalSize, cfg.seed + 5);
  try {
    const { lib } = cfg;
    const bs = cfg.blockSize;
    const store = new PowerCut(
      await lib.FileDevice.open(journal, { lock: false, blockSize: JOURNAL_STORE_BLOCK }),
    );
    const filling = withCounter(
      await lib.JournalDevice.create(
        await lib.FileDevice.open(data, { lock: false, blockSize: bs }),
        store,
        {
          checkpointAt: 1,
        },
      ),
      async () => {},
    );
    let used: number;
    let capacityOf: number;
    let records: number;
    let entries: number;
    const t0 = performance.now();
    try {
      const { device } = filling;
      const capacity = device.journalCapacity;
      // Room for what may be in flight when a worker sees the journal nearly full.
      const stopAt = clean ? capacity - 4 * MiB : capacity / 2;
      const { offset, buffers } = workload(cfg);
      await Promise.all(
        buffers.map(async (buffer, w) => {
          while (device.journalUsed < stopAt) await device.write(offset(w), buffer);
        }),
      );
      await device.flush();
      // Let the marker frame the flush schedules land before the power goes:
      // wait until no store write is in flight and the journal's size has
      // stopped moving (a fixed 10 ms wait once caught the marker's write
      // still in flight, under a full run's load: replay then found it).
      let last = -1;
      for (let waited = 0; waited < 5000; waited += 5) {
        await new Promise((resolve) => setTimeout(resolve, 5));
        if (store.writesInFlight === 0 && device.journalUsed === last) break;
        last = device.journalUsed;
      }
      if (filling.checkpoints() > 0) throw new Error('a checkpoint ran while filling the journal');
      used = device.journalUsed;
      capacityOf = capacity;
      records = device.sequence;
      entries = device.changedBlocks;
      if (!clean) store.cut();
    } finally {
      await filling.dispose();
    }
    const fillSeconds = (performance.now() - t0) / 1000;

    readFileOnce(journal);
    const r0 = performance.now();
    await readSequentially(journal, RING_START + used);
    const rawSeconds = (performance.now() - r0) / 1000;
    // After a power cut replay reads the whole ring (the free part too, for
    // an attesting header): what a sequential read of the whole file takes
    // is shown beside the judged ratio, which counts only the records.
    let wholeSeconds: number | undefined;
    if (!clean) {
      const w0 = performance.now();
      await readSequentially(journal, journalSize);
      wholeSeconds = (performance.now() - w0) / 1000;
    }

    const production = await lib.FileDevice.open(data, { lock: false, blockSize: bs });
    const store2 = await lib.FileDevice.open(journal, {
      lock: false,
      blockSize: JOURNAL_STORE_BLOCK,
    });
    const o0 = performance.now();
    const device = await lib.JournalDevice.open(production, store2, { checkpointAt: 1 });
    const seconds = (performance.now() - o0) / 1000;
    try {
      // Open ends the replayed journal with a one-sector seal frame.
      if (device.journalUsed !== used + SEAL_BYTES || device.sequence !== records) {
        throw new Error(
          `replay found ${device.sequence} records in ${device.journalUsed} bytes, not ${records} in ${used} (+ the ${SEAL_BYTES}-byte seal)`,
        );
      }
      if (device.changedBlocks !== entries) throw new Error('replay rebuilt another changes table');
    } finally {
      await device.close();
    }
    const mbps = used / 1e6 / seconds;
    const rawMbps = (RING_START + used) / 1e6 / rawSeconds;
    return {
      opsPerSec: mbps,
      ops: records,
      seconds,
      display: `${mbps.toFixed(0)} MB/s`,
      ratio: mbps / rawMbps,
      notes: [
        `journal a ${formatBytes(journalSize)} file, filled to ${percent(used, capacityOf)} (${formatBytes(wholeMiB(used))} of records, ${records} records of 4 KiB, ${entries} distinct blocks) by ${cfg.inFlight} workers in ${fillSeconds.toFixed(1)} s, flushed, then ${clean ? 'closed cleanly (replay still reads and checks every record, then checks it reached the tail the superblock names)' : 'the power cut (journal writes dropped, so close leaves the superblock unclean: replay reads and checks every record, then scans the free ring for a frame attesting a damaged record)'}`,
        `JournalDevice.open took ${(seconds * 1000).toFixed(0)} ms: ${mbps.toFixed(0)} MB/s of records replayed (10^6 bytes)${clean ? '' : `, the free ${formatBytes(wholeMiB(capacityOf - used))} of ring scanned as well`}`,
        `raw sequential read of the same ${formatBytes(wholeMiB(RING_START + used))} (1 MiB callback fs.read, one at a time, file cached) ${rawMbps.toFixed(0)} MB/s`,
        ...(wholeSeconds === undefined
          ? []
          : [
              `report: a raw sequential read of the whole ${formatBytes(journalSize)} journal file (the bytes open reads after a power cut) took ${(wholeSeconds * 1000).toFixed(0)} ms, ${(wholeSeconds / seconds).toFixed(2)}× the open's time`,
            ]),
      ],
    };
  } finally {
    fs.rmSync(journal, { force: true });
  }
}

// ------------------------------------------------------------ table memory

/**
 * Memory of the changes table at 1 M entries, in memory: a 512 MiB
 * production of 512-byte blocks written in full with 1 MiB writes.
 */
async function journalTableMemoryRow(cfg: BenchConfig): Promise<RowResult> {
  const { MemoryDevice, JournalDevice } = cfg.lib;
  const bs = 512;
  const size = MILLION * bs;
  const production = await MemoryDevice.create({ size, blockSize: bs });
  const journal = await MemoryDevice.create({
    size: wholeMiB(RING_START + size + (size / EXTENT) * SECTOR * 2) + MiB,
    blockSize: MiB,
  });
  const device = await JournalDevice.create(production, journal, { checkpointAt: 1 });
  try {
    const extent = new Rng(cfg.seed + 7).fill(new Uint8Array(EXTENT));
    const order = permutation(size / EXTENT, new Rng(cfg.seed + 8));
    const t0 = performance.now();
    await closedLoop(
      promised((_w, i) => device.write(order[i]! * EXTENT, extent)),
      { inFlight: cfg.inFlight, seconds: Number.POSITIVE_INFINITY, limit: order.length },
    );
    const seconds = (performance.now() - t0) / 1000;
    const entries = device.changedBlocks;
    if (entries !== MILLION) throw new Error(`${entries} changes-table entries, not ${MILLION}`);
    const perEntry = device.changesTableBytes / entries;
    return {
      opsPerSec: perEntry,
      ops: entries,
      seconds,
      display: `${perEntry.toFixed(1)} B/entry`,
      notes: [
        `changesTableBytes ${device.changesTableBytes.toLocaleString('en-US')} / changedBlocks ${entries.toLocaleString('en-US')}`,
        `MemoryDevices: production ${formatBytes(size)} of ${bs}-byte blocks written in full with 1 MiB writes in a random order (${seconds.toFixed(2)} s), checkpointAt 1`,
      ],
    };
  } finally {
    await device.close();
  }
}

/**
 * Live reads through a JournalDevice whose changes table is empty (every
 * read goes to production): `read`, or `readInto` one reused buffer per
 * worker — what forwarding the caller's buffer through one layer keeps.
 */
async function journalEmptyReadRow(cfg: BenchConfig, into: boolean): Promise<RowResult> {
  const rig = await journalOnFiles(cfg, { journalSize: 64 * MiB });
  try {
    const { device } = rig;
    const { offset, buffers } = workload(cfg);
    const bs = cfg.blockSize;
    const r = await run(
      cfg,
      promised(
        into ? (w) => device.readInto(offset(w), buffers[w]!) : (w) => device.read(offset(w), bs),
      ),
    );
    return result(r, [
      `empty changes table: every read goes to production (a FileDevice)${into ? '; readInto one reused buffer per worker' : ''}`,
    ]);
  } finally {
    await rig.dispose();
  }
}

/** The JournalDevice rows, in the order they run (after the rows of workloads.ts). */
export function journalRows(cfg: BenchConfig): Row[] {
  const read = tableReadGeometry(cfg);
  const entries = (read.changedBytes / read.blockSize).toLocaleString('en-US');
  return [
    {
      id: 'fd-write-durable',
      label: 'FileDevice write + flush (fdatasync per flush)',
      kind: 'write',
      run: fileDeviceDurableRow,
    },
    {
      id: 'jd-write-durable',
      label: 'JournalDevice write + flush (group commit)',
      kind: 'write',
      run: journalDurableRow,
    },
    {
      id: 'jd-write',
      label: 'JournalDevice write, journal with room (no checkpoint)',
      kind: 'write',
      run: (c) => journalWriteRow(c, true),
    },
    {
      id: 'jd-write-checkpointing',
      label: 'JournalDevice write, background checkpoints (checkpointAt 0.75)',
      kind: 'write',
      run: (c) => journalWriteRow(c, false),
    },
    {
      id: 'jd-write-mem-10',
      label: 'JournalDevice write over COW with 10 pending snapshots vs none, in memory (CPU cost)',
      kind: 'write',
      run: journalSnapshotPairRow,
    },
    {
      id: 'jd-read-table',
      label: `JournalDevice read, ${entries} changes-table entries`,
      kind: 'read',
      run: journalTableReadRow,
    },
    {
      id: 'jd-read-empty',
      label: 'JournalDevice read, empty changes table',
      kind: 'read',
      run: (c) => journalEmptyReadRow(c, false),
    },
    {
      id: 'jd-read-into-empty',
      label: 'JournalDevice readInto, empty changes table (reused buffer per worker)',
      kind: 'read',
      run: (c) => journalEmptyReadRow(c, true),
    },
    {
      id: 'jd-replay',
      label: `JournalDevice.open replay of a full ${formatBytes(cfg.size)} journal (closed cleanly)`,
      kind: 'metric',
      run: (c) => journalReplayRow(c, true),
    },
    {
      id: 'jd-replay-unclean',
      label: `JournalDevice.open replay of a full ${formatBytes(cfg.size)} journal (after a power cut)`,
      kind: 'metric',
      run: (c) => journalReplayRow(c, false),
    },
    {
      id: 'jd-table-memory',
      label: 'JournalDevice changes table at 1,048,576 entries, in memory',
      kind: 'metric',
      run: journalTableMemoryRow,
    },
  ];
}
