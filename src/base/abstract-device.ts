import type { BlockDevice } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import { allocateBuffer } from './buffer-pool.js';
import { InFlightCounter } from './in-flight.js';
import { CLAIM, type DeviceClaim, ownedError } from './ownership.js';
import { checkGeometry, checkRange, isBytes } from './range.js';
import { type EventMap, TypedEventEmitter } from './typed-emitter.js';

/**
 * The one way in to a device's private in-flight counter; set in
 * AbstractBlockDevice's static block, so declared before the class.
 */
let counterOf: (device: AbstractBlockDevice<EventMap>) => InFlightCounter;

/**
 * The base class of every block device: it does the boring parts once —
 * argument and bounds checks, the closed state, waiting for I/O in flight on
 * close, `Symbol.asyncDispose` and typed events — so a device implements only
 * four protected hooks, which never see a bad argument.
 *
 * The subclassing contract (a device of your own runs the conformance suite
 * of `blocksnap/testing` to check it keeps it):
 *
 * - {@link _read} and {@link _write} receive only validated ranges: a safe
 *   integer offset and length, inside the device, never empty (a zero-length
 *   `read` or `write` is answered without calling them). `_write` gets a
 *   private copy of the caller's data, which it may keep. Calls on a closed
 *   device fail with `ECLOSED`, writes to a read-only one with `EROFS`
 *   ({@link checkWritable}), all before any hook runs.
 * - Hooks run concurrently (many reads and writes in flight at once); a
 *   device serializes what it must itself.
 * - `close()` runs once, however often it is called: it waits for every
 *   `read`, `write` and `flush` in flight to settle, then calls
 *   {@link _flush}, then {@link _close} (even if the flush failed), and
 *   resolves or rejects with their outcome. From its first call, new calls
 *   fail with `ECLOSED`.
 * - A hook reports failure by rejecting; the caller gets the rejection
 *   unchanged, so reject with a `BlockDeviceError` (`EIO` with the original
 *   as `cause` when the medium beneath fails). A hook that throws instead of
 *   rejecting is turned into a rejection.
 */
export abstract class AbstractBlockDevice<E extends EventMap = Record<never, never>>
  extends TypedEventEmitter<E>
  implements BlockDevice
{
  /** Size in bytes; a multiple of {@link AbstractBlockDevice.blockSize}. */
  readonly size: number;
  /** The natural I/O unit in bytes: a power of two from 512 to 1 MiB. */
  readonly blockSize: number;
  /** Whether writes fail with `EROFS`. */
  readonly readOnly: boolean;

  #closing: Promise<void> | undefined;
  /** Reached by the library's own devices through {@link inFlightCounter}; never by a subclass. */
  readonly #inFlight = new InFlightCounter();
  /** The layer stacked on this device, if one owns it (src/base/ownership.ts). */
  #claim: DeviceClaim | undefined;

  static {
    counterOf = (device) => device.#inFlight;
  }

  /**
   * @param what - the device's name, for error messages.
   * @throws `EINVAL` unless `blockSize` is a power of two from 512 to 1 MiB
   *   and `size` a non-negative multiple of it.
   */
  protected constructor(what: string, size: number, blockSize: number, readOnly: boolean) {
    super();
    checkGeometry(what, size, blockSize);
    this.size = size;
    this.blockSize = blockSize;
    this.readOnly = readOnly;
  }

  /** Whether `close()` has been called. */
  get closed(): boolean {
    return this.#closing !== undefined;
  }

  /** @inheritDoc */
  read(offset: number, length: number): Promise<Uint8Array> {
    let op: Promise<Uint8Array>;
    try {
      this.checkOpen();
      checkRange(this.size, offset, length);
      if (length === 0) return Promise.resolve(new Uint8Array(0));
      op = this._read(offset, length);
    } catch (err) {
      return Promise.reject(err);
    }
    const inFlight = this.#inFlight;
    return inFlight.ownReads ? op : inFlight.track(op);
  }

  /**
   * Reads `target.length` bytes at `offset` into `target` and resolves with
   * it (see {@link BlockDevice.readInto}): the checks of `read`, and
   * `EINVAL` for a target that is not a Uint8Array, all before `target` is
   * touched; then {@link _readInto}.
   */
  readInto(offset: number, target: Uint8Array): Promise<Uint8Array> {
    let op: Promise<Uint8Array>;
    try {
      this.checkOpen();
      if (!isBytes(target)) {
        throw new BlockDeviceError(
          'EINVAL',
          `target must be a Uint8Array, got ${describe(target)}`,
        );
      }
      checkRange(this.size, offset, target.length);
      if (target.length === 0) return Promise.resolve(target);
      op = this._readInto(offset, target);
    } catch (err) {
      return Promise.reject(err);
    }
    const inFlight = this.#inFlight;
    return inFlight.ownReads ? op : inFlight.track(op);
  }

  /** @inheritDoc */
  write(offset: number, data: Uint8Array): Promise<void> {
    return this.#write(offset, data, true);
  }

  /**
   * `write` without its private copy, for a subclass's `WRITE_OWNED`: the
   * caller hands `data` over and leaves it unchanged until the promise
   * settles, so `_write` gets it as is. Same checks, errors and in-flight
   * count as `write`. Only for a subclass whose `_write` is done with
   * `data` once its promise settles (it must not keep it, as `_write` may).
   * @internal
   */
  protected writeHandedOver(offset: number, data: Uint8Array): Promise<void> {
    return this.#write(offset, data, false);
  }

  #write(offset: number, data: Uint8Array, copy: boolean): Promise<void> {
    const inFlight = this.#inFlight;
    let op: Promise<void>;
    try {
      this.checkOpen();
      if (!isBytes(data)) {
        throw new BlockDeviceError('EINVAL', `data must be a Uint8Array, got ${describe(data)}`);
      }
      checkRange(this.size, offset, data.length);
      this.checkWritable();
      this.checkUnowned('write');
      if (data.length === 0) return Promise.resolve();
      const through = this._writeThrough(offset, data);
      if (through !== undefined)
        return inFlight.ownPassedWrites ? through : inFlight.track(through);
      op = copy ? this._writeCopy(offset, data) : this._write(offset, data);
    } catch (err) {
      return Promise.reject(err);
    }
    return inFlight.ownWrites ? op : inFlight.track(op);
  }

  /** @inheritDoc */
  flush(): Promise<void> {
    let op: Promise<void>;
    try {
      this.checkOpen();
      op = this._flush();
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#inFlight.track(op);
  }

  /** @inheritDoc */
  close(): Promise<void> {
    if (this.#closing === undefined) {
      const claim = this.#claim;
      if (claim !== undefined && claim.calling === 0) {
        return Promise.reject(ownedError(this.constructor.name, claim.owner, 'close'));
      }
      this.#closing = this.#inFlight.drain().then(async () => {
        try {
          await this._flush();
        } finally {
          await this._close();
        }
      });
    }
    return this.#closing;
  }

  /** `await using device = ...` closes the device at the end of the scope. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** Throws `ECLOSED` once `close()` has been called. */
  protected checkOpen(): void {
    if (this.#closing !== undefined) {
      throw new BlockDeviceError('ECLOSED', `${this.constructor.name} is closed`);
    }
  }

  /**
   * Throws `EBUSY` if a layer stacked on this device owns it and did not
   * make this call (src/base/ownership.ts): `write`, `close`, and a
   * subclass's `snapshot`, `restore` and `deleteSnapshot` check it first.
   */
  protected checkUnowned(operation: string): void {
    const claim = this.#claim;
    if (claim !== undefined && claim.calling === 0) {
      throw ownedError(this.constructor.name, claim.owner, operation);
    }
  }

  /** Claims the device for the layer `owner` (see src/base/ownership.ts `claimDevice`). @internal */
  [CLAIM](owner: string): { claim: DeviceClaim; release(): void } {
    const held = this.#claim;
    if (held !== undefined) {
      throw new BlockDeviceError(
        'EBUSY',
        `${this.constructor.name} is already owned by a ${held.owner}: one layer at a time may be stacked on a device`,
      );
    }
    const claim: DeviceClaim = { owner, calling: 0 };
    this.#claim = claim;
    return {
      claim,
      release: () => {
        if (this.#claim === claim) this.#claim = undefined;
      },
    };
  }

  /** Throws `EROFS` if the device is read-only; subclasses may add conditions. */
  protected checkWritable(): void {
    if (this.readOnly) {
      throw new BlockDeviceError('EROFS', `${this.constructor.name} is read-only`);
    }
  }

  /** Emits `error` only when someone listens, so a background failure never crashes the process. */
  protected reportError(err: Error): void {
    const emitter = this as unknown as {
      listenerCount(event: string): number;
      emit(event: string, arg: Error): boolean;
    };
    if (emitter.listenerCount('error') > 0) emitter.emit('error', err);
  }

  /**
   * `write`'s way to `_write` when `_writeThrough` declined: the caller may
   * reuse `data` as soon as `write` returns, so `_write` gets a private
   * copy, taken now, before any await — by default a region of the shared
   * buffer pool. A device that knows when its `_write` is done with the copy
   * may take it into a buffer of its own and reuse that buffer afterwards
   * (the COW device's first writes: src/cow/spare-blocks.ts). Same
   * preconditions as `_write`.
   */
  protected _writeCopy(offset: number, data: Uint8Array): Promise<void> {
    const own = allocateBuffer(data.length);
    own.set(data);
    return this._write(offset, own);
  }

  /**
   * Reads `length` bytes at `offset` into a buffer the caller will own (see
   * {@link BlockDevice.read}): over an ArrayBuffer of its own, exactly
   * `length` bytes, such as a new `Uint8Array(length)` or a lower device's
   * read result. The range is validated and non-empty; the device is open.
   */
  protected abstract _read(offset: number, length: number): Promise<Uint8Array>;
  /**
   * Reads `target.length` bytes at `offset` into `target` and resolves with
   * `target`. The range is validated and non-empty, the device open, and
   * `target` a Uint8Array of that length. By default {@link _read} and a
   * copy (counted in flight as `_read` is); a device that can read straight
   * into the caller's buffer, or pass it to a device below, overrides this —
   * and then counts the read in flight itself if it counts its `_read`s.
   */
  protected _readInto(offset: number, target: Uint8Array): Promise<Uint8Array> {
    return this._read(offset, target.length).then((data) => {
      target.set(data);
      return target;
    });
  }
  /**
   * Writes `data` at `offset`, resolving once the device has it (durable
   * only after a later flush). The range is validated and non-empty, the
   * device open and writable, and `data` a private copy the device may keep.
   * It may be a view into a slab shared with other copies: keep its bytes as
   * long as needed, but never return it (or a view of it) from a read, nor
   * transfer its buffer.
   */
  protected abstract _write(offset: number, data: Uint8Array): Promise<void>;
  /**
   * A write the subclass passes on, before returning, to a lower device's
   * `write` — which by the BlockDevice contract lets its caller reuse `data`
   * as soon as it returns — so this layer need not copy `data` first; or
   * `undefined` to have it copied and sent to `_write`. Gets a validated,
   * non-empty range, and must not keep `data` past its synchronous return.
   * A stacked write then costs one copy, not one per layer.
   */
  protected _writeThrough(_offset: number, _data: Uint8Array): Promise<void> | undefined {
    return undefined;
  }
  /**
   * Makes every write acknowledged before this call durable: when it
   * resolves, they survive a power cut. Also called once by `close()`.
   */
  protected abstract _flush(): Promise<void>;
  /**
   * Releases the device's resources. Called exactly once, by `close()`,
   * after every operation in flight settled and {@link _flush} ran.
   */
  protected abstract _close(): Promise<void>;
}

/**
 * `device`'s in-flight counter, for the library's own devices to count the
 * I/O of their hot paths themselves (see {@link InFlightCounter}). Exported
 * from `src/base/index.ts` only, never from the public surface: the counter
 * is the library's to get right, not a subclass's.
 */
export function inFlightCounter<E extends EventMap>(
  device: AbstractBlockDevice<E>,
): InFlightCounter {
  return counterOf(device as unknown as AbstractBlockDevice<EventMap>);
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'object') return (value as object).constructor?.name ?? 'object';
  return typeof value;
}
