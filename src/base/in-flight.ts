/**
 * The operations of one device still in flight, which `close()` waits for
 * before its final flush (docs/ARCHITECTURE.md, "Performance notes": the
 * library's own devices count their hot-path I/O from a reaction or callback
 * they have anyway, instead of paying one more promise reaction per I/O).
 *
 * Library-internal: a device reaches its counter only through
 * `inFlightCounter`, which `src/base/index.ts` exports and the public surface
 * does not, so a user's device can neither leave an operation out (close
 * would not wait) nor settle one twice (close would hang or end early).
 */
export class InFlightCounter {
  /**
   * `_read` counts the reads it starts itself, with {@link started} and
   * {@link settled}; otherwise `read()` tracks each with {@link track}.
   */
  ownReads = false;
  /** `_writeThrough` counts the writes it passes on itself; otherwise `write()` tracks each. */
  ownPassedWrites = false;
  /** `_write` counts its writes itself; otherwise `write()` tracks each. */
  ownWrites = false;

  #count = 0;
  #drained: (() => void) | undefined;

  /**
   * Counts one operation in flight; {@link settled} must follow exactly once,
   * whether the operation succeeds, fails or throws.
   */
  started(): void {
    this.#count++;
  }

  /**
   * The operation {@link started} counted has settled. A bound function, so
   * it can be handed out as a reaction or callback without a closure per I/O.
   */
  readonly settled = (): void => {
    if (--this.#count === 0 && this.#drained !== undefined) {
      const wake = this.#drained;
      this.#drained = undefined;
      wake();
    }
  };

  /**
   * Counts `op` as in flight until it settles and returns `op` itself. The
   * count rides on a side branch with the one shared {@link settled}, which
   * keeps the cost to a single extra reaction (`finally` would add a closure
   * and two promises per call).
   */
  track<T>(op: Promise<T>): Promise<T> {
    this.#count++;
    op.then(this.settled, this.settled);
    return op;
  }

  /** Resolves once no counted operation is in flight. */
  drain(): Promise<void> {
    if (this.#count === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const previous = this.#drained;
      this.#drained = () => {
        previous?.();
        resolve();
      };
    });
  }
}
