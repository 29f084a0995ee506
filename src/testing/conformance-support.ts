/**
 * What both conformance suites share: the test-runner signatures they take
 * (so `blocksnap/testing` imports no test runner), the error-code and byte
 * assertions, and seeded data.
 */
import assert from 'node:assert/strict';
import { BlockDeviceError, type BlockDeviceErrorCode } from '../errors.js';

/** A test runner's `describe`: registers a group of tests synchronously. */
export type DescribeFn = (name: string, fn: () => void) => void;

/** A test runner's `it`: registers one asynchronous test that fails when `fn` rejects. */
export type ItFn = (name: string, fn: () => Promise<void>) => void;

/**
 * Calls `call` and checks it returns a promise rejecting with a
 * BlockDeviceError whose code is one of `codes` — never a synchronous throw.
 */
export async function expectCode(
  call: () => Promise<unknown>,
  codes: readonly BlockDeviceErrorCode[],
  what: string,
): Promise<void> {
  let pending: unknown;
  try {
    pending = call();
  } catch (err) {
    assert.fail(`${what} threw synchronously instead of rejecting: ${String(err)}`);
  }
  assert.ok(
    typeof (pending as { then?: unknown } | null)?.then === 'function',
    `${what} returns a promise`,
  );
  let error: unknown;
  let rejected = false;
  try {
    await pending;
  } catch (err) {
    rejected = true;
    error = err;
  }
  const expected = codes.join(' or ');
  assert.ok(rejected, `${what} resolved; expected a rejection with ${expected}`);
  assert.ok(
    BlockDeviceError.is(error),
    `${what} rejected with ${String(error)}, not a BlockDeviceError`,
  );
  assert.ok(
    codes.includes(error.code),
    `${what} rejected with ${error.code}, expected ${expected}`,
  );
}

/** Asserts `actual` is a Uint8Array equal to `expected`, naming the first difference. */
export function assertBytes(actual: unknown, expected: Uint8Array, what: string): void {
  assert.ok(actual instanceof Uint8Array, `${what}: got ${typeof actual}, not a Uint8Array`);
  assert.equal(actual.length, expected.length, `${what}: length`);
  let first = -1;
  let count = 0;
  for (let i = 0; i < expected.length; i++) {
    if (actual[i] !== expected[i]) {
      if (first < 0) first = i;
      count++;
    }
  }
  if (count > 0) {
    assert.fail(
      `${what}: ${count} byte(s) differ, the first at +${first}: ` +
        `got ${actual[first]}, expected ${expected[first]}`,
    );
  }
}

export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function permutations<T>(items: readonly T[]): T[][] {
  if (items.length <= 1) return [items.slice()];
  const out: T[][] = [];
  items.forEach((item, i) => {
    const rest = [...items.slice(0, i), ...items.slice(i + 1)];
    for (const tail of permutations(rest)) out.push([item, ...tail]);
  });
  return out;
}

/** mulberry32: a small seeded generator, so every run writes the same bytes. */
export function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/** `length` seeded pseudo-random bytes: misplaced or shifted data never matches. */
export function pattern(length: number, seed: number): Uint8Array {
  const next = random(seed);
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = next() & 0xff;
  return out;
}

/**
 * The content a subject starts with (`expected`, or zeros), checked against
 * the device's size and the smallest device the suite can run on.
 */
export function startingContent(
  device: { size: number; blockSize: number },
  expected: Uint8Array | undefined,
  minBlocks: number,
  suite: string,
): Uint8Array {
  const content = expected ?? new Uint8Array(device.size);
  assert.ok(
    content instanceof Uint8Array && content.length === device.size,
    `subject.expected must be a Uint8Array of device.size (${device.size}) bytes`,
  );
  assert.ok(
    device.size >= minBlocks * device.blockSize,
    `${suite} needs a device of at least ${minBlocks} blocks, got ${device.size} bytes`,
  );
  return content.slice();
}

/**
 * Runs every step in order, each whatever the earlier ones did (a test body,
 * then closing the device, then the subject's cleanup), and then throws the
 * first failure: a failed test still releases what it used.
 */
export async function runEach(steps: readonly (() => Promise<unknown>)[]): Promise<void> {
  const failures: unknown[] = [];
  for (const step of steps) {
    try {
      await step();
    } catch (err) {
      failures.push(err);
    }
  }
  if (failures.length > 0) throw failures[0];
}
