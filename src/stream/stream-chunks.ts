import type { ReadableStream } from 'node:stream/web';
import { isBytes } from '../base/index.js';
import { BlockDeviceError } from '../errors.js';

/** What `applyStream` reads from: a web stream, or anything async-iterable (a Node `Readable` is). */
export type ByteSource = ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>;

const EMPTY = new Uint8Array(0);

/**
 * Reads exact-size pieces out of a byte stream however it is chunked:
 * chunks may split a structure anywhere, down to one byte each.
 *
 * Ownership rule: a piece that lies inside one chunk is returned as a view
 * of it, uncopied; a piece that spans chunks is assembled into a fresh
 * buffer. The reader asks the source for its next chunk only while
 * assembling, after the rest of the current chunk was copied out, so a
 * source that reuses its buffer for the next chunk (an async generator
 * reading into one buffer) never overwrites bytes a piece returned earlier
 * still needs — provided the caller is done with that piece before it reads
 * the next one.
 */
export class ChunkReader {
  readonly #next: () => Promise<IteratorResult<unknown>>;
  readonly #release: (reason: unknown) => Promise<unknown>;
  #chunk: Uint8Array = EMPTY;
  #pos = 0;
  #ended = false;
  #released = false;
  /** Bytes handed out so far: the stream position messages quote. */
  #consumed = 0;

  /** @throws `EINVAL` if `source` is neither a ReadableStream nor async-iterable. */
  constructor(source: ByteSource) {
    const stream = source as { getReader?: unknown };
    if (typeof stream?.getReader === 'function') {
      // getReader rather than async iteration: it also works on web streams
      // from other realms and polyfills, which need not be iterable.
      const reader = (source as ReadableStream<Uint8Array>).getReader();
      this.#next = () => reader.read() as Promise<IteratorResult<unknown>>;
      this.#release = (reason) => reader.cancel(reason);
    } else if (
      typeof (source as { [Symbol.asyncIterator]?: unknown })?.[Symbol.asyncIterator] === 'function'
    ) {
      const iterator = (source as AsyncIterable<unknown>)[Symbol.asyncIterator]();
      this.#next = () => iterator.next();
      this.#release = async () => iterator.return?.();
    } else {
      throw new BlockDeviceError(
        'EINVAL',
        'stream must be a ReadableStream or an AsyncIterable of Uint8Array chunks',
      );
    }
  }

  /** Bytes read so far. */
  get position(): number {
    return this.#consumed;
  }

  /**
   * The next `length` bytes, or fewer if the stream ends first (the caller
   * decides what a short read means). A piece that spans chunks is assembled
   * into `scratch` when it is large enough (the caller's to reuse once done
   * with the piece), else into a new buffer.
   * @throws `EINVAL` for a chunk that is not a Uint8Array; whatever the
   *   source throws.
   */
  async read(length: number, scratch?: Uint8Array): Promise<Uint8Array> {
    const available = this.#chunk.length - this.#pos;
    if (available >= length) {
      const piece = this.#chunk.subarray(this.#pos, this.#pos + length);
      this.#pos += length;
      this.#consumed += length;
      return piece;
    }
    const out =
      scratch !== undefined && scratch.length >= length
        ? scratch.subarray(0, length)
        : new Uint8Array(length);
    out.set(this.#chunk.subarray(this.#pos));
    let filled = available;
    this.#chunk = EMPTY;
    this.#pos = 0;
    while (filled < length) {
      const chunk = await this.#pull();
      if (chunk === undefined) break;
      const take = Math.min(length - filled, chunk.length);
      out.set(chunk.subarray(0, take), filled);
      filled += take;
      if (take < chunk.length) {
        this.#chunk = chunk;
        this.#pos = take;
      }
    }
    this.#consumed += filled;
    return filled === length ? out : out.subarray(0, filled);
  }

  /** Whether the stream has no byte left (reads ahead one chunk if it must). */
  async atEnd(): Promise<boolean> {
    while (this.#pos >= this.#chunk.length) {
      const chunk = await this.#pull();
      if (chunk === undefined) return true;
      this.#chunk = chunk;
      this.#pos = 0;
    }
    return false;
  }

  /**
   * Lets go of the source: a stream not read to its end is cancelled with
   * `reason` (which an exporter sees, and stops reading its device). Idempotent;
   * never throws.
   */
  async release(reason: unknown): Promise<void> {
    if (this.#released) return;
    this.#released = true;
    if (this.#ended) return;
    try {
      await this.#release(reason);
    } catch {
      // The source failing to cancel changes nothing for the caller, who
      // already has the error that made it stop.
    }
  }

  /** The next non-empty chunk, or undefined at the end. */
  async #pull(): Promise<Uint8Array | undefined> {
    while (!this.#ended) {
      const { done, value } = await this.#next();
      if (done) {
        this.#ended = true;
        break;
      }
      if (!isBytes(value)) {
        throw new BlockDeviceError(
          'EINVAL',
          `stream chunk after byte ${this.#consumed} is ${describe(value)}, not a Uint8Array`,
        );
      }
      if (value.length > 0) return value;
    }
    return undefined;
  }
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'object') return `a ${(value as object).constructor?.name ?? 'object'}`;
  return `a ${typeof value}`;
}
