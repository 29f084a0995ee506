/**
 * The block-device suite's buffer-ownership rule: a read result is the
 * caller's whole (BlockDevice.read), so transferring its buffer to a worker,
 * which detaches it here, must break no other read, read in flight or write.
 */
import assert from 'node:assert/strict';
import type { Harness } from './block-harness.js';
import { assertBytes, pattern } from './conformance-support.js';

/** Keeps some reads, starts more and a write, transfers a result and the write's data, then checks everything. */
export async function transferReadResult(h: Harness): Promise<void> {
  const { bs } = h;
  // Kept reads lie in [0, 1.5 bs), reads in flight in [bs, 2.5 bs), the write in the 4th block.
  const ranges: [number, number][] = [
    [0, 1],
    [7, 100],
    [bs - 3, 6],
    [bs / 2, bs],
  ];
  const kept = await Promise.all(ranges.map(([o, n]) => h.device.read(o, n)));
  kept.forEach((got, i) => {
    const [o, n] = ranges[i]!;
    assert.ok(
      got.byteOffset === 0 && got.buffer.byteLength === n,
      `read(${o}, ${n}) returns a buffer of its own, exactly its length, not a view ` +
        `(byteOffset ${got.byteOffset}, buffer of ${got.buffer.byteLength} bytes)`,
    );
  });
  const inFlight = ranges.map(([o, n]) => h.device.read(o + bs, n));
  const data = pattern(bs - 3, 1400);
  const write = h.write(3 * bs + 3, data);
  // Both moved away while that I/O is in flight: a result, and the data
  // of a write, which the caller may reuse as soon as write() returns.
  const moved = structuredClone(kept[0]!, { transfer: [kept[0]!.buffer as ArrayBuffer] });
  structuredClone(data, { transfer: [data.buffer as ArrayBuffer] });
  assertBytes(moved, h.expected.subarray(0, 1), 'the transferred read result');
  for (let i = 1; i < ranges.length; i++) {
    const [o, n] = ranges[i]!;
    assertBytes(kept[i], h.expected.subarray(o, o + n), `kept read(${o}, ${n})`);
  }
  const done = await Promise.all(inFlight);
  done.forEach((got, i) => {
    const [o, n] = ranges[i]!;
    const at = o + bs;
    assertBytes(got, h.expected.subarray(at, at + n), `read(${at}, ${n}) in flight`);
  });
  await write;
  await h.checkAll('after transferring a read result and a written buffer');
}
