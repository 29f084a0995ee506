/**
 * What `readInto` (a read into the caller's buffer) saves over `read` (a
 * fresh buffer per read), on FileDevice and through one layer above it, next
 * to raw `fs.read` and the promise ceiling. Not part of `npm run bench`; run
 * it alone, after `npm run build` for the bundle:
 *
 *   BENCH_LIB=dist npx tsx bench/read-into.ts
 *
 * 4 KiB random reads, 32 in flight, over 256 MiB files written in full,
 * synced and read once (cached, clean). Every case runs in short bursts, in
 * rounds that visit each case once (the order rotating from round to round),
 * and each burst's reads/s is divided by raw's in the same round: on a shared
 * machine the load moves by the second, and bursts 0.2 s apart see the same
 * load. The paired ratios are what to read, not the bare rates; and the
 * CPU time each read costs this process (every thread's), which moves less
 * with the load than reads/s do.
 *
 * Environment: READ_INTO_SECONDS per burst (default 0.2), READ_INTO_ROUNDS
 * (default 15), READ_INTO_ONLY (comma-separated substrings of the case names),
 * BENCH_DIR for the files (default os.tmpdir()), BENCH_LIB (see library.ts).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { join } from 'node:path';
import RandomAccessFile from 'random-access-file';
import type { BlockDevice } from '../src/index.js';
import { closedLoop, type Issue, precondition, promised, Rng, workerRngs } from './harness.js';
import { loadLibrary } from './library.js';

const FILE_BYTES = 256 << 20;
const BLOCK = 4096;
const IN_FLIGHT = 32;
const seconds = Number(process.env.READ_INTO_SECONDS ?? 0.2);
const rounds = Number(process.env.READ_INTO_ROUNDS ?? 15);
const only = (process.env.READ_INTO_ONLY ?? '')
  .split(',')
  .map((s) => s.trim())
  .filter((s) => s !== '');

const { lib, description } = await loadLibrary();
const dir = fs.mkdtempSync(join(process.env.BENCH_DIR || os.tmpdir(), 'read-into-'));
const rngs = workerRngs(1, IN_FLIGHT);
const offset = (w: number): number => rngs[w]!.below(FILE_BYTES / BLOCK) * BLOCK;
const buffers = Array.from({ length: IN_FLIGHT }, () => new Uint8Array(BLOCK));

function file(name: string, seed: number, bytes = FILE_BYTES): string {
  const path = join(dir, name);
  fs.writeFileSync(path, '');
  fs.truncateSync(path, bytes);
  precondition(path, bytes, seed);
  return path;
}

/** A read and a readInto of `device`, as the two cases of one layer. */
function both(name: string, device: BlockDevice): [string, Issue][] {
  return [
    [`${name} read`, promised((w) => device.read(offset(w), BLOCK))],
    [`${name} readInto`, promised((w) => lib.readInto(device, offset(w), buffers[w]!))],
  ];
}

const closers: (() => Promise<void>)[] = [];
try {
  const data = file('data.img', 1);
  const fd = fs.openSync(data, 'r');
  closers.push(async () => fs.closeSync(fd));
  const raf = new RandomAccessFile(data);
  await new Promise<void>((resolve, reject) => raf.open((err) => (err ? reject(err) : resolve())));
  closers.push(() => new Promise((resolve) => raf.close(() => resolve())));
  const fileDevice = await lib.FileDevice.open(data, { lock: false });
  closers.push(() => fileDevice.close());

  // One layer over a FileDevice: a COW device (1 snapshot, half its blocks
  // preserved, for the snapshot handle), a JournalDevice with nothing journaled.
  const cow = await lib.CowSnapshotDevice.create(
    await lib.FileDevice.open(file('origin.img', 2), { lock: false }),
    await lib.FileDevice.open(file('store.img', 3, FILE_BYTES + (8 << 20)), { lock: false }),
  );
  closers.push(() => cow.close());
  const snapshot = await cow.snapshot();
  const extent = new Rng(4).fill(new Uint8Array(1 << 20));
  for (let at = 0; at < FILE_BYTES; at += 2 << 20) await cow.write(at, extent);
  await cow.flush();
  const journal = await lib.JournalDevice.create(
    await lib.FileDevice.open(file('production.img', 5), { lock: false }),
    await lib.FileDevice.open(file('journal.img', 6, 64 << 20), { lock: false, blockSize: 512 }),
  );
  closers.push(() => journal.close());

  const raw: Issue = (w, _i, done) =>
    fs.read(fd, buffers[w]!, 0, BLOCK, offset(w), (err, n) =>
      done(err ?? (n === BLOCK ? null : new Error('short read'))),
    );
  const promiseRead = (fresh: boolean) =>
    promised(
      (w) =>
        new Promise((resolve, reject) => {
          const buffer = fresh ? new Uint8Array(BLOCK) : buffers[w]!;
          fs.read(fd, buffer, 0, BLOCK, offset(w), (err, n) =>
            err ? reject(err) : n === BLOCK ? resolve(buffer) : reject(new Error('short read')),
          );
        }),
    );
  const all: [string, Issue][] = [
    ['raw fs.read', raw],
    ['random-access-file', (w, _i, done) => raf.read(offset(w), BLOCK, (err) => done(err))],
    ['promise + fresh buffer (floor)', promiseRead(true)],
    ['promise + reused buffer (ceiling)', promiseRead(false)],
    ...both('FileDevice', fileDevice),
    ...both('COW origin', cow),
    ...both('JournalDevice (empty table)', journal),
    ...both('COW snapshot (half preserved)', snapshot),
  ];
  const cases = all.filter(
    ([name]) => name === 'raw fs.read' || only.length === 0 || only.some((o) => name.includes(o)),
  );
  // CPU time per read (this process, every thread: the thread pool's reads
  // included) is steadier than reads/s when other processes take the cores.
  const cpu = new Map<string, number[]>(all.map(([name]) => [name, []]));
  const burst = async (issue: Issue, name?: string) => {
    const before = process.cpuUsage();
    const r = await closedLoop(issue, { inFlight: IN_FLIGHT, seconds });
    const used = process.cpuUsage(before);
    if (name !== undefined) cpu.get(name)!.push((used.user + used.system) / r.ops);
    return r.opsPerSec;
  };
  // Warm the JIT on every path before measuring.
  for (const [, issue] of cases) await burst(issue);
  const ratios = new Map<string, number[]>(cases.map(([name]) => [name, []]));
  const rates = new Map<string, number[]>(cases.map(([name]) => [name, []]));
  for (let r = 0; r < rounds; r++) {
    const order = [...cases.slice(r % cases.length), ...cases.slice(0, r % cases.length)];
    const round = new Map<string, number>();
    for (const [name, issue] of order) round.set(name, await burst(issue, name));
    for (const [name] of cases) {
      rates.get(name)!.push(round.get(name)!);
      ratios.get(name)!.push(round.get(name)! / round.get('raw fs.read')!);
    }
  }
  const loads = os.loadavg().map((l) => l.toFixed(1));
  console.log(
    `readInto vs read: ${description}; 4 KiB random reads, ${IN_FLIGHT} in flight, ${rounds} rounds of ${seconds} s bursts per case; load average now ${loads.join(' ')}`,
  );
  console.log(
    '| case | median reads/s | × raw (median of per-round ratios) | quartiles | CPU µs per read (median) |',
  );
  console.log('| --- | ---: | ---: | --- | ---: |');
  for (const [name] of cases) {
    const sorted = [...ratios.get(name)!].sort((a, b) => a - b);
    const q = (f: number): string => sorted[Math.floor(f * (sorted.length - 1))]!.toFixed(2);
    const rate = [...rates.get(name)!].sort((a, b) => a - b)[rates.get(name)!.length >> 1]!;
    const cpuSorted = [...cpu.get(name)!].sort((a, b) => a - b);
    const cpuMedian = cpuSorted[cpuSorted.length >> 1]!.toFixed(2);
    console.log(
      `| ${name} | ${Math.round(rate).toLocaleString('en-US')} | ${q(0.5)}× | ${q(0.25)}–${q(0.75)} | ${cpuMedian} |`,
    );
  }
  // Paired within each round: readInto over read of the same layer.
  console.log('\n| layer | readInto ÷ read (median of per-round ratios) | quartiles |');
  console.log('| --- | ---: | --- |');
  for (const [name] of cases) {
    if (!name.endsWith(' read')) continue;
    const layer = name.slice(0, -' read'.length);
    const into = rates.get(`${layer} readInto`);
    if (into === undefined) continue;
    const read = rates.get(name)!;
    const pair = into.map((x, i) => x / read[i]!).sort((a, b) => a - b);
    const q = (f: number): string => pair[Math.floor(f * (pair.length - 1))]!.toFixed(2);
    console.log(`| ${layer} | ${q(0.5)}× | ${q(0.25)}–${q(0.75)} |`);
  }
} finally {
  for (const close of closers.reverse()) await close().catch(() => {});
  fs.rmSync(dir, { recursive: true, force: true });
}
