/**
 * Benchmark machinery shared by every row: a seeded PRNG, a closed-loop load
 * generator, file preconditioning and a description of the file system the
 * files live on. Nothing here knows about blocksnap.
 */
import * as fs from 'node:fs';
import { Session } from 'node:inspector/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

/** mulberry32: small, fast, seedable, good enough to scatter block offsets. */
export class Rng {
  #state: number;

  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** A uniformly distributed unsigned 32-bit integer. */
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) | 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** A uniformly distributed integer in `[0, n)`, for n up to 2^32. */
  below(n: number): number {
    return Math.floor((this.next() / 0x100000000) * n);
  }

  /** Fills `out` with pseudo-random bytes. */
  fill<T extends Uint8Array>(out: T): T {
    const words = Math.floor(out.length / 4);
    const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
    for (let i = 0; i < words; i++) view.setUint32(i * 4, this.next(), true);
    for (let i = words * 4; i < out.length; i++) out[i] = this.next() & 0xff;
    return out;
  }
}

/** One independent generator per worker, derived from one seed. */
export function workerRngs(seed: number, workers: number): Rng[] {
  return Array.from({ length: workers }, (_, i) => new Rng(Math.imul(seed ^ 0x9e3779b9, i + 1)));
}

/** A seeded random permutation of `0..n-1` (Fisher–Yates). */
export function permutation(n: number, rng: Rng): Uint32Array {
  const out = new Uint32Array(n);
  for (let i = 0; i < n; i++) out[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = rng.below(i + 1);
    const t = out[i]!;
    out[i] = out[j]!;
    out[j] = t;
  }
  return out;
}

/** Completion callback of one operation. */
export type Done = (err: Error | null) => void;
/**
 * Starts one operation for `worker`; `index` counts operations across all
 * workers (0, 1, 2, ... in issue order). Calls `done` exactly once.
 */
export type Issue = (worker: number, index: number, done: Done) => void;

/** Adapts a promise-returning operation to {@link Issue}. */
export function promised(op: (worker: number, index: number) => Promise<unknown>): Issue {
  return (worker, index, done) => {
    op(worker, index).then(
      () => done(null),
      (err: unknown) => done(toError(err)),
    );
  };
}

export function toError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

export interface LoopOptions {
  /** Workers, each with exactly one operation in flight. */
  inFlight: number;
  /** Stop issuing after this many seconds. */
  seconds: number;
  /** Stop issuing after this many operations. @default Infinity */
  limit?: number;
  /** The `index` of the first operation. @default 0 */
  startIndex?: number;
}

export interface LoopResult {
  /** Operations completed. */
  ops: number;
  /** From the first issue to the last completion. */
  seconds: number;
  opsPerSec: number;
}

/**
 * A closed loop: `inFlight` workers, each issuing its next operation as soon
 * as its previous one completes, until the time or the operation budget runs
 * out; then waits for the operations still in flight. The first failure
 * stops the loop and rejects.
 */
export function closedLoop(issue: Issue, options: LoopOptions): Promise<LoopResult> {
  const limit = options.limit ?? Number.POSITIVE_INFINITY;
  const startIndex = options.startIndex ?? 0;
  return new Promise((resolve, reject) => {
    const start = performance.now();
    const deadline = start + options.seconds * 1000;
    let issued = 0;
    let completed = 0;
    let active = options.inFlight;
    let failure: Error | null = null;
    const finish = (): void => {
      const seconds = (performance.now() - start) / 1000;
      if (failure !== null) reject(failure);
      else resolve({ ops: completed, seconds, opsPerSec: seconds > 0 ? completed / seconds : 0 });
    };
    const next = (worker: number): void => {
      if (failure !== null || issued >= limit || performance.now() >= deadline) {
        if (--active === 0) finish();
        return;
      }
      const index = startIndex + issued++;
      issue(worker, index, (err) => {
        if (err !== null) failure ??= err;
        else completed++;
        next(worker);
      });
    };
    if (active === 0) {
      finish();
      return;
    }
    for (let w = 0; w < options.inFlight; w++) next(w);
  });
}

/**
 * A short warm-up run of the same operation, then the measured run; both
 * draw from one operation budget and one index sequence.
 */
export async function measure(
  issue: Issue,
  options: { inFlight: number; seconds: number; warmup: number; limit?: number },
): Promise<LoopResult & { warmupOps: number }> {
  const limit = options.limit ?? Number.POSITIVE_INFINITY;
  let warmupOps = 0;
  if (options.warmup > 0) {
    warmupOps = (
      await closedLoop(issue, { inFlight: options.inFlight, seconds: options.warmup, limit })
    ).ops;
  }
  const stopProfile = await startProfile();
  const result = await closedLoop(issue, {
    inFlight: options.inFlight,
    seconds: options.seconds,
    limit: limit - warmupOps,
    startIndex: warmupOps,
  });
  await stopProfile();
  return { ...result, warmupOps };
}

let profiles = 0;

/**
 * With `BENCH_PROFILE=<dir>`, records a V8 CPU profile of each measured run
 * (not of setup or preconditioning) as `<dir>/<n>.cpuprofile`.
 */
async function startProfile(): Promise<() => Promise<void>> {
  const dir = process.env.BENCH_PROFILE;
  if (dir === undefined || dir === '') return async () => {};
  fs.mkdirSync(dir, { recursive: true });
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 100 });
  await session.post('Profiler.start');
  return async () => {
    const { profile } = await session.post('Profiler.stop');
    const file = join(dir, `${++profiles}.cpuprofile`);
    fs.writeFileSync(file, JSON.stringify(profile));
    session.disconnect();
    process.stderr.write(`    profile: ${file}\n`);
  };
}

const CHUNK = 1 << 20;

/** Creates (or truncates) a file of `size` bytes without writing it: sparse. */
export function createSparse(path: string, size: number): void {
  const fd = fs.openSync(path, 'w');
  try {
    fs.ftruncateSync(fd, size);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * The preconditioning every file gets right before its row, so that rows see
 * the same page-cache state: the file is written in full (1 MiB sequential
 * writes of pseudo-random data), `fdatasync`ed, then read once in full. After
 * it every page is allocated on disk, cached, and clean.
 */
export function precondition(path: string, size: number, seed: number): void {
  const fd = fs.openSync(path, 'r+');
  try {
    const buffer = new Rng(seed).fill(Buffer.allocUnsafe(CHUNK));
    for (let pos = 0; pos < size; pos += CHUNK) {
      buffer.writeUInt32LE((pos / CHUNK) >>> 0, 0);
      writeFully(fd, buffer, Math.min(CHUNK, size - pos), pos);
    }
    fs.fdatasyncSync(fd);
    readOnce(fd, size);
  } finally {
    fs.closeSync(fd);
  }
}

/** Reads a file once in full, 1 MiB at a time (the second half of preconditioning). */
export function readFileOnce(path: string): void {
  const fd = fs.openSync(path, 'r');
  try {
    readOnce(fd, fs.fstatSync(fd).size);
  } finally {
    fs.closeSync(fd);
  }
}

function readOnce(fd: number, size: number): void {
  const buffer = Buffer.allocUnsafe(CHUNK);
  for (let pos = 0; pos < size; ) {
    const n = fs.readSync(fd, buffer, 0, Math.min(CHUNK, size - pos), pos);
    if (n === 0) throw new Error(`unexpected end of file at ${pos}`);
    pos += n;
  }
}

function writeFully(fd: number, buffer: Buffer, length: number, position: number): void {
  for (let done = 0; done < length; ) {
    done += fs.writeSync(fd, buffer, done, length - done, position + done);
  }
}

/** Bytes a file actually occupies on disk (a sparse file's holes take none). */
export function allocatedBytes(path: string): number {
  return fs.statSync(path).blocks * 512;
}

export interface FilesystemInfo {
  /** File system type, e.g. `ext4` or `tmpfs`. */
  type: string;
  /** Backing device, e.g. `/dev/vda`. */
  source: string;
  mountPoint: string;
  /** Whether the files live in RAM (tmpfs/ramfs) rather than on a disk. */
  inMemory: boolean;
  /** Free bytes for an unprivileged user. */
  available: number;
}

const FS_MAGIC = new Map<number, string>([
  [0xef53, 'ext2/3/4'],
  [0x01021994, 'tmpfs'],
  [0x858458f6, 'ramfs'],
  [0x9123683e, 'btrfs'],
  [0x58465342, 'xfs'],
  [0x794c7630, 'overlayfs'],
  [0x2fc12fc1, 'zfs'],
]);

/** Which file system holds `dir`: from /proc/mounts where it exists, else statfs's magic. */
export function describeFilesystem(dir: string): FilesystemInfo {
  const stat = fs.statfsSync(dir);
  const available = stat.bavail * stat.bsize;
  let type = FS_MAGIC.get(stat.type) ?? `0x${stat.type.toString(16)}`;
  let source = 'unknown';
  let mountPoint = 'unknown';
  try {
    const real = fs.realpathSync(dir);
    let best = -1;
    for (const line of fs.readFileSync('/proc/mounts', 'utf8').split('\n')) {
      const [dev, mnt, fstype] = line.split(' ');
      if (dev === undefined || mnt === undefined || fstype === undefined) continue;
      const inside = mnt === '/' || real === mnt || real.startsWith(`${mnt}/`);
      if (inside && mnt.length >= best) {
        best = mnt.length;
        source = dev;
        mountPoint = mnt;
        type = fstype;
      }
    }
  } catch {
    // Not Linux: keep what statfs said.
  }
  return { type, source, mountPoint, inMemory: type === 'tmpfs' || type === 'ramfs', available };
}
