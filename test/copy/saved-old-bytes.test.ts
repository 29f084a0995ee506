import { describe, expect, it } from 'vitest';
import { READ_CALLBACK, type ReadDone } from '../../src/base/index.js';
import { ChunkStates } from '../../src/copy/chunk-states.js';
import { CopyPacer, REAL_CLOCK } from '../../src/copy/copy-pacer.js';
import { CELL_BYTES } from '../../src/copy/saved-cells.js';
import { SavedOldBytes } from '../../src/copy/saved-old-bytes.js';
import { MemoryDevice } from '../../src/index.js';
import { expectBytes } from '../support/bytes.js';

/*
 * SavedOldBytes on its own, against a model of the start() image: random
 * saves (any length, unaligned, across chunk edges, over bytes saved
 * before) each followed by the write they make way for, and copies of
 * chunks in between; every copy's read with the saved bytes laid over it
 * must be the start() image, and the bytes held must stay within the
 * limit. Saves past the limit are refused, and their chunks copied first,
 * as the engine does.
 */

const CHUNK = 8192;
const CHUNKS = 24;
const OFFSET = 512;
const LENGTH = CHUNK * CHUNKS;

/** A small seeded PRNG (mulberry32): the same trial for a seed every run. */
function rng(seed: number): (n: number) => number {
  let s = seed >>> 0;
  return (n) => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n);
  };
}

function bytesOf(length: number, below: (n: number) => number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = below(256);
  return out;
}

async function trial(
  seed: number,
  limit: number,
): Promise<{ refused: number; saves: number; saved: SavedOldBytes }> {
  const below = rng(seed);
  const source = await MemoryDevice.create({ size: OFFSET + LENGTH + 512, blockSize: 512 });
  await source.write(OFFSET, bytesOf(LENGTH, below));
  const image = await source.read(OFFSET, LENGTH);
  const states = new ChunkStates(
    { offset: OFFSET, length: LENGTH, chunkSize: CHUNK },
    CHUNKS,
    () => false,
  );
  const saved = new SavedOldBytes(
    source,
    OFFSET,
    CHUNK,
    states,
    new CopyPacer(REAL_CLOCK, CHUNK, 0),
    limit,
  );
  // A copy of chunk c as the engine makes it: read, saved bytes laid over, captured.
  const copy = async (c: number): Promise<void> => {
    if (!states.isPending(c)) return;
    states.begin(c, 1, Promise.resolve());
    const run = await source.read(OFFSET + c * CHUNK, CHUNK);
    saved.restore(c, 1, c * CHUNK, run);
    states.capture(c, 1);
    states.end(c, 1, true);
    expectBytes(`chunk ${c} as copied`, run, image.subarray(c * CHUNK, (c + 1) * CHUNK));
  };
  let refused = 0;
  let saves = 0;
  for (let step = 0; step < 300; step++) {
    if (below(8) === 0) {
      await copy(below(CHUNKS));
      continue;
    }
    // Mostly a block or less, sometimes several chunks' worth.
    const length = 1 + (below(4) === 0 ? below(3 * CHUNK) : below(CELL_BYTES + 100));
    const from = below(LENGTH - 1);
    const to = Math.min(LENGTH, from + length);
    saves++;
    if (!(await saved.save(from, to))) {
      refused++;
      for (let c = Math.floor(from / CHUNK); c * CHUNK < to; c++) await copy(c);
    }
    expect(saved.bytes).toBeLessThanOrEqual(limit);
    await source.write(OFFSET + from, bytesOf(to - from, below));
  }
  for (let c = 0; c < CHUNKS; c++) await copy(c);
  expect(saved.bytes).toBe(0);
  return { refused, saves, saved };
}

/** `device` whose `[READ_CALLBACK]` reads (into the caller's buffer) only when the test says. */
function heldReads(device: MemoryDevice): { source: MemoryDevice; release: () => void } {
  const held: (() => void)[] = [];
  const source = new Proxy(device, {
    get(target, key) {
      if (key === READ_CALLBACK) {
        return (offset: number, length: number, done: ReadDone, into?: Uint8Array) => {
          held.push(() => target[READ_CALLBACK](offset, length, done, into));
        };
      }
      const value: unknown = Reflect.get(target, key, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
  const release = (): void => {
    for (const read of held.splice(0)) read();
  };
  return { source, release };
}

function savedOn(source: MemoryDevice, states: ChunkStates): SavedOldBytes {
  return new SavedOldBytes(source, OFFSET, CHUNK, states, new CopyPacer(REAL_CLOCK, CHUNK, 0));
}

describe('SavedOldBytes', () => {
  it('copies laid over with the saved bytes are the start() image, with room to spare', async () => {
    for (let seed = 1; seed <= 6; seed++) {
      const { refused } = await trial(seed, 64 << 20);
      expect(refused).toBe(0);
    }
  });

  it('past the limit a save is refused, the bytes held stay within it, and copies are still the start() image', async () => {
    let refused = 0;
    for (let seed = 11; seed <= 16; seed++) refused += (await trial(seed, 6 * CELL_BYTES)).refused;
    expect(refused).toBeGreaterThan(0);
  });

  it('a cleared store leaves its slabs to the next one, whose copies are still the start() image', async () => {
    // Each trial fills a 1 MiB slab or more with its own old bytes, then
    // leaves them to the next trial's saves.
    for (let seed = 21; seed <= 24; seed++) (await trial(seed, 64 << 20)).saved.clear();
  });

  it("a store cleared while a save's read is in flight keeps its slabs from the next store", async () => {
    const below = rng(31);
    const memory = await MemoryDevice.create({ size: OFFSET + LENGTH + 512, blockSize: 512 });
    await memory.write(OFFSET, bytesOf(LENGTH, below));
    const image = await memory.read(OFFSET, LENGTH);
    const geometry = { offset: OFFSET, length: LENGTH, chunkSize: CHUNK };
    // A job's save whose read is still in flight when the job stops.
    const { source, release } = heldReads(memory);
    const stopped = savedOn(source, new ChunkStates(geometry, CHUNKS, () => false));
    const late = stopped.save(0, CELL_BYTES);
    stopped.clear();
    // The next job saves the same bytes into its first cell, and the write goes.
    const states = new ChunkStates(geometry, CHUNKS, () => false);
    const next = savedOn(memory, states);
    expect(await next.save(0, CELL_BYTES)).toBe(true);
    await memory.write(OFFSET, bytesOf(CELL_BYTES, below));
    // The stopped job's read lands now, with the new bytes, in its own cell.
    release();
    await late;
    states.begin(0, 1, Promise.resolve());
    const run = await memory.read(OFFSET, CHUNK);
    next.restore(0, 1, 0, run);
    expectBytes('chunk 0 as copied', run, image.subarray(0, CHUNK));
  });
});
