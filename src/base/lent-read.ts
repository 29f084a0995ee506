import type { BlockDevice } from '../device.js';

/**
 * `[LEND_READ](offset, length)` hands out the bytes at `offset` as a
 * read-only view of the device's own memory instead of a copy, or
 * undefined where it cannot (a range not in one piece of its memory, a
 * closed device, a range past the end): the caller then reads as usual.
 * The view holds exactly what a read at the moment of the call returns,
 * and keeps holding it until `release()`: a write meanwhile must not change
 * those bytes (a MemoryDevice writes such a block to a new place). For a
 * reader that only passes the bytes on, such as the NBD server sending a
 * READ reply (docs/ARCHITECTURE.md, "NBD", "Performance"): it saves the
 * copy into a buffer of its own. The caller never writes to `bytes`, and
 * calls `release()` once nothing reads them any more; until then the device
 * may hold extra memory for writes to the lent blocks.
 * @internal A fast path for the library's own layers.
 */
export const LEND_READ: unique symbol = Symbol('blocksnap.lendRead');

/** Bytes a device lent ({@link LEND_READ}): read-only, unchanged until {@link release}. */
export interface LentBytes {
  /** The bytes read; never written to by the borrower. */
  readonly bytes: Uint8Array;
  /** Hands the bytes back: writes to them may land in place again. A second call does nothing. */
  release(): void;
}

/** {@link LEND_READ}'s signature. */
export type BytesLender = (offset: number, length: number) => LentBytes | undefined;

/** `device`'s {@link LEND_READ}, bound to it, or undefined if it has none. */
export function bytesLender(device: BlockDevice): BytesLender | undefined {
  const method = (device as { [LEND_READ]?: unknown })[LEND_READ];
  return typeof method === 'function' ? method.bind(device) : undefined;
}
