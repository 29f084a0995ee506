import { fletcher4Wasm } from './wasm/fletcher4-wasm.js';

/*
 * Fletcher-4, the checksum ZFS keeps for its data and its send streams:
 * four 64-bit sums over the data's little-endian 32-bit words,
 *
 *   for each word w:  a += w; b += a; c += b; d += c      (mod 2^64)
 *
 * the result being a, b, c, d (32 bytes). Data whose length is not a
 * multiple of 4 is taken with zero bytes after it, up to a whole word.
 *
 * Why here, beside CRC-32: a stream's frame data is checked on the path
 * every byte of an apply takes, and Node 20's zlib.crc32 has no
 * carry-less-multiply path, so on a fast disk the CRC alone held applyStream
 * below a raw write (bench row stream-apply-file). This runs about three
 * times as fast with WebAssembly SIMD (fletcher4.wat), and guarantees
 * more, since each of the four sums weighs a word by a different polynomial
 * of its position: any change confined to two words however far apart (so
 * any burst of up to 33 bits), and in data of up to 1 MiB any one to three
 * flipped bits — where CRC-32, on data over 91,607 bits, guarantees one or
 * two. Over 1 MiB some three-bit patterns cancel (test/fletcher4.test.ts).
 *
 * Where WebAssembly is not there (node --jitless), the same sums are
 * computed in JavaScript: slower, identical.
 */

/** Bytes of a Fletcher-4 checksum: the sums a, b, c, d as little-endian u64. */
export const FLETCHER4_BYTES = 32;

/** Bytes the WebAssembly module checksums per call: its scratch page. */
const SCRATCH = 65536;
/** Where the scratch page and the result sit in the module's memory. */
const SCRATCH_AT = 65536;
const RESULT_AT = 128;

/** The part of the WebAssembly JS API used here (the project's `lib` setting leaves it out). */
interface WebAssemblyApi {
  readonly Module: new (bytes: Uint8Array) => object;
  readonly Instance: new (module: object) => { readonly exports: object };
}

/** What fletcher4.wat exports. */
interface Fletcher4Module {
  readonly memory: { readonly buffer: ArrayBuffer };
  readonly reset: () => void;
  readonly update: (length: number) => void;
  readonly finish: (words: number) => void;
}

/** The compiled module, its memory as bytes; undefined until first use, null without WebAssembly. */
let engine: { exports: Fletcher4Module; bytes: Uint8Array } | null | undefined;

function loadEngine(): { exports: Fletcher4Module; bytes: Uint8Array } | null {
  const api = (globalThis as { WebAssembly?: WebAssemblyApi }).WebAssembly;
  if (api === undefined) return null;
  try {
    const module = new api.Module(Buffer.from(fletcher4Wasm, 'base64'));
    const exports = new api.Instance(module).exports as Fletcher4Module;
    // The memory is created at its maximum and never grows, so this view stays valid.
    return { exports, bytes: new Uint8Array(exports.memory.buffer) };
  } catch {
    // A WebAssembly without SIMD: fletcher4Portable gives the same sums.
    return null;
  }
}

/**
 * Writes the Fletcher-4 checksum of `bytes` to `out` at `at` (32 bytes)
 * and returns `out`.
 */
export function fletcher4(
  bytes: Uint8Array,
  out: Uint8Array = new Uint8Array(FLETCHER4_BYTES),
  at = 0,
): Uint8Array {
  if (engine === undefined) engine = loadEngine();
  if (engine === null) return fletcher4Portable(bytes, out, at);
  const { exports, bytes: memory } = engine;
  exports.reset();
  const whole = bytes.length - (bytes.length % 16);
  // Through the scratch page a piece at a time: the copy is what lets the
  // module read the bytes, and a 64 KiB piece is still in cache when the
  // sums read it.
  for (let from = 0; from < whole; from += SCRATCH) {
    const length = Math.min(SCRATCH, whole - from);
    memory.set(bytes.subarray(from, from + length), SCRATCH_AT);
    exports.update(length);
  }
  const rest = bytes.length - whole;
  if (rest > 0) {
    memory.fill(0, SCRATCH_AT, SCRATCH_AT + 16);
    memory.set(bytes.subarray(whole), SCRATCH_AT);
  }
  exports.finish((rest + 3) >>> 2);
  out.set(memory.subarray(RESULT_AT, RESULT_AT + FLETCHER4_BYTES), at);
  return out;
}

const TWO_32 = 2 ** 32;

/**
 * Fletcher-4 in JavaScript, one word at a time: each sum is two u32 halves
 * (doubles, so every addition is exact before it is reduced). The
 * WebAssembly path's fallback, and a second implementation to test it by.
 */
export function fletcher4Portable(
  bytes: Uint8Array,
  out: Uint8Array = new Uint8Array(FLETCHER4_BYTES),
  at = 0,
): Uint8Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  // Low and high halves of a, b, c, d.
  const lo = [0, 0, 0, 0];
  const hi = [0, 0, 0, 0];
  const whole = bytes.length - (bytes.length % 4);
  for (let i = 0; i < bytes.length; i += 4) {
    let w = 0;
    if (i < whole) w = view.getUint32(i, true);
    else for (let j = bytes.length - 1; j >= i; j--) w = w * 256 + bytes[j]!;
    // a += w, then each sum += the one before it (as just updated).
    let addLo = w;
    let addHi = 0;
    for (let s = 0; s < 4; s++) {
      let l = lo[s]! + addLo;
      let h = hi[s]! + addHi;
      if (l >= TWO_32) {
        l -= TWO_32;
        h += 1;
      }
      lo[s] = l;
      hi[s] = h >>> 0;
      addLo = l;
      addHi = hi[s]!;
    }
  }
  const result = new DataView(out.buffer, out.byteOffset + at, FLETCHER4_BYTES);
  for (let s = 0; s < 4; s++) {
    result.setUint32(s * 8, lo[s]!, true);
    result.setUint32(s * 8 + 4, hi[s]!, true);
  }
  return out;
}
