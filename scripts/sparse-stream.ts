/**
 * Measures a full export and apply of a sparse volume (issue 21): a 256 MiB
 * CowSnapshotDevice in memory holding ~10 MiB (160 writes of 64 KiB at
 * seeded 64 KiB-aligned offsets), exported in full to memory, then applied
 * to a new FileDevice in the system's temp directory. Prints the stream's
 * size, both times, the bytes written and what the file system allocated.
 *
 *   npx tsx scripts/sparse-stream.ts [root]
 *
 * `root` is a checkout whose `src/` to load (default: this one), so two
 * versions can be run side by side, in turns, on one machine.
 */
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';

const root = resolve(process.argv[2] ?? join(import.meta.dirname, '..'));
const lib: typeof import('../src/index.js') = await import(
  pathToFileURL(join(root, 'src/index.ts')).href
);
const MiB = 1 << 20;
const SIZE = 256 * MiB;
const BS = 4096;
const WRITE = 64 * 1024;

const cow = await lib.CowSnapshotDevice.create(
  await lib.MemoryDevice.create({ size: SIZE, blockSize: BS }),
  await lib.MemoryDevice.create({ size: 64 * MiB, blockSize: BS }),
  { maxSnapshots: 4 },
);
let x = 12345;
const next = () => {
  x ^= x << 13;
  x ^= x >>> 17;
  x ^= x << 5;
  return (x >>> 0) / 2 ** 32;
};
const data = new Uint8Array(WRITE).map((_, i) => (i * 7 + 1) & 0xff);
for (let i = 0; i < 160; i++) await cow.write(Math.floor(next() * (SIZE / WRITE)) * WRITE, data);
const snapshot = await cow.snapshot();

let start = performance.now();
const chunks: Uint8Array[] = [];
for await (const chunk of lib.exportStream(cow, { to: snapshot.id })) chunks.push(chunk);
const exportMs = performance.now() - start;
const streamBytes = chunks.reduce((sum, c) => sum + c.length, 0);
await cow.close();

const path = join(tmpdir(), `blocksnap-sparse-${process.pid}.img`);
const target = await lib.FileDevice.open(path, { size: SIZE, blockSize: BS, create: true });
start = performance.now();
const report = await lib.applyStream(
  (async function* () {
    yield* chunks;
  })(),
  target,
);
const applyMs = performance.now() - start;
await target.close();
const allocated = fs.statSync(path).blocks * 512;
fs.rmSync(path);

const mib = (n: number) => +(n / MiB).toFixed(2);
console.log(
  JSON.stringify({
    root,
    streamMiB: mib(streamBytes),
    exportMs: Math.round(exportMs),
    applyMs: Math.round(applyMs),
    writtenMiB: mib(report.bytesWritten),
    allocatedMiB: mib(allocated),
  }),
);
