/**
 * The block-device suite's per-test state: the device, the bytes it must
 * hold, and the checks that compare the two.
 */
import assert from 'node:assert/strict';
import type { BlockDevice } from '../device.js';
import type { ConformanceSubject } from './block-conformance.js';
import {
  assertBytes,
  equalBytes,
  expectCode,
  permutations,
  runEach,
  startingContent,
} from './conformance-support.js';

export interface PendingWrite {
  offset: number;
  data: Uint8Array;
}

/**
 * One test's device and the content it must hold. Writes go through
 * {@link Harness.write}, which keeps `expected` in step on a writable device
 * and demands `EROFS` (and no change) on a read-only one.
 */
export class Harness {
  readonly device: BlockDevice;
  readonly expected: Uint8Array;
  readonly size: number;
  readonly bs: number;
  readonly blocks: number;
  readonly readOnly: boolean;

  constructor(device: BlockDevice, expected: Uint8Array) {
    this.device = device;
    this.expected = expected;
    this.size = device.size;
    this.bs = device.blockSize;
    this.blocks = device.size / device.blockSize;
    this.readOnly = device.readOnly;
  }

  /** Ranges that start or end off block boundaries, some crossing one or several. */
  unalignedRanges(): [number, number][] {
    const { bs, size } = this;
    return [
      [1, 1],
      [7, 100],
      [bs - 1, 2],
      [bs - 7, bs + 14],
      [bs + bs / 2, bs],
      [bs / 2, 2 * bs + 3],
      [3, 3 * bs],
      [size - 1, 1],
      [size - bs - 3, bs + 3],
    ];
  }

  /** Calls `write` now; the returned promise checks the outcome and updates `expected`. */
  write(offset: number, data: Uint8Array): Promise<void> {
    if (this.readOnly) {
      const what = `write(${offset}, ${data.length} bytes) on a read-only device`;
      return expectCode(() => this.device.write(offset, data), ['EROFS'], what);
    }
    const copy = new Uint8Array(data); // a copy even of a Buffer, whose slice is a view
    return this.device.write(offset, data).then(() => this.expected.set(copy, offset));
  }

  /**
   * Issues `writes` all at once, then checks every block holds what applying
   * the writes that touch it, in some order, gives; per-block order is what a
   * device owes concurrent overlapping writes.
   */
  async writeConcurrently(writes: PendingWrite[]): Promise<void> {
    if (this.readOnly) {
      await Promise.all(writes.map((w) => this.write(w.offset, w.data)));
      await this.checkAll('after concurrent writes');
      return;
    }
    const before = this.expected.slice();
    await Promise.all(writes.map((w) => this.device.write(w.offset, w.data)));
    const after = await this.device.read(0, this.size);
    assert.ok(
      after instanceof Uint8Array && after.length === this.size,
      'a whole-device read returns size bytes',
    );
    const { bs } = this;
    for (let block = 0; block < this.blocks; block++) {
      const start = block * bs;
      const end = start + bs;
      const touching = writes.filter((w) => w.offset < end && w.offset + w.data.length > start);
      const got = after.subarray(start, end);
      const fits = permutations(touching).some((order) => {
        const candidate = before.slice(start, end);
        for (const w of order) {
          const from = Math.max(start, w.offset);
          const to = Math.min(end, w.offset + w.data.length);
          candidate.set(w.data.subarray(from - w.offset, to - w.offset), from - start);
        }
        return equalBytes(candidate, got);
      });
      if (!fits) {
        assert.fail(
          `block ${block} matches no order of the ${touching.length} concurrent writes touching it`,
        );
      }
    }
    this.expected.set(after);
  }

  /** Reads `[offset, offset + length)` and compares it with `expected`. */
  async checkRange(offset: number, length: number): Promise<void> {
    const got = await this.device.read(offset, length);
    assertBytes(got, this.expected.subarray(offset, offset + length), `read(${offset}, ${length})`);
  }

  /** Reads the whole device and compares it with `expected`. */
  async checkAll(when: string): Promise<void> {
    const got = await this.device.read(0, this.size);
    assertBytes(got, this.expected, `whole-device read ${when}`);
  }
}

/**
 * Runs `body` on a fresh subject, then closes the device and runs its
 * cleanup whatever happened, reporting the first failure.
 */
export async function withHarness(
  create: () => Promise<ConformanceSubject>,
  body: (h: Harness) => Promise<void>,
): Promise<void> {
  const { device, expected, cleanup } = await create();
  await runEach([
    () => body(new Harness(device, startingContent(device, expected, 4, 'the conformance suite'))),
    () => device.close(),
    async () => cleanup?.(),
  ]);
}
