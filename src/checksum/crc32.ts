import { crc32 } from 'node:zlib';

/** CRC-32 of `bytes` (zlib's, hardware-assisted where the CPU allows). */
export function checksum(bytes: Uint8Array, initial = 0): number {
  // Node 20's crc32 returns 0, not `initial`, for an empty array whose
  // `buffer` has been looked at (a DataView over it is enough): a CRC chained
  // over nothing must stay what it was.
  if (bytes.length === 0) return initial >>> 0;
  return crc32(bytes, initial) >>> 0;
}
