/*
 * Two kinds of memory, for two owners. What a read hands its caller is a
 * buffer of its own ({@link readResultBuffer}): the caller may keep it,
 * change it, or transfer its ArrayBuffer to a worker, which detaches it —
 * had it been a view into shared memory, that would detach every other view
 * too (other callers' results, writes still in flight) and a kept 4 KiB
 * result would pin the whole slab. Memory that never reaches a caller (a
 * write's private copy, a journal frame) is carved from a shared slab
 * ({@link allocateBuffer}), which is cheaper: see bench/read-alloc.ts.
 */

/** Regions up to this size are carved from a shared slab; larger ones get their own buffer. */
const POOLED_MAX = 64 * 1024;
const SLAB_SIZE = 512 * 1024;

let slab = new Uint8Array(0);
let used = 0;

/**
 * A fresh, zero-filled region of `length` bytes for memory no caller ever
 * gets: the private copy a write takes of its data, a frame being built.
 * Small regions are views into a shared 512 KiB slab, the way Node's own
 * Buffer pool hands out small Buffers (about 0.6 µs per 4 KiB against 1.5 µs
 * for a buffer of its own, measured by bench/read-alloc.ts). Regions never overlap and are never handed out
 * twice; a view keeps its slab alive while it lives, and its `buffer` spans
 * the slab, so its holder uses `byteOffset`/`byteLength` and never transfers
 * or detaches that buffer. Never return one from a read: use
 * {@link readResultBuffer}.
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

/**
 * A buffer for a read to fill and hand to its caller: a Uint8Array over an
 * ArrayBuffer of its own, exactly `length` bytes at offset 0, so the caller
 * owns all of it — safe to keep, change and transfer, and it pins nothing
 * else. Not zero-filled: the read overwrites every byte before anyone sees
 * it, and a failed read hands it to no one. (Zeroing a fresh 64 KiB costs
 * more than allocating it.)
 */
export function readResultBuffer(length: number): Uint8Array {
  const memory = Buffer.allocUnsafeSlow(length);
  // A plain Uint8Array over the memory, not the Buffer, whose slice() would
  // be a view where a caller of a Uint8Array expects a copy.
  return new Uint8Array(memory.buffer, memory.byteOffset, length);
}
