/**
 * `npm run bench`: blocksnap's devices against plain Node file I/O, 4 KiB
 * random I/O with 32 in flight, on files in a temporary directory on the real
 * disk. Prints a Markdown table and writes it to bench/results.md.
 *
 * Environment:
 *   BENCH_SIZE_MIB        file size (default 1024)
 *   BENCH_SECONDS         measured seconds per row (default 2)
 *   BENCH_WARMUP_SECONDS  warm-up seconds before each row (default 0.25)
 *   BENCH_ROUNDS          times every row runs, in interleaved rounds (default 3)
 *   BENCH_SEED            PRNG seed for offsets and data (default 1)
 *   BENCH_ONLY            comma-separated row ids to run (default all)
 *   BENCH_DIR             where the temporary directory goes (default os.tmpdir(); /dev/shm
 *                         for tmpfs, which takes the disk out and compares CPU cost only)
 *   BENCH_LIB             "src" (default: the sources through tsx) or "dist" (the built bundle)
 *   BENCH_OUT             results file (default bench/results.md; "-" for none)
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import * as v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { copyJobRows } from './copy-job-workloads.js';
import { describeFilesystem } from './harness.js';
import { journalFileSize, journalRows } from './journal-workloads.js';
import { loadLibrary } from './library.js';
import { NBD_TARGETS, nbdRows } from './nbd-workloads.js';
import { selectiveRows } from './selective-workloads.js';
import { streamRows } from './stream-workloads.js';
import { volumeRows } from './volume-workloads.js';
import {
  type BenchConfig,
  createFiles,
  formatBytes,
  type Row,
  type RowResult,
  rows,
  storeSizeFor,
} from './workloads.js';

const MiB = 1 << 20;
const TiB = 2 ** 40;

function envNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name}=${raw} is not a positive number`);
  return n;
}

const sizeMiB = envNumber('BENCH_SIZE_MIB', 1024);
const rounds = envNumber('BENCH_ROUNDS', 3);
if (!Number.isInteger(rounds)) throw new Error('BENCH_ROUNDS must be a whole number');
if (!Number.isInteger(sizeMiB)) throw new Error('BENCH_SIZE_MIB must be a whole number');
const only = (process.env.BENCH_ONLY ?? '')
  .split(',')
  .map((s) => s.trim())
  .filter((s) => s !== '');
const outPath =
  process.env.BENCH_OUT === '-'
    ? undefined
    : (process.env.BENCH_OUT ?? fileURLToPath(new URL('./results.md', import.meta.url)));

const library = await loadLibrary();
const dir = fs.mkdtempSync(join(process.env.BENCH_DIR || os.tmpdir(), 'blocksnap-bench-'));
const cleanup = (): void => fs.rmSync(dir, { recursive: true, force: true });
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    cleanup();
    process.exit(130);
  });
}

const cfg: BenchConfig = {
  lib: library.lib,
  dir,
  size: sizeMiB * MiB,
  blockSize: 4096,
  inFlight: 32,
  seconds: envNumber('BENCH_SECONDS', 2),
  warmup: process.env.BENCH_WARMUP_SECONDS === '0' ? 0 : envNumber('BENCH_WARMUP_SECONDS', 0.25),
  seed: envNumber('BENCH_SEED', 1),
  hugeSize: TiB,
  snapshotCalls: 50,
};

interface Outcome {
  row: Row;
  /** One result per round, in round order. */
  rounds: RowResult[];
  /** The round with the median throughput: what the table shows. */
  result: RowResult;
  /** Wall time of the row over all rounds, preconditioning included. */
  wallSeconds: number;
}

/** Rows that threw: reported as failures and not run again. */
const failures = new Map<string, { row: Row; error: Error }>();
const outcomes = new Map<string, Outcome>();
let selected: Row[] = [];

const started = performance.now();
const cpuAtStart = cpuSnapshot();
const code = gitDescription();
const filesystem = describeFilesystem(dir);
try {
  const storeSize = storeSizeFor(cfg.size, cfg.blockSize);
  // The journal rows add one journal file at a time, the copy-job rows one
  // destination file of up to cfg.size, each removed after its row.
  const needed = 2 * cfg.size + storeSize + Math.max(journalFileSize(cfg), cfg.size) + 512 * MiB;
  if (filesystem.available < needed) {
    throw new Error(
      `${dir} has ${formatBytes(filesystem.available)} free; the benchmark needs about ${formatBytes(needed)}`,
    );
  }
  createFiles(cfg);
  selected = [
    ...rows(cfg),
    ...journalRows(cfg),
    ...selectiveRows(cfg),
    ...streamRows(cfg),
    ...copyJobRows(cfg),
    ...volumeRows(cfg),
    ...nbdRows(cfg),
  ].filter((r) => only.length === 0 || only.includes(r.id));
  if (selected.length === 0) throw new Error(`BENCH_ONLY=${only.join(',')} names no row`);
  log(
    `blocksnap bench: ${formatBytes(cfg.size)} files in ${dir} (${filesystem.type} on ${filesystem.source}), ` +
      `${cfg.inFlight} in flight, ${cfg.seconds} s per row, ${rounds} round(s)`,
  );
  for (let round = 1; round <= rounds; round++) {
    // Even rounds run the rows in reverse, so no row always follows the same one.
    const order = round % 2 === 1 ? selected : [...selected].reverse();
    for (const [i, row] of order.entries()) {
      if (failures.has(row.id)) continue;
      const t0 = performance.now();
      log(`[round ${round}/${rounds}, ${i + 1}/${selected.length}] ${row.label} ...`);
      let result: RowResult;
      try {
        collectGarbage();
        result = await row.run(cfg);
      } catch (err) {
        const error = err instanceof Error ? err : new Error(String(err));
        failures.set(row.id, { row, error });
        log(`    FAILED: ${error.stack ?? error.message}`);
        continue;
      }
      const wallSeconds = (performance.now() - t0) / 1000;
      const previous = outcomes.get(row.id);
      const all = [...(previous?.rounds ?? []), result];
      outcomes.set(row.id, {
        row,
        rounds: all,
        result: median(all),
        wallSeconds: (previous?.wallSeconds ?? 0) + wallSeconds,
      });
      log(
        `    ${row.kind === 'metric' ? result.display : row.kind === 'snapshot' ? `${result.meanMs?.toFixed(3)} ms per snapshot` : `${fmtOps(result.opsPerSec)} ops/s`}` +
          ` (${result.ops} ops in ${result.seconds.toFixed(2)} s; row took ${wallSeconds.toFixed(1)} s; ${heapLine()})`,
      );
    }
  }
} finally {
  cleanup();
}

const report = render();
process.stdout.write(report);
if (outPath !== undefined) {
  fs.writeFileSync(outPath, report);
  log(`wrote ${outPath}`);
}
if (failures.size > 0) process.exitCode = 1;

// -------------------------------------------------------------------- report

interface Verdict {
  ratio: string;
  target: string;
  pass: boolean | undefined;
}

function verdict(id: string): Verdict {
  const o = outcomes.get(id)!;
  const ops = o.result.opsPerSec;
  const raw = rawBaseline(o.row.kind);
  const ratioNum = raw === undefined || o.row.kind === 'snapshot' ? undefined : ops / raw;
  const ratio = ratioNum === undefined ? '—' : `${ratioNum.toFixed(2)}×`;
  const atLeast = (min: number): Verdict => ({
    ratio,
    target: `≥ ${min.toFixed(2)}× raw`,
    pass: ratioNum === undefined ? undefined : ratioNum >= min,
  });
  switch (id) {
    case 'raw-read':
    case 'raw-write':
      return { ratio, target: 'baseline', pass: undefined };
    case 'fsp-read':
    case 'fsp-write':
    case 'raf-read':
    case 'raf-write':
    case 'floor-read':
    case 'promise-read':
    case 'floor-write':
      return { ratio, target: 'reference', pass: undefined };
    case 'fd-read':
      return {
        ratio,
        target:
          'report: the ≥ 0.90× target is judged on the readInto row below (read hands out a fresh buffer per read: see floor-read)',
        pass: undefined,
      };
    case 'fd-write': {
      // Both sides of each ratio measured in alternating bursts in the row
      // (a buffered write's rate drifts more between rows than the target's
      // 10 %); the table's × raw column is still against the raw row.
      const vsRaw = ownRatio(o.rounds, (x) => x.ratio ?? Number.NaN);
      const vsPeer = ownRatio(o.rounds, (x) => x.peerRatio ?? Number.NaN);
      return {
        ratio,
        target: `≥ 0.90× raw (${vsRaw.text}) and ahead of random-access-file (${vsPeer.text}), each measured alongside`,
        pass: vsRaw.median >= 0.9 && vsPeer.median > 1,
      };
    }
    case 'fd-read-into': {
      // readInto drops read's fresh buffer; what is left is a promise per
      // read, so the promise ceiling is shown beside it.
      const peer = outcomes.get('raf-read')?.result.opsPerSec;
      const v = atLeast(0.9);
      const ahead = peer === undefined ? undefined : ops > peer;
      const ceiling = pairedRatio(id, 'promise-read', (x) => x.opsPerSec);
      return {
        ratio,
        target: `${v.target}, ahead of random-access-file${peer === undefined ? '' : ` (${(ops / peer).toFixed(2)}×)`}${ceiling === undefined ? '' : `; ${ceiling.text} the promise ceiling`}`,
        pass: v.pass === undefined || ahead === undefined ? undefined : v.pass && ahead,
      };
    }
    case 'cow-origin-read':
      return {
        ratio,
        target:
          'report: the ≥ 0.85× target is judged on the readInto row below (read hands out a fresh buffer per read: see floor-read)',
        pass: undefined,
      };
    case 'cow-origin-read-into':
    case 'cow-rewrite':
      return atLeast(0.85);
    case 'jd-read-empty':
      return { ratio, target: 'none set (report)', pass: undefined };
    case 'cow-snapshot-read-into': {
      // Issue 19's target for snapshot reads, judged here: `read` must hand
      // out a fresh buffer per read (the contract floor row), readInto not.
      const v = atLeast(0.7);
      const r = pairedRatio(id, 'cow-snapshot-read', (x) => x.opsPerSec);
      return {
        ratio,
        target: `${v.target}${r === undefined ? '' : `; ${r.text} COW snapshot read`}`,
        pass: v.pass,
      };
    }
    case 'jd-read-into-empty': {
      const r = pairedRatio(id, 'jd-read-empty', (x) => x.opsPerSec);
      return {
        ratio,
        target: `report: ${r === undefined ? 'run jd-read-empty too' : `${r.text} JournalDevice read`}`,
        pass: undefined,
      };
    }
    case 'cow-first-write':
      // Issue 19's target (the first wave's was 0.33×; qcow2's allocating write is ~0.29×).
      return atLeast(0.55);
    case 'cow-first-write-10': {
      // On the disk the fdatasync latency swings more than 10 % between
      // rounds, so this pair is reported; the target is judged on the
      // in-memory pair, which measures the library's own cost.
      const cost = pairedRatio('cow-first-write', id, (r) => r.opsPerSec);
      return {
        ratio,
        target: `report: cost vs 1 snapshot${cost === undefined ? '' : ` ${cost.text}`} (disk-bound; target judged in memory below)`,
        pass: undefined,
      };
    }
    case 'cow-first-write-mem':
      return { ratio: '—', target: 'reference for the next row', pass: undefined };
    case 'cow-first-write-mem-10': {
      const cost = pairedRatio('cow-first-write-mem', id, (r) => r.opsPerSec);
      return {
        ratio: '—',
        target: `write cost ≤ 1.10× that after 1 snapshot${cost === undefined ? '' : ` (${cost.text})`}`,
        pass: cost === undefined ? undefined : cost.median <= 1.1,
      };
    }
    case 'cow-snapshot-read':
      return {
        ratio,
        target:
          'report: the ≥ 0.70× target is judged on the readInto row below (read hands out a fresh buffer per read: see floor-read)',
        pass: undefined,
      };
    case 'snapshot-create':
    case 'fd-write-durable':
      return { ratio, target: 'reference for the next row', pass: undefined };
    case 'snapshot-create-huge': {
      const r = pairedRatio('snapshot-create', id, (x) => x.opsPerSec);
      return {
        ratio,
        target: `time ≤ 2× that on ${formatBytes(cfg.size)}${r === undefined ? '' : ` (${r.text})`}`,
        pass: r === undefined ? undefined : r.median <= 2,
      };
    }
    case 'jd-write-durable': {
      // Its own baseline: the FileDevice loop on the data file, in alternating bursts.
      const r = ownRatio(o.rounds, (x) => x.ratio ?? Number.NaN);
      return {
        ratio,
        target: `≥ 5.00× FileDevice write + flush, measured alongside (${r.text})`,
        pass: r.median >= 5,
      };
    }
    case 'jd-write':
      return versus(id, 'fd-write', 'FileDevice write', 1, ratio);
    case 'jd-write-checkpointing': {
      // The sustained rate once the journal has filled: every write is
      // later written to production too, by a checkpoint running alongside.
      // Reported (it has measured 0.5–1.1× between runs); the issue's
      // buffered target (≥ 1×) is jd-write's, the journal with room.
      const r = pairedRatio(id, 'fd-write', (x) => x.opsPerSec);
      return {
        ratio,
        target: `report: × FileDevice write${r === undefined ? ' (run fd-write too)' : ` (${r.text})`}; each write is later written to production too, by a background checkpoint`,
        pass: undefined,
      };
    }
    case 'sel-write-outside': {
      // Its own baseline: FileDevice writes to the same file, in alternating bursts.
      const r = ownRatio(o.rounds, (x) => x.ratio ?? Number.NaN);
      return {
        ratio,
        target: `≥ 0.95× FileDevice writes to the same file, measured alongside (${r.text})`,
        pass: r.median >= 0.95,
      };
    }
    case 'stream-export-incremental': {
      const r = ownRatio(o.rounds, (x) => x.ratio ?? Number.NaN);
      return {
        ratio: `${r.median.toFixed(1)}×`,
        target: `≥ 50× faster than a full export of the same snapshot, measured alongside (${r.text})`,
        pass: r.median >= 50,
      };
    }
    case 'stream-apply-file': {
      const r = ownRatio(o.rounds, (x) => x.ratio ?? Number.NaN);
      return {
        ratio: `${r.median.toFixed(2)}×`,
        target: `≥ 0.80× raw sequential fs.write + fdatasync of the same bytes, measured alongside (${r.text})`,
        pass: r.median >= 0.8,
      };
    }
    case 'jd-read-table': {
      // Its own baseline: FileDevice reads of the data file, in alternating bursts.
      const r = ownRatio(o.rounds, (x) => x.ratio ?? Number.NaN);
      return {
        ratio,
        target: `≥ 0.80× FileDevice reads of the same file size, measured alongside (${r.text})`,
        pass: r.median >= 0.8,
      };
    }
    case 'jd-write-mem-10': {
      // Its own baseline: the same stack with no snapshot, in alternating bursts;
      // each round's ratio is the median over its burst pairs.
      const cost = ownRatio(o.rounds, (r) => r.ratio ?? Number.NaN);
      return {
        ratio: '—',
        target: `write cost ≤ 1.05× that with no snapshot (${cost.text})`,
        pass: cost.median <= 1.05,
      };
    }
    case 'jd-replay':
    case 'jd-replay-unclean': {
      // Its own baseline: a raw sequential read of the same file in the same round.
      // Issue 19's target: ≥ 0.5× that read, clean and after a power cut.
      const r = ownRatio(o.rounds, (x) => x.ratio ?? Number.NaN);
      return {
        ratio: `${r.median.toFixed(2)}×`,
        target: `≥ 0.50× a raw sequential read of the same journal file in the same round (MB/s replayed)${r.each}`,
        pass: r.median >= 0.5,
      };
    }
    case 'jd-table-memory':
      return { ratio: '—', target: '≤ 32 bytes per changed block', pass: ops <= 32 };
    case 'cj-copy': {
      // Its own baseline: a raw sequential copy of the same bytes, in the same round.
      const r = ownRatio(o.rounds, (x) => x.ratio ?? Number.NaN);
      return {
        ratio: `${r.median.toFixed(2)}×`,
        target: `≥ 0.80× a raw sequential copy of the same bytes (1 MiB callback fs.read/fs.write), measured alongside (${r.text})`,
        pass: r.median >= 0.8,
      };
    }
    case 'cj-write-copy-first':
    case 'cj-write-queue': {
      // Its own baseline: FileDevice writes on the origin with no job, in
      // alternating bursts; ops/s and p99 each judged by the median round.
      const r = ownRatio(o.rounds, (x) => x.ratio ?? Number.NaN);
      const p99 = ownRatio(o.rounds, (x) => x.p99Ratio ?? Number.NaN);
      return {
        ratio: `${r.median.toFixed(2)}×`,
        target: `≥ 0.70× FileDevice writes with no job (${r.text}) and p99 ≤ 2.00× theirs (${p99.text}), measured alongside`,
        pass: r.median >= 0.7 && p99.median <= 2,
      };
    }
    case 'volume-read-workers':
    case 'volume-rewrite-workers': {
      // Its own baseline: the same volume in this thread, in alternating bursts.
      const r = ownRatio(o.rounds, (x) => x.ratio ?? Number.NaN);
      return {
        ratio: `${r.median.toFixed(2)}×`,
        target: `≥ 0.80× the same I/O with the partitions in this thread, measured alongside (${r.text})`,
        pass: r.median >= 0.8,
      };
    }
    case 'volume-schedule-p99': {
      const r = ownRatio(o.rounds, (x) => x.ratio ?? Number.NaN);
      return {
        ratio: `${r.median.toFixed(2)}×`,
        target: `report: write p99 during one snapshot per second ≤ 2× that without, measured alongside (${r.text})`,
        pass: r.median <= 2,
      };
    }
    case 'volume-cow-first-write-workers': {
      const r = ownRatio(o.rounds, (x) => x.ratio ?? Number.NaN);
      return {
        ratio: `${r.median.toFixed(2)}×`,
        target: `≥ 1.40× the same first writes with the partitions in this thread, measured alongside (${r.text})`,
        pass: r.median >= 1.4,
      };
    }
    default: {
      const nbd = NBD_TARGETS[id];
      if (nbd !== undefined) {
        // Ours over the peer measured in the same round (fio or nbdcopy for both).
        const r = ownRatio(o.rounds, (x) => x.ratio ?? Number.NaN);
        const [min, peer] = nbd;
        return {
          ratio: `${r.median.toFixed(2)}×`,
          target: `${min === undefined ? 'report' : `≥ ${min.toFixed(2)}×`} ${peer}, measured alongside (${r.text})`,
          pass: min === undefined ? undefined : r.median >= min,
        };
      }
      return { ratio, target: '—', pass: undefined };
    }
  }
}

/** The median of a per-round ratio of a row that measures its own baseline. */
function ownRatio(
  rounds: RowResult[],
  ratio: (r: RowResult) => number,
): { median: number; text: string; each: string } {
  const ratios = rounds.map(ratio);
  const sorted = [...ratios].sort((x, y) => x - y);
  const median = sorted[Math.floor(sorted.length / 2)]!;
  const each = ratios.length > 1 ? `; rounds ${ratios.map((x) => x.toFixed(2)).join(', ')}` : '';
  return { median, text: `${median.toFixed(2)}×${each}`, each };
}

/** A row judged against a peer row of the same run: the median of per-round ratios. */
function versus(id: string, peer: string, peerLabel: string, min: number, ratio: string): Verdict {
  const r = pairedRatio(id, peer, (x) => x.opsPerSec);
  return {
    ratio,
    target: `≥ ${min.toFixed(2)}× ${peerLabel}${r === undefined ? ` (run ${peer} too)` : ` (${r.text})`}`,
    pass: r === undefined ? undefined : r.median >= min,
  };
}

/** The raw baseline of a kind (its median round). */
function rawBaseline(kind: 'read' | 'write' | 'snapshot' | 'metric'): number | undefined {
  return kind === 'snapshot' || kind === 'metric'
    ? undefined
    : outcomes.get(`raw-${kind}`)?.result.opsPerSec;
}

/**
 * `value(a) / value(b)` round by round — rows run next to each other in
 * every round share its conditions — and the median of those ratios.
 */
function pairedRatio(
  a: string,
  b: string,
  value: (r: RowResult) => number,
): { median: number; text: string } | undefined {
  const ra = outcomes.get(a)?.rounds;
  const rb = outcomes.get(b)?.rounds;
  if (ra === undefined || rb === undefined || ra.length === 0 || ra.length !== rb.length) {
    return undefined;
  }
  const ratios = ra.map((x, i) => value(x) / value(rb[i]!));
  const sorted = [...ratios].sort((x, y) => x - y);
  const median = sorted[Math.floor(sorted.length / 2)]!;
  const each = ratios.length > 1 ? `; rounds ${ratios.map((x) => x.toFixed(2)).join(', ')}` : '';
  return { median, text: `${median.toFixed(2)}×${each}` };
}

/** The result with the median throughput (the upper one of two middles). */
function median(results: RowResult[]): RowResult {
  const sorted = [...results].sort((a, b) => a.opsPerSec - b.opsPerSec);
  return sorted[Math.floor(sorted.length / 2)]!;
}

function render(): string {
  const cpus = os.cpus();
  const model = cpus[0]?.model.trim() ?? 'unknown';
  const diskNote = filesystem.inMemory
    ? `${filesystem.type} (in memory, not a disk: rows compare CPU cost only)`
    : `${filesystem.type} on ${filesystem.source} (mounted at ${filesystem.mountPoint}) — the real disk, not tmpfs`;
  const env = [
    'BENCH_SIZE_MIB',
    'BENCH_SECONDS',
    'BENCH_WARMUP_SECONDS',
    'BENCH_ROUNDS',
    'BENCH_SEED',
    'BENCH_ONLY',
    'BENCH_LIB',
    'BENCH_DIR',
  ]
    .filter((k) => process.env[k] !== undefined)
    .map((k) => `${k}=${process.env[k]}`)
    .join(' ');
  const lines: string[] = [
    '# blocksnap benchmark results',
    '',
    `- Date: ${new Date().toISOString()}`,
    `- Code: ${code}; measured: ${library.description}`,
    `- Node ${process.version} (V8 ${process.versions.v8}), ${process.platform} ${process.arch}, kernel ${os.release()}`,
    `- CPU: ${model} × ${cpus.length}; memory ${formatBytes(Math.round(os.totalmem() / MiB) * MiB)}`,
    `- libuv thread pool: ${process.env.UV_THREADPOOL_SIZE ?? '4 (default)'}`,
    `- Other CPU use during the run: ${otherCpu(cpuAtStart, cpuSnapshot())}`,
    `- Files: ${formatBytes(cfg.size)} data/origin file, ${formatBytes(storeSizeFor(cfg.size, cfg.blockSize))} COW store ` +
      `(room for every origin block plus metadata); ${formatBytes(cfg.blockSize)} blocks; in a temp dir on ${diskNote}`,
    `- Load: closed loop of ${cfg.inFlight} workers (${cfg.inFlight} I/Os in flight), random block offsets from a seeded PRNG ` +
      `(seed ${cfg.seed}, the same sequence in every row); ${cfg.warmup} s warm-up then ${cfg.seconds} s measured per row`,
    '- Preconditioning: right before its row, every file the row uses is written in full (1 MiB sequential writes), ' +
      '`fdatasync`ed, then read once in full, so every row starts with all pages allocated, cached and clean. ' +
      `The ${formatBytes(cfg.hugeSize)} origin is the exception: sparse (ftruncate only), never written. ` +
      'A full garbage collection runs before every row, so no row pays for collecting an earlier row’s garbage ' +
      '(a 1 GiB MemoryDevice is a GiB of external memory until then).',
    `- Rounds: every row runs ${rounds} time(s), in ${rounds} interleaved round(s): all rows in table order, ` +
      "then all in reverse, and so on. The table shows each row's median round, the notes list every round; " +
      'the two pairwise targets (10 vs 1 snapshots, 1 TiB vs 1 GiB) use the median of per-round ratios.',
    '- Ratios: read rows against raw reads, write rows against raw writes (medians); raw = callback `fs.read`/`fs.write` ' +
      'on a fd with one reused buffer per worker, measured in the same run.',
    ...(selected.some((r) => r.id.startsWith('jd-'))
      ? [
          '- JournalDevice rows (`jd-*`): the journal store is a FileDevice on its own file (preconditioned like every file, ' +
            'formatted right before the row, removed after it), production a FileDevice on the data file — except the ' +
            'snapshot row and the table-memory row, all in memory (MemoryDevices; for the snapshot row production is a ' +
            'CowSnapshotDevice over them), which measure CPU cost without disk noise. A row is judged against the row its ' +
            'target names by the median of per-round ratios — except the snapshot row and the read row, which measure their ' +
            'two sides in alternating bursts within the row (each round’s ratio the median over burst pairs); ' +
            'replay rows report MB/s (10^6 bytes) of journal records replayed by `JournalDevice.open`, and × raw ' +
            'against a sequential read of the same journal file in the same round.',
        ]
      : []),
    `- Command: \`${env === '' ? '' : `${env} `}npm run bench\`; total ${((performance.now() - started) / 1000).toFixed(0)} s`,
    '',
    '| Row | ops/s | × raw | Target | Result |',
    '| --- | ---: | ---: | --- | :---: |',
  ];
  for (const row of selected) {
    const o = outcomes.get(row.id);
    const failure = failures.get(row.id);
    if (o === undefined || failure !== undefined) {
      const message = (failure?.error.message ?? 'did not run')
        .replaceAll('|', '\\|')
        .replaceAll('\n', ' ');
      lines.push(`| ${row.label} | error | — | runs to completion | **FAIL**: ${message} |`);
      continue;
    }
    const v = verdict(row.id);
    const ops =
      row.kind === 'metric'
        ? (o.result.display ?? String(o.result.opsPerSec))
        : row.kind === 'snapshot'
          ? `${fmtOps(o.result.opsPerSec)} (${o.result.meanMs?.toFixed(2)} ms each)`
          : fmtOps(o.result.opsPerSec);
    const pass = v.pass === undefined ? '—' : v.pass ? 'pass' : '**FAIL**';
    lines.push(`| ${row.label} | ${ops} | ${v.ratio} | ${v.target} | ${pass} |`);
  }
  lines.push('', '## Row notes', '');
  for (const row of selected) {
    const o = outcomes.get(row.id);
    if (o === undefined) continue;
    const each = o.rounds
      .map((r) =>
        row.kind === 'metric'
          ? r.display
          : row.kind === 'snapshot'
            ? `${r.meanMs?.toFixed(3)} ms`
            : fmtOps(r.opsPerSec),
      )
      .join(', ');
    const notes = [
      ...o.result.notes,
      ...(row.kind === 'metric'
        ? []
        : [`median round: ${o.result.ops} ops in ${o.result.seconds.toFixed(2)} s`]),
      `rounds: ${each}`,
      `${o.wallSeconds.toFixed(1)} s with setup`,
    ];
    lines.push(`- **${row.label}**: ${notes.join('; ')}.`);
  }
  lines.push('');
  return lines.join('\n');
}

/** The commit measured, and whether src/ differed from it. */
function gitDescription(): string {
  const root = fileURLToPath(new URL('..', import.meta.url));
  const git = (...args: string[]): string =>
    execFileSync('git', ['-C', root, ...args], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
  try {
    const commit = git('log', '-1', '--format=%h %s');
    const dirty = git('status', '--porcelain', '--', 'src') !== '';
    return `commit ${commit}${dirty ? ' (plus uncommitted changes in src/)' : ''}`;
  } catch {
    return 'unknown (not a git checkout)';
  }
}

interface CpuSnapshot {
  /** When, in seconds. */
  at: number;
  /** Busy and steal seconds of all CPUs together, from /proc/stat; undefined off Linux. */
  busy: number | undefined;
  steal: number | undefined;
  /** CPU seconds of this process (all its threads). */
  own: number;
}

function cpuSnapshot(): CpuSnapshot {
  const usage = process.cpuUsage();
  const own = (usage.user + usage.system) / 1e6;
  const at = performance.now() / 1000;
  try {
    const line = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
    // cpu user nice system idle iowait irq softirq steal ... in USER_HZ (100 per second)
    const [, user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).map(Number);
    const busy = [user, nice, system, irq, softirq].reduce<number>((a, b) => a + (b ?? 0), 0);
    return { at, busy: busy / 100, steal: (steal ?? 0) / 100, own };
  } catch {
    return { at, busy: undefined, steal: undefined, own };
  }
}

/**
 * How much CPU went to anything but this process while it ran: other
 * processes, and kernel threads (page-cache writeback among them).
 */
function otherCpu(start: CpuSnapshot, end: CpuSnapshot): string {
  if (start.busy === undefined || end.busy === undefined) return 'unknown (no /proc/stat)';
  const wall = end.at - start.at;
  const cpus = os.cpus().length;
  const pct = (seconds: number): string => `${((100 * seconds) / wall / cpus).toFixed(0)} %`;
  const others = Math.max(0, end.busy - start.busy - (end.own - start.own));
  return (
    `${pct(others)} of the ${cpus} CPUs outside this process (other processes and kernel threads such as writeback), ` +
    `${pct(end.own - start.own)} in it, ${pct((end.steal ?? 0) - (start.steal ?? 0))} stolen by the hypervisor`
  );
}

function fmtOps(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

/**
 * A full garbage collection, run before every row: a row leaves its garbage
 * behind (a 1 GiB MemoryDevice's arenas are a GiB of external memory until
 * a mark-compact frees them), and the next row would pay for collecting it
 * inside its measured time — a pause of that size lands in a p99. Each row
 * still pays for all the garbage it makes itself.
 */
function collectGarbage(): void {
  v8.setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
}

/**
 * The process's memory after a row: a row that leaves heap or external memory
 * behind makes every later row's garbage collections dearer, so the log shows
 * it.
 */
function heapLine(): string {
  const m = process.memoryUsage();
  const mib = (n: number): string => `${(n / MiB).toFixed(0)}`;
  return `heap ${mib(m.heapUsed)}/${mib(m.heapTotal)} MiB, external ${mib(m.external)} MiB, rss ${mib(m.rss)} MiB`;
}

function log(message: string): void {
  process.stderr.write(`${message}\n`);
}
