import type { ProgressEvent } from '../device.js';

/** What `exportStream`'s and `applyStream`'s `onProgress` is called with. */
export type StreamProgressCallback = (event: ProgressEvent) => void;

/** Bytes between two progress events: a bar moves smoothly, a 64 GiB stream makes 65,536 calls. */
const PROGRESS_EVERY = 1 << 20;

/**
 * The progress of one export or apply, in bytes of the device the stream
 * covers: `{ operation, done: 0, total }` first, then whenever `done` has
 * grown by {@link PROGRESS_EVERY} since the last event, and when it reaches
 * `total`; `done` never decreases and never passes `total`.
 *
 * A callback that throws is not caught here: the export or apply fails with
 * that error (see {@link StreamProgress.failed}), as a Node stream is
 * destroyed with the error its transform throws.
 */
export class StreamProgress {
  readonly #operation: 'export' | 'apply';
  readonly #callback: StreamProgressCallback | undefined;
  #total: number;
  #done = 0;
  #reported = -1;
  /** The callback's error, once it threw. */
  #failure: { err: unknown } | undefined;

  constructor(
    operation: 'export' | 'apply',
    total: number,
    callback: StreamProgressCallback | undefined,
  ) {
    this.#operation = operation;
    this.#total = total;
    this.#callback = callback;
  }

  /** Reports `done: 0`. */
  start(): void {
    this.#report();
  }

  /** Counts `bytes` more done; reports if enough has been done since the last event. */
  advance(bytes: number): void {
    this.#done += bytes;
    if (this.#done - this.#reported >= PROGRESS_EVERY || this.#done === this.#total) this.#report();
  }

  /**
   * Ends with `done === total`. The total stands unless it was only an upper
   * bound (a version-2 full stream's device size): it is then what was done.
   */
  end(): void {
    if (this.#done === this.#total && this.#reported === this.#done) return;
    this.#total = this.#done;
    this.#report();
  }

  /** Whether `err` is what the callback threw. */
  failed(err: unknown): boolean {
    return this.#failure !== undefined && this.#failure.err === err;
  }

  #report(): void {
    this.#reported = this.#done;
    if (this.#callback === undefined) return;
    try {
      this.#callback({ operation: this.#operation, done: this.#done, total: this.#total });
    } catch (err) {
      this.#failure = { err };
      throw err;
    }
  }
}
