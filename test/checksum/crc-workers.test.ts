import { afterEach, describe, expect, it } from 'vitest';
import { CrcWorkers, checksum } from '../../src/checksum/index.js';
import { lcg } from '../support/region-devices.js';

/** A shared buffer of seeded bytes, cut into `count` ranges of 4 KiB with their CRC-32s. */
function sharedRanges(count: number, seed: number): { data: Uint8Array; crcs: number[] } {
  const data = new Uint8Array(new SharedArrayBuffer(count * 4096 + 512)).subarray(512);
  const next = lcg(seed);
  for (let i = 0; i < data.length; i++) data[i] = next() & 0xff;
  const crcs: number[] = [];
  for (let i = 0; i < count; i++) crcs.push(checksum(data.subarray(i * 4096, (i + 1) * 4096)));
  return { data, crcs };
}

describe('CrcWorkers', () => {
  let pool: CrcWorkers | undefined;
  afterEach(() => {
    pool?.close();
    pool = undefined;
  });

  it('gives a worker verdict the caller never checked: the first failing range, or none', async () => {
    pool = CrcWorkers.start(1)!;
    expect(pool).toBeDefined();
    const { data, crcs } = sharedRanges(200, 1);
    for (const damaged of [undefined, 0, 37, 38, 199]) {
      const batch = pool.batch(data);
      for (let i = 0; i < crcs.length; i++) {
        // A wrong expected CRC stands for a damaged range.
        batch.add(i * 4096, 4096, i === damaged || i === 150 ? crcs[i]! ^ 1 : crcs[i]!);
      }
      batch.submit();
      // `false`: the caller claims nothing, so every range is the worker's.
      const verdict = await batch.finish(false);
      expect(batch.byWorker, 'judged by the worker').toBe(true);
      expect(verdict, `damaged ${damaged}`).toBe(Math.min(damaged ?? 150, 150));
    }
  });

  it('splits a batch between caller and workers with the same verdict, batch after batch in reused slots', async () => {
    pool = CrcWorkers.start(2)!;
    const { data, crcs } = sharedRanges(512, 2);
    const next = lcg(3);
    for (let round = 0; round < 40; round++) {
      const damaged = next() % 3 === 0 ? undefined : next() % crcs.length;
      const batch = pool.batch(data);
      for (let i = 0; i < crcs.length; i++)
        batch.add(i * 4096, 4096, i === damaged ? ~crcs[i]! : crcs[i]!);
      batch.submit();
      if (round % 2 === 1) await new Promise((resolve) => setImmediate(resolve));
      expect(await batch.finish(), `round ${round}`).toBe(damaged ?? -1);
    }
  });

  it('finishes on the caller when the workers are gone', async () => {
    pool = CrcWorkers.start(1)!;
    const { data, crcs } = sharedRanges(64, 4);
    const batch = pool.batch(data);
    for (let i = 0; i < crcs.length; i++) batch.add(i * 4096, 4096, i === 9 ? ~crcs[i]! : crcs[i]!);
    batch.submit();
    const verdict = batch.finish(false);
    pool.close();
    expect(await verdict).toBe(9);
    expect(batch.byWorker).toBe(false);
  });

  it('takes only views of shared memory, and ranges inside them', () => {
    pool = CrcWorkers.start(1)!;
    expect(() => pool!.batch(new Uint8Array(4096))).toThrow(TypeError);
    const batch = pool.batch(new Uint8Array(new SharedArrayBuffer(4096)));
    expect(() => batch.add(4000, 512, 0)).toThrow(RangeError);
  });
});
