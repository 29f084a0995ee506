/**
 * The VirtualVolume rows: what crossing threads costs, and what spreading
 * COW work over worker processors gains. Each row builds two volumes of 4
 * partitions over memory specs — one with every partition in this thread
 * (`processors: 0`), one on 2 worker processors — and runs them in
 * alternating bursts of the same operations, so each pair shares the
 * machine's conditions; a round's ratio is the median of its pairs'
 * (workers over this thread). In memory: the rows measure CPU and the cost
 * of crossing threads per I/O, not a disk.
 */
import { performance } from 'node:perf_hooks';
import { Rng } from './harness.js';
import type { BenchConfig, Row, RowResult } from './workloads.js';

const MiB = 1 << 20;
const PARTITIONS = 4;
const BS = 4096;
/** Burst pairs per round. */
const PAIRS = 5;
/**
 * Untimed operations each volume runs before the timed pairs. A worker's
 * isolate sees only its share of them, so its code takes as many more
 * operations to get optimized: with one burst of warm-up, COW first writes
 * through 2 workers still cost about twice the CPU per op they settle at
 * (measured per burst: ~50, 43, 32, 28, 21, 19, then 14–16 µs), and the
 * timed pairs measured the workers' warm-up, not the transport.
 */
const WARM_UP_OPS = 64 * 1024;

type Volume = Awaited<ReturnType<BenchConfig['lib']['VirtualVolume']['create']>>;

async function makeVolume(
  cfg: BenchConfig,
  processors: number,
  partitionSize: number,
): Promise<Volume> {
  return cfg.lib.VirtualVolume.create({
    store: await cfg.lib.MemoryDevice.create({ size: 4 * MiB, blockSize: BS }),
    partitions: Array.from({ length: PARTITIONS }, () => ({
      origin: { memory: { size: partitionSize, blockSize: BS } },
      store: { memory: { size: 2 * partitionSize + 8 * MiB, blockSize: BS } },
    })),
    stripeUnit: 64 * 1024,
    processors,
    maxSnapshots: 4,
  });
}

/** Fills the whole volume, 1 MiB at a time. */
async function fill(volume: Volume, seed: number): Promise<void> {
  const chunk = new Rng(seed).fill(new Uint8Array(MiB));
  for (let at = 0; at < volume.size; at += MiB) await volume.write(at, chunk);
}

/** What a burst measured. */
interface BurstResult {
  readonly ops: number;
  readonly opsPerSec: number;
  /**
   * CPU time of the whole process (every thread: this one, the workers,
   * V8's helper threads) per operation, in µs: what the rows compare when
   * the machine is shared and the rates are noisy.
   */
  readonly cpuMicrosPerOp: number;
}

/** Runs `ops` operations, `inFlight` at a time. */
async function burst(
  inFlight: number,
  ops: number,
  op: (i: number) => Promise<unknown>,
): Promise<BurstResult> {
  let next = 0;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < ops) await op(next++);
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  return { ops, opsPerSec: ops / seconds, cpuMicrosPerOp: (cpu.user + cpu.system) / ops };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

/**
 * Alternating bursts on the in-thread volume and the worker volume; the
 * result holds the workers' median ops/s and the median pair ratio.
 */
async function paired(
  cfg: BenchConfig,
  partitionSize: number,
  prepare: (volume: Volume) => Promise<void>,
  run: (volume: Volume, rng: Rng) => Promise<BurstResult>,
  notes: string[],
): Promise<RowResult> {
  const here = await makeVolume(cfg, 0, partitionSize);
  const workers = await makeVolume(cfg, 2, partitionSize);
  try {
    await prepare(here);
    await prepare(workers);
    // Warm-up: untimed bursts of each, alternating, until both JITs (the
    // workers' included) have run WARM_UP_OPS operations and are hot.
    for (let warmed = 0; warmed < WARM_UP_OPS; ) {
      await run(here, new Rng(cfg.seed));
      warmed += (await run(workers, new Rng(cfg.seed))).ops;
    }
    const ratios: number[] = [];
    const hereOps: number[] = [];
    const workerOps: number[] = [];
    const hereCpu: number[] = [];
    const workerCpu: number[] = [];
    for (let pair = 0; pair < PAIRS; pair++) {
      // Alternate which goes first, so neither always follows the other.
      const a = pair % 2 === 0 ? here : workers;
      const b = a === here ? workers : here;
      const ra = await run(a, new Rng(cfg.seed + pair));
      const rb = await run(b, new Rng(cfg.seed + pair));
      const [h, w] = a === here ? [ra, rb] : [rb, ra];
      hereOps.push(h.opsPerSec);
      workerOps.push(w.opsPerSec);
      hereCpu.push(h.cpuMicrosPerOp);
      workerCpu.push(w.cpuMicrosPerOp);
      ratios.push(w.opsPerSec / h.opsPerSec);
    }
    const ratio = median(ratios);
    const w = median(workerOps);
    const h = median(hereOps);
    return {
      opsPerSec: w,
      ops: PAIRS,
      seconds: 0,
      display: `${Math.round(w).toLocaleString('en')} ops/s on 2 workers, ${Math.round(h).toLocaleString('en')} in this thread`,
      ratio,
      notes: [
        ...notes,
        `pairs (workers / this thread): ${ratios.map((r) => r.toFixed(2)).join(', ')}`,
        `CPU per op, the whole process (every thread), median of the pairs: ${median(workerCpu).toFixed(1)} µs on 2 workers, ${median(hereCpu).toFixed(1)} µs in this thread`,
      ],
    };
  } finally {
    await here.close();
    await workers.close();
  }
}

/** Random 4 KiB reads or rewrites of a filled 64 MiB volume, `cfg.inFlight` at a time. */
function randomIO(cfg: BenchConfig, kind: 'read' | 'rewrite'): Promise<RowResult> {
  const partitionSize = 16 * MiB;
  const blocks = (PARTITIONS * partitionSize) / BS;
  const ops = 40_000;
  const data = new Rng(cfg.seed).fill(new Uint8Array(BS));
  return paired(
    cfg,
    partitionSize,
    (v) => fill(v, cfg.seed),
    (v, rng) =>
      burst(cfg.inFlight, ops, () =>
        kind === 'read'
          ? v.read(rng.below(blocks) * BS, BS)
          : v.write(rng.below(blocks) * BS, data),
      ),
    [
      `${PARTITIONS} partitions of ${partitionSize / MiB} MiB over memory specs, striped by 64 KiB, filled; ${ops} random 4 KiB ${kind}s per burst, ${cfg.inFlight} in flight`,
      'through workers each I/O is an entry in a shared ring each way: a write copies its 4 KiB once into a shared slab; a read result is copied into its slab by the worker and out of it here',
    ],
  );
}

/**
 * COW first writes: a snapshot, then every block of a 32 MiB volume written
 * once in random order (each preserves its block first), then the snapshot
 * deleted so the next burst starts alike.
 */
function cowFirstWrites(cfg: BenchConfig): Promise<RowResult> {
  const partitionSize = 8 * MiB;
  const blocks = (PARTITIONS * partitionSize) / BS;
  const data = new Rng(cfg.seed + 1).fill(new Uint8Array(BS));
  return paired(
    cfg,
    partitionSize,
    (v) => fill(v, cfg.seed),
    async (v, rng) => {
      const order = Array.from({ length: blocks }, (_, i) => i);
      for (let i = order.length - 1; i > 0; i--) {
        const j = rng.below(i + 1);
        [order[i], order[j]] = [order[j]!, order[i]!];
      }
      const snap = await v.snapshot();
      const rate = await burst(cfg.inFlight, blocks, (i) => v.write(order[i]! * BS, data));
      await snap.close();
      await v.deleteSnapshot(snap.id);
      return rate;
    },
    [
      `${PARTITIONS} partitions of ${partitionSize / MiB} MiB over memory specs, striped by 64 KiB, filled; per burst a snapshot, then each of the ${blocks} blocks written once in random order (a COW first write: read old, CRC-32, store write, metadata log, origin write), ${cfg.inFlight} in flight; the snapshot deleted after`,
    ],
  );
}

/** Latency of each write of a closed loop of `writers` 4 KiB random writes for `ms`. */
async function writeLatencies(
  volume: Volume,
  writers: number,
  ms: number,
  seed: number,
): Promise<number[]> {
  const rng = new Rng(seed);
  const blocks = volume.size / BS;
  const data = rng.fill(new Uint8Array(BS));
  const latencies: number[] = [];
  const end = performance.now() + ms;
  await Promise.all(
    Array.from({ length: writers }, async () => {
      while (performance.now() < end) {
        const t0 = performance.now();
        await volume.write(rng.below(blocks) * BS, data);
        latencies.push(performance.now() - t0);
      }
    }),
  );
  return latencies;
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!;
}

/** Snapshots (each followed by writes, then deleted) in the schedule row's warm-up. */
const WARM_UP_SNAPSHOTS = 3;

/**
 * A group snapshot of 8 partitions on 2 processors: how long `snapshot()`
 * takes on an idle volume, and the p99 latency of 32 writers' 4 KiB random
 * writes during a schedule of one snapshot per second, against the same
 * load without one, measured alongside.
 */
async function scheduleLatency(cfg: BenchConfig): Promise<RowResult> {
  const partitions = 8;
  const partitionSize = 8 * MiB;
  const volume = await cfg.lib.VirtualVolume.create({
    store: await cfg.lib.MemoryDevice.create({ size: 4 * MiB, blockSize: BS }),
    partitions: Array.from({ length: partitions }, () => ({
      origin: { memory: { size: partitionSize, blockSize: BS } },
      store: { memory: { size: 3 * partitionSize + 8 * MiB, blockSize: BS } },
    })),
    stripeUnit: 64 * 1024,
    processors: 2,
    maxSnapshots: 8,
  });
  try {
    await fill(volume, cfg.seed);
    const snapshotMs: number[] = [];
    for (let i = 0; i < 10; i++) {
      const t0 = performance.now();
      const snap = await volume.snapshot();
      snapshotMs.push(performance.now() - t0);
      await snap.close();
      await volume.deleteSnapshot(snap.id);
    }
    const seconds = 3;
    // Warm-up of both sides' paths: rewrites, and the COW first writes and
    // deletes a schedule brings. A worker is an isolate with a JIT of its own
    // that sees half the writes; without this the schedule's first wave of
    // first writes ran on cold code (40 against 17 µs per request), which a
    // volume that has been running a schedule no longer does.
    await writeLatencies(volume, 32, 500, cfg.seed);
    for (let i = 0; i < WARM_UP_SNAPSHOTS; i++) {
      const snap = await volume.snapshot();
      await writeLatencies(volume, 32, 500, cfg.seed + 10 + i);
      await snap.close();
      await volume.deleteSnapshot(snap.id);
    }
    const without = await writeLatencies(volume, 32, seconds * 1000, cfg.seed + 1);
    const schedule = volume.schedule({ every: 1000, keep: 2, name: 'bench' });
    const during = await writeLatencies(volume, 32, seconds * 1000, cfg.seed + 2);
    schedule.stop();
    await schedule.settled();
    const p99Without = percentile(without, 0.99);
    const p99During = percentile(during, 0.99);
    const ratio = p99During / p99Without;
    const meanSnapshot = snapshotMs.reduce((a, b) => a + b, 0) / snapshotMs.length;
    return {
      opsPerSec: p99During,
      ops: during.length,
      seconds,
      display: `snapshot ${meanSnapshot.toFixed(1)} ms; write p99 ${p99During.toFixed(2)} ms with the schedule, ${p99Without.toFixed(2)} ms without`,
      ratio,
      notes: [
        `${partitions} partitions of ${partitionSize / MiB} MiB over memory specs on 2 workers, striped by 64 KiB, filled; warm-up (untimed): 0.5 s of writes, then ${WARM_UP_SNAPSHOTS} times a snapshot, 0.5 s of writes and its delete`,
        `snapshot() on the idle volume: mean ${meanSnapshot.toFixed(1)} ms of 10 (${Math.min(...snapshotMs).toFixed(1)}–${Math.max(...snapshotMs).toFixed(1)} ms), each deleted after`,
        `32 writers, 4 KiB random writes, ${seconds} s each: without a schedule ${without.length} writes, p50 ${percentile(without, 0.5).toFixed(2)} ms, p99 ${p99Without.toFixed(2)} ms; with one snapshot per second (keep 2) ${during.length} writes, p50 ${percentile(during, 0.5).toFixed(2)} ms, p99 ${p99During.toFixed(2)} ms`,
      ],
    };
  } finally {
    await volume.close();
  }
}

export function volumeRows(_cfg: BenchConfig): Row[] {
  return [
    {
      id: 'volume-read-workers',
      label: 'VirtualVolume 4 KiB random reads: 2 workers vs this thread (memory)',
      kind: 'metric',
      run: (cfg) => randomIO(cfg, 'read'),
    },
    {
      id: 'volume-rewrite-workers',
      label: 'VirtualVolume 4 KiB random rewrites: 2 workers vs this thread (memory)',
      kind: 'metric',
      run: (cfg) => randomIO(cfg, 'rewrite'),
    },
    {
      id: 'volume-cow-first-write-workers',
      label: 'VirtualVolume COW first writes after a snapshot: 2 workers vs this thread (memory)',
      kind: 'metric',
      run: cowFirstWrites,
    },
    {
      id: 'volume-schedule-p99',
      label:
        'VirtualVolume group snapshot of 8 partitions on 2 workers; write p99 during a 1/s schedule vs without',
      kind: 'metric',
      run: scheduleLatency,
    },
  ];
}
