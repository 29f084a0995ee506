/**
 * The stream rows: what an incremental export saves over a full one, and
 * what `applyStream` costs over writing the same bytes to a file.
 *
 * The export row is in memory (MemoryDevices under a CowSnapshotDevice, as
 * the JournalDevice snapshot rows are): it measures the export machinery's
 * CPU cost (reads through snapshot handles, checksums, framing), not a disk. The
 * apply row writes to a file on the benchmark's file system, preconditioned
 * like every file, and is judged against raw `fs.write` of the same bytes
 * measured alongside it in the same round.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { ReadableStream } from 'node:stream/web';
import { createSparse, precondition, Rng } from './harness.js';
import { type BenchConfig, formatBytes, type Row, type RowResult } from './workloads.js';

const MiB = 1 << 20;
const GiB = 1 << 30;

/** Reads a stream to its end; returns its bytes. */
async function drain(stream: ReadableStream<Uint8Array>): Promise<number> {
  let bytes = 0;
  for await (const chunk of stream) bytes += chunk.length;
  return bytes;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

// ------------------------------------------------------------------- export

/** The export row's device: large, sparse, 64 KiB blocks (the COW chunk size). */
const EXPORT_SIZE = 2 * GiB;
const EXPORT_BLOCK = 64 * 1024;
/** Share of the blocks changed between the two snapshots. */
const CHANGED = 0.01;
/** Incremental exports timed per round: the median is what counts (one is ~10 ms). */
const INCREMENTAL_RUNS = 15;
/**
 * Full exports timed per round: the median is what counts, as on the
 * incremental side. One (~0.5 s) timed alone made the round's ratio swing
 * with a single GC or scheduling hiccup (rounds 72×, 46×, 45× in one run).
 */
const FULL_RUNS = 3;

/**
 * A 2 GiB sparse CowSnapshotDevice; snapshot A; 1 % of its 64 KiB blocks,
 * chosen at random, overwritten; snapshot B. Times the full export of B
 * {@link FULL_RUNS} times and the incremental export A→B
 * {@link INCREMENTAL_RUNS} times (the median of each, the incremental ones
 * after untimed warm-up runs), all read to the end by a consumer that only
 * counts bytes.
 */
async function exportRatioRow(cfg: BenchConfig): Promise<RowResult> {
  const { lib } = cfg;

  const blocks = EXPORT_SIZE / EXPORT_BLOCK;
  const device = await lib.CowSnapshotDevice.create(
    await lib.MemoryDevice.create({ size: EXPORT_SIZE, blockSize: EXPORT_BLOCK }),
    await lib.MemoryDevice.create({ size: GiB, blockSize: EXPORT_BLOCK }),
    { maxSnapshots: 4 },
  );
  try {
    const a = await device.snapshot();
    const rng = new Rng(cfg.seed);
    const changed = new Set<number>();
    while (changed.size < Math.round(blocks * CHANGED)) changed.add(rng.below(blocks));
    const data = rng.fill(new Uint8Array(EXPORT_BLOCK));
    const list = [...changed];
    for (let i = 0; i < list.length; i += cfg.inFlight) {
      await Promise.all(
        list.slice(i, i + cfg.inFlight).map((b) => device.write(b * EXPORT_BLOCK, data)),
      );
    }
    const b = await device.snapshot();
    const changedBytes = changed.size * EXPORT_BLOCK;

    // Untimed warm-up, as every row has: a ~30 ms export's first runs time
    // the JIT compiling it (60–120 ms each), which the 2 s full export
    // amortizes within itself.
    const w0 = performance.now();
    let warmups = 0;
    while (warmups < 3 || performance.now() - w0 < cfg.warmup * 1000) {
      await drain(lib.exportStream(device, { from: a.id, to: b.id }));
      warmups++;
    }
    const incremental: number[] = [];
    let incrementalBytes = 0;
    for (let i = 0; i < INCREMENTAL_RUNS; i++) {
      const t0 = performance.now();
      incrementalBytes = await drain(lib.exportStream(device, { from: a.id, to: b.id }));
      incremental.push(performance.now() - t0);
    }
    const full: number[] = [];
    let fullBytes = 0;
    for (let i = 0; i < FULL_RUNS; i++) {
      const t0 = performance.now();
      fullBytes = await drain(lib.exportStream(device, { to: b.id }));
      full.push(performance.now() - t0);
    }

    const fullMs = median(full);
    const incrementalMs = median(incremental);
    const ratio = fullMs / incrementalMs;
    return {
      opsPerSec: ratio,
      ops: INCREMENTAL_RUNS + FULL_RUNS,
      seconds: [...full, ...incremental].reduce((s, t) => s + t, 0) / 1000,
      display: `${ratio.toFixed(1)}× faster`,
      ratio,
      notes: [
        `a ${formatBytes(EXPORT_SIZE)} sparse CowSnapshotDevice over MemoryDevices, ${formatBytes(EXPORT_BLOCK)} blocks; ${changed.size} random blocks (${CHANGED * 100} %, ${formatBytes(changedBytes)}) overwritten between A and B`,
        `incremental A→B: ${incrementalMs.toFixed(0)} ms (median of ${INCREMENTAL_RUNS}, after ${warmups} untimed; ${Math.min(...incremental).toFixed(0)}–${Math.max(...incremental).toFixed(0)} ms), ${incrementalBytes} stream bytes; full B: ${fullMs.toFixed(0)} ms (median of ${FULL_RUNS}; ${Math.min(...full).toFixed(0)}–${Math.max(...full).toFixed(0)} ms), ${fullBytes} stream bytes (${(fullBytes / 1e6 / (fullMs / 1000)).toFixed(0)} MB/s)`,
        'an incremental stream reads each changed block of B for the manifest’s new checksums, the first 16 MiB of them straight into the frames it sends (one buffer per frame), reading the rest again; it computes one Fletcher-4 per changed block; its base CRCs (A) come from the store’s per-block records, unread; a full stream reads and checksums each block once',
      ],
    };
  } finally {
    await device.close();
  }
}

// -------------------------------------------------------------------- apply

/** The apply row's target file and stream size. */
const APPLY_SIZE = 256 * MiB;
/** Chunks the stream arrives in: what `fs.createReadStream` hands out by default. */
const INPUT_CHUNK = 64 * 1024;
/** Raw writes in flight: as many as applyStream keeps. */
const RAW_IN_FLIGHT = 4;
/** Untimed raw + apply pairs before the timed ones. */
const APPLY_WARMUPS = 2;
/** Timed raw + apply pairs per round: the median pair ratio is the round's. */
const APPLY_PAIRS = 7;

function applyPath(cfg: BenchConfig): string {
  return join(cfg.dir, 'stream-target.img');
}

/** Writes `content` to `fd` sequentially in 1 MiB writes, `RAW_IN_FLIGHT` at a time, then fdatasync. */
function rawSequentialWrite(fd: number, content: Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => {
    let next = 0;
    let inFlight = 0;
    let failed = false;
    const issue = (): void => {
      while (!failed && inFlight < RAW_IN_FLIGHT && next < content.length) {
        const at = next;
        const length = Math.min(MiB, content.length - at);
        next += length;
        inFlight++;
        fs.write(fd, content, at, length, at, (err) => {
          inFlight--;
          if (err) {
            failed = true;
            reject(err);
          } else if (next >= content.length && inFlight === 0) {
            fs.fdatasync(fd, (e) => (e ? reject(e) : resolve()));
          } else issue();
        });
      }
    };
    issue();
  });
}

/**
 * A full stream of a 256 MiB device of pseudo-random content, held in
 * memory as 64 KiB chunks (as a file or socket hands it over), applied to a
 * FileDevice on a preconditioned file; against it, the same 256 MiB written
 * to the same file with callback `fs.write` (1 MiB, 4 in flight) and
 * `fdatasync`ed. Both end durable; both overwrite cached, clean pages.
 * After untimed warm-up pairs, raw and apply run in pairs back to back,
 * alternating which goes first; the row's ratio is the median pair's.
 */
async function applyThroughputRow(cfg: BenchConfig): Promise<RowResult> {
  const { lib } = cfg;

  const path = applyPath(cfg);
  const source = await lib.MemoryDevice.create({ size: APPLY_SIZE, blockSize: cfg.blockSize });
  const content = new Rng(cfg.seed + 7).fill(new Uint8Array(APPLY_SIZE));
  await source.write(0, content);
  const cow = await lib.CowSnapshotDevice.create(
    source,
    await lib.MemoryDevice.create({ size: 64 * MiB, blockSize: cfg.blockSize }),
  );
  // The stream as it would come off a file or socket: 64 KiB chunks.
  const chunks: Uint8Array[] = [];
  try {
    const snap = await cow.snapshot();
    const exported: Uint8Array[] = [];
    for await (const chunk of lib.exportStream(cow, { to: snap.id })) exported.push(chunk);
    const stream = Buffer.concat(exported);
    for (let i = 0; i < stream.length; i += INPUT_CHUNK) {
      chunks.push(stream.subarray(i, i + INPUT_CHUNK));
    }
  } finally {
    await cow.close();
  }
  createSparse(path, APPLY_SIZE);
  try {
    precondition(path, APPLY_SIZE, cfg.seed + 9);
    const raw = async (): Promise<number> => {
      const fd = fs.openSync(path, 'r+');
      try {
        const t0 = performance.now();
        await rawSequentialWrite(fd, content);
        return performance.now() - t0;
      } finally {
        fs.closeSync(fd);
      }
    };
    const apply = async (): Promise<number> => {
      const target = await lib.FileDevice.open(path, { lock: false, blockSize: cfg.blockSize });
      try {
        async function* input(): AsyncGenerator<Uint8Array> {
          yield* chunks;
        }
        const t0 = performance.now();
        const report = await lib.applyStream(input(), target);
        const ms = performance.now() - t0;
        if (report.bytesWritten !== APPLY_SIZE) {
          throw new Error(`applyStream wrote ${report.bytesWritten} bytes, not ${APPLY_SIZE}`);
        }
        const check = await target.read(APPLY_SIZE - MiB, MiB);
        if (Buffer.compare(check, content.subarray(APPLY_SIZE - MiB)) !== 0) {
          throw new Error('the applied file does not hold the stream’s content');
        }
        return ms;
      } finally {
        await target.close();
      }
    };
    // Untimed warm-up: a ~100 ms apply's first runs time the JIT compiling it.
    for (let i = 0; i < APPLY_WARMUPS; i++) {
      await raw();
      await apply();
    }
    // Pairs back to back, in alternating order: the file's state is the same
    // before each (every page cached and clean: both sides end fdatasynced).
    const rawMs: number[] = [];
    const applyMs: number[] = [];
    const ratios: number[] = [];
    for (let i = 0; i < APPLY_PAIRS; i++) {
      let r: number;
      let a: number;
      if (i % 2 === 0) {
        r = await raw();
        a = await apply();
      } else {
        a = await apply();
        r = await raw();
      }
      rawMs.push(r);
      applyMs.push(a);
      ratios.push(r / a);
    }
    const ratio = median(ratios);
    const seconds = median(applyMs) / 1000;
    const rawSeconds = median(rawMs) / 1000;
    const mbps = APPLY_SIZE / 1e6 / seconds;
    const rawMbps = APPLY_SIZE / 1e6 / rawSeconds;
    return {
      opsPerSec: mbps,
      ops: chunks.length * APPLY_PAIRS,
      seconds: applyMs.reduce((s, t) => s + t, 0) / 1000,
      display: `${mbps.toFixed(0)} MB/s`,
      ratio,
      notes: [
        `a full stream of ${formatBytes(APPLY_SIZE)} (${formatBytes(cfg.blockSize)} blocks, 1 MiB frames) arriving in ${chunks.length} chunks of ${formatBytes(INPUT_CHUNK)}, applied to a FileDevice on a preconditioned file, flushed: ${(seconds * 1000).toFixed(0)} ms (median of ${APPLY_PAIRS}, after ${APPLY_WARMUPS} untimed)`,
        `raw: the same bytes written to the same file with callback fs.write, 1 MiB each, ${RAW_IN_FLIGHT} in flight, then fdatasync: ${(rawSeconds * 1000).toFixed(0)} ms (${rawMbps.toFixed(0)} MB/s); measured in ${APPLY_PAIRS} pairs back to back with the applies, in alternating order; × raw is the median pair ratio (${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)})`,
      ],
    };
  } finally {
    fs.rmSync(path, { force: true });
  }
}

/** The stream rows, in table order. */
export function streamRows(_cfg: BenchConfig): Row[] {
  return [
    {
      id: 'stream-export-incremental',
      label: `incremental export of 1 % changed vs full export, ${formatBytes(EXPORT_SIZE)} sparse device in memory`,
      kind: 'metric',
      run: exportRatioRow,
    },
    {
      id: 'stream-apply-file',
      label: `applyStream of a full ${formatBytes(APPLY_SIZE)} stream to a FileDevice`,
      kind: 'metric',
      run: applyThroughputRow,
    },
  ];
}
