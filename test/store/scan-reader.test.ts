import { describe, expect, it } from 'vitest';
import type { MemoryDevice } from '../../src/index.js';
import { ScanReader } from '../../src/store/scan-reader.js';
import { codeOf } from '../support/error-code.js';
import { PassThroughDevice } from '../support/pass-through-device.js';
import { FailingPast, lcg, randomRegion } from '../support/region-devices.js';

const MiB = 1 << 20;
const WINDOW = ScanReader.WINDOW;

/**
 * Reads into the caller's buffer (`readInto`) a few macrotasks late, so reads
 * ahead are still in flight while the scan checks its views: a buffer reused
 * too early would have its bytes overwritten under the caller.
 */
class SlowIntoDevice extends PassThroughDevice {
  intoReads = 0;
  /** Every buffer `readInto` was given, by identity of its ArrayBuffer. */
  readonly buffers = new Set<ArrayBufferLike>();
  constructor(private readonly memory: MemoryDevice) {
    super(memory);
  }

  async readInto(offset: number, buffer: Uint8Array): Promise<Uint8Array> {
    this.intoReads++;
    this.buffers.add(buffer.buffer);
    const bytes = await this.memory.read(offset, buffer.length);
    for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve));
    buffer.set(bytes);
    return buffer;
  }
}

describe('ScanReader (journal replay)', () => {
  it('returns exact bytes for a scan of random-sized pieces across windows, checked before the next call', async () => {
    const { device, content } = await randomRegion(14 * MiB);
    const begin = 4096;
    const end = 14 * MiB - 512;
    for (const store of [new SlowIntoDevice(device), new PassThroughDevice(device)]) {
      for (const seed of [1, 2]) {
        const reader = new ScanReader(store, begin, end);
        const next = lcg(seed);
        let pos = begin;
        while (pos < end) {
          // Mostly records, now and then a piece longer than a window.
          const want = next() % 60 === 0 ? WINDOW + (next() % WINDOW) : 1 + (next() % 70_000);
          const length = Math.min(want, end - pos);
          const bytes = reader.cached(pos, length) ?? (await reader.read(pos, length));
          // Checked only after a macrotask: reads ahead landed meanwhile.
          await new Promise((resolve) => setImmediate(resolve));
          expect(Buffer.compare(bytes, content.subarray(pos, pos + length)), `at ${pos}`).toBe(0);
          pos += length;
        }
      }
    }
  });

  it('reads ahead of the caller into a few buffers it reuses, each window once', async () => {
    const { device } = await randomRegion(40 * MiB);
    const store = new SlowIntoDevice(device);
    const reader = new ScanReader(store, 0, 40 * MiB);
    for (let pos = 0; pos < 40 * MiB; pos += 64 << 10) {
      await reader.read(pos, 64 << 10);
      // The windows after the current one are asked for as soon as it is in.
      expect(store.intoReads).toBe(Math.min(10, Math.floor(pos / WINDOW) + 1 + ScanReader.AHEAD));
    }
    expect(store.intoReads).toBe(10);
    expect(store.buffers.size).toBeLessThanOrEqual(ScanReader.AHEAD + 2);
  });

  it('takes buffers no larger than a region smaller than a window', async () => {
    const { device, content } = await randomRegion(MiB);
    const store = new SlowIntoDevice(device);
    const reader = new ScanReader(store, 8192, 8192 + 64 * 1024);
    const bytes = await reader.read(8192 + 512, 4096);
    expect(Buffer.compare(bytes, content.subarray(8192 + 512, 8192 + 512 + 4096))).toBe(0);
    for (const buffer of store.buffers) expect(buffer.byteLength).toBe(64 * 1024);
  });

  it('serves jumps backwards and far ahead exactly', async () => {
    const { device, content } = await randomRegion(12 * MiB);
    const reader = new ScanReader(new SlowIntoDevice(device), 0, 12 * MiB);
    for (const [pos, length] of [
      [100, 5000],
      [10 * MiB + 7, 3000],
      [WINDOW - 10, 20],
      [512, 512],
      [3 * MiB - 1, 2 * WINDOW],
    ] as const) {
      const bytes = await reader.read(pos, length);
      expect(Buffer.compare(bytes, content.subarray(pos, pos + length)), `at ${pos}`).toBe(0);
    }
  });

  it('refuses a piece outside its region', async () => {
    const { device } = await randomRegion(MiB);
    const reader = new ScanReader(device, 512, MiB - 512);
    await expect(reader.read(0, 512)).rejects.toThrow(RangeError);
    await expect(reader.read(MiB - 1024, 1024)).rejects.toThrow(RangeError);
  });

  it('a read ahead that fails matters only to a caller that gets there', async () => {
    const { device } = await randomRegion(16 * MiB);
    // Windows from 0 and WINDOW read fine; the one read ahead from 2 × WINDOW fails.
    const failing = new FailingPast(device, 2 * WINDOW + 1);
    const reader = new ScanReader(failing, 0, 16 * MiB);
    await reader.read(0, 4096);
    await reader.read(WINDOW, 4096);
    // A scan that stops here never sees the failure (nor an unhandled rejection).
    await new Promise((resolve) => setImmediate(resolve));
    expect(await codeOf(reader.read(2 * WINDOW, 4096))).toBe('EIO');
    // The reader is still usable before the damage.
    expect((await reader.read(0, 4096)).length).toBe(4096);
  });

  it('keeps a held shared window as read while the scan goes on, and reuses its buffer once released', async () => {
    const { device, content } = await randomRegion(40 * MiB);
    const store = new SlowIntoDevice(device);
    const reader = new ScanReader(store, 0, 40 * MiB, { shared: true });
    await reader.read(0, 4096);
    await reader.read(WINDOW + 100, 4096);
    const held = reader.sharedWindow(WINDOW + 100, 4096)!;
    expect(held.start).toBe(WINDOW);
    expect(held.data.buffer).toBeInstanceOf(SharedArrayBuffer);
    const release = held.hold();
    // Past the window: without the hold its buffer would take a later window.
    for (let pos = 2 * WINDOW; pos < 9 * WINDOW; pos += 256 << 10) await reader.read(pos, 4096);
    await new Promise((resolve) => setImmediate(resolve));
    expect(Buffer.compare(held.data, content.subarray(WINDOW, 2 * WINDOW))).toBe(0);
    const buffers = store.buffers.size;
    release();
    release();
    for (let pos = 9 * WINDOW; pos < 40 * MiB; pos += 256 << 10) await reader.read(pos, 4096);
    // The released buffer went back to the spares: no new one was needed.
    expect(store.buffers.size).toBe(buffers);
    // A window the scan is not in, or a region it does not hold whole, is not handed out.
    expect(reader.sharedWindow(0, 4096)).toBeUndefined();
    expect(new ScanReader(store, 0, 40 * MiB).sharedWindow(0, 1)).toBeUndefined();
  });
});
