import { describe, expect, it } from 'vitest';
import { BlockTable } from '../src/internal/block-table.js';

describe('BlockTable (the changes table)', () => {
  it('matches a Map through random sets, overwrites and deletes', () => {
    const table = new BlockTable(16);
    const map = new Map<number, number>();
    let seed = 7;
    const next = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed;
    };
    for (let i = 0; i < 20000; i++) {
      // Small keys collide often; a few keys beyond 2^32 exercise the high half.
      const key = i % 10 === 0 ? 2 ** 40 + (next() % 64) : next() % 3000;
      const op = next() % 3;
      if (op < 2) {
        const value = next() >>> 0;
        table.set(key, value);
        map.set(key, value);
      } else {
        expect(table.delete(key)).toBe(map.delete(key));
      }
    }
    expect(table.size).toBe(map.size);
    for (const [key, value] of map) expect(table.get(key)).toBe(value);
    expect(table.get(3001)).toBe(-1);
    const keys = [...map.keys()].sort((a, b) => a - b);
    expect([...table.sortedKeys()]).toEqual(keys);
    const copy = table.clone();
    table.delete(keys[0]!);
    expect(copy.get(keys[0]!)).toBe(map.get(keys[0]!));
  });

  it('deletes conditionally, only when the value still matches', () => {
    const table = new BlockTable();
    table.set(5, 1);
    expect(table.delete(5, 2)).toBe(false);
    expect(table.get(5)).toBe(1);
    expect(table.delete(5, 1)).toBe(true);
    expect(table.get(5)).toBe(-1);
  });

  it('holds 1 M entries in at most 32 bytes each', () => {
    const before = process.memoryUsage().arrayBuffers;
    const table = new BlockTable();
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
