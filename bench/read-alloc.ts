/**
 * What handing every read an ArrayBuffer of its own costs, against carving
 * it from a shared 512 KiB slab (what reads did before: see
 * src/base/buffer-pool.ts). Not part of `npm run bench`; run it alone:
 *
 *   npx tsx bench/read-alloc.ts
 *
 * 4 KiB (and 64 KiB) random reads, 32 in flight, a promise per read, as
 * FileDevice and MemoryDevice do them: `fs.read` on a descriptor into the
 * buffer, or a copy out of a map of 4 KiB blocks. Each allocation form runs
 * in turn, in alternating rounds in one process, and each round's reads/s is
 * divided by the slab's in the same round: the paired ratios are what to
 * read, not the bare rates.
 *
 * Short rounds, many of them: on a shared machine the load moves by the
 * second, and a pair measured 0.2 s apart sees the same load.
 *
 * Environment: READ_ALLOC_SECONDS per form per round (default 0.2),
 * READ_ALLOC_ROUNDS (default 21), READ_ALLOC_ONLY (comma-separated
 * substrings of the cases to run: "allocation alone", "file 4 KiB", ...), READ_ALLOC_DIR for the file (default os.tmpdir()).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

const SLAB_SIZE = 512 * 1024;
const FILE_BYTES = 256 << 20;
const BLOCK = 4096;
const IN_FLIGHT = 32;
const seconds = Number(process.env.READ_ALLOC_SECONDS ?? 0.2);
const rounds = Number(process.env.READ_ALLOC_ROUNDS ?? 21);
/** Case names to run, by substring ("alloc", "file 4 KiB", ...); all by default. */
const only = (process.env.READ_ALLOC_ONLY ?? '')
  .split(',')
  .map((s) => s.trim())
  .filter((s) => s !== '');
const wanted = (name: string): boolean => only.length === 0 || only.some((o) => name.includes(o));

let slab = new Uint8Array(0);
let used = 0;

/** The slab form: a view into a shared 512 KiB buffer, zero-filled once per slab. */
function slabView(length: number): Uint8Array {
  if (used + length > slab.length) {
    slab = new Uint8Array(SLAB_SIZE);
    used = 0;
  }
  const region = slab.subarray(used, used + length);
  used += (length + 7) & ~7;
  return region;
}

const forms: Record<string, (length: number) => Uint8Array> = {
  slab: slabView,
  'new Uint8Array(n)': (length) => new Uint8Array(length),
  'new ArrayBuffer(n)': (length) => new Uint8Array(new ArrayBuffer(length)),
  'allocUnsafeSlow(n)': (length) => {
    const b = Buffer.allocUnsafeSlow(length);
    return new Uint8Array(b.buffer, b.byteOffset, length);
  },
};

/** An empty list of samples for every form. */
function perForm(): Record<string, number[]> {
  return Object.fromEntries(Object.keys(forms).map((name) => [name, []]));
}

/** Deterministic offsets, block-aligned, inside `bytes`. */
function offsets(count: number, bytes: number, length: number): number[] {
  const out: number[] = [];
  let x = 0x9e3779b1;
  for (let i = 0; i < count; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out.push(((x >>> 0) % ((bytes - length) / BLOCK)) * BLOCK);
  }
  return out;
}

type Reader = (
  offset: number,
  length: number,
  alloc: (n: number) => Uint8Array,
) => Promise<Uint8Array>;

function fileReader(fd: number): Reader {
  return (offset, length, alloc) =>
    new Promise((resolve, reject) => {
      const buffer = alloc(length);
      fs.read(fd, buffer, 0, length, offset, (err, n) =>
        err ? reject(err) : n === length ? resolve(buffer) : reject(new Error('short read')),
      );
    });
}

function memoryReader(blocks: Map<number, Uint8Array>): Reader {
  return async (offset, length, alloc) => {
    const out = alloc(length);
    for (let pos = offset; pos < offset + length; pos += BLOCK) {
      const block = blocks.get(pos / BLOCK);
      if (block !== undefined) out.set(block, pos - offset);
      else out.fill(0, pos - offset, pos - offset + BLOCK);
    }
    return out;
  };
}

/** Reads/s for `seconds`, `IN_FLIGHT` at a time, keeping nothing (results die young, as a caller's usually do). */
async function rate(
  read: Reader,
  alloc: (n: number) => Uint8Array,
  length: number,
  at: number[],
): Promise<number> {
  let done = 0;
  let i = 0;
  let sink = 0;
  const stop = performance.now() + seconds * 1000;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (performance.now() < stop) {
        const data = await read(at[i++ % at.length]!, length, alloc);
        sink ^= data[0]!;
        done++;
      }
    }),
  );
  if (sink === 256) console.log('');
  return done / ((performance.now() - start) / 1000);
}

/** Nanoseconds per allocation (and one byte written), with no I/O: the CPU cost each form adds to a read. */
function allocationCost(alloc: (n: number) => Uint8Array, length: number): number {
  // The same bytes allocated per round at every size: fewer, larger buffers.
  const count = Math.max(10_000, Math.round((200_000 * 4096) / length));
  let sink = 0;
  const start = performance.now();
  for (let i = 0; i < count; i++) {
    const b = alloc(length);
    b[i & 7] = i;
    sink ^= b[0]!;
  }
  if (sink === 256) console.log('');
  return ((performance.now() - start) * 1e6) / count;
}

async function main(): Promise<void> {
  for (const length of wanted('allocation alone') ? [4096, 65536] : []) {
    const cost = perForm();
    for (let r = 0; r < rounds; r++) {
      for (const [name, alloc] of Object.entries(forms))
        cost[name]!.push(allocationCost(alloc, length));
    }
    console.log(
      `\nallocation alone, ${length / 1024} KiB: median ns per allocation over ${rounds} rounds`,
    );
    for (const name of Object.keys(forms)) {
      const sorted = cost[name]!.sort((a, b) => a - b);
      console.log(`  ${name.padEnd(20)} ${sorted[sorted.length >> 1]!.toFixed(0)} ns`);
    }
  }

  const dir = fs.mkdtempSync(join(process.env.READ_ALLOC_DIR ?? os.tmpdir(), 'read-alloc-'));
  const path = join(dir, 'disk.img');
  const fd = fs.openSync(path, 'w+');
  try {
    const chunk = Buffer.alloc(1 << 20);
    for (let at = 0; at < FILE_BYTES; at += chunk.length) {
      for (let j = 0; j < chunk.length; j += 4) chunk.writeUInt32LE((at + j) >>> 0, j);
      fs.writeSync(fd, chunk, 0, chunk.length, at);
    }
    const memoryBytes = 64 << 20;
    const blocks = new Map<number, Uint8Array>();
    for (let b = 0; b < memoryBytes / BLOCK; b++) blocks.set(b, new Uint8Array(BLOCK).fill(b));
    const allCases: { name: string; read: Reader; length: number; at: number[] }[] = [
      {
        name: 'file 4 KiB',
        read: fileReader(fd),
        length: 4096,
        at: offsets(1 << 16, FILE_BYTES, 4096),
      },
      {
        name: 'memory 4 KiB',
        read: memoryReader(blocks),
        length: 4096,
        at: offsets(1 << 16, memoryBytes, 4096),
      },
      {
        name: 'file 64 KiB',
        read: fileReader(fd),
        length: 65536,
        at: offsets(1 << 14, FILE_BYTES, 65536),
      },
      {
        name: 'memory 64 KiB',
        read: memoryReader(blocks),
        length: 65536,
        at: offsets(1 << 14, memoryBytes, 65536),
      },
    ];
    const cases = allCases.filter((c) => wanted(c.name));
    // Warm the page cache and the JIT on every path before measuring.
    for (const c of cases)
      for (const alloc of Object.values(forms)) await rate(c.read, alloc, c.length, c.at);
    for (const c of cases) {
      const ratios = perForm();
      const rates = perForm();
      for (let r = 0; r < rounds; r++) {
        // Alternate the order too, so neither form always runs first.
        const names = Object.keys(forms);
        if (r % 2 === 1) names.reverse();
        const round: Record<string, number> = {};
        for (const name of names) round[name] = await rate(c.read, forms[name]!, c.length, c.at);
        for (const name of names) {
          rates[name]!.push(round[name]!);
          ratios[name]!.push(round[name]! / round.slab!);
        }
      }
      console.log(`\n${c.name}, ${IN_FLIGHT} in flight, ${rounds} rounds of ${seconds} s`);
      for (const name of Object.keys(forms)) {
        const sorted = [...ratios[name]!].sort((a, b) => a - b);
        const q = (f: number): string => sorted[Math.floor(f * (sorted.length - 1))]!.toFixed(3);
        const medianRate = [...rates[name]!].sort((a, b) => a - b)[rates[name]!.length >> 1]!;
        console.log(
          `  ${name.padEnd(20)} median ${Math.round(medianRate / 1000)}k reads/s   ÷ slab: median ${q(0.5)}, quartiles ${q(0.25)}..${q(0.75)}`,
        );
      }
    }
  } finally {
    fs.closeSync(fd);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

await main();
