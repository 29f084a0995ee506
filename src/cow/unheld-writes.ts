import type { InFlightCounter } from '../base/index.js';
import type { BlockDevice } from '../device.js';
import { type BlockDeviceError, wrapIO } from '../errors.js';
import type { GatePass } from './range-gate.js';

/** Reaction pairs kept for reuse: more than a device usually has in flight. */
const UNHELD_ENDS_KEPT = 256;

/**
 * Writes to blocks no snapshot holds, passed straight to the origin inside
 * the range gate: nothing to preserve and no snapshot read to keep out, so
 * no block lock. The hot write path of a copy-on-write device: its reactions
 * are made once and reused, so a write allocates no closure for them.
 */
export class UnheldWrites {
  readonly #origin: BlockDevice;
  readonly #inFlight: InFlightCounter;
  /** Why writes are refused until reopen (the device's fail-stop), if they are. */
  readonly #stopped: () => BlockDeviceError | undefined;
  /** Reaction pairs of settled unheld writes, for the next ones to reuse. */
  readonly #ends: UnheldWriteEnd[] = [];

  constructor(
    origin: BlockDevice,
    inFlight: InFlightCounter,
    stopped: () => BlockDeviceError | undefined,
  ) {
    this.#origin = origin;
    this.#inFlight = inFlight;
    this.#stopped = stopped;
  }

  /**
   * Hands `data` to the origin's `write` at once (done with it once it
   * returns) and leaves the gate with `pass` once the write settles.
   * `counted`: the write is in the device's in-flight count by
   * `started()` (the `_writeThrough` path), and leaves it here with the gate.
   */
  write(offset: number, data: Uint8Array, pass: GatePass, counted: boolean): Promise<void> {
    let written: Promise<void>;
    try {
      const stopped = this.#stopped();
      written = stopped === undefined ? this.#origin.write(offset, data) : Promise.reject(stopped);
    } catch (err) {
      written = Promise.reject(err);
    }
    const end = this.#ends.pop() ?? new UnheldWriteEnd(this.#end);
    end.pass = pass;
    end.counted = counted;
    return written.then(end.done, end.failed);
  }

  readonly #end = (end: UnheldWriteEnd): void => {
    const pass = end.pass!;
    const counted = end.counted;
    end.pass = undefined;
    if (this.#ends.length < UNHELD_ENDS_KEPT) this.#ends.push(end);
    pass.leave();
    if (counted) this.#inFlight.settled();
  };
}

/**
 * The two reactions that end a write passed straight to the origin: they
 * leave the gate (and the in-flight count) and wrap a failure as `EIO`.
 */
class UnheldWriteEnd {
  pass: GatePass | undefined = undefined;
  counted = false;
  readonly #end: (end: UnheldWriteEnd) => void;

  constructor(end: (end: UnheldWriteEnd) => void) {
    this.#end = end;
  }

  readonly done = (): void => {
    this.#end(this);
  };

  readonly failed = (err: unknown): never => {
    this.#end(this);
    throw wrapIO('origin write', err);
  };
}
