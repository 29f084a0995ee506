import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { XorDevice } from '../../examples/devices/xor-device.js';
import { AbstractBlockDevice, BlockDeviceError, MemoryDevice } from '../../src/index.js';
import { runConformanceSuite } from '../../src/testing/index.js';
import { codeOf } from '../support/error-code.js';

/*
 * The subclassing contract of AbstractBlockDevice, seen from a user's device:
 * everything here is written against the public surface only (src/index.ts
 * and blocksnap/testing), as a user's code would be.
 */

const KiB = 1024;

// The README's example device ("Writing your own device"), run through the suite.
runConformanceSuite({
  name: 'XorDevice (the README example) over a MemoryDevice',
  create: async () => ({
    device: new XorDevice(await MemoryDevice.create({ size: 64 * KiB }), 0x5a),
    // The zeros below read as the key.
    expected: new Uint8Array(64 * KiB).fill(0x5a),
  }),
  describe,
  it,
});

runConformanceSuite({
  name: 'XorDevice over a read-only MemoryDevice',
  create: async () => ({
    device: new XorDevice(await MemoryDevice.create({ size: 64 * KiB, readOnly: true }), 0xa5),
    expected: new Uint8Array(64 * KiB).fill(0xa5),
  }),
  describe,
  it,
});

describe('the README shows the example device as it is', () => {
  it('README.md holds XorDevice, from its class line to the end of its file, verbatim', () => {
    const source = readFileSync(
      new URL('../../examples/devices/xor-device.ts', import.meta.url),
      'utf8',
    );
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    const code = source.slice(source.indexOf('export class XorDevice'));
    expect(code.length).toBeGreaterThan(1000);
    expect(readme).toContain(code);
  });
});

/** One call of a hook, held until the test settles it. */
interface HookCall {
  hook: '_read' | '_write' | '_flush' | '_close';
  offset?: number | undefined;
  length?: number | undefined;
  resolve(): void;
  reject(err: Error): void;
}

/**
 * A user's device whose hooks record each call and settle only when the
 * test says so: the I/O of a real device in flight, held.
 */
class HeldDevice extends AbstractBlockDevice {
  readonly calls: HookCall[] = [];
  /** Make the next `_read` throw instead of returning a promise. */
  throwOnRead = false;

  constructor(options: { size?: number; readOnly?: boolean } = {}) {
    super('HeldDevice', options.size ?? 64 * KiB, 4096, options.readOnly ?? false);
  }

  #held<T>(hook: HookCall['hook'], value: T, offset?: number, length?: number): Promise<T> {
    return new Promise((resolve, reject) => {
      this.calls.push({ hook, offset, length, resolve: () => resolve(value), reject });
    });
  }

  protected _read(offset: number, length: number): Promise<Uint8Array> {
    if (this.throwOnRead) throw new BlockDeviceError('EIO', 'HeldDevice: read threw');
    return this.#held('_read', new Uint8Array(length), offset, length);
  }

  protected _write(offset: number, data: Uint8Array): Promise<void> {
    return this.#held('_write', undefined, offset, data.length);
  }

  protected _flush(): Promise<void> {
    return this.#held('_flush', undefined);
  }

  protected _close(): Promise<void> {
    return this.#held('_close', undefined);
  }

  /** None of the in-flight machinery is part of the subclass API (checked by `tsc`). */
  machineryIsOutOfReach(): void {
    // @ts-expect-error a subclass cannot opt out of the base class's counting
    void this.tracksOwnIO;
    // @ts-expect-error nor count an operation itself
    this.opStarted();
    // @ts-expect-error nor settle one
    this.opSettled();
    // @ts-expect-error nor track one
    void this.track(Promise.resolve());
    // @ts-expect-error nor wait for them
    void this.drain();
  }
}

/** Lets the event loop run long enough for anything not held to settle. */
const settle = () => new Promise((resolve) => setTimeout(resolve, 10));

describe('AbstractBlockDevice: a user device', () => {
  it('close waits for every read, write and flush in flight, then flushes, then closes', async () => {
    const device = new HeldDevice();
    let settledOps = 0;
    const count = () => {
      settledOps++;
    };
    const ops = [
      device.read(0, 4096),
      device.write(4096, new Uint8Array(100).fill(1)),
      device.flush(),
      device.read(8192, 10),
    ].map((op) => op.then(count, count));
    expect(device.calls.map((c) => c.hook)).toEqual(['_read', '_write', '_flush', '_read']);

    let closed = false;
    const closing = device.close().then(() => {
      closed = true;
    });
    // Settle them one by one, the last (a write) failing: close waits for every one.
    const inFlight = device.calls.slice();
    for (const call of inFlight.slice(0, -1)) {
      await settle();
      expect(closed).toBe(false);
      expect(device.calls).toHaveLength(4);
      call.resolve();
    }
    await settle();
    expect(closed, 'close finished with a read still in flight').toBe(false);
    expect(device.calls).toHaveLength(4);
    inFlight[3]!.reject(new BlockDeviceError('EIO', 'read failed'));

    // Only now: the final flush, and after it the close.
    await settle();
    expect(device.calls.map((c) => c.hook).slice(4)).toEqual(['_flush']);
    device.calls[4]!.resolve();
    await settle();
    expect(device.calls.map((c) => c.hook).slice(4)).toEqual(['_flush', '_close']);
    expect(closed).toBe(false);
    device.calls[5]!.resolve();
    await closing;
    await Promise.all(ops);
    expect(settledOps).toBe(4);
  });

  it('close runs _flush and _close once, however often it is called', async () => {
    const device = new HeldDevice();
    const first = device.close();
    const second = device.close();
    expect(second).toBe(first);
    await settle();
    device.calls[0]!.resolve();
    await settle();
    device.calls[1]!.resolve();
    await Promise.all([first, second, device.close()]);
    expect(device.calls.map((c) => c.hook)).toEqual(['_flush', '_close']);
  });

  it('bad arguments, a closed device and a read-only one never reach _read or _write', async () => {
    const device = new HeldDevice({ size: 64 * KiB });
    const data = new Uint8Array(16);
    const refused: [string, () => Promise<unknown>, string][] = [
      ['negative offset', () => device.read(-1, 10), 'ERANGE'],
      ['fractional offset', () => device.read(0.5, 10), 'ERANGE'],
      ['NaN length', () => device.read(0, Number.NaN), 'ERANGE'],
      ['past the end', () => device.read(64 * KiB - 4, 5), 'ERANGE'],
      ['offset past the end', () => device.read(64 * KiB + 1, 0), 'ERANGE'],
      ['a string offset', () => device.read('0' as unknown as number, 1), 'EINVAL'],
      ['write past the end', () => device.write(64 * KiB - 8, data), 'ERANGE'],
      ['write of a string', () => device.write(0, 'abc' as unknown as Uint8Array), 'EINVAL'],
      ['write of an array', () => device.write(0, [1, 2] as unknown as Uint8Array), 'EINVAL'],
      ['write of null', () => device.write(0, null as unknown as Uint8Array), 'EINVAL'],
    ];
    for (const [what, call, code] of refused) {
      const op = call();
      expect(op, what).toBeInstanceOf(Promise);
      expect(await codeOf(op), what).toBe(code);
    }
    // Zero-length I/O is answered without the hooks.
    expect(await device.read(64 * KiB, 0)).toEqual(new Uint8Array(0));
    await device.write(64 * KiB, new Uint8Array(0));
    expect(device.calls).toEqual([]);

    const readOnly = new HeldDevice({ readOnly: true });
    expect(await codeOf(readOnly.write(0, data))).toBe('EROFS');
    expect(readOnly.calls).toEqual([]);

    const closing = device.close();
    expect(await codeOf(device.read(0, 10))).toBe('ECLOSED');
    expect(await codeOf(device.write(0, data))).toBe('ECLOSED');
    expect(await codeOf(device.flush())).toBe('ECLOSED');
    expect(device.calls.map((c) => c.hook)).toEqual(['_flush']);
    device.calls[0]!.resolve();
    await settle();
    device.calls[1]!.resolve();
    await closing;
  });

  it('a hook that throws instead of rejecting makes a rejected promise, and close still works', async () => {
    const device = new HeldDevice();
    device.throwOnRead = true;
    let op: Promise<Uint8Array> | undefined;
    expect(() => {
      op = device.read(0, 10);
    }).not.toThrow();
    expect(await codeOf(op!)).toBe('EIO');
    // Nothing was left counted in flight: close goes straight to its flush.
    const closing = device.close();
    await settle();
    expect(device.calls.map((c) => c.hook)).toEqual(['_flush']);
    device.calls[0]!.resolve();
    await settle();
    device.calls[1]!.resolve();
    await closing;
  });
});
