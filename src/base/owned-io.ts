import type { BlockDevice } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import { checkRange, isBytes } from './range.js';

/*
 * Internal methods a device may have, for a layer that moves bulk data
 * through buffers of its own (the copy job's runs, the stream applier's
 * frames: WRITE_OWNED, and the public `readInto`), or that reads through it
 * on a hot path (READ_CALLBACK). `read`
 * must hand out fresh memory and `write` must copy its data
 * (the caller may reuse it at once); for bulk copies that allocation and
 * copy, and one thread-pool round trip per fixed-size block, cost more than
 * the I/O itself (docs/ARCHITECTURE.md, "Performance notes"). Keyed by symbols so they
 * stay off the public surface; a layer uses them when the device below has
 * them and `read`/`write` otherwise — it never relies on them.
 */

/**
 * `[WRITE_OWNED](offset, blocks)` writes `blocks` back to back from
 * `offset`, as `write(offset, concatenation)` would, with the same checks
 * and errors, in one vectored I/O where it can, and without copying them:
 * the caller hands the buffers over and must not change them until the
 * promise settles.
 */
export const WRITE_OWNED: unique symbol = Symbol('blocksnap.writeOwned');

/**
 * `[READ_CALLBACK](offset, length, done, into?)` reads as `read(offset,
 * length)` does — same checks and errors, and a buffer the caller owns
 * whole, as `read`'s — and calls `done` exactly
 * once with the error or the bytes instead of returning a promise: a layer
 * that settles a promise of its own anyway (a read overlay) then makes one
 * promise per read, not two, and pays no promise reaction in between. `done`
 * may run before the call returns (bad arguments, a closed device). Given
 * `into` (a Uint8Array of exactly `length` bytes, the caller's `readInto`
 * target), it reads into it and calls `done` with it, as `readInto` would.
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

/** A device with {@link WRITE_OWNED}. */
export interface OwnedIO {
  [WRITE_OWNED](offset: number, blocks: readonly Uint8Array[]): Promise<void>;
}

/** {@link READ_CALLBACK}'s signature. */
export type CallbackReader = (
  offset: number,
  length: number,
  done: ReadDone,
  into?: Uint8Array,
) => void;

/** `device`'s {@link READ_CALLBACK}, bound to it, or undefined if it has none. */
export function callbackReader(device: BlockDevice): CallbackReader | undefined {
  const method = (device as { [READ_CALLBACK]?: unknown })[READ_CALLBACK];
  return typeof method === 'function' ? method.bind(device) : undefined;
}

/**
 * `device`'s {@link READ_CALLBACK}, bound to it, or else its `read` (its
 * `readInto`, given `into`) in the same shape (one promise reaction more),
 * so a layer's hot read path is written once for both. A `read` that throws
 * instead of rejecting calls `done` with the error. Like any
 * {@link CallbackReader}, it may call back with a buffer other than `into`
 * (a READ_CALLBACK that predates `into`): the caller copies then.
 */
export function callbackReaderOrRead(device: BlockDevice): CallbackReader {
  const direct = callbackReader(device);
  if (direct !== undefined) return direct;
  return (offset, length, done, into) => {
    let read: Promise<Uint8Array>;
    try {
      read = into === undefined ? device.read(offset, length) : readInto(device, offset, into);
    } catch (err) {
      done(err instanceof Error ? err : new Error(String(err)), undefined);
      return;
    }
    read.then(
      (data) => done(null, data),
      (err: unknown) => done(err instanceof Error ? err : new Error(String(err)), undefined),
    );
  };
}

/**
 * Reads through a device's {@link READ_CALLBACK} into a promise of the
 * caller's own — the one promise of a layered read. `settled` runs exactly
 * once, before the promise settles, whatever the device does: call back,
 * throw, or call back and then throw (a second run would, for a caller that
 * leaves a gate in it, let an exclusive holder in under another read).
 * A failure rejects with `failure(err)`. With `into`, the read goes into it
 * (see {@link READ_CALLBACK}).
 */
export function readByCallback(
  read: CallbackReader,
  offset: number,
  length: number,
  settled: () => void,
  failure: (err: Error) => Error,
  into?: Uint8Array,
): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    let called = false;
    const done: ReadDone = (err, data) => {
      if (called) return;
      called = true;
      settled();
      if (err !== null) reject(failure(err));
      else if (into === undefined || data === into) resolve(data!);
      else {
        // A READ_CALLBACK that predates `into` called back with a buffer of its own.
        into.set(data!);
        resolve(into);
      }
    };
    try {
      read(offset, length, done, into);
    } catch (err) {
      done(err instanceof Error ? err : new Error(String(err)), undefined);
    }
  });
}

/**
 * `device`'s `readInto` (see {@link BlockDevice.readInto}), bound to it, or
 * undefined if it has none: a layer that fills buffers of its own reads
 * through it where it can, and through `read` and a copy otherwise.
 */
export function readerInto(
  device: BlockDevice,
): ((offset: number, target: Uint8Array) => Promise<Uint8Array>) | undefined {
  const method = device.readInto;
  return typeof method === 'function' ? method.bind(device) : undefined;
}

/**
 * `device.readInto(offset, target)` where the device has it, else its
 * `read` and a copy into `target`: for any BlockDevice, a user's own
 * included, with `readInto`'s checks and errors either way (the fallback
 * checks `target` and the range itself before it reads, so bad input
 * leaves `target` untouched there too). Resolves with `target`.
 * @throws `ERANGE`, `EINVAL`, `ECLOSED`, `EIO` (as the device's `read`).
 */
export function readInto(
  device: BlockDevice,
  offset: number,
  target: Uint8Array,
): Promise<Uint8Array> {
  if (typeof device.readInto === 'function') return device.readInto(offset, target);
  try {
    if (!isBytes(target)) {
      throw new BlockDeviceError('EINVAL', 'target must be a Uint8Array');
    }
    checkRange(device.size, offset, target.length);
  } catch (err) {
    return Promise.reject(err);
  }
  return device.read(offset, target.length).then((data) => {
    if (data.length !== target.length) {
      throw new BlockDeviceError(
        'EIO',
        `read of ${target.length} bytes at ${offset} returned ${data.length} bytes`,
      );
    }
    target.set(data);
    return target;
  });
}

/** `device`'s {@link WRITE_OWNED}, bound to it, or undefined if it has none. */
export function ownedWriter(
  device: BlockDevice,
): ((offset: number, blocks: readonly Uint8Array[]) => Promise<void>) | undefined {
  const method = (device as Partial<OwnedIO>)[WRITE_OWNED];
  return typeof method === 'function' ? method.bind(device) : undefined;
}
