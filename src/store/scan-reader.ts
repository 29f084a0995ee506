import { io, readerInto } from '../base/index.js';
import type { BlockDevice } from '../device.js';

/** A window: where it starts, how long it is, and its read. */
interface Window {
  start: number;
  length: number;
  /** The window's bytes once `read` has resolved. */
  data: Uint8Array;
  /** The whole buffer `data` is a view of, when it is one of the reader's own. */
  buffer: Uint8Array | undefined;
  read: Promise<Uint8Array>;
  /** Holds taken on it ({@link ScanReader.sharedWindow}) and not yet released. */
  holds: number;
  /** The scan has moved past it: its buffer is spare once the last hold is released. */
  left: boolean;
}

/** A window of shared memory another thread may read, from {@link ScanReader.sharedWindow}. */
export interface SharedWindow {
  /** Region position of the window's first byte. */
  start: number;
  /** The window's bytes, a view of a `SharedArrayBuffer`. */
  data: Uint8Array;
  /**
   * Keeps the window's buffer from being reused for a later window until
   * the returned function is called (once): the bytes stay as read.
   */
  hold(): () => void;
}

/** How a {@link ScanReader} keeps its windows. */
export interface ScanReaderOptions {
  /**
   * Read into buffers over `SharedArrayBuffer`s, so worker threads can look
   * at a window ({@link ScanReader.sharedWindow}); only for a store with
   * `readInto`.
   * @default false
   */
  shared?: boolean;
}

/**
 * Sequential reads of a region for a scan that looks at each byte once and
 * keeps nothing (journal replay): windows of {@link ScanReader.WINDOW}
 * bytes, read into buffers it reuses (through the store's `readInto`, where
 * it has one), with {@link ScanReader.AHEAD} windows being read ahead while
 * the caller checks the current one.
 *
 * Why not {@link WindowReader}: replay reads up to the whole journal ring,
 * and there a fresh buffer per window cost a page fault per 4 KiB and
 * garbage collection, and one read in flight left the scan waiting for the
 * store (docs/ARCHITECTURE.md, Performance notes). In exchange a view it
 * returns is valid only until the next {@link cached} or {@link read} call
 * that misses the current window: the caller checks (or copies) the bytes
 * before it asks for more. A scan that jumps elsewhere (replay's wrap to the
 * ring's start) drops the windows read ahead.
 */
export class ScanReader {
  /** Bytes of one window. */
  static readonly WINDOW = 4 << 20;
  /** Windows read ahead of the current one. */
  static readonly AHEAD = 2;
  readonly #store: BlockDevice;
  readonly #begin: number;
  readonly #end: number;
  readonly #readInto: ((offset: number, buffer: Uint8Array) => Promise<Uint8Array>) | undefined;
  /** Bytes of each buffer: a window, or the whole region when it is smaller (a small journal's open allocates no more). */
  readonly #bufferBytes: number;
  /** Buffers no window uses any more, for the next one. */
  readonly #spare: Uint8Array[] = [];
  #current: Window | undefined;
  /** The windows right after the current one, in order, being read. */
  #ahead: Window[] = [];
  /** A span that runs from one window into the next, gathered. */
  #scratch = new Uint8Array(0);
  readonly #shared: boolean;

  /** Reads of `[begin, end)` of `store`. */
  constructor(store: BlockDevice, begin: number, end: number, options: ScanReaderOptions = {}) {
    this.#store = store;
    this.#begin = begin;
    this.#end = end;
    this.#readInto = readerInto(store);
    this.#bufferBytes = Math.max(0, Math.min(ScanReader.WINDOW, end - begin));
    this.#shared = options.shared === true && this.#readInto !== undefined;
  }

  /**
   * The current window, if it holds all of `[pos, pos + length)` and is one
   * of the reader's shared buffers (option `shared`), else undefined. A
   * hold on it lets another thread check its bytes after the scan has moved
   * on: the buffer is reused only once every hold is released.
   */
  sharedWindow(pos: number, length: number): SharedWindow | undefined {
    const w = this.#current;
    if (w === undefined || !this.#shared || w.buffer === undefined) return undefined;
    const at = pos - w.start;
    if (at < 0 || at + length > w.length) return undefined;
    return {
      start: w.start,
      data: w.data,
      hold: () => {
        w.holds++;
        let released = false;
        return () => {
          if (released) return;
          released = true;
          w.holds--;
          if (w.holds === 0 && w.left) this.#spareOnceRead(w);
        };
      },
    };
  }

  /**
   * `[pos, pos + length)` as a view of the current window, without I/O, or
   * undefined if the window does not hold all of it: a scan takes this
   * before it awaits {@link read}, so most pieces cost no promise at all.
   */
  cached(pos: number, length: number): Uint8Array | undefined {
    const w = this.#current;
    if (w === undefined) return undefined;
    const at = pos - w.start;
    if (at < 0 || at + length > w.length) return undefined;
    return w.data.subarray(at, at + length);
  }

  /**
   * `[pos, pos + length)`, inside the region: a view of a window, or of a
   * scratch buffer for bytes that run from one window into the next.
   */
  async read(pos: number, length: number): Promise<Uint8Array> {
    const hit = this.cached(pos, length);
    if (hit !== undefined) return hit;
    if (pos < this.#begin || pos + length > this.#end) {
      throw new RangeError(`[${pos}, ${pos + length}) is outside [${this.#begin}, ${this.#end})`);
    }
    const current = this.#current;
    if (current !== undefined && pos >= current.start && pos < current.start + current.length) {
      if (this.#scratch.length < length) this.#scratch = new Uint8Array(length);
      const out = this.#scratch.subarray(0, length);
      let done = 0;
      for (;;) {
        const w = this.#current!;
        const from = pos + done - w.start;
        const n = Math.min(length - done, w.length - from);
        out.set(w.data.subarray(from, from + n), done);
        done += n;
        if (done === length) return out;
        await this.#advance();
      }
    }
    const next = this.#ahead[0];
    if (!(next !== undefined && pos >= next.start && pos < next.start + next.length)) {
      // A jump: what was read ahead is of no use.
      this.#drop();
      this.#ahead.push(this.#window(pos));
    }
    await this.#advance();
    return this.read(pos, length);
  }

  /** The first window read ahead becomes the current one, once its bytes are in. */
  async #advance(): Promise<void> {
    const old = this.#current;
    this.#current = undefined;
    if (old !== undefined) this.#release(old);
    const next = this.#ahead.shift() ?? this.#window(old!.start + old!.length);
    try {
      next.data = await io('store read log', next.read);
    } catch (err) {
      this.#release(next);
      this.#drop();
      throw err;
    }
    this.#current = next;
    while (this.#ahead.length < ScanReader.AHEAD) {
      const last = this.#ahead[this.#ahead.length - 1] ?? next;
      const from = last.start + last.length;
      if (from >= this.#end) break;
      const w = this.#window(from);
      // Read on spec: a failure matters only to a caller that gets there
      // (then rethrown by #advance); the scan may stop first, or jump.
      w.read.catch(() => {});
      this.#ahead.push(w);
    }
  }

  /** Starts reading the window at `pos` (at least the region's start). */
  #window(pos: number): Window {
    const start = Math.max(this.#begin, pos);
    const length = Math.min(ScanReader.WINDOW, this.#end - start);
    const into = this.#readInto;
    if (into === undefined) {
      // The store hands out a buffer of its own per read, which becomes the window.
      const read = attempt(() => this.#store.read(start, length));
      return {
        start,
        length,
        data: new Uint8Array(0),
        buffer: undefined,
        read,
        holds: 0,
        left: false,
      };
    }
    const buffer = this.#spare.pop() ?? this.#allocate();
    const data = buffer.subarray(0, length);
    const read = attempt(() => into(start, data));
    return { start, length, data, buffer, read, holds: 0, left: false };
  }

  #allocate(): Uint8Array {
    const bytes = this.#bufferBytes;
    return this.#shared ? new Uint8Array(new SharedArrayBuffer(bytes)) : new Uint8Array(bytes);
  }

  /**
   * The scan is done with a window: its buffer goes back for reuse once no
   * read writes into it any more and no hold keeps its bytes.
   */
  #release(w: Window): void {
    w.left = true;
    if (w.holds === 0) this.#spareOnceRead(w);
  }

  #spareOnceRead(w: Window): void {
    const buffer = w.buffer;
    if (buffer === undefined) return;
    const spare = (): void => {
      this.#spare.push(buffer);
    };
    w.read.then(spare, spare);
  }

  #drop(): void {
    if (this.#current !== undefined) this.#release(this.#current);
    for (const w of this.#ahead) this.#release(w);
    this.#current = undefined;
    this.#ahead = [];
  }
}

/** `read()`, a throw turned into a rejection. */
function attempt(read: () => Promise<Uint8Array>): Promise<Uint8Array> {
  try {
    return read();
  } catch (err) {
    return Promise.reject(err);
  }
}
