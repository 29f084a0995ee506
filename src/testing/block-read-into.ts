/**
 * The block-device suite's `readInto` cases (BlockDevice.readInto): the
 * bytes `read` returns, into the caller's buffer — a view of a larger one
 * included, whose other bytes stay as they were — and bad input or a closed
 * device rejected with the target untouched. A device without `readInto`
 * runs them through the `readInto(device, …)` function's fallback.
 */
import assert from 'node:assert/strict';
import { readInto } from '../base/index.js';
import type { BlockDeviceErrorCode } from '../errors.js';
import { badReads } from './block-bad-input.js';
import type { Harness } from './block-harness.js';
import { assertBytes, expectCode, pattern, random } from './conformance-support.js';

/** What a target holds before a read that must not touch it. */
const SENTINEL = 0xee;

/** Registers the cases, one `test` each. */
export function readIntoCases(
  test: (title: string, body: (h: Harness) => Promise<void>) => void,
  ro: string,
): void {
  test('readInto is a method, if the device has one', async (h) => {
    const method = (h.device as { readInto?: unknown }).readInto;
    assert.ok(
      method === undefined || typeof method === 'function',
      `readInto is a function or absent, got ${typeof method}`,
    );
  });

  test('readInto fills the target with the bytes read returns, and resolves with it', async (h) => {
    const { bs, size } = h;
    const next = random(1500);
    const ranges: [number, number][] = [
      [0, size],
      [0, bs],
      [size - bs, bs],
      ...h.unalignedRanges(),
      ...Array.from({ length: 40 }, (): [number, number] => {
        const length = 1 + (next() % (3 * bs));
        return [next() % (size - length + 1), length];
      }),
    ];
    for (const [offset, length] of ranges) {
      const target = new Uint8Array(length).fill(SENTINEL);
      const got = await readInto(h.device, offset, target);
      assert.equal(got, target, `readInto(${offset}, ${length} bytes) resolves with the target`);
      const expected = h.expected.subarray(offset, offset + length);
      assertBytes(target, expected, `readInto(${offset}, ${length} bytes)`);
      assertBytes(await h.device.read(offset, length), expected, `read(${offset}, ${length})`);
    }
  });

  test('readInto a view writes only the view’s bytes, and a Buffer works', async (h) => {
    const { bs } = h;
    const backing = new Uint8Array(4 * bs).fill(SENTINEL);
    for (const [start, offset, length] of [
      [3, bs - 5, bs + 10],
      [bs, 0, bs],
      [2 * bs + 1, 7, 1],
    ] as const) {
      const view = backing.subarray(start, start + length);
      backing.fill(SENTINEL);
      const got = await readInto(h.device, offset, view);
      assert.equal(got, view, 'resolves with the view itself');
      assertBytes(view, h.expected.subarray(offset, offset + length), `view at ${start}`);
      const outside = [...backing.subarray(0, start), ...backing.subarray(start + length)];
      assert.ok(
        outside.every((b) => b === SENTINEL),
        `readInto a view at ${start} of ${length} bytes wrote outside it`,
      );
    }
    const buffer = Buffer.alloc(bs + 3, SENTINEL);
    await readInto(h.device, bs - 1, buffer);
    assertBytes(buffer, h.expected.subarray(bs - 1, 2 * bs + 2), 'a Buffer target');
  });

  test('zero-length readInto resolves with the target, also at offset == size', async (h) => {
    for (const offset of [0, 1, h.bs, h.size - 1, h.size]) {
      const target = new Uint8Array(0);
      assert.equal(await readInto(h.device, offset, target), target, `readInto(${offset}, empty)`);
    }
  });

  test(`concurrent readInto calls, and reads racing writes, see the content${ro}`, async (h) => {
    const { bs } = h;
    const ranges = h.unalignedRanges();
    const targets = ranges.map(([, length]) => new Uint8Array(length));
    await Promise.all(ranges.map(([offset], i) => readInto(h.device, offset, targets[i]!)));
    for (const [i, [offset, length]] of ranges.entries()) {
      assertBytes(targets[i], h.expected.subarray(offset, offset + length), `readInto(${offset})`);
    }
    const before = h.expected.slice(0, 4 * bs);
    const early = readInto(h.device, 0, new Uint8Array(4 * bs));
    const write = h.write(bs + 100, pattern(2 * bs, 1600));
    const late = readInto(h.device, 0, new Uint8Array(4 * bs));
    await write;
    const after = h.expected.slice(0, 4 * bs);
    for (const [what, got] of [
      ['readInto called before the write', await early],
      ['readInto called after the write', await late],
    ] as const) {
      for (let i = 0; i < got.length; i++) {
        if (got[i] !== before[i] && got[i] !== after[i]) {
          assert.fail(
            `${what}: byte ${i} is ${got[i]}, neither old ${before[i]} nor new ${after[i]}`,
          );
        }
      }
    }
  });

  test('readInto called before close() completes with the bytes', async (h) => {
    const target = new Uint8Array(h.bs + 1);
    const read = readInto(h.device, h.bs - 1, target);
    const closing = h.device.close();
    await read;
    assertBytes(target, h.expected.subarray(h.bs - 1, 2 * h.bs), 'readInto called before close');
    await closing;
  });

  test('after close, readInto rejects with ECLOSED and leaves the target untouched', async (h) => {
    await h.device.close();
    for (const length of [h.bs, 0]) {
      const target = new Uint8Array(length).fill(SENTINEL);
      await expectCode(
        () => readInto(h.device, 0, target),
        ['ECLOSED'],
        `readInto of ${length} bytes after close`,
      );
      assertUntouched(target, `readInto of ${length} bytes after close`);
    }
  });

  // The read table's bad ranges whose length a target can have (any size
  // will do to tell: a length is a number or not), then bad offsets' types.
  const bad: { title: string; code: BlockDeviceErrorCode; args: (h: Harness) => unknown[] }[] = [
    ...badReads
      .filter((b) => {
        const [, length] = b.args(1 << 16, 4096);
        return b.code === 'ERANGE' && Number.isSafeInteger(length) && (length as number) >= 0;
      })
      .map((b) => ({ title: b.title, code: b.code, args: (h: Harness) => b.args(h.size, h.bs) })),
    { title: 'string offset', code: 'EINVAL', args: () => ['0', 1] },
    { title: 'undefined offset', code: 'EINVAL', args: () => [undefined, 1] },
  ];
  for (const b of bad) {
    test(`readInto(${b.title}) rejects with ${b.code}, the target untouched`, async (h) => {
      const [offset, length] = b.args(h) as [unknown, number];
      const target = new Uint8Array(length).fill(SENTINEL);
      await expectCode(
        () => readInto(h.device, offset as number, target),
        [b.code],
        `readInto(${b.title})`,
      );
      assertUntouched(target, `readInto(${b.title})`);
      await h.checkAll(`after readInto(${b.title})`);
    });
  }
  const notBytes: [string, () => unknown][] = [
    ['undefined', () => undefined],
    ['null', () => null],
    ['an array of numbers', () => [1, 2, 3]],
    ['a Uint16Array', () => new Uint16Array(8)],
    ['a DataView', () => new DataView(new ArrayBuffer(8))],
    ['an ArrayBuffer', () => new ArrayBuffer(8)],
    ['a string', () => 'abcd'],
  ];
  for (const [title, make] of notBytes) {
    test(`readInto with ${title} as target rejects with EINVAL`, async (h) => {
      const target = make();
      await expectCode(
        () => readInto(h.device, 0, target as Uint8Array),
        ['EINVAL'],
        `readInto into ${title}`,
      );
      if (target instanceof Uint16Array) {
        assert.ok(
          target.every((v) => v === 0),
          'the Uint16Array was written',
        );
      }
    });
  }
}

function assertUntouched(target: Uint8Array, what: string): void {
  const at = target.findIndex((b) => b !== SENTINEL);
  assert.equal(at, -1, `${what}: the target was written at byte ${at}`);
}
