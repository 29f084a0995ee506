/**
 * The benchmark rows: what each one sets up, preconditions and measures.
 * Every row gets its files preconditioned right before it (see
 * `precondition` in harness.ts) and uses the same seeded offsets.
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import RandomAccessFile from 'random-access-file';
import type { CowSnapshotDevice, Snapshot } from '../src/index.js';
import {
  type AlternatingResult,
  alternating,
  describeBursts,
  rate,
  type Side,
} from './alternating.js';
import {
  allocatedBytes,
  closedLoop,
  createSparse,
  type Issue,
  type LoopResult,
  measure,
  permutation,
  precondition,
  promised,
  Rng,
  readFileOnce,
  workerRngs,
} from './harness.js';
import type { Library } from './library.js';

export interface BenchConfig {
  /** The blocksnap build under test. */
  lib: Library;
  /** Temporary directory holding the files. */
  dir: string;
  /** Origin (and data file) size in bytes. */
  size: number;
  blockSize: number;
  inFlight: number;
  /** Measured seconds per row. */
  seconds: number;
  /** Warm-up seconds before each measured run (same operation, not counted). */
  warmup: number;
  seed: number;
  /** Size of the sparse origin of the large snapshot-creation row. */
  hugeSize: number;
  /** Measured `snapshot()` calls per snapshot-creation row. */
  snapshotCalls: number;
}

/**
 * What a row measures: reads and writes are compared with raw of the same
 * kind; a metric row reports one number in its own unit (MB/s, bytes).
 */
export type RowKind = 'read' | 'write' | 'snapshot' | 'metric';

export interface RowResult {
  opsPerSec: number;
  ops: number;
  seconds: number;
  /** For snapshot rows: mean milliseconds per `snapshot()` call. */
  meanMs?: number;
  /** For metric rows: what the table shows instead of ops/s (`opsPerSec` holds the number). */
  display?: string;
  /**
   * For rows that measure their own baseline in the same round: the ratio
   * their target judges (e.g. replay MB/s over raw sequential-read MB/s).
   */
  ratio?: number;
  /** For rows that judge latency too: p99 over that of their own baseline, measured alongside. */
  p99Ratio?: number;
  /** For rows judged against another library too: ops/s over the peer's, measured alongside. */
  peerRatio?: number;
  notes: string[];
}

export interface Row {
  id: string;
  label: string;
  kind: RowKind;
  run: (cfg: BenchConfig) => Promise<RowResult>;
}

/** The one pass over 1 MiB extents that a few setups make through a device. */
export const EXTENT = 1 << 20;

export function paths(cfg: BenchConfig): {
  data: string;
  origin: string;
  store: string;
  huge: string;
} {
  return {
    data: join(cfg.dir, 'data.img'),
    origin: join(cfg.dir, 'origin.img'),
    store: join(cfg.dir, 'store.img'),
    huge: join(cfg.dir, 'origin-huge.img'),
  };
}

/**
 * Store size for a copy-on-write device whose origin is `size` bytes: room for
 * a preserved copy of every origin block plus the metadata (checkpoint tables
 * and log, about 60 bytes per chunk, and the snapshot table).
 */
export function storeSizeFor(size: number, blockSize: number): number {
  const blocks = size / blockSize;
  const metadata = blocks * 64 + (4 << 20);
  return size + Math.ceil(metadata / EXTENT) * EXTENT;
}

/** Creates the files the rows precondition and use. */
export function createFiles(cfg: BenchConfig): void {
  const p = paths(cfg);
  createSparse(p.data, cfg.size);
  createSparse(p.origin, cfg.size);
  createSparse(p.store, storeSizeFor(cfg.size, cfg.blockSize));
}

/** Per-worker offset generators and 4 KiB buffers, identical in every row. */
export function workload(cfg: BenchConfig): {
  blocks: number;
  offset: (worker: number) => number;
  buffers: Buffer[];
} {
  const blocks = cfg.size / cfg.blockSize;
  const rngs = workerRngs(cfg.seed, cfg.inFlight);
  const fill = new Rng(cfg.seed ^ 0x5bd1e995);
  const buffers = Array.from({ length: cfg.inFlight }, () =>
    fill.fill(Buffer.allocUnsafe(cfg.blockSize)),
  );
  return { blocks, offset: (w) => rngs[w]!.below(blocks) * cfg.blockSize, buffers };
}

export function run(cfg: BenchConfig, issue: Issue, limit?: number) {
  return measure(issue, {
    inFlight: cfg.inFlight,
    seconds: cfg.seconds,
    warmup: cfg.warmup,
    ...(limit === undefined ? {} : { limit }),
  });
}

export function result(r: LoopResult, notes: string[] = []): RowResult {
  return { opsPerSec: r.opsPerSec, ops: r.ops, seconds: r.seconds, notes };
}

function shortIO(what: string, n: number, expected: number): Error | null {
  return n === expected ? null : new Error(`short ${what}: ${n} of ${expected} bytes`);
}

// ---------------------------------------------------------------- baselines

/** Callback `fs.read`/`fs.write` on a raw fd, no promises: the fastest async path. */
async function rawRow(cfg: BenchConfig, kind: 'read' | 'write'): Promise<RowResult> {
  const { data } = paths(cfg);
  precondition(data, cfg.size, cfg.seed);
  const { offset, buffers } = workload(cfg);
  const bs = cfg.blockSize;
  const fd = fs.openSync(data, 'r+');
  try {
    const issue: Issue =
      kind === 'read'
        ? (w, _i, done) =>
            fs.read(fd, buffers[w]!, 0, bs, offset(w), (err, n) =>
              done(err ?? shortIO('read', n, bs)),
            )
        : (w, _i, done) =>
            fs.write(fd, buffers[w]!, 0, bs, offset(w), (err, n) =>
              done(err ?? shortIO('write', n, bs)),
            );
    return result(await run(cfg, issue), ['callback API, one reused buffer per worker']);
  } finally {
    fs.closeSync(fd);
  }
}

async function fileHandleRow(cfg: BenchConfig, kind: 'read' | 'write'): Promise<RowResult> {
  const { data } = paths(cfg);
  precondition(data, cfg.size, cfg.seed);
  const { offset, buffers } = workload(cfg);
  const bs = cfg.blockSize;
  const handle = await fsp.open(data, 'r+');
  try {
    const op =
      kind === 'read'
        ? async (w: number) => {
            const { bytesRead } = await handle.read(buffers[w]!, 0, bs, offset(w));
            const err = shortIO('read', bytesRead, bs);
            if (err) throw err;
          }
        : async (w: number) => {
            const { bytesWritten } = await handle.write(buffers[w]!, 0, bs, offset(w));
            const err = shortIO('write', bytesWritten, bs);
            if (err) throw err;
          };
    return result(await run(cfg, promised(op)));
  } finally {
    await handle.close();
  }
}

function rafCall(fn: (cb: (err: Error | null) => void) => void): Promise<void> {
  return new Promise((resolve, reject) => fn((err) => (err ? reject(err) : resolve())));
}

async function randomAccessFileRow(cfg: BenchConfig, kind: 'read' | 'write'): Promise<RowResult> {
  const { data } = paths(cfg);
  precondition(data, cfg.size, cfg.seed);
  const { offset, buffers } = workload(cfg);
  const bs = cfg.blockSize;
  const file = new RandomAccessFile(data);
  await rafCall((cb) => file.open(cb));
  try {
    const issue: Issue =
      kind === 'read'
        ? (w, _i, done) =>
            file.read(offset(w), bs, (err, buf) =>
              done(err ?? shortIO('read', buf?.length ?? 0, bs)),
            )
        : (w, _i, done) => file.write(offset(w), buffers[w]!, done);
    return result(await run(cfg, issue), [
      kind === 'read'
        ? 'callback API; the library allocates a buffer per read'
        : 'callback API, one reused buffer per worker',
    ]);
  } finally {
    await rafCall((cb) => file.close(cb));
  }
}

/**
 * What the BlockDevice contract itself costs on top of raw: a promise per
 * operation, a fresh buffer per read (the caller owns what `read` returns)
 * and a private copy per write (the caller may reuse its buffer at once).
 * No device can beat this row; it shows how much of the gap to raw is the
 * contract and how much is a device's own code.
 */
async function contractFloorRow(
  cfg: BenchConfig,
  kind: 'read' | 'write',
  reuse = false,
): Promise<RowResult> {
  const { data } = paths(cfg);
  precondition(data, cfg.size, cfg.seed);
  const { offset, buffers } = workload(cfg);
  const bs = cfg.blockSize;
  const fd = fs.openSync(data, 'r+');
  try {
    const op =
      kind === 'read'
        ? (w: number) =>
            new Promise<Uint8Array>((resolve, reject) => {
              const buffer = reuse ? buffers[w]! : new Uint8Array(bs);
              fs.read(fd, buffer, 0, bs, offset(w), (err, n) => {
                const failure = err ?? shortIO('read', n, bs);
                if (failure) reject(failure);
                else resolve(buffer);
              });
            })
        : (w: number) =>
            new Promise<void>((resolve, reject) => {
              const copy = new Uint8Array(bs);
              copy.set(buffers[w]!);
              fs.write(fd, copy, 0, bs, offset(w), (err, n) => {
                const failure = err ?? shortIO('write', n, bs);
                if (failure) reject(failure);
                else resolve();
              });
            });
    return result(await run(cfg, promised(op)), [
      kind === 'read' && reuse
        ? 'callback fs.read wrapped in a promise, one reused buffer per worker: the ceiling of any promise-returning read'
        : kind === 'read'
          ? 'callback fs.read wrapped in a promise, a new Uint8Array per read'
          : 'callback fs.write wrapped in a promise, a private copy of the data per write',
    ]);
  } finally {
    fs.closeSync(fd);
  }
}

// ---------------------------------------------------------------- blocksnap

async function fileDeviceRow(cfg: BenchConfig, kind: 'read' | 'write'): Promise<RowResult> {
  const { data } = paths(cfg);
  precondition(data, cfg.size, cfg.seed);
  const { offset } = workload(cfg);
  const bs = cfg.blockSize;
  const device = await cfg.lib.FileDevice.open(data, { lock: false, blockSize: bs });
  try {
    if (kind === 'write') return await fileDeviceWritesAlongside(cfg, device);
    return result(
      await run(
        cfg,
        promised((w: number) => device.read(offset(w), bs)),
      ),
    );
  } finally {
    await device.close();
  }
}

/**
 * FileDevice writes against raw callback writes and against
 * random-access-file's, each pair in alternating bursts on the same file: a
 * 4 KiB buffered write's rate swings by a third between rows of one round
 * (the disk's writeback), more than the 10 % the target judges, so rows
 * measured seconds apart could not tell the three apart.
 */
async function fileDeviceWritesAlongside(
  cfg: BenchConfig,
  device: { write(offset: number, data: Uint8Array): Promise<void> },
): Promise<RowResult> {
  const { data } = paths(cfg);
  const { offset, buffers } = workload(cfg);
  const bs = cfg.blockSize;
  const ours: Side = { issue: promised((w: number) => device.write(offset(w), buffers[w]!)) };
  const fd = fs.openSync(data, 'r+');
  const file = new RandomAccessFile(data);
  await rafCall((cb) => file.open(cb));
  try {
    const raw: Side = {
      issue: (w, _i, done) =>
        fs.write(fd, buffers[w]!, 0, bs, offset(w), (err, n) =>
          done(err ?? shortIO('write', n, bs)),
        ),
    };
    const peer: Side = { issue: (w, _i, done) => file.write(offset(w), buffers[w]!, done) };
    const vsRaw = await alternating(cfg, [ours, raw]);
    const vsPeer = await alternating(cfg, [ours, peer]);
    const ops = vsRaw.ops[0] + vsPeer.ops[0];
    const seconds = vsRaw.seconds[0] + vsPeer.seconds[0];
    const ratioText = (r: AlternatingResult, what: string): string =>
      `${what} ${Math.round(rate(r, 1)).toLocaleString('en-US')} ops/s alongside (${r.ratio.toFixed(2)}×; ${describeBursts(cfg, r)})`;
    return {
      opsPerSec: ops / seconds,
      ops,
      seconds,
      ratio: vsRaw.ratio,
      peerRatio: vsPeer.ratio,
      notes: [
        'measured in alternating bursts twice: against raw callback fs.write, then against random-access-file write, on the same file',
        ratioText(vsRaw, 'raw callback fs.write'),
        ratioText(vsPeer, 'random-access-file write'),
      ],
    };
  } finally {
    fs.closeSync(fd);
    await rafCall((cb) => file.close(cb));
  }
}

/**
 * FileDevice `readInto` into one reused buffer per worker: `read` without a
 * fresh buffer per read — the same buffers the raw row reads into.
 */
async function fileDeviceReadIntoRow(cfg: BenchConfig): Promise<RowResult> {
  const { data } = paths(cfg);
  precondition(data, cfg.size, cfg.seed);
  const { offset, buffers } = workload(cfg);
  const device = await cfg.lib.FileDevice.open(data, { lock: false, blockSize: cfg.blockSize });
  try {
    const r = await run(
      cfg,
      promised((w) => device.readInto(offset(w), buffers[w]!)),
    );
    return result(r, ['readInto one reused buffer per worker']);
  } finally {
    await device.close();
  }
}

interface CowSetup {
  cow: CowSnapshotDevice;
  snapshots: Snapshot[];
}

/**
 * Preconditions origin and store, formats a copy-on-write device over them
 * (FileDevices on both) and takes `snapshots` snapshots back to back.
 */
async function cowSetup(
  cfg: BenchConfig,
  snapshots: number,
  originPath = paths(cfg).origin,
  inMemory = false,
): Promise<CowSetup> {
  if (inMemory) {
    // Sparse memory devices: the library's own CPU cost, with no disk to add noise.
    const origin = await cfg.lib.MemoryDevice.create({ size: cfg.size, blockSize: cfg.blockSize });
    const storeMemory = await cfg.lib.MemoryDevice.create({
      size: storeSizeFor(cfg.size, cfg.blockSize),
      blockSize: cfg.blockSize,
    });
    const cow = await cfg.lib.CowSnapshotDevice.create(origin, storeMemory);
    const taken: Snapshot[] = [];
    for (let i = 0; i < snapshots; i++) taken.push(await cow.snapshot({ name: `s${i + 1}` }));
    return { cow, snapshots: taken };
  }
  const { store } = paths(cfg);
  if (originPath === paths(cfg).origin) precondition(originPath, cfg.size, cfg.seed + 1);
  precondition(store, storeSizeFor(cfg.size, cfg.blockSize), cfg.seed + 2);
  const originDevice = await cfg.lib.FileDevice.open(originPath, {
    lock: false,
    blockSize: cfg.blockSize,
  });
  const storeDevice = await cfg.lib.FileDevice.open(store, {
    lock: false,
    blockSize: cfg.blockSize,
  });
  const cow = await cfg.lib.CowSnapshotDevice.create(originDevice, storeDevice);
  if (cow.totalChunks < cfg.size / cfg.blockSize) {
    await cow.close();
    throw new Error(`store holds ${cow.totalChunks} chunks, fewer than the origin's blocks`);
  }
  const taken: Snapshot[] = [];
  for (let i = 0; i < snapshots; i++) taken.push(await cow.snapshot({ name: `s${i + 1}` }));
  return { cow, snapshots: taken };
}

/**
 * Writes the extents `0, step, 2·step, ...` (each `EXTENT` bytes) through
 * `device`, 32 at a time; then flushes and reads origin and store once, which
 * leaves them as preconditioning would (written, durable, cached, clean).
 */
async function bulkPass(cfg: BenchConfig, device: CowSnapshotDevice, step: number): Promise<void> {
  const extent = Math.min(EXTENT, cfg.size);
  const count = Math.ceil(cfg.size / extent / step);
  const data = new Rng(cfg.seed + 3).fill(new Uint8Array(extent));
  await closedLoop(
    promised((_w, i) => device.write(i * step * extent, data)),
    { inFlight: cfg.inFlight, seconds: Number.POSITIVE_INFINITY, limit: count },
  );
  await device.flush();
  readFileOnce(paths(cfg).origin);
  readFileOnce(paths(cfg).store);
}

async function cowOriginReadRow(cfg: BenchConfig): Promise<RowResult> {
  const { cow } = await cowSetup(cfg, 1);
  try {
    const { offset } = workload(cfg);
    const r = await run(
      cfg,
      promised((w) => cow.read(offset(w), cfg.blockSize)),
    );
    return result(r, ['through the COW device, 1 snapshot exists']);
  } finally {
    await cow.close();
  }
}

async function cowOriginReadIntoRow(cfg: BenchConfig): Promise<RowResult> {
  const { cow } = await cowSetup(cfg, 1);
  try {
    const { offset, buffers } = workload(cfg);
    const r = await run(
      cfg,
      promised((w) => cow.readInto(offset(w), buffers[w]!)),
    );
    return result(r, [
      'readInto one reused buffer per worker, through the COW device, 1 snapshot exists',
    ]);
  } finally {
    await cow.close();
  }
}

async function cowRewriteRow(cfg: BenchConfig): Promise<RowResult> {
  const { cow } = await cowSetup(cfg, 1);
  try {
    // Every block preserved for the snapshot, so no write below needs a copy.
    await bulkPass(cfg, cow, 1);
    const preserved = cow.preservedBlocks;
    if (preserved !== cfg.size / cfg.blockSize) {
      throw new Error(`setup preserved ${preserved} blocks, not all of them`);
    }
    const { offset, buffers } = workload(cfg);
    const r = await run(
      cfg,
      promised((w) => cow.write(offset(w), buffers[w]!)),
    );
    if (cow.preservedBlocks !== preserved) throw new Error('a rewrite preserved a block');
    return result(r, [
      'every block already preserved since the snapshot (setup wrote the origin in full through the device, then flush + read once)',
    ]);
  } finally {
    await cow.close();
  }
}

async function cowFirstWriteRow(
  cfg: BenchConfig,
  snapshots: number,
  inMemory = false,
): Promise<RowResult> {
  const { cow } = await cowSetup(cfg, snapshots, undefined, inMemory);
  try {
    const { blocks, buffers } = workload(cfg);
    // Distinct blocks in random order: every write is the block's first since the snapshot.
    const order = permutation(blocks, new Rng(cfg.seed + 4));
    const bs = cfg.blockSize;
    const limit = Math.min(blocks, cow.freeChunks);
    const r = await run(
      cfg,
      promised((w, i) => cow.write(order[i]! * bs, buffers[w]!)),
      limit,
    );
    const total = r.warmupOps + r.ops;
    if (cow.preservedBlocks !== total) {
      throw new Error(`${total} first writes preserved ${cow.preservedBlocks} blocks`);
    }
    const notes = [
      `${inMemory ? 'origin and store are MemoryDevices; ' : ''}${snapshots} snapshot${snapshots === 1 ? '' : 's'} taken back to back, then distinct random blocks; every op preserved one block (${total} preserved)`,
    ];
    if (total >= limit) notes.push(`ran out of distinct blocks after ${total} ops`);
    return result(r, notes);
  } finally {
    await cow.close();
  }
}

async function cowSnapshotReadRow(cfg: BenchConfig): Promise<RowResult> {
  const { cow, snapshots } = await cowSetup(cfg, 1);
  try {
    // Every other 1 MiB extent rewritten: half the blocks are in the store.
    await bulkPass(cfg, cow, 2);
    const blocks = cfg.size / cfg.blockSize;
    const preserved = cow.preservedBlocks;
    const snapshot = snapshots[0]!;
    const { offset } = workload(cfg);
    const r = await run(
      cfg,
      promised((w) => snapshot.read(offset(w), cfg.blockSize)),
    );
    return result(r, [
      `through a snapshot handle; ${((100 * preserved) / blocks).toFixed(0)} % of blocks preserved (read from the store, CRC-checked), the rest from the origin`,
    ]);
  } finally {
    await cow.close();
  }
}

async function cowSnapshotReadIntoRow(cfg: BenchConfig): Promise<RowResult> {
  const { cow, snapshots } = await cowSetup(cfg, 1);
  try {
    await bulkPass(cfg, cow, 2);
    const snapshot = snapshots[0]!;
    const { offset, buffers } = workload(cfg);
    const r = await run(
      cfg,
      promised((w) => cfg.lib.readInto(snapshot, offset(w), buffers[w]!)),
    );
    return result(r, [
      'readInto one reused buffer per worker, through a snapshot handle; setup as the row above (half the blocks preserved)',
    ]);
  } finally {
    await cow.close();
  }
}

async function snapshotCreationRow(cfg: BenchConfig, huge: boolean): Promise<RowResult> {
  const p = paths(cfg);
  let originPath = p.origin;
  const notes: string[] = [];
  if (huge) {
    originPath = p.huge;
    createSparse(originPath, cfg.hugeSize);
  }
  try {
    const { cow } = await cowSetup(cfg, 0, originPath);
    const times: number[] = [];
    try {
      // One unmeasured call, then the measured ones, each followed by nothing.
      for (let i = 0; i <= cfg.snapshotCalls; i++) {
        const start = performance.now();
        const snapshot = await cow.snapshot();
        const ms = performance.now() - start;
        if (i > 0) times.push(ms);
        await snapshot.close();
      }
    } finally {
      await cow.close();
    }
    const sorted = [...times].sort((a, b) => a - b);
    const mean = times.reduce((a, b) => a + b, 0) / times.length;
    const median = sorted[Math.floor(sorted.length / 2)]!;
    notes.push(
      `mean ${mean.toFixed(3)} ms over ${times.length} calls (min ${sorted[0]!.toFixed(3)}, median ${median.toFixed(3)}, max ${sorted[sorted.length - 1]!.toFixed(3)})`,
    );
    if (huge) {
      notes.push(
        `origin ${formatBytes(cfg.hugeSize)} sparse (ftruncate), ${formatBytes(allocatedBytes(originPath))} allocated on disk; same store as the other COW rows`,
      );
    }
    return {
      opsPerSec: 1000 / mean,
      ops: times.length,
      seconds: times.reduce((a, b) => a + b, 0) / 1000,
      meanMs: mean,
      notes,
    };
  } finally {
    if (huge) fs.rmSync(originPath, { force: true });
  }
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let u = 0;
  while (n >= 1024 && u < units.length - 1 && n % 1024 === 0) {
    n /= 1024;
    u++;
  }
  return `${n} ${units[u]}`;
}

/** Every row, in the order they run. */
export function rows(cfg: BenchConfig): Row[] {
  const size = formatBytes(cfg.size);
  return [
    {
      id: 'raw-read',
      label: 'raw fs.read (callback)',
      kind: 'read',
      run: (c) => rawRow(c, 'read'),
    },
    {
      id: 'raw-write',
      label: 'raw fs.write (callback)',
      kind: 'write',
      run: (c) => rawRow(c, 'write'),
    },
    {
      id: 'fsp-read',
      label: 'fs/promises FileHandle read',
      kind: 'read',
      run: (c) => fileHandleRow(c, 'read'),
    },
    {
      id: 'fsp-write',
      label: 'fs/promises FileHandle write',
      kind: 'write',
      run: (c) => fileHandleRow(c, 'write'),
    },
    {
      id: 'raf-read',
      label: 'random-access-file read',
      kind: 'read',
      run: (c) => randomAccessFileRow(c, 'read'),
    },
    {
      id: 'raf-write',
      label: 'random-access-file write',
      kind: 'write',
      run: (c) => randomAccessFileRow(c, 'write'),
    },
    {
      id: 'floor-read',
      label: 'contract floor: promise + fresh buffer per read',
      kind: 'read',
      run: (c) => contractFloorRow(c, 'read'),
    },
    {
      id: 'promise-read',
      label: 'promise ceiling: promise + reused buffer per read',
      kind: 'read',
      run: (c) => contractFloorRow(c, 'read', true),
    },
    {
      id: 'floor-write',
      label: 'contract floor: promise + private copy per write',
      kind: 'write',
      run: (c) => contractFloorRow(c, 'write'),
    },
    {
      id: 'fd-read',
      label: 'FileDevice read',
      kind: 'read',
      run: (c) => fileDeviceRow(c, 'read'),
    },
    {
      id: 'fd-write',
      label: 'FileDevice write',
      kind: 'write',
      run: (c) => fileDeviceRow(c, 'write'),
    },
    {
      id: 'fd-read-into',
      label: 'FileDevice readInto (reused buffer per worker)',
      kind: 'read',
      run: fileDeviceReadIntoRow,
    },
    { id: 'cow-origin-read', label: 'COW origin read', kind: 'read', run: cowOriginReadRow },
    {
      id: 'cow-origin-read-into',
      label: 'COW origin readInto (reused buffer per worker)',
      kind: 'read',
      run: cowOriginReadIntoRow,
    },
    { id: 'cow-rewrite', label: 'COW rewrite (no copy)', kind: 'write', run: cowRewriteRow },
    {
      id: 'cow-first-write',
      label: 'COW first write after 1 snapshot',
      kind: 'write',
      run: (c) => cowFirstWriteRow(c, 1),
    },
    {
      id: 'cow-first-write-10',
      label: 'COW first write after 10 snapshots',
      kind: 'write',
      run: (c) => cowFirstWriteRow(c, 10),
    },
    {
      id: 'cow-first-write-mem',
      label: 'COW first write after 1 snapshot, in memory (CPU cost)',
      kind: 'write',
      run: (c) => cowFirstWriteRow(c, 1, true),
    },
    {
      id: 'cow-first-write-mem-10',
      label: 'COW first write after 10 snapshots, in memory (CPU cost)',
      kind: 'write',
      run: (c) => cowFirstWriteRow(c, 10, true),
    },
    {
      id: 'cow-snapshot-read',
      label: 'COW snapshot read (half preserved)',
      kind: 'read',
      run: cowSnapshotReadRow,
    },
    {
      id: 'cow-snapshot-read-into',
      label: 'COW snapshot readInto (half preserved, reused buffer per worker)',
      kind: 'read',
      run: cowSnapshotReadIntoRow,
    },
    {
      id: 'snapshot-create',
      label: `snapshot() on a ${size} origin`,
      kind: 'snapshot',
      run: (c) => snapshotCreationRow(c, false),
    },
    {
      id: 'snapshot-create-huge',
      label: `snapshot() on a ${formatBytes(cfg.hugeSize)} sparse origin`,
      kind: 'snapshot',
      run: (c) => snapshotCreationRow(c, true),
    },
  ];
}
