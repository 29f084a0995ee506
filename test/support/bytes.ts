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

/** {@link expectSameBytes} naming 512-byte blocks, the block size of the disk rigs. */
export function expectBytes(what: string, actual: Uint8Array, expected: Uint8Array): void {
  expectSameBytes(what, actual, expected, 512);
}

/** `length` bytes of `value`. */
export function fill(length: number, value: number): Uint8Array {
  return new Uint8Array(length).fill(value);
}

/** Deterministic bytes for a write, never 0, so a shrunk counterexample prints short. */
export function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (seed * 7 + i * 31 + (i >>> 8)) & 0xff || 1;
  return out;
}

/**
 * Checks every byte of `actual` is the durable value or one a candidate
 * write could have left (what a power cut may leave of unflushed writes:
 * each whole, torn or absent).
 */
export function expectAllowed(
  what: string,
  actual: Uint8Array,
  durable: Uint8Array,
  candidates: readonly { offset: number; data: Uint8Array }[],
): void {
  for (let i = 0; i < actual.length; i++) {
    const v = actual[i];
    if (v === durable[i]) continue;
    const ok = candidates.some(
      (w) => i >= w.offset && i < w.offset + w.data.length && w.data[i - w.offset] === v,
    );
    if (!ok) {
      throw new Error(
        `${what}: byte ${i} is ${v}, but neither durable (${durable[i]}) nor any unflushed write put it there`,
      );
    }
  }
}

/** Flips one bit of the byte at `offset` on `disk`: damage no write through a layer could make. */
export async function flipBit(
  disk: {
    read(offset: number, length: number): Promise<Uint8Array>;
    write(offset: number, data: Uint8Array): Promise<void>;
  },
  offset: number,
): Promise<void> {
  const [byte] = await disk.read(offset, 1);
  await disk.write(offset, Uint8Array.of(byte! ^ 0x04));
}
