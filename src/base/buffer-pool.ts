/** Regions up to this size are carved from a shared slab; larger ones get their own buffer. */
const POOLED_MAX = 64 * 1024;
const SLAB_SIZE = 512 * 1024;

let slab = new Uint8Array(0);
let used = 0;

/**
 * A fresh, zero-filled region of `length` bytes: for a read to fill and hand
 * to the caller, or for the private copy a write takes of its data. Small regions are views into a shared 512 KiB slab, the way
 * Node's own Buffer pool hands out small Buffers: allocating a separate
 * ArrayBuffer per 4 KiB read costs more than the read's system call does on a
 * cached file. Regions never overlap and are never handed out twice; a view
 * keeps its slab alive while it lives, and its `buffer` spans the slab, so
 * callers use `byteOffset`/`byteLength` as with any view.
 */
export function allocateBuffer(length: number): Uint8Array {
  if (length > POOLED_MAX) return new Uint8Array(length);
  if (used + length > slab.length) {
    slab = new Uint8Array(SLAB_SIZE);
    used = 0;
  }
  const region = slab.subarray(used, used + length);
  // Keep every region 8-byte aligned, so DataView and typed views over it stay cheap.
  used += (length + 7) & ~7;
  return region;
}
