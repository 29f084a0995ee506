/*
 * CRC-32 (the zlib / IEEE 802.3 one `checksum` computes) of a concatenation
 * from the CRCs of its parts, without the bytes: zlib's crc32_combine, which
 * Node's zlib does not expose. An export uses it to build the CRC of a
 * multi-block extent from the per-block CRCs the copy-on-write store already
 * keeps, instead of reading the blocks back.
 *
 * CRC-32 is linear over GF(2): crc(A‖B) = crc(A)·x^(8·|B|) mod P ⊕ crc(B),
 * with polynomials in zlib's reflected bit order (bit 31 is x^0).
 */

/** The reflected CRC-32 polynomial. */
const POLY = 0xedb88320;
/** x^0 in reflected order. */
const ONE = 0x80000000;

/** a(x)·b(x) mod P(x), reflected. */
function multiplyModP(a: number, b: number): number {
  let m = ONE;
  let p = 0;
  for (;;) {
    if ((a & m) !== 0) {
      p ^= b;
      if ((a & (m - 1)) === 0) break;
    }
    m >>>= 1;
    b = (b & 1) !== 0 ? (b >>> 1) ^ POLY : b >>> 1;
  }
  return p >>> 0;
}

/** x^(2^k) mod P for k = 0..31; the powers repeat with period 32 far beyond any length here. */
const X_POW_2K: Uint32Array = (() => {
  const table = new Uint32Array(32);
  let p = ONE >>> 1; // x^1
  for (let k = 0; k < 32; k++) {
    table[k] = p;
    p = multiplyModP(p, p);
  }
  return table;
})();

/** x^(8·bytes) mod P: the factor that shifts a CRC past `bytes` zero bytes. */
function shiftFactor(bytes: number): number {
  let p = ONE;
  let k = 3; // 8·n = n·2^3
  // Division, not `>>`: lengths may pass 2^31.
  for (let n = bytes; n > 0; n = Math.floor(n / 2), k++) {
    if (n % 2 === 1) p = multiplyModP(X_POW_2K[k & 31]!, p);
  }
  return p;
}

/**
 * The CRC-32 of `A‖B` given `crcA = crc32(A)`, `crcB = crc32(B)` and the
 * length of `B` in bytes. Exact for any lengths (a safe integer).
 */
export function crc32Combine(crcA: number, crcB: number, lengthB: number): number {
  return (multiplyModP(shiftFactor(lengthB), crcA >>> 0) ^ crcB) >>> 0;
}
