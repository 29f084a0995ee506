import { describe, expect, it } from 'vitest';
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

async function trial(seed: number, limit: number): Promise<{ refused: number; saves: number }> {
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
  return { refused, saves };
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
});
