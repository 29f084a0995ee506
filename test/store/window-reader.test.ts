import { describe, expect, it } from 'vitest';
import { MemoryDevice } from '../../src/index.js';
import { WindowReader } from '../../src/store/window-reader.js';
import { CountingDevice } from '../support/counting-device.js';
import { codeOf } from '../support/error-code.js';
import { PassThroughDevice } from '../support/pass-through-device.js';

const MiB = 1 << 20;
const WINDOW = WindowReader.WINDOW;

/** A small LCG, so a failure replays. */
function lcg(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    return s;
  };
}

async function region(size: number): Promise<{ device: MemoryDevice; content: Uint8Array }> {
  const device = await MemoryDevice.create({ size, blockSize: 512 });
  const content = new Uint8Array(size);
  const next = lcg(3);
  for (let i = 0; i < size; i++) content[i] = next() & 0xff;
  await device.write(0, content);
  return { device, content };
}

/** Fails every read that reaches `from` or beyond. */
class FailingPast extends PassThroughDevice {
  constructor(
    inner: MemoryDevice,
    readonly from: number,
  ) {
    super(inner);
  }

  override read(offset: number, length: number): Promise<Uint8Array> {
    if (offset + length > this.from) return Promise.reject(new Error('bad sector'));
    return super.read(offset, length);
  }
}

describe('WindowReader (log and journal replay)', () => {
  it('returns exact bytes for a sequential scan of random-sized pieces across window boundaries', async () => {
    const { device, content } = await region(6 * MiB);
    const begin = 4096;
    const end = 6 * MiB - 512;
    for (const seed of [1, 2, 3]) {
      const reader = new WindowReader(device, begin, end);
      const next = lcg(seed);
      let pos = begin;
      while (pos < end) {
        // Mostly small pieces (records), now and then one larger than a window.
        const want = next() % 50 === 0 ? WINDOW + (next() % WINDOW) : 1 + (next() % 70_000);
        const length = Math.min(want, end - pos);
        const cached = reader.cached(pos, length);
        const bytes = cached ?? (await reader.read(pos, length));
        expect(Buffer.compare(bytes, content.subarray(pos, pos + length)), `at ${pos}`).toBe(0);
        pos += length;
      }
    }
  });

  it('reads each window once on a sequential scan, one window ahead of the caller', async () => {
    const { device, content } = await region(4 * MiB);
    const counting = new CountingDevice(device);
    const reader = new WindowReader(counting, 0, 4 * MiB);
    for (let pos = 0; pos < 4 * MiB; pos += 4096) {
      const bytes = reader.cached(pos, 4096) ?? (await reader.read(pos, 4096));
      expect(bytes[0]).toBe(content[pos]);
      // The window after the current one is asked for as soon as this one is in.
      expect(counting.reads).toBe(Math.min(4, Math.floor(pos / WINDOW) + 2));
    }
    expect(counting.reads).toBe(4);
  });

  it('serves a jump backwards or far ahead with a fresh window, exactly', async () => {
    const { device, content } = await region(8 * MiB);
    const reader = new WindowReader(device, 0, 8 * MiB);
    for (const [pos, length] of [
      [100, 5000],
      [6 * MiB + 7, 3000],
      [WINDOW - 10, 20],
      [512, 512],
      [3 * MiB - 1, 2],
    ] as const) {
      const bytes = await reader.read(pos, length);
      expect(Buffer.compare(bytes, content.subarray(pos, pos + length)), `at ${pos}`).toBe(0);
    }
  });

  it('a read ahead that fails matters only to a caller that gets there', async () => {
    const { device } = await region(4 * MiB);
    // Windows from 0 and WINDOW read fine; the one read ahead from 2 × WINDOW fails.
    const failing = new FailingPast(device, 2 * WINDOW + 1);
    const reader = new WindowReader(failing, 0, 4 * MiB);
    await reader.read(0, 4096);
    await reader.read(WINDOW, 4096);
    // A scan that stops here never sees the failure (nor an unhandled rejection).
    await new Promise((resolve) => setImmediate(resolve));
    expect(await codeOf(reader.read(2 * WINDOW, 4096))).toBe('EIO');
  });
});
