/**
 * Reply buffers one connection reuses (docs/ARCHITECTURE.md, "NBD"): a READ
 * reply is its header and its data in one buffer the device reads into, and
 * the buffer comes back here only once the socket has finished writing it
 * (its write callback, without an error), so a buffer is never filled
 * again while its bytes may still be on their way. Reusing them spares a
 * large read a fresh allocation, its page faults and the garbage collection
 * after it.
 */
export class ReplyBufferPool {
  readonly #free = new Map<number, Buffer[]>();
  readonly #maxBytes: number;
  #bytes = 0;

  /** A pool that keeps at most `maxBytes` of free buffers; past that a returned buffer is dropped. */
  constructor(maxBytes: number) {
    this.#maxBytes = maxBytes;
  }

  /** A buffer of exactly `length` bytes, of unspecified content, that nobody else holds. */
  take(length: number): Buffer {
    const reused = this.#free.get(length)?.pop();
    if (reused === undefined) return Buffer.allocUnsafe(length);
    this.#bytes -= length;
    return reused;
  }

  /**
   * Hands back a buffer from {@link take} that nothing reads or writes any
   * more (its write has completed, or it was never sent).
   */
  give(buffer: Buffer): void {
    if (this.#bytes + buffer.length > this.#maxBytes) return;
    const list = this.#free.get(buffer.length);
    if (list === undefined) this.#free.set(buffer.length, [buffer]);
    else list.push(buffer);
    this.#bytes += buffer.length;
  }

  /** Drops every free buffer (the connection went quiet or ended): an idle connection holds none. */
  clear(): void {
    if (this.#bytes === 0) return;
    this.#free.clear();
    this.#bytes = 0;
  }
}
