import { crc32 } from 'node:zlib';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { crc32Combine } from '../../src/checksum/crc32-combine.js';

describe('crc32Combine', () => {
  it('equals the CRC-32 of the concatenation, for any two parts', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.uint8Array({ maxLength: 5000 }), (a, b) => {
        const whole = new Uint8Array(a.length + b.length);
        whole.set(a);
        whole.set(b, a.length);
        expect(crc32Combine(crc32(a), crc32(b), b.length)).toBe(crc32(whole) >>> 0);
      }),
      { seed: 0xc3c, numRuns: 300 },
    );
  });

  it('chains over many equal-sized blocks (how an extent CRC is built from per-block CRCs)', () => {
    const bs = 4096;
    const data = new Uint8Array(64 * bs);
    for (let i = 0; i < data.length; i++) data[i] = (i * 2654435761) >>> 24;
    let crc = crc32(data.subarray(0, bs));
    for (let at = bs; at < data.length; at += bs) {
      crc = crc32Combine(crc, crc32(data.subarray(at, at + bs)), bs);
    }
    expect(crc).toBe(crc32(data) >>> 0);
  });

  it('shifts by lengths past 2^31 bytes exactly: one 3 GiB step equals 3,072 steps of 1 MiB', () => {
    const zeroMiB = crc32(new Uint8Array(1 << 20));
    let zero3GiB = 0;
    let stepwise = 0x12345678;
    for (let i = 0; i < 3 * 1024; i++) {
      zero3GiB = crc32Combine(zero3GiB, zeroMiB, 1 << 20);
      stepwise = crc32Combine(stepwise, zeroMiB, 1 << 20);
    }
    expect(crc32Combine(0x12345678, zero3GiB, 3 * 2 ** 30)).toBe(stepwise);
    expect(crc32Combine(0x12345678, 0, 0)).toBe(0x12345678);
  });
});
