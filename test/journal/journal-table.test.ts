import { describe, expect, it } from 'vitest';
import { ChangesTable } from '../../src/journal/journal-table.js';

/** A small LCG, so a failure replays. */
function lcg(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    return s;
  };
}

/** Applies random sets, overwrites and deletes to a table and a Map; checks they agree. */
function matchesMap(keyOf: (next: () => number) => number, ops: number, seed: number): void {
  const table = new ChangesTable(16);
  const map = new Map<number, number>();
  const next = lcg(seed);
  for (let i = 0; i < ops; i++) {
    const key = keyOf(next);
    const op = next() % 3;
    if (op < 2) {
      const value = next() >>> 0;
      table.set(key, value);
      map.set(key, value);
    } else if (next() % 2 === 0) {
      expect(table.delete(key)).toBe(map.delete(key));
    } else {
      // Conditional delete: only when the value still matches.
      const value = map.get(key);
      const wrong = value === undefined ? 1 : value ^ 1;
      expect(table.delete(key, wrong)).toBe(false);
      expect(table.delete(key, value)).toBe(value !== undefined && map.delete(key));
    }
  }
  expect(table.size).toBe(map.size);
  for (const [key, value] of map) expect(table.get(key)).toBe(value);
  const keys = [...map.keys()].sort((a, b) => a - b);
  expect([...table.sortedKeys()]).toEqual(keys);
  const seen = new Map<number, number>();
  table.forEach((key, value) => {
    seen.set(key, value);
  });
  expect(seen).toEqual(map);
}

describe('ChangesTable (the journal changes table)', () => {
  it('matches a Map through random sets, overwrites and deletes of scattered keys', () => {
    // Small keys collide often; a few keys beyond 2^32 exercise the high half.
    matchesMap((next) => (next() % 10 === 0 ? 2 ** 40 + (next() % 64) : next() % 3000), 20000, 7);
  });

  it('matches a Map when whole groups of adjacent blocks come and go (long clusters)', () => {
    // Runs of adjacent blocks, as multi-block writes make them, packed at a
    // high load: adjacent blocks share home slots, so clusters grow long and
    // deletion must shift entries back across groups correctly.
    matchesMap(
      (next) => {
        const run = next() % 400;
        return run * 8 + (next() % 8) + (run % 7 === 0 ? 2 ** 45 : 0);
      },
      40000,
      11,
    );
  });

  it('keeps keys up to 2^53 apart from keys that share their low 32 bits', () => {
    const table = new ChangesTable();
    const keys = [5, 2 ** 32 + 5, 2 ** 52 + 5, 2 ** 53 - 1, 2 ** 53 - 2, 0];
    for (const [i, key] of keys.entries()) table.set(key, i + 1);
    for (const [i, key] of keys.entries()) expect(table.get(key)).toBe(i + 1);
    expect(table.get(2 ** 33 + 5)).toBe(-1);
    expect(table.delete(2 ** 32 + 5)).toBe(true);
    expect(table.get(5)).toBe(1);
    expect(table.get(2 ** 52 + 5)).toBe(3);
  });

  it('clones independently', () => {
    const table = new ChangesTable();
    for (let b = 0; b < 100; b++) table.set(b, b * 2);
    const copy = table.clone();
    table.delete(10);
    table.set(11, 7);
    expect(copy.get(10)).toBe(20);
    expect(copy.get(11)).toBe(22);
    expect(copy.size).toBe(100);
    expect(table.size).toBe(99);
  });

  it('holds 1 M entries in at most 32 bytes each', () => {
    const before = process.memoryUsage().arrayBuffers;
    const table = new ChangesTable();
    const n = 1_000_000;
    // Spread like a real device's changed blocks: runs of adjacent blocks.
    for (let i = 0; i < n; i++) table.set(Math.floor(i / 16) * 97 + (i % 16), i);
    const grown = process.memoryUsage().arrayBuffers - before;
    expect(table.size).toBe(n);
    expect(table.byteLength / n).toBeLessThanOrEqual(32);
    // What the process actually holds: the table (garbage from growing may linger).
    expect(grown / n).toBeLessThanOrEqual(48);
    expect(table.get(97 * 5 + 3)).toBe(5 * 16 + 3);
  });
});
