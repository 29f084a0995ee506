/**
 * NBD rows: blocksnap's server and client against the servers users run,
 * with one load generator for every server — `fio --ioengine=nbd`, 4 KiB
 * random I/O, the same queue depth as every other row — and `nbdcopy` for
 * sequential throughput. Each row measures both sides in the same round,
 * alternating which goes first, and reports ours over theirs.
 *
 * The peers (Debian: fio, nbdkit, qemu-utils, libnbd-bin) must be installed;
 * a row whose peer is missing fails with the program's name.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { BlockDevice, NbdServer } from '../src/index.js';
import { closedLoop, precondition, promised, workerRngs } from './harness.js';
import { type LaunchError, runProgram, type Started, startProgram } from './launcher.js';
import { type BenchConfig, paths, type Row, type RowResult } from './workloads.js';

/**
 * Runs a program to completion from the launcher's child process (never
 * forked from this one: see bench/launcher.ts), for every side of a row.
 */
function run(program: string, args: string[], options: { timeout: number }): Promise<string> {
  return runProgram(program, args, options.timeout);
}
const MiB = 1 << 20;
/** The in-memory exports of the memory rows (ours and nbdkit's). */
const MEMORY_SIZE = 1024 * MiB;

/** What one fio run measured. */
interface FioResult {
  iops: number;
  /** 99th percentile completion latency in microseconds. */
  p99us: number;
}

/** A server under load: its NBD URI and how to stop it. */
interface Served {
  uri: string;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address();
      probe.close(() =>
        typeof address === 'object' && address !== null
          ? resolve(address.port)
          : reject(new Error('no port')),
      );
    });
  });
}

async function waitForPort(port: number, child: Started, what: string): Promise<void> {
  let exited = false;
  void child.exited.then(() => {
    exited = true;
  });
  const deadline = Date.now() + 20_000;
  for (;;) {
    const open = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (open) return;
    if (exited || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`${what} did not start listening on port ${port}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Starts a peer server (nbdkit, qemu-nbd) on a free port, from the launcher's child process. */
async function startPeer(program: string, args: (port: number) => string[]): Promise<Served> {
  const port = await freePort();
  const child = await startProgram(program, args(port)).catch((err: unknown) => {
    throw new Error(`${program}: ${(err as Error).message} (is it installed?)`);
  });
  await waitForPort(port, child, program);
  let exited = false;
  void child.exited.then(() => {
    exited = true;
  });
  return {
    uri: `nbd://127.0.0.1:${port}/`,
    stop: async () => {
      if (!exited) child.kill('SIGTERM');
      await child.exited;
    },
  };
}

/** `nbdkit memory` of MEMORY_SIZE bytes on a free loopback port. */
function startNbdkitMemory(): Promise<Served> {
  return startPeer('nbdkit', (port) => [
    '-f',
    '-p',
    String(port),
    '-i',
    '127.0.0.1',
    'memory',
    `size=${MEMORY_SIZE}`,
  ]);
}

/** Serves `device` with blocksnap's server under the export name `bench`. */
async function serveOurs(cfg: BenchConfig, device: BlockDevice): Promise<Served> {
  const server: NbdServer = await cfg.lib.serveNbd({ exports: { bench: device }, port: 0 });
  const address = server.address;
  if (!('port' in address)) throw new Error('expected a TCP address');
  return { uri: `nbd://127.0.0.1:${address.port}/bench`, stop: () => server.close() };
}

/**
 * One fio run: `rw` 4 KiB random I/O with cfg.inFlight in flight, over the
 * first `size` bytes, for cfg.seconds after cfg.warmup of ramp.
 */
async function fio(
  cfg: BenchConfig,
  uri: string,
  rw: 'randread' | 'randwrite',
  size: number,
): Promise<FioResult> {
  const out = join(cfg.dir, `fio-${process.pid}.json`);
  await run(
    'fio',
    [
      '--name=bench',
      '--ioengine=nbd',
      `--uri=${uri}`,
      `--rw=${rw}`,
      `--bs=${cfg.blockSize}`,
      `--iodepth=${cfg.inFlight}`,
      `--size=${size}`,
      // In milliseconds: fio reads a bare number as whole seconds, so the
      // default 0.25 s warm-up was no warm-up and a sub-second run failed.
      `--runtime=${Math.round(cfg.seconds * 1000)}ms`,
      `--ramp_time=${Math.round(cfg.warmup * 1000)}ms`,
      '--time_based',
      `--randseed=${cfg.seed}`,
      '--output-format=json',
      `--output=${out}`,
    ],
    { timeout: (cfg.seconds + cfg.warmup + 30) * 1000 },
  ).catch((err: LaunchError) => {
    throw new Error(
      err.code === 'ENOENT' ? 'fio is not installed (Debian: fio)' : `fio failed: ${err.message}`,
    );
  });
  const report = JSON.parse(fs.readFileSync(out, 'utf8')) as {
    jobs: { read: FioSide; write: FioSide }[];
  };
  fs.rmSync(out, { force: true });
  const side = rw === 'randread' ? report.jobs[0]!.read : report.jobs[0]!.write;
  return { iops: side.iops, p99us: (side.clat_ns.percentile?.['99.000000'] ?? Number.NaN) / 1000 };
}

interface FioSide {
  iops: number;
  clat_ns: { percentile?: Record<string, number> };
}

/** Fills the first `size` bytes of an export with non-zero data: one sequential fio pass of 1 MiB writes. */
async function fill(cfg: BenchConfig, uri: string, size: number): Promise<void> {
  await run(
    'fio',
    [
      '--name=fill',
      '--ioengine=nbd',
      `--uri=${uri}`,
      '--rw=write',
      '--bs=1M',
      '--iodepth=8',
      `--size=${size}`,
      `--output=${join(cfg.dir, 'fill.log')}`,
    ],
    { timeout: 300_000 },
  ).catch((err: LaunchError) => {
    throw new Error(
      err.code === 'ENOENT' ? 'fio is not installed (Debian: fio)' : `fio (fill): ${err.message}`,
    );
  });
}

/**
 * Measures ours and the peer's side in one round, the order alternating
 * with the round number so neither always runs on a warmer machine.
 */
async function pair(
  round: number,
  ours: () => Promise<FioResult>,
  theirs: () => Promise<FioResult>,
): Promise<[FioResult, FioResult]> {
  if (round % 2 === 0) {
    const t = await theirs();
    return [await ours(), t];
  }
  const o = await ours();
  return [o, await theirs()];
}

let roundOf = new Map<string, number>();

function nextRound(id: string): number {
  const n = (roundOf.get(id) ?? 0) + 1;
  roundOf.set(id, n);
  return n;
}

function pairResult(o: FioResult, t: FioResult, peer: string, notes: string[]): RowResult {
  return {
    opsPerSec: o.iops,
    ops: Math.round(o.iops),
    seconds: 0,
    display: `${Math.round(o.iops).toLocaleString('en-US')} IOPS`,
    ratio: o.iops / t.iops,
    notes: [
      `ours ${Math.round(o.iops).toLocaleString('en-US')} IOPS, p99 ${o.p99us.toFixed(0)} µs; ` +
        `${peer} ${Math.round(t.iops).toLocaleString('en-US')} IOPS, p99 ${t.p99us.toFixed(0)} µs`,
      ...notes,
    ],
  };
}

/** Our server over a MemoryDevice against `nbdkit memory`, both filled first. */
async function memoryRow(
  cfg: BenchConfig,
  id: string,
  rw: 'randread' | 'randwrite',
): Promise<RowResult> {
  const round = nextRound(id);
  const device = await cfg.lib.MemoryDevice.create({ size: MEMORY_SIZE, blockSize: cfg.blockSize });
  const ours = await serveOurs(cfg, device);
  const theirs = await startNbdkitMemory();
  try {
    await fill(cfg, ours.uri, MEMORY_SIZE);
    await fill(cfg, theirs.uri, MEMORY_SIZE);
    const [o, t] = await pair(
      round,
      () => fio(cfg, ours.uri, rw, MEMORY_SIZE),
      () => fio(cfg, theirs.uri, rw, MEMORY_SIZE),
    );
    return pairResult(o, t, 'nbdkit memory', [
      `${MEMORY_SIZE / MiB} MiB exports, both filled before`,
    ]);
  } finally {
    await ours.stop();
    await theirs.stop();
    await device.close();
  }
}

/** Our server over a FileDevice against `qemu-nbd -f raw` on the same preconditioned file. */
async function fileRow(
  cfg: BenchConfig,
  id: string,
  rw: 'randread' | 'randwrite',
): Promise<RowResult> {
  const round = nextRound(id);
  const file = paths(cfg).data;
  const measureOurs = async (): Promise<FioResult> => {
    precondition(file, cfg.size, cfg.seed);
    const device = await cfg.lib.FileDevice.open(file, { blockSize: cfg.blockSize, lock: false });
    const ours = await serveOurs(cfg, device);
    try {
      return await fio(cfg, ours.uri, rw, cfg.size);
    } finally {
      await ours.stop();
      await device.close();
    }
  };
  const measureTheirs = async (): Promise<FioResult> => {
    precondition(file, cfg.size, cfg.seed);
    const theirs = await startPeer('qemu-nbd', (port) => [
      '-f',
      'raw',
      '-b',
      '127.0.0.1',
      '-p',
      String(port),
      '--persistent',
      '--shared=4',
      file,
    ]);
    try {
      return await fio(cfg, theirs.uri, rw, cfg.size);
    } finally {
      await theirs.stop();
    }
  };
  const [o, t] = await pair(round, measureOurs, measureTheirs);
  return pairResult(o, t, 'qemu-nbd -f raw', [
    'the same data file, preconditioned (written, synced, read) before each side; qemu-nbd with its default cache (writeback) and aio (threads)',
  ]);
}

/**
 * First writes after a snapshot: our server over a CowSnapshotDevice (origin
 * the data file, store its own file) with one snapshot, against qemu-nbd on
 * a fresh qcow2 overlay whose backing file is the data file (every write
 * allocates: fio's random map never repeats a block within the run).
 */
async function cowFirstWriteRow(cfg: BenchConfig): Promise<RowResult> {
  const round = nextRound('nbd-cow-first-write');
  const p = paths(cfg);
  const overlay = join(cfg.dir, 'overlay.qcow2');
  const measureOurs = async (): Promise<FioResult> => {
    precondition(p.data, cfg.size, cfg.seed);
    const { lib } = cfg;
    const cow = await lib.CowSnapshotDevice.create(
      await lib.FileDevice.open(p.data, { blockSize: cfg.blockSize, lock: false }),
      await lib.FileDevice.open(p.store, { blockSize: cfg.blockSize, lock: false }),
      { force: true },
    );
    const snap = await cow.snapshot();
    await snap.close();
    const ours = await serveOurs(cfg, cow);
    try {
      return await fio(cfg, ours.uri, 'randwrite', cfg.size);
    } finally {
      await ours.stop();
      await cow.close();
    }
  };
  const measureTheirs = async (): Promise<FioResult> => {
    precondition(p.data, cfg.size, cfg.seed);
    fs.rmSync(overlay, { force: true });
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', p.data, '-F', 'raw', overlay], {
      timeout: 60_000,
    });
    const theirs = await startPeer('qemu-nbd', (port) => [
      '-f',
      'qcow2',
      '-b',
      '127.0.0.1',
      '-p',
      String(port),
      '--persistent',
      '--shared=4',
      overlay,
    ]);
    try {
      return await fio(cfg, theirs.uri, 'randwrite', cfg.size);
    } finally {
      await theirs.stop();
      fs.rmSync(overlay, { force: true });
    }
  };
  const [o, t] = await pair(round, measureOurs, measureTheirs);
  return pairResult(o, t, 'qemu-nbd qcow2 overlay', [
    'ours: CowSnapshotDevice over the data file with 1 snapshot, every write preserves a block; theirs: a new qcow2 overlay (64 KiB clusters) backed by the same file',
  ]);
}

/** `nbdcopy` of a whole filled 1 GiB export to `null:`: ours over a MemoryDevice vs nbdkit memory. */
async function copyRow(cfg: BenchConfig): Promise<RowResult> {
  const round = nextRound('nbd-copy');
  const device = await cfg.lib.MemoryDevice.create({ size: MEMORY_SIZE, blockSize: cfg.blockSize });
  const ours = await serveOurs(cfg, device);
  const theirs = await startNbdkitMemory();
  const copy = async (uri: string): Promise<FioResult> => {
    const t0 = performance.now();
    await run('nbdcopy', ['--no-extents', uri, 'null:'], { timeout: 300_000 });
    return { iops: MEMORY_SIZE / ((performance.now() - t0) / 1000) / 1e6, p99us: Number.NaN };
  };
  try {
    await fill(cfg, ours.uri, MEMORY_SIZE);
    await fill(cfg, theirs.uri, MEMORY_SIZE);
    const [o, t] = await pair(
      round,
      () => copy(ours.uri),
      () => copy(theirs.uri),
    );
    return {
      opsPerSec: o.iops,
      ops: 1,
      seconds: 0,
      display: `${o.iops.toFixed(0)} MB/s`,
      ratio: o.iops / t.iops,
      notes: [
        `ours ${o.iops.toFixed(0)} MB/s, nbdkit memory ${t.iops.toFixed(0)} MB/s (nbdcopy --no-extents to null:)`,
      ],
    };
  } finally {
    await ours.stop();
    await theirs.stop();
    await device.close();
  }
}

/**
 * Our client: NbdDevice reads (4 KiB random, cfg.inFlight in flight) from
 * `nbdkit memory`, against fio's nbd engine on the same server. `read`
 * hands out a fresh buffer per read (the contract's floor, as for
 * FileDevice: docs/ARCHITECTURE.md, "Performance notes"); `readInto` reads
 * into one buffer per worker, reused, as fio does.
 */
async function clientReadRow(
  cfg: BenchConfig,
  id: string,
  call: 'read' | 'readInto',
): Promise<RowResult> {
  const round = nextRound(id);
  const theirs = await startNbdkitMemory();
  try {
    await fill(cfg, theirs.uri, MEMORY_SIZE);
    const blocks = MEMORY_SIZE / cfg.blockSize;
    const measureOurs = async (): Promise<FioResult> => {
      const device = await cfg.lib.NbdDevice.connect(theirs.uri);
      try {
        const rngs = workerRngs(cfg.seed, cfg.inFlight);
        const targets = Array.from({ length: cfg.inFlight }, () => new Uint8Array(cfg.blockSize));
        const latencies: number[] = [];
        const issue = promised(async (worker) => {
          const t0 = performance.now();
          const offset = rngs[worker]!.below(blocks) * cfg.blockSize;
          if (call === 'read') await device.read(offset, cfg.blockSize);
          else await device.readInto(offset, targets[worker]!);
          if (latencies.length < 1_000_000) latencies.push(performance.now() - t0);
        });
        await closedLoop(issue, { inFlight: cfg.inFlight, seconds: cfg.warmup });
        latencies.length = 0;
        const r = await closedLoop(issue, { inFlight: cfg.inFlight, seconds: cfg.seconds });
        latencies.sort((a, b) => a - b);
        const p99 = latencies[Math.floor(latencies.length * 0.99)] ?? Number.NaN;
        return { iops: r.opsPerSec, p99us: p99 * 1000 };
      } finally {
        await device.close();
      }
    };
    const [o, t] = await pair(round, measureOurs, () =>
      fio(cfg, theirs.uri, 'randread', MEMORY_SIZE),
    );
    return pairResult(o, t, 'fio from the same nbdkit memory', [
      call === 'read'
        ? 'ours: NbdDevice.connect, one connection, a closed loop of read() in this process (a fresh result buffer per read)'
        : 'ours: NbdDevice.connect, one connection, a closed loop of readInto() in this process (one reused buffer per worker, as fio)',
    ]);
  } finally {
    await theirs.stop();
  }
}

/** The NBD rows, each judged by the ratio of ours over the peer measured in the same round. */
export function nbdRows(_cfg: BenchConfig): Row[] {
  roundOf = new Map();
  return [
    {
      id: 'nbd-mem-read',
      label: 'NBD server over MemoryDevice: fio 4 KiB random reads',
      kind: 'metric',
      run: (c) => memoryRow(c, 'nbd-mem-read', 'randread'),
    },
    {
      id: 'nbd-mem-write',
      label: 'NBD server over MemoryDevice: fio 4 KiB random writes',
      kind: 'metric',
      run: (c) => memoryRow(c, 'nbd-mem-write', 'randwrite'),
    },
    {
      id: 'nbd-file-read',
      label: 'NBD server over FileDevice: fio 4 KiB random reads',
      kind: 'metric',
      run: (c) => fileRow(c, 'nbd-file-read', 'randread'),
    },
    {
      id: 'nbd-file-write',
      label: 'NBD server over FileDevice: fio 4 KiB random writes',
      kind: 'metric',
      run: (c) => fileRow(c, 'nbd-file-write', 'randwrite'),
    },
    {
      id: 'nbd-cow-first-write',
      label: 'NBD server over CowSnapshotDevice: fio first writes after a snapshot',
      kind: 'metric',
      run: cowFirstWriteRow,
    },
    {
      id: 'nbd-copy',
      label: `nbdcopy of a ${MEMORY_SIZE / MiB} MiB export to null:`,
      kind: 'metric',
      run: copyRow,
    },
    {
      id: 'nbd-client-read',
      label: 'NbdDevice 4 KiB random reads from nbdkit memory',
      kind: 'metric',
      run: (c) => clientReadRow(c, 'nbd-client-read', 'read'),
    },
    {
      id: 'nbd-client-read-into',
      label: 'NbdDevice 4 KiB random readInto from nbdkit memory',
      kind: 'metric',
      run: (c) => clientReadRow(c, 'nbd-client-read-into', 'readInto'),
    },
  ];
}

/** The target each NBD row is judged by: [minimum ratio or undefined to report, what the ratio is against]. */
export const NBD_TARGETS: Readonly<Record<string, readonly [number | undefined, string]>> = {
  'nbd-mem-read': [1.0, 'nbdkit memory'],
  'nbd-mem-write': [1.0, 'nbdkit memory'],
  'nbd-file-read': [1.0, 'qemu-nbd -f raw on the same file'],
  'nbd-file-write': [1.0, 'qemu-nbd -f raw on the same file'],
  'nbd-cow-first-write': [undefined, 'qemu-nbd on a qcow2 overlay (allocating writes)'],
  'nbd-copy': [1.0, 'nbdkit memory'],
  // read() pays a fresh result buffer per read, which fio does not: reported.
  'nbd-client-read': [undefined, 'fio from the same nbdkit memory'],
  'nbd-client-read-into': [0.8, 'fio from the same nbdkit memory'],
};
