import {
  AccessGate,
  type CallbackReader,
  callbackReader,
  type InFlightCounter,
  type READ_CALLBACK,
  readByCallback,
  readInto,
} from '../base/index.js';
import type { BlockDevice } from '../device.js';
import { wrapIO } from '../errors.js';

/**
 * Reads of a copy-on-write device's live content: straight from the origin,
 * inside a read gate that only a restore shuts (so no one sees it half
 * done). The hot read path: one promise per read — ours, settled from the
 * origin's callback where it has {@link READ_CALLBACK}, else the origin's,
 * with two preallocated reactions. `readInto` takes the same path with the
 * caller's buffer.
 */
export class OriginReads {
  readonly #origin: BlockDevice;
  /** The origin's {@link READ_CALLBACK}, if it has one. */
  readonly #originReader: CallbackReader | undefined;
  readonly #inFlight: InFlightCounter;
  /** Origin reads enter shared; only restore shuts them out. */
  readonly #readGate = new AccessGate();

  constructor(origin: BlockDevice, inFlight: InFlightCounter) {
    this.#origin = origin;
    this.#originReader = callbackReader(origin);
    this.#inFlight = inFlight;
  }

  /** Reads a validated, non-empty range, counted in flight until it settles. */
  read(offset: number, length: number): Promise<Uint8Array> {
    this.#inFlight.started();
    const release = this.#readGate.tryShared();
    if (release !== undefined) return this.#readOrigin(offset, length);
    return this.#readGate.shared().then(() => this.#readOrigin(offset, length));
  }

  /**
   * Reads a validated, non-empty range into `target` (the caller's
   * `readInto` buffer), counted in flight until it settles: the origin reads
   * straight into it where it can (see {@link readInto}).
   */
  readInto(offset: number, target: Uint8Array): Promise<Uint8Array> {
    this.#inFlight.started();
    const release = this.#readGate.tryShared();
    if (release !== undefined) return this.#readOrigin(offset, target.length, target);
    return this.#readGate.shared().then(() => this.#readOrigin(offset, target.length, target));
  }

  /** Runs `fn` with every read shut out: the ones in flight drained, new ones waiting. */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    return this.#readGate.runExclusive(fn);
  }

  /**
   * The origin's read, inside the read gate; the reaction leaves the gate
   * and the in-flight count, even for an origin that throws instead of
   * rejecting (neither may leak: a restore or close would wait forever).
   */
  #readOrigin(offset: number, length: number, into?: Uint8Array): Promise<Uint8Array> {
    const direct = this.#originReader;
    if (direct !== undefined) {
      return readByCallback(direct, offset, length, this.#leaveRead, wrapOriginRead, into);
    }
    let read: Promise<Uint8Array>;
    try {
      read =
        into === undefined
          ? this.#origin.read(offset, length)
          : readInto(this.#origin, offset, into);
    } catch (err) {
      read = Promise.reject(err);
    }
    return read.then(this.#readDone, this.#readFailed);
  }

  readonly #leaveRead = (): void => {
    this.#readGate.releaseShared();
    this.#inFlight.settled();
  };

  readonly #readDone = (data: Uint8Array): Uint8Array => {
    this.#leaveRead();
    return data;
  };

  readonly #readFailed = (err: unknown): never => {
    this.#leaveRead();
    throw wrapIO('origin read', err);
  };
}

function wrapOriginRead(err: Error): Error {
  return wrapIO('origin read', err);
}
