/**
 * The SnapshotCopyJob rows: how fast the background copier moves a range
 * with nothing else going on, against a raw sequential copy of the same
 * bytes measured in the same row (claims 42–43: ordered, coalesced,
 * overlapped I/O); and what a job costs the application's 4 KiB random
 * writes through `job.device` while it runs, against the same writes to a
 * FileDevice with no job, measured in alternating bursts, for each conflict
 * policy. Source files are the preconditioned files of workloads.ts; each
 * row creates, preconditions and removes a destination file of its own.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { BlockDevice, SnapshotCopyJob, SnapshotCopyJobOptions } from '../src/index.js';
import { createSparse, precondition, workerRngs } from './harness.js';
import {
  type BenchConfig,
  EXTENT,
  formatBytes,
  paths,
  type Row,
  type RowResult,
  workload,
} from './workloads.js';

type ConflictPolicy = NonNullable<SnapshotCopyJobOptions['conflictPolicy']>;

/** The copy-throughput row copies at most this much, so it stays a few seconds at any file size. */
const COPY_BYTES = 128 << 20;
/** Timed copies per side and round. */
const COPY_TURNS = 5;
/** Burst pairs of the foreground-write rows. */
const WRITE_PAIRS = 2;

function destinationPath(cfg: BenchConfig): string {
  return join(cfg.dir, 'copy-destination.img');
}

/** A destination file of `size` bytes, preconditioned like every file; removed by `use`'s end. */
async function withDestination<T>(
  cfg: BenchConfig,
  size: number,
  use: (path: string) => Promise<T>,
): Promise<T> {
  const path = destinationPath(cfg);
  createSparse(path, size);
  try {
    precondition(path, size, cfg.seed + 9);
    return await use(path);
  } finally {
    fs.rmSync(path, { force: true });
  }
}

/** Copies `[0, length)` of `from` to `to` with 1 MiB callback fs.read / fs.write, one at a time. */
function rawCopy(from: string, to: string, length: number): Promise<void> {
  const input = fs.openSync(from, 'r');
  const output = fs.openSync(to, 'r+');
  const buffer = Buffer.allocUnsafe(EXTENT);
  return new Promise<void>((resolve, reject) => {
    let pos = 0;
    const next = (): void => {
      if (pos >= length) {
        resolve();
        return;
      }
      const n = Math.min(EXTENT, length - pos);
      fs.read(input, buffer, 0, n, pos, (err, got) => {
        if (err || got !== n) {
          reject(err ?? new Error(`short read at ${pos}`));
          return;
        }
        fs.write(output, buffer, 0, n, pos, (err2, put) => {
          if (err2 || put !== n) reject(err2 ?? new Error(`short write at ${pos}`));
          else {
            pos += n;
            next();
          }
        });
      });
    };
    next();
  }).finally(() => {
    fs.closeSync(input);
    fs.closeSync(output);
  });
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

function percentile(sorted: Float64Array, p: number): number {
  return sorted.length === 0 ? Number.NaN : sorted[Math.floor(p * (sorted.length - 1))]!;
}

/**
 * Background copy throughput with no foreground I/O: `SnapshotCopyJob` from
 * a FileDevice on the data file to one on the row's destination file, with
 * the default chunk size (the row's number) and with 1 MiB chunks (for
 * reference), against a raw copy of the same bytes between the same files,
 * the three in rotating order; the destination is flushed (untimed) before
 * each copy, so each starts on clean cached pages.
 */
async function copyThroughputRow(cfg: BenchConfig): Promise<RowResult> {
  const { data } = paths(cfg);
  const length = Math.min(cfg.size, COPY_BYTES);
  precondition(data, cfg.size, cfg.seed);
  return withDestination(cfg, length, async (destination) => {
    const { FileDevice, SnapshotCopyJob } = cfg.lib;
    const target = await FileDevice.open(destination, { lock: false, blockSize: cfg.blockSize });
    const sides = ['job', 'raw', 'job-1MiB'] as const;
    type Side = (typeof sides)[number];
    const seconds: Record<Side, number[]> = { job: [], raw: [], 'job-1MiB': [] };
    const copy = async (side: Side): Promise<number> => {
      const t0 = performance.now();
      if (side === 'raw') {
        await rawCopy(data, destination, length);
        return (performance.now() - t0) / 1000;
      }
      // The job owns its source until job.device closes it (docs/ARCHITECTURE.md,
      // "Layers"): each job gets a FileDevice of its own on the data file,
      // opened inside the timed copy as the raw copy opens its descriptors.
      const chunkSize = side === 'job' ? undefined : EXTENT;
      const job = await SnapshotCopyJob.start({
        source: await FileDevice.open(data, { lock: false, blockSize: cfg.blockSize }),
        destination: target,
        length,
        ...(chunkSize === undefined ? {} : { chunkSize }),
      });
      try {
        const report = await job.done;
        if (report.copierBytes !== length) {
          throw new Error(`the copier copied ${report.copierBytes} of ${length} bytes`);
        }
        return (performance.now() - t0) / 1000;
      } finally {
        await job.device.close();
      }
    };
    try {
      for (let turn = 0; turn < COPY_TURNS; turn++) {
        for (let k = 0; k < sides.length; k++) {
          const side = sides[(turn + k) % sides.length]!;
          await target.flush();
          seconds[side].push(await copy(side));
        }
      }
    } finally {
      await target.close();
    }
    // Per turn, the three copies ran back to back: their ratios share its conditions.
    const ratio = (side: Side) => seconds.raw.map((raw, i) => raw / seconds[side][i]!);
    const mbps = (side: Side) => length / 1e6 / median(seconds[side]);
    const jobRatios = ratio('job');
    const bigRatios = ratio('job-1MiB');
    const list = (xs: number[]) => xs.map((x) => x.toFixed(2)).join(', ');
    return {
      opsPerSec: mbps('job'),
      ops: length / EXTENT,
      seconds: median(seconds.job),
      display: `${mbps('job').toFixed(0)} MB/s`,
      ratio: median(jobRatios),
      notes: [
        `${formatBytes(length)} of the data file (preconditioned) copied to a destination file of the row's own (preconditioned) ${COPY_TURNS} times each way, in rotating order, destination flushed (untimed) before every copy; MB/s are 10^6 bytes per second, medians`,
        `SnapshotCopyJob (FileDevices, no map store, no foreground I/O), default chunkSize 64 KiB: ${mbps('job').toFixed(0)} MB/s; with chunkSize 1 MiB: ${mbps('job-1MiB').toFixed(0)} MB/s`,
        `raw copy (1 MiB callback fs.read then fs.write, one at a time): ${mbps('raw').toFixed(0)} MB/s`,
        `ratio = median over turns of (raw time ÷ job time): ${median(jobRatios).toFixed(2)}× (turns ${list(jobRatios)}); with 1 MiB chunks ${median(bigRatios).toFixed(2)}× (${list(bigRatios)})`,
      ],
    };
  });
}

interface Burst {
  ops: number;
  seconds: number;
  /** Per-write latency in milliseconds, sorted. */
  latencies: Float64Array;
  /** The kernel's dirty page cache when the burst began and ended, and what it wrote back during it (MiB, whole machine); undefined off Linux. */
  pageCache: { dirtyAtStart: number; dirtyAtEnd: number; writtenBack: number } | undefined;
}

/** The kernel's page-cache counters (Linux `/proc/vmstat`, in MiB): dirty now, written back since boot, the dirty level where background writeback starts. */
interface PageCacheCounters {
  dirty: number;
  written: number;
  backgroundThreshold: number;
}

/** {@link PageCacheCounters} now, or undefined where `/proc/vmstat` is missing. */
function pageCacheCounters(): PageCacheCounters | undefined {
  let text: string;
  try {
    text = fs.readFileSync('/proc/vmstat', 'utf8');
  } catch {
    return undefined;
  }
  // Counters are in pages of 4 KiB.
  const mib = (name: string): number =>
    Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(text)?.[1] ?? Number.NaN) / 256;
  return {
    dirty: mib('nr_dirty'),
    written: mib('nr_written'),
    backgroundThreshold: mib('nr_dirty_background_threshold'),
  };
}

/**
 * `cfg.inFlight` workers writing 4 KiB to random blocks of `device` (the
 * offsets and buffers of every row), each timing its writes, until
 * `seconds` pass or `stop()` says so.
 */
async function writeBurst(
  cfg: BenchConfig,
  device: BlockDevice,
  seconds: number,
  seed: number,
  stop: () => boolean = () => false,
): Promise<Burst> {
  const { blocks, buffers } = workload(cfg);
  const rngs = workerRngs(seed, cfg.inFlight);
  const latencies: number[] = [];
  const before = pageCacheCounters();
  const t0 = performance.now();
  const deadline = t0 + seconds * 1000;
  await Promise.all(
    buffers.map(async (buffer, w) => {
      while (performance.now() < deadline && !stop()) {
        const at = rngs[w]!.below(blocks) * cfg.blockSize;
        const start = performance.now();
        await device.write(at, buffer);
        latencies.push(performance.now() - start);
      }
    }),
  );
  const elapsed = (performance.now() - t0) / 1000;
  const after = pageCacheCounters();
  return {
    ops: latencies.length,
    seconds: elapsed,
    latencies: Float64Array.from(latencies).sort(),
    pageCache:
      before === undefined || after === undefined
        ? undefined
        : {
            dirtyAtStart: before.dirty,
            dirtyAtEnd: after.dirty,
            writtenBack: after.written - before.written,
          },
  };
}

/**
 * Foreground 4 KiB random writes through `job.device` while a job copies
 * the whole origin file (default chunk size, `policy`) to the row's
 * destination, against the same writes to a FileDevice on the origin with
 * no job, in alternating bursts (no job, job; job, no job; ...). A job
 * burst lasts until the copy is done or `cfg.seconds / 2` pass (then the
 * job is aborted); each no-job burst lasts as long as the job burst of its
 * pair. Source and destination are flushed (untimed) between bursts.
 */
async function foregroundWriteRow(cfg: BenchConfig, policy: ConflictPolicy): Promise<RowResult> {
  const { origin } = paths(cfg);
  precondition(origin, cfg.size, cfg.seed + 1);
  return withDestination(cfg, cfg.size, async (destination) => {
    const { FileDevice, SnapshotCopyJob } = cfg.lib;
    const openOrigin = () => FileDevice.open(origin, { lock: false, blockSize: cfg.blockSize });
    // The no-job side: a FileDevice on the origin the jobs never own. Each job
    // owns a FileDevice of its own on the same file until job.device closes
    // it (docs/ARCHITECTURE.md, "Layers").
    const source = await openOrigin();
    const target = await FileDevice.open(destination, { lock: false, blockSize: cfg.blockSize });
    const jobBursts: Burst[] = [];
    const plainBursts: Burst[] = [];
    const ratios: number[] = [];
    const copies: {
      seconds: number;
      done: boolean;
      ahead: number;
      queued: number | undefined;
      /** What the copy moved while the burst's writers ran: bytes in all, by the copier, and seconds. */
      busy: { copied: number; copier: number; seconds: number };
    }[] = [];
    try {
      if (cfg.warmup > 0) await writeBurst(cfg, source, cfg.warmup, cfg.seed);
      const withJob = async (seed: number): Promise<Burst> => {
        const controller = new AbortController();
        const jobSource = await openOrigin();
        const t0 = performance.now();
        const job: SnapshotCopyJob = await SnapshotCopyJob.start({
          source: jobSource,
          destination: target,
          conflictPolicy: policy,
          signal: controller.signal,
        });
        let finished = false;
        const done = job.done.then(
          (r) => {
            finished = true;
            return r;
          },
          () => undefined,
        );
        try {
          const burst = await writeBurst(cfg, job.device, cfg.seconds / 2, seed, () => finished);
          const during = job.progress;
          const busySeconds = (performance.now() - t0) / 1000;
          controller.abort();
          const report = await done;
          copies.push({
            seconds: (performance.now() - t0) / 1000,
            done: report !== undefined,
            ahead: report?.copyFirstBytes ?? job.progress.copyFirstBytes,
            // An aborted job reports no total of writes queued.
            queued: report?.queuedWrites,
            busy: {
              copied: during.copiedBytes,
              copier: during.copierBytes,
              seconds: busySeconds,
            },
          });
          return burst;
        } finally {
          controller.abort();
          await job.device.close();
        }
      };
      for (let pair = 0; pair < WRITE_PAIRS; pair++) {
        const seed = cfg.seed + 100 * pair;
        let job: Burst;
        let plain: Burst;
        if (pair % 2 === 0) {
          await Promise.all([source.flush(), target.flush()]);
          job = await withJob(seed);
          await Promise.all([source.flush(), target.flush()]);
          plain = await writeBurst(cfg, source, job.seconds, seed);
        } else {
          // The no-job burst first: as long as the previous job burst.
          await Promise.all([source.flush(), target.flush()]);
          plain = await writeBurst(cfg, source, jobBursts.at(-1)!.seconds, seed);
          await Promise.all([source.flush(), target.flush()]);
          job = await withJob(seed);
        }
        jobBursts.push(job);
        plainBursts.push(plain);
        ratios.push(job.ops / job.seconds / (plain.ops / plain.seconds));
      }
    } finally {
      await target.close();
      await source.close();
    }
    const total = (bursts: Burst[]) => {
      const ops = bursts.reduce((n, b) => n + b.ops, 0);
      const seconds = bursts.reduce((n, b) => n + b.seconds, 0);
      const all = Float64Array.from(bursts.flatMap((b) => [...b.latencies])).sort();
      return {
        ops,
        seconds,
        rate: ops / seconds,
        p50: percentile(all, 0.5),
        p99: percentile(all, 0.99),
      };
    };
    const job = total(jobBursts);
    const plain = total(plainBursts);
    const ratio = median(ratios);
    const ms = (x: number) => `${x.toFixed(2)} ms`;
    const pageCache = (bursts: Burst[]) =>
      bursts
        .map((b) =>
          b.pageCache === undefined
            ? 'unknown'
            : `${b.pageCache.dirtyAtStart.toFixed(0)}/${b.pageCache.dirtyAtEnd.toFixed(0)}/${b.pageCache.writtenBack.toFixed(0)}`,
        )
        .join(', ');
    const threshold = pageCacheCounters()?.backgroundThreshold;
    const mbps = (bytes: number, seconds: number) => `${(bytes / 1e6 / seconds).toFixed(0)} MB/s`;
    return {
      opsPerSec: job.rate,
      ops: job.ops,
      seconds: job.seconds,
      ratio,
      p99Ratio: job.p99 / plain.p99,
      notes: [
        `4 KiB random writes, ${cfg.inFlight} in flight, through job.device while SnapshotCopyJob (${policy}, default chunkSize 64 KiB, no map store) copies the whole ${formatBytes(cfg.size)} origin (preconditioned) to a FileDevice of its own (preconditioned): ${Math.round(job.rate).toLocaleString('en-US')} ops/s, latency p50 ${ms(job.p50)}, p99 ${ms(job.p99)}`,
        `the same writes to a FileDevice on the origin with no job, in alternating bursts as long as the job bursts: ${Math.round(plain.rate).toLocaleString('en-US')} ops/s, p50 ${ms(plain.p50)}, p99 ${ms(plain.p99)}; p99 ratio ${(job.p99 / plain.p99).toFixed(1)}×`,
        `ratio = median over burst pairs of (ops/s with the job ÷ without): ${ratios.map((r) => r.toFixed(2)).join(', ')}`,
        `copies: ${copies.map((c) => `${c.seconds.toFixed(2)} s${c.done ? '' : ' (cut at the burst limit)'}, ${formatBytes(Math.round(c.ahead / 4096) * 4096)} copied ahead of writes${c.queued === undefined ? '' : `, ${c.queued} writes queued`}`).join('; ')}`,
        `the copy while the writers ran (from start() to the burst's end): ${copies.map((c) => `${mbps(c.busy.copied, c.busy.seconds)} (${mbps(c.busy.copier, c.busy.seconds)} by the copier)`).join('; ')}`,
        `page cache per burst, whole machine (/proc/vmstat; a 4 KiB write into a large folio counts the folio), MiB dirty at its start / at its end / written back during it: with the job ${pageCache(jobBursts)}; no job ${pageCache(plainBursts)}; background writeback starts at ${threshold === undefined ? 'unknown' : `${threshold.toFixed(0)} MiB`} dirty`,
      ],
    };
  });
}

/** The SnapshotCopyJob rows, in table order. */
export function copyJobRows(_cfg: BenchConfig): Row[] {
  return [
    {
      id: 'cj-copy',
      label: 'SnapshotCopyJob background copy, no foreground I/O (MB/s)',
      kind: 'metric',
      run: copyThroughputRow,
    },
    {
      id: 'cj-write-copy-first',
      label: 'write through SnapshotCopyJob.device during the copy (copy-first)',
      kind: 'write',
      run: (c) => foregroundWriteRow(c, 'copy-first'),
    },
    {
      id: 'cj-write-queue',
      label: 'write through SnapshotCopyJob.device during the copy (queue)',
      kind: 'write',
      run: (c) => foregroundWriteRow(c, 'queue'),
    },
  ];
}
