import type { BlockDevice } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import { allocateBuffer } from './buffer-pool.js';
import { checkGeometry, checkRange, isBytes } from './range.js';
import { type EventMap, TypedEventEmitter } from './typed-emitter.js';

/**
 * The boring parts of a block device, done once: argument and bounds checks,
 * the closed state, draining in-flight I/O on close, `Symbol.asyncDispose`,
 * and typed events. Subclasses implement the protected `_read`, `_write`,
 * `_flush` and `_close`, which only ever receive validated arguments, so bad
 * input never reaches (or changes) a device's state.
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
  #inFlight = 0;
  #drained: (() => void) | undefined;

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
    try {
      this.checkOpen();
      checkRange(this.size, offset, length);
    } catch (err) {
      return Promise.reject(err);
    }
    if (length === 0) return Promise.resolve(new Uint8Array(0));
    const op = this._read(offset, length);
    return this.tracksOwnIO ? op : this.track(op);
  }

  /** @inheritDoc */
  write(offset: number, data: Uint8Array): Promise<void> {
    try {
      this.checkOpen();
      if (!isBytes(data)) {
        throw new BlockDeviceError('EINVAL', `data must be a Uint8Array, got ${describe(data)}`);
      }
      checkRange(this.size, offset, data.length);
      this.checkWritable();
    } catch (err) {
      return Promise.reject(err);
    }
    if (data.length === 0) return Promise.resolve();
    const through = this._writeThrough(offset, data);
    if (through !== undefined) return this.tracksOwnIO ? through : this.track(through);
    // The caller may reuse `data` as soon as this returns: take a private copy
    // now, before any await.
    const copy = allocateBuffer(data.length);
    copy.set(data);
    return this.track(this._write(offset, copy));
  }

  /** @inheritDoc */
  flush(): Promise<void> {
    try {
      this.checkOpen();
    } catch (err) {
      return Promise.reject(err);
    }
    return this.track(this._flush());
  }

  /** @inheritDoc */
  close(): Promise<void> {
    if (this.#closing === undefined) {
      this.#closing = this.drain().then(async () => {
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

  /** Throws `EROFS` if the device is read-only; subclasses may add conditions. */
  protected checkWritable(): void {
    if (this.readOnly) {
      throw new BlockDeviceError('EROFS', `${this.constructor.name} is read-only`);
    }
  }

  /**
   * Whether `_read` and `_writeThrough` keep each operation in the in-flight
   * count themselves, with {@link opStarted} and {@link opSettled}, from a
   * reaction to its settling that they have anyway (leaving a gate) —
   * rather than `track` adding one more promise reaction to every read and
   * passed-on write, on paths that cost a few microseconds in all.
   * `close()` waits for them all the same.
   */
  protected readonly tracksOwnIO: boolean = false;

  /** Counts one operation in flight (`close()` waits for it); {@link opSettled} must follow once. */
  protected opStarted(): void {
    this.#inFlight++;
  }

  /** The operation {@link opStarted} counted has settled. */
  protected opSettled(): void {
    this.#settled();
  }

  /**
   * Counts an operation as in flight until it settles, so `close()` can wait
   * for it. The caller gets `op` itself; the count rides on a side branch
   * with one shared settle function, which keeps the per-I/O cost to a single
   * extra reaction (`finally` would add a closure and two promises per call).
   */
  protected track<T>(op: Promise<T>): Promise<T> {
    this.#inFlight++;
    op.then(this.#settled, this.#settled);
    return op;
  }

  readonly #settled = (): void => {
    if (--this.#inFlight === 0 && this.#drained !== undefined) {
      const wake = this.#drained;
      this.#drained = undefined;
      wake();
    }
  };

  /** Resolves once no tracked operation is in flight. */
  protected drain(): Promise<void> {
    if (this.#inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const previous = this.#drained;
      this.#drained = () => {
        previous?.();
        resolve();
      };
    });
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
   * Reads a validated, non-empty range, into a buffer the caller will own
   * (see {@link BlockDevice.read}): over an ArrayBuffer of its own, exactly
   * `length` bytes, such as a new `Uint8Array(length)` or a lower device's
   * read result.
   */
  protected abstract _read(offset: number, length: number): Promise<Uint8Array>;
  /**
   * Writes a validated, non-empty range; `data` is already a private copy.
   * It may be a view into a slab shared with other copies: keep its bytes
   * as long as needed, but never return it (or a view of it) from a read,
   * nor transfer its buffer.
   */
  protected abstract _write(offset: number, data: Uint8Array): Promise<void>;
  /**
   * A write the subclass passes on, before returning, to a lower device's
   * `write` — which by the BlockDevice contract lets its caller reuse `data`
   * as soon as it returns — so this layer need not copy `data` first; or `undefined` to have it copied
   * and sent to `_write`. Gets a validated, non-empty range, and must not
   * keep `data` past its synchronous return. A stacked write then costs one
   * copy, not one per layer.
   */
  protected _writeThrough(_offset: number, _data: Uint8Array): Promise<void> | undefined {
    return undefined;
  }
  /** Makes every acknowledged write durable. */
  protected abstract _flush(): Promise<void>;
  /** Releases resources; called once, after in-flight I/O drained and a flush. */
  protected abstract _close(): Promise<void>;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'object') return (value as object).constructor?.name ?? 'object';
  return typeof value;
}
