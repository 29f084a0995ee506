import { execFileSync } from 'node:child_process';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FLETCHER4_BYTES, fletcher4, fletcher4Portable } from '../../src/checksum/fletcher4.js';

const MASK = (1n << 64n) - 1n;

/** Fletcher-4 as ZFS defines it, one word at a time in BigInt: the reference both implementations answer to. */
function reference(bytes: Uint8Array): Uint8Array {
  let a = 0n;
  let b = 0n;
  let c = 0n;
  let d = 0n;
  for (let i = 0; i < bytes.length; i += 4) {
    let w = 0n;
    for (let j = Math.min(bytes.length, i + 4) - 1; j >= i; j--) w = (w << 8n) | BigInt(bytes[j]!);
    a = (a + w) & MASK;
    b = (b + a) & MASK;
    c = (c + b) & MASK;
    d = (d + c) & MASK;
  }
  const out = new Uint8Array(FLETCHER4_BYTES);
  const view = new DataView(out.buffer);
  for (const [i, sum] of [a, b, c, d].entries()) view.setBigUint64(i * 8, sum, true);
  return out;
}

function pseudoRandom(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = s >>> 24;
  }
  return out;
}

/** `bytes` with bit `bit` of the little-endian u32 word `word` flipped. */
function flipped(bytes: Uint8Array, flips: readonly { word: number; bit: number }[]): Uint8Array {
  const out = bytes.slice();
  for (const { word, bit } of flips) out[word * 4 + (bit >>> 3)]! ^= 1 << (bit & 7);
  return out;
}

describe('fletcher4', () => {
  it('equals the one-word-at-a-time definition for any length, alignment and content (the SIMD lanes fold back exactly)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 3 * 65536 + 40 }),
        fc.integer({ min: 0, max: 7 }),
        fc.integer(),
        (length, skew, seed) => {
          // A view at an odd offset: the words are read little-endian wherever the bytes sit.
          const bytes = pseudoRandom(length + skew, seed).subarray(skew);
          const expected = reference(bytes);
          expect(fletcher4(bytes)).toEqual(expected);
          expect(fletcher4Portable(bytes)).toEqual(expected);
        },
      ),
      { seed: 0xf1e7, numRuns: 60 },
    );
  });

  it('is exact where the sums wrap past 2^64: all-ones words, 1 MiB', () => {
    const ones = new Uint8Array(1 << 20).fill(0xff);
    const expected = reference(ones);
    expect(new DataView(expected.buffer).getBigUint64(24, true)).not.toBe(0n);
    expect(fletcher4(ones)).toEqual(expected);
    expect(fletcher4Portable(ones)).toEqual(expected);
  });

  it('writes into a caller’s buffer at an offset and leaves the bytes around it alone', () => {
    const data = pseudoRandom(5000, 9);
    const out = new Uint8Array(FLETCHER4_BYTES + 10).fill(0xee);
    expect(fletcher4(data, out, 5)).toBe(out);
    expect(out.subarray(5, 5 + FLETCHER4_BYTES)).toEqual(reference(data));
    expect([...out.subarray(0, 5), ...out.subarray(5 + FLETCHER4_BYTES)]).toEqual(
      new Array(10).fill(0xee),
    );
  });

  it('gives the same sums without WebAssembly (node --jitless)', () => {
    const script = [
      "import { fletcher4 } from './src/checksum/fletcher4.ts';",
      'const bytes = new Uint8Array(70001).map((_, i) => (i * 2654435761) >>> 24);',
      "process.stdout.write(JSON.stringify({ wasm: typeof WebAssembly, sum: Buffer.from(fletcher4(bytes)).toString('hex') }));",
    ].join('\n');
    const output = execFileSync(
      process.execPath,
      ['--jitless', '--import', 'tsx', '--input-type=module', '-e', script],
      // Its stderr holds V8's note that --jitless turned WebAssembly off.
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const { wasm, sum } = JSON.parse(output) as { wasm: string; sum: string };
    expect(wasm).toBe('undefined');
    const bytes = new Uint8Array(70001).map((_, i) => (i * 2654435761) >>> 24);
    expect(sum).toBe(Buffer.from(reference(bytes)).toString('hex'));
  });

  it('catches every change of up to three flipped bits in a 1 MiB frame (CRC-32 guarantees two at this length)', () => {
    const frame = pseudoRandom(1 << 20, 77);
    const words = frame.length / 4;
    const sum = fletcher4(frame);
    const flip = fc.record({ word: fc.integer({ min: 0, max: words - 1 }), bit: fc.nat(31) });
    fc.assert(
      fc.property(
        fc.uniqueArray(flip, {
          minLength: 1,
          maxLength: 3,
          selector: (f) => f.word * 32 + f.bit,
        }),
        (flips) => {
          expect(fletcher4(flipped(frame, flips))).not.toEqual(sum);
        },
      ),
      { seed: 0xb17, numRuns: 200 },
    );
    // The three-bit pattern the sums are weakest against (see below), at the
    // widest spacing a 1 MiB frame holds: still caught.
    const k = words / 2;
    const d = words / 2 - 1;
    const widest = [
      { word: k - d, bit: 30 },
      { word: k, bit: 31 },
      { word: k + d, bit: 30 },
    ];
    const base = frame.slice();
    const view = new DataView(base.buffer);
    for (const { word, bit } of widest) {
      const w = view.getUint32(word * 4, true);
      view.setUint32(word * 4, bit === 31 ? w | 0x80000000 : w & ~0x40000000, true);
    }
    expect(fletcher4(flipped(base, widest))).not.toEqual(fletcher4(base));
  });

  it('catches any change to two words however far apart, so any burst of up to 33 bits', () => {
    const frame = pseudoRandom(1 << 20, 78);
    const words = frame.length / 4;
    const sum = fletcher4(frame);
    const view = new DataView(frame.buffer);
    // Two words given any other values; the hardest case, opposite changes
    // that leave the first sum as it was, is drawn half the time.
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: words - 2 }),
        fc.integer({ min: 1, max: words - 1 }),
        fc.integer({ min: 1, max: 2 ** 32 - 1 }),
        fc.integer({ min: 0, max: 2 ** 32 - 1 }),
        fc.boolean(),
        (i, gap, newI, newJ, cancelling) => {
          const j = Math.min(words - 1, i + gap);
          const damaged = frame.slice();
          const dv = new DataView(damaged.buffer);
          const oldI = view.getUint32(i * 4, true);
          const wi = (oldI + newI) >>> 0;
          dv.setUint32(i * 4, wi, true);
          const delta = wi - oldI;
          const oldJ = view.getUint32(j * 4, true);
          const wj = cancelling ? oldJ - delta : newJ;
          fc.pre(wj >= 0 && wj < 2 ** 32);
          dv.setUint32(j * 4, wj, true);
          expect(fletcher4(damaged)).not.toEqual(sum);
        },
      ),
      { seed: 0x2a0d, numRuns: 200 },
    );
    // Bursts: the first and last bit of a window of up to 33 flipped, any in between.
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: frame.length * 8 - 33 }),
        fc.integer({ min: 1, max: 33 }),
        fc.integer({ min: 0, max: 2 ** 31 - 1 }),
        (start, span, inner) => {
          const damaged = frame.slice();
          for (let k = 0; k < span; k++) {
            if (k === 0 || k === span - 1 || (inner >>> (k % 31)) & 1) {
              const bit = start + k;
              damaged[bit >>> 3]! ^= 1 << (bit & 7);
            }
          }
          expect(fletcher4(damaged)).not.toEqual(sum);
        },
      ),
      { seed: 0xb025, numRuns: 200 },
    );
  });

  it('misses three flipped bits 2^17 words apart once a frame is over 1 MiB — why a stream’s frames are at most 1 MiB', () => {
    // +2^30 at words k - d and k + d, -2^31 at word k: the first two sums
    // cancel exactly, the last two change by 2^30 d^2 (times p + 1), a
    // multiple of 2^64 when d = 2^17. A frame of 2^18 + 1 words has room.
    const words = 2 ** 18 + 1;
    const d = 2 ** 17;
    const k = d;
    const data = pseudoRandom(words * 4, 5);
    const view = new DataView(data.buffer);
    view.setUint32((k - d) * 4, view.getUint32((k - d) * 4, true) & ~0x40000000, true);
    view.setUint32((k + d) * 4, view.getUint32((k + d) * 4, true) & ~0x40000000, true);
    view.setUint32(k * 4, view.getUint32(k * 4, true) | 0x80000000, true);
    const damaged = flipped(data, [
      { word: k - d, bit: 30 },
      { word: k, bit: 31 },
      { word: k + d, bit: 30 },
    ]);
    expect(damaged).not.toEqual(data);
    expect(fletcher4(damaged)).toEqual(fletcher4(data));
  });

  it('the committed module is what fletcher4.wat assembles to', () => {
    execFileSync(process.execPath, ['scripts/build-wasm.mjs', '--check'], { encoding: 'utf8' });
  });
});
