/**
 * `runConformanceSuite`: the BlockDevice contract, one `describe` per rule
 * (docs/ARCHITECTURE.md, Layout: `testing/`). Its harness, bad-input table and
 * shared assertions are in the block-harness, block-bad-input and
 * conformance-support files beside it.
 */
import assert from 'node:assert/strict';
import type { BlockDevice } from '../device.js';
import type { BlockDeviceErrorCode } from '../errors.js';
import { badReads, badWrites, type LooseDevice } from './block-bad-input.js';
import { type Harness, type PendingWrite, withHarness } from './block-harness.js';
import { transferReadResult } from './block-ownership.js';
import { readIntoCases } from './block-read-into.js';
import {
  assertBytes,
  type DescribeFn,
  expectCode,
  type ItFn,
  pattern,
  random,
} from './conformance-support.js';

/** A device handed to the conformance suite, with what it must contain and how to dispose of it. */
export interface ConformanceSubject {
  /** The device under test, open; the suite closes it at the end of each test. */
  device: BlockDevice;
  /**
   * The device's content when handed over, exactly `device.size` bytes. For a
   * read-only device it is what every read must return. @default all zeros
   */
  expected?: Uint8Array;
  /** Called once after the device is closed, pass or fail: remove files, close origins. */
  cleanup?: () => Promise<void>;
}

/** Options for {@link runConformanceSuite}. */
export interface ConformanceOptions {
  /** The name of the outermost `describe` group, e.g. the device's class. */
  name: string;
  /**
   * Makes a fresh subject for one test. Every test calls it once, so a test
   * never sees another's writes. The device needs at least 4 blocks; keep it
   * small (64 KiB is plenty), since tests read the whole device often.
   */
  create: () => Promise<ConformanceSubject>;
  /** The test runner's `describe` (vitest, mocha, jest, `node:test`). */
  describe: DescribeFn;
  /** The test runner's `it` (or `test`). */
  it: ItFn;
}

/**
 * Registers the BlockDevice conformance suite: aligned and unaligned I/O,
 * block-boundary crossings, whole-device and zero-length I/O, `readInto`
 * (through `readInto(device, …)` where a device has no method of its own),
 * concurrent writes, buffer ownership (read results are the caller's own, safe to
 * transfer), flush, close and use after close, and the full
 * bad-input table, each bad call checked for its error code and for leaving
 * the content unchanged. On a read-only device every write test instead
 * checks that each write fails with `EROFS` and that reads still return
 * `expected`.
 *
 * It depends on no test runner: pass yours, and failures surface as
 * `node:assert` errors.
 *
 * @example
 * ```ts
 * import { describe, it } from 'vitest';
 * import { runConformanceSuite } from 'blocksnap/testing';
 *
 * runConformanceSuite({
 *   name: 'MyDevice',
 *   create: async () => ({ device: await MyDevice.create({ size: 65536 }) }),
 *   describe,
 *   it,
 * });
 * ```
 */
export function runConformanceSuite(options: ConformanceOptions): void {
  const { name, create, describe, it } = options;
  const test = (title: string, body: (h: Harness) => Promise<void>): void =>
    it(title, () => withHarness(create, body));
  // On a read-only device the same test checks every write fails with EROFS and changes nothing.
  const ro = ' (read-only: EROFS, unchanged)';

  describe(name, () => {
    describe('geometry', () => {
      test('size, blockSize and readOnly describe a valid device', async (h) => {
        const { size, blockSize, readOnly } = h.device;
        assert.equal(typeof readOnly, 'boolean', 'readOnly is a boolean');
        assert.ok(Number.isSafeInteger(blockSize), `blockSize ${blockSize} is an integer`);
        assert.ok(
          blockSize >= 512 && blockSize <= 1 << 20 && (blockSize & (blockSize - 1)) === 0,
          `blockSize ${blockSize} is a power of two from 512 to 1 MiB`,
        );
        assert.ok(Number.isSafeInteger(size) && size >= 0, `size ${size} is an integer`);
        assert.equal(size % blockSize, 0, `size ${size} is a multiple of blockSize ${blockSize}`);
        assert.equal(typeof h.device[Symbol.asyncDispose], 'function', 'has Symbol.asyncDispose');
      });
    });

    describe('read', () => {
      test('a whole-device read returns the content', async (h) => {
        await h.checkAll('whole-device read');
      });

      test('aligned reads of single blocks and block runs', async (h) => {
        const { bs, blocks } = h;
        for (const block of [0, 1, blocks >> 1, blocks - 1]) await h.checkRange(block * bs, bs);
        await h.checkRange(bs, 2 * bs);
        await h.checkRange(0, (blocks - 1) * bs);
      });

      test('unaligned reads, inside a block and across block boundaries', async (h) => {
        for (const [offset, length] of h.unalignedRanges()) await h.checkRange(offset, length);
      });

      test('zero-length reads resolve to an empty Uint8Array, also at offset == size', async (h) => {
        for (const offset of [0, 1, h.bs, h.bs + 7, h.size - 1, h.size]) {
          const got = await h.device.read(offset, 0);
          assert.ok(got instanceof Uint8Array, `read(${offset}, 0) returns a Uint8Array`);
          assert.equal(got.length, 0, `read(${offset}, 0) is empty`);
        }
      });

      test('the caller owns what read returns: mutating it changes nothing', async (h) => {
        const first = await h.device.read(0, 2 * h.bs);
        const second = await h.device.read(h.bs, h.bs);
        first.fill(0xa5);
        second.fill(0x5a);
        await h.checkAll('after mutating earlier read results');
      });

      test('concurrent reads of overlapping ranges all return the content', async (h) => {
        const ranges = [[0, h.size], ...h.unalignedRanges()] as const;
        const results = await Promise.all(ranges.map(([o, l]) => h.device.read(o, l)));
        results.forEach((got, i) => {
          const [offset, length] = ranges[i]!;
          assertBytes(
            got,
            h.expected.subarray(offset, offset + length),
            `read(${offset}, ${length})`,
          );
        });
      });
    });

    describe('readInto', () => {
      readIntoCases(test, ro);
    });

    describe('write', () => {
      test(`aligned writes read back${ro}`, async (h) => {
        const { bs, blocks } = h;
        const writes: [number, number][] = [
          [0, bs],
          [(blocks - 1) * bs, bs],
          [bs, 2 * bs],
        ];
        for (const [i, [offset, length]] of writes.entries()) {
          await h.write(offset, pattern(length, 100 + i));
          await h.checkRange(offset, length);
        }
        await h.checkAll('after aligned writes');
      });

      test(`unaligned writes, inside a block and across block boundaries${ro}`, async (h) => {
        for (const [i, [offset, length]] of h.unalignedRanges().entries()) {
          await h.write(offset, pattern(length, 200 + i));
          // A window one block wider on each side catches a read-modify-write
          // that clobbers the rest of the blocks it touches.
          const start = Math.max(0, offset - h.bs);
          await h.checkRange(start, Math.min(h.size, offset + length + h.bs) - start);
        }
        await h.checkAll('after unaligned writes');
      });

      test(`a write of the whole device, and one ending exactly at the end${ro}`, async (h) => {
        await h.write(0, pattern(h.size, 300));
        await h.checkAll('after a whole-device write');
        await h.write(h.size - h.bs - 3, pattern(h.bs + 3, 301));
        await h.write(h.size - 1, pattern(1, 302));
        await h.checkAll('after writes ending at the end');
      });

      test(`zero-length writes resolve and change nothing, also at offset == size${ro}`, async (h) => {
        for (const offset of [0, 1, h.bs, h.bs + 7, h.size - 1, h.size]) {
          await h.write(offset, new Uint8Array(0));
        }
        await h.checkAll('after zero-length writes');
      });

      test(`the caller may reuse the data buffer as soon as write() returns${ro}`, async (h) => {
        const { bs } = h;
        const ranges: [number, number][] = [
          [0, bs],
          [bs + 5, 100],
          [2 * bs - 9, bs],
        ];
        const buffers = ranges.map(([, length], i) => pattern(length, 400 + i));
        const pending = ranges.map(([offset], i) => h.write(offset, buffers[i]!));
        // Mutated before any write could have run: the device must already
        // hold its own copy (or be done with the caller's).
        for (const buffer of buffers) buffer.fill(0xee);
        await Promise.all(pending);
        await h.checkAll('after mutating the data buffers of pending writes');
      });

      test(`writes take exactly the bytes of a Uint8Array view, and accept a Buffer${ro}`, async (h) => {
        const backing = pattern(3 * h.bs, 500);
        const view = new Uint8Array(backing.buffer, 3, h.bs + 10);
        await h.write(h.bs - 5, view);
        await h.write(2 * h.bs + 1, Buffer.from(pattern(33, 501)));
        await h.checkAll('after writing a view and a Buffer');
      });

      test(`a seeded random sequence of writes and reads matches a byte array${ro}`, async (h) => {
        const next = random(600);
        const span = 3 * h.bs;
        for (let step = 0; step < 150; step++) {
          const length = next() % (span + 1);
          const offset = next() % (h.size - length + 1);
          if (next() % 3 === 0) await h.checkRange(offset, length);
          else await h.write(offset, pattern(length, 1000 + step));
        }
        await h.checkAll('after the random sequence');
      });
    });

    describe('concurrency', () => {
      test(`concurrent writes to different blocks all land${ro}`, async (h) => {
        const pending: Promise<void>[] = [];
        for (let block = 0; block < Math.min(h.blocks, 16); block++) {
          const offset = block * h.bs + (block % 2 === 0 ? 0 : 17);
          pending.push(h.write(offset, pattern(h.bs >> 1, 700 + block)));
        }
        await Promise.all(pending);
        await h.checkAll('after concurrent writes to different blocks');
      });

      test(`concurrent writes to disjoint ranges of the same blocks all land${ro}`, async (h) => {
        const { bs } = h;
        const pending: Promise<void>[] = [];
        // Eight slices of block 1, then uneven slices across blocks 2 and 3.
        for (let i = 0; i < 8; i++) {
          pending.push(h.write(bs + (i * bs) / 8, pattern(bs / 8, 800 + i)));
        }
        const cuts = [2 * bs, 2 * bs + 1, 2 * bs + 100, 3 * bs - 3, 3 * bs + 3, 4 * bs];
        for (let i = 0; i + 1 < cuts.length; i++) {
          const start = cuts[i]!;
          pending.push(h.write(start, pattern(cuts[i + 1]! - start, 850 + i)));
        }
        await Promise.all(pending);
        await h.checkAll('after concurrent writes to disjoint ranges');
      });

      test(`concurrent overlapping writes leave each block as they would in some order${ro}`, async (h) => {
        const { bs } = h;
        for (let round = 0; round < 10; round++) {
          const seed = 900 + 10 * round;
          const writes: PendingWrite[] = [
            { offset: 0, data: pattern(2 * bs, seed) },
            { offset: bs / 2, data: pattern(bs, seed + 1) },
            { offset: bs - 10, data: pattern(20, seed + 2) },
            { offset: 0, data: pattern(bs, seed + 3) },
            { offset: bs + 100, data: pattern(100, seed + 4) },
            { offset: 2 * bs, data: pattern(bs, seed + 5) },
            { offset: 2 * bs, data: pattern(bs, seed + 6) },
            { offset: 2 * bs + 7, data: pattern(300, seed + 7) },
          ];
          await h.writeConcurrently(writes);
        }
      });

      test(`a read racing a write returns, per byte, the old or the new value${ro}`, async (h) => {
        const { bs } = h;
        for (let round = 0; round < 10; round++) {
          const offset = bs + (round % 2 === 0 ? 0 : 100);
          const data = pattern(round % 2 === 0 ? 2 * bs : 300, 950 + round);
          const before = h.expected.slice(0, 4 * bs);
          const earlyRead = h.device.read(0, 4 * bs);
          const write = h.write(offset, data);
          const lateRead = h.device.read(0, 4 * bs);
          await write;
          const after = h.expected.slice(0, 4 * bs);
          for (const [what, got] of [
            ['read called before the write', await earlyRead],
            ['read called after the write', await lateRead],
          ] as const) {
            assert.ok(got instanceof Uint8Array && got.length === 4 * bs, `${what}: length`);
            for (let i = 0; i < got.length; i++) {
              if (got[i] !== before[i] && got[i] !== after[i]) {
                assert.fail(
                  `${what}: byte ${i} is ${got[i]}, neither old ${before[i]} nor new ${after[i]}`,
                );
              }
            }
          }
        }
        await h.checkAll('after reads racing writes');
      });
    });

    describe('flush and close', () => {
      test(`flush resolves, with and without writes in flight${ro}`, async (h) => {
        await h.device.flush();
        const write = h.write(h.bs + 3, pattern(h.bs, 1100));
        await h.device.flush();
        await write;
        await Promise.all([h.device.flush(), h.device.flush()]);
        await h.checkAll('after flushes');
      });

      test('close resolves and is idempotent, repeated or concurrent', async (h) => {
        await Promise.all([h.device.close(), h.device.close()]);
        await h.device.close();
      });

      test('after close, read, write and flush reject with ECLOSED', async (h) => {
        await h.device.close();
        const writeCodes: BlockDeviceErrorCode[] = h.readOnly ? ['ECLOSED', 'EROFS'] : ['ECLOSED'];
        await expectCode(() => h.device.read(0, h.bs), ['ECLOSED'], 'read after close');
        await expectCode(() => h.device.read(0, 0), ['ECLOSED'], 'zero-length read after close');
        await expectCode(
          () => h.device.write(0, pattern(h.bs, 1200)),
          writeCodes,
          'write after close',
        );
        await expectCode(
          () => h.device.write(0, new Uint8Array(0)),
          writeCodes,
          'zero-length write after close',
        );
        await expectCode(() => h.device.flush(), ['ECLOSED'], 'flush after close');
        await h.device.close();
      });

      test(`I/O called before close() completes normally${ro}`, async (h) => {
        const write = h.write(h.bs, pattern(h.bs, 1300));
        const read = h.device.read(2 * h.bs, h.bs);
        const closing = h.device.close();
        await write;
        assertBytes(
          await read,
          h.expected.subarray(2 * h.bs, 3 * h.bs),
          'read called before close',
        );
        await closing;
      });

      test('Symbol.asyncDispose closes the device', async (h) => {
        await h.device[Symbol.asyncDispose]();
        await expectCode(() => h.device.read(0, h.bs), ['ECLOSED'], 'read after asyncDispose');
      });
    });

    describe('bad input: the right code, and nothing changes', () => {
      for (const bad of badReads) {
        test(`read(${bad.title}) rejects with ${bad.code}`, async (h) => {
          const [offset, length] = bad.args(h.size, h.bs);
          const loose = h.device as unknown as LooseDevice;
          await h.checkAll('before the bad read');
          await expectCode(() => loose.read(offset, length), [bad.code], `read(${bad.title})`);
          await h.checkAll(`after read(${bad.title})`);
        });
      }
      for (const bad of badWrites) {
        test(`write(${bad.title}) rejects with ${bad.code}`, async (h) => {
          const [offset, data] = bad.args(h.size, h.bs, h.expected);
          const loose = h.device as unknown as LooseDevice;
          // A read-only device may refuse any write before looking at it.
          const codes: BlockDeviceErrorCode[] = h.readOnly ? [bad.code, 'EROFS'] : [bad.code];
          await h.checkAll('before the bad write');
          await expectCode(() => loose.write(offset, data), codes, `write(${bad.title})`);
          await h.checkAll(`after write(${bad.title})`);
        });
      }
    });

    // BlockDevice.read: a result is the caller's whole, so transferring its
    // buffer to a worker (which detaches it here) must break nothing else.
    describe('read results own their buffers', () => {
      test(`a transferred read result breaks no other read or write${ro}`, transferReadResult);
    });
  });
}
