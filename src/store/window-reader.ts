import { io } from '../base/index.js';
import type { BlockDevice } from '../device.js';

/**
 * Sequential reads of a region through 1 MiB windows, so replay is a few
 * large I/Os; the window after the current one is read ahead while the
 * caller checks this one, so a scan waits for the store only when it runs
 * ahead of it (without it replay sat idle, waiting, much of the time). One
 * read at a time: a scan awaits each before it asks for the next.
 */
export class WindowReader {
  static readonly WINDOW = 1 << 20;
  #start = 0;
  #data: Uint8Array = new Uint8Array(0);
  /** The window right after the current one, being read. */
  #ahead: { start: number; data: Promise<Uint8Array> } | undefined;

  constructor(
    private readonly store: BlockDevice,
    private readonly begin: number,
    private readonly end: number,
  ) {}

  /**
   * `[pos, pos + length)` as a view of the current window, without I/O, or
   * undefined if the window does not hold all of it: a scan takes this
   * before it awaits {@link read}, so the bytes of most records cost no
   * promise at all.
   */
  cached(pos: number, length: number): Uint8Array | undefined {
    const at = pos - this.#start;
    if (at < 0 || at + length > this.#data.length) return undefined;
    return this.#data.subarray(at, at + length);
  }

  /**
   * `[pos, pos + length)`: a view of a window, or (for bytes that run from
   * one window into the next) a copy of its own. Views stay valid: every
   * window is a buffer of its own, never written again.
   */
  async read(pos: number, length: number): Promise<Uint8Array> {
    const hit = this.cached(pos, length);
    if (hit !== undefined) return hit;
    const current = this.#start + this.#data.length;
    if (this.#ahead !== undefined && pos >= this.#start && pos < current + WindowReader.WINDOW) {
      // The scan went on past this window, into the one read ahead.
      const head = pos < current ? this.#data.subarray(pos - this.#start) : undefined;
      await this.#advance();
      if (head === undefined) {
        const next = this.cached(pos, length);
        if (next !== undefined) return next;
      } else if (pos + length <= this.#start + this.#data.length) {
        const out = new Uint8Array(length);
        out.set(head);
        out.set(this.#data.subarray(0, length - head.length), head.length);
        return out;
      }
    }
    const from = Math.max(this.begin, pos);
    const to = Math.min(this.end, Math.max(pos + length, from + WindowReader.WINDOW));
    this.#ahead = undefined;
    this.#data = await io('store read log', this.store.read(from, to - from));
    this.#start = from;
    this.#readAhead();
    return this.#data.subarray(pos - from, pos - from + length);
  }

  /** Makes the window read ahead the current one, and reads the next ahead. */
  async #advance(): Promise<void> {
    const ahead = this.#ahead!;
    this.#ahead = undefined;
    this.#data = await io('store read log', ahead.data);
    this.#start = ahead.start;
    this.#readAhead();
  }

  #readAhead(): void {
    const from = this.#start + this.#data.length;
    if (from >= this.end) return;
    let data: Promise<Uint8Array>;
    try {
      data = this.store.read(from, Math.min(WindowReader.WINDOW, this.end - from));
    } catch {
      return; // A device that throws instead of rejecting: the scan reads it when it gets there.
    }
    // Read on spec: a failure matters only to a caller that gets there (then
    // rethrown by #advance); the scan may stop first, or jump elsewhere.
    data.catch(() => {});
    this.#ahead = { start: from, data };
  }
}
