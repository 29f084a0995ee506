import type { BlockDevice } from '../device.js';

/*
 * Internal methods a device may have, for a layer that moves bulk data
 * through buffers of its own (the copy job's runs, the stream applier's
 * frames), or that reads through it on a hot path (READ_CALLBACK). `read`
 * must hand out fresh memory and `write` must copy its data
 * (the caller may reuse it at once); for bulk copies that allocation and
 * copy, and one thread-pool round trip per fixed-size block, cost more than
 * the I/O itself (docs/ARCHITECTURE.md, "Performance notes"). Keyed by symbols so they
 * stay off the public surface; a layer uses them when the device below has
 * them and `read`/`write` otherwise — it never relies on them.
 */

/**
 * `[READ_INTO](offset, buffer)` fills `buffer` with the `buffer.length`
 * bytes at `offset` and resolves with it; checks and errors are `read`'s.
 * The device writes into `buffer` until the promise settles; after a
 * failure its content is undefined.
 */
export const READ_INTO: unique symbol = Symbol('blocksnap.readInto');

/**
 * `[WRITE_OWNED](offset, blocks)` writes `blocks` back to back from
 * `offset`, as `write(offset, concatenation)` would, with the same checks
 * and errors, in one vectored I/O where it can, and without copying them:
 * the caller hands the buffers over and must not change them until the
 * promise settles.
 */
export const WRITE_OWNED: unique symbol = Symbol('blocksnap.writeOwned');

/**
 * `[READ_CALLBACK](offset, length, done)` reads as `read(offset, length)`
 * does — same checks and errors, and a buffer the caller owns whole, as
 * `read`'s — and calls `done` exactly
 * once with the error or the bytes instead of returning a promise: a layer
 * that settles a promise of its own anyway (a read overlay) then makes one
 * promise per read, not two, and pays no promise reaction in between. `done`
 * may run before the call returns (bad arguments, a closed device).
 */
export const READ_CALLBACK: unique symbol = Symbol('blocksnap.readCallback');

/**
 * `[WRITE_NOW](offset, data)` writes `data` as `write` does — same checks and
 * errors, thrown — before it returns, on the calling thread: for a small
 * write a layer must know has reached the device (the OS's cache for a
 * file) before it goes on, without a trip through libuv's thread pool (a
 * journal's mark; a COW group commit's chunks and frame, bounded in
 * `src/cow/commit-writes.ts`). Never for bulk data: it blocks the event
 * loop for the write.
 */
export const WRITE_NOW: unique symbol = Symbol('blocksnap.writeNow');

/** `device`'s {@link WRITE_NOW}, bound to it, or undefined if it has none. */
export function immediateWriter(
  device: BlockDevice,
): ((offset: number, data: Uint8Array) => void) | undefined {
  const method = (device as { [WRITE_NOW]?: unknown })[WRITE_NOW];
  return typeof method === 'function' ? method.bind(device) : undefined;
}

/** What {@link READ_CALLBACK} calls: the error, or null and the bytes read. */
export type ReadDone = (err: Error | null, data: Uint8Array | undefined) => void;

/** A device with {@link READ_INTO} and {@link WRITE_OWNED}. */
export interface OwnedIO {
  [READ_INTO](offset: number, buffer: Uint8Array): Promise<Uint8Array>;
  [WRITE_OWNED](offset: number, blocks: readonly Uint8Array[]): Promise<void>;
}

/** `device`'s {@link READ_CALLBACK}, bound to it, or undefined if it has none. */
export function callbackReader(
  device: BlockDevice,
): ((offset: number, length: number, done: ReadDone) => void) | undefined {
  const method = (device as { [READ_CALLBACK]?: unknown })[READ_CALLBACK];
  return typeof method === 'function' ? method.bind(device) : undefined;
}

/**
 * Reads through a device's {@link READ_CALLBACK} into a promise of the
 * caller's own — the one promise of a layered read. `settled` runs exactly
 * once, before the promise settles, whatever the device does: call back,
 * throw, or call back and then throw (a second run would, for a caller that
 * leaves a gate in it, let an exclusive holder in under another read).
 * A failure rejects with `failure(err)`.
 */
export function readByCallback(
  read: (offset: number, length: number, done: ReadDone) => void,
  offset: number,
  length: number,
  settled: () => void,
  failure: (err: Error) => Error,
): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    let called = false;
    const done: ReadDone = (err, data) => {
      if (called) return;
      called = true;
      settled();
      if (err === null) resolve(data!);
      else reject(failure(err));
    };
    try {
      read(offset, length, done);
    } catch (err) {
      done(err instanceof Error ? err : new Error(String(err)), undefined);
    }
  });
}

/** `device`'s {@link READ_INTO}, bound to it, or undefined if it has none. */
export function readerInto(
  device: BlockDevice,
): ((offset: number, buffer: Uint8Array) => Promise<Uint8Array>) | undefined {
  const method = (device as Partial<OwnedIO>)[READ_INTO];
  return typeof method === 'function' ? method.bind(device) : undefined;
}

/** `device`'s {@link WRITE_OWNED}, bound to it, or undefined if it has none. */
export function ownedWriter(
  device: BlockDevice,
): ((offset: number, blocks: readonly Uint8Array[]) => Promise<void>) | undefined {
  const method = (device as Partial<OwnedIO>)[WRITE_OWNED];
  return typeof method === 'function' ? method.bind(device) : undefined;
}
