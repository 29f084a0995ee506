/** Deterministic pseudo-random bytes (xorshift32), different for every seed. */
export function seededBytes(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = Math.imul(seed + 1, 0x9e3779b1) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/**
 * Throws unless `actual` and `expected` are the same bytes, naming the first
 * difference (and its block). Unlike `expect(...).toEqual`, it costs one
 * memcmp on megabytes, and never tries to print a diff of them.
 */
export function expectSameBytes(
  what: string,
  actual: Uint8Array,
  expected: Uint8Array,
  blockSize = 4096,
): void {
  if (Buffer.from(actual.buffer, actual.byteOffset, actual.byteLength).equals(expected)) return;
  let i = 0;
  while (i < actual.length && actual[i] === expected[i]) i++;
  throw new Error(
    `${what}: ${actual.length} bytes, ${expected.length} expected; first difference at byte ${i} ` +
      `(block ${Math.floor(i / blockSize)}): got ${actual[i]}, expected ${expected[i]}`,
  );
}
