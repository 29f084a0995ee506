import type { Duplex } from 'node:stream';

/** Why a {@link ByteReader} read failed: the peer closed (or reset) the stream first. */
export class StreamEnded extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'StreamEnded';
  }
}

/** Bytes the reader buffers ahead of what is asked before it pauses the stream. */
const READ_AHEAD = 256 * 1024;

/**
 * Exact-length reads from a stream (a TCP socket, then the TLS socket over it
 * after STARTTLS), with bounded memory: the stream is paused whenever more
 * than what the pending read needs plus {@link READ_AHEAD} is buffered, so
 * a client that sends faster than the server works waits in the kernel's
 * socket buffer, not in the server's heap (docs/ARCHITECTURE.md, "NBD").
 */
export class ByteReader {
  #stream: Duplex | undefined;
  #chunks: Buffer[] = [];
  /**
   * Bytes of `#chunks[0]` already read: a read advances this cursor instead
   * of cutting a view of the rest of the chunk (one object less per read).
   */
  #head = 0;
  #buffered = 0;
  #need = 0;
  #waiter: { resolve: () => void; reject: (err: Error) => void } | undefined;
  #ended: StreamEnded | undefined;
  /** Called from {@link receive} while the borrowed bytes are valid (the transmission's parser). */
  #onArrival: (() => void) | undefined;

  readonly #onData = (chunk: Buffer) => {
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
    if (this.#buffered > this.#need + READ_AHEAD) this.#stream?.pause();
    this.#wake();
  };
  readonly #onEnd = () => this.#finish('the peer closed the connection');
  readonly #onClose = () => this.#finish('the connection closed');
  readonly #onError = (err: Error) => this.#finish(`the connection failed: ${err.message}`);

  constructor(stream: Duplex) {
    this.attach(stream);
  }

  /** Bytes received and not yet read. */
  get buffered(): number {
    return this.#buffered;
  }

  /** Reads from `stream` from now on (the TLS socket after an upgrade). */
  attach(stream: Duplex): void {
    this.detach();
    this.#stream = stream;
    stream.on('data', this.#onData);
    stream.on('end', this.#onEnd);
    stream.on('close', this.#onClose);
    stream.on('error', this.#onError);
  }

  /**
   * Stops reading from the current stream, leaving it paused, so that
   * another reader (the TLS layer) can take it over.
   */
  detach(): void {
    const stream = this.#stream;
    if (stream === undefined) return;
    stream.off('data', this.#onData);
    stream.off('end', this.#onEnd);
    stream.off('close', this.#onClose);
    stream.off('error', this.#onError);
    stream.pause();
    this.#stream = undefined;
  }

  /**
   * Takes bytes only valid during this call (a clear socket's reused
   * `onread` buffer, server-receiver.ts): the arrival hook parses the
   * requests that lie whole in them, then what is left is copied before
   * the socket reads over it. Returns false to pause the socket (more than
   * what the pending read needs plus {@link READ_AHEAD} is buffered).
   */
  receive(bytes: Buffer): boolean {
    // Detached (lingering before close): what the client still sends is dropped.
    if (this.#stream === undefined) return true;
    const chunks = this.#chunks;
    chunks.push(bytes);
    this.#buffered += bytes.length;
    this.#onArrival?.();
    const last = chunks.length - 1;
    if (last >= 0 && chunks[last] === bytes) {
      const from = last === 0 ? this.#head : 0;
      chunks[last] = Buffer.from(bytes.subarray(from));
      if (last === 0) this.#head = 0;
    }
    this.#wake();
    return this.#buffered <= this.#need + READ_AHEAD;
  }

  /**
   * Sets the hook {@link receive} calls while its bytes are valid: it may
   * take whole requests through {@link peekNow}/{@link takeNow} and must
   * keep no view of them past its return.
   */
  onArrival(hook: (() => void) | undefined): void {
    this.#onArrival = hook;
  }

  /** Makes the pending read and every later one fail with {@link StreamEnded} (the server is closing). */
  interrupt(reason: string): void {
    this.#finish(reason);
  }

  /** Resolves with exactly `length` bytes; rejects with {@link StreamEnded} if the stream ends first. */
  async read(length: number): Promise<Buffer> {
    await this.#fill(length);
    return this.#take(length);
  }

  /**
   * Exactly `length` bytes if they are already buffered, else undefined
   * (then {@link read} them): the server parses every request that arrived
   * together in one go, without a promise per request.
   */
  takeNow(length: number): Buffer | undefined {
    return this.#buffered >= length ? this.#take(length) : undefined;
  }

  /**
   * The buffer holding the next `length` bytes from {@link headAt}, if they
   * are buffered in one piece, else undefined: a request header is parsed
   * where it arrived, without a view of its own, then {@link consume}d.
   */
  peekNow(length: number): Buffer | undefined {
    const first = this.#chunks[0];
    return first !== undefined && first.length - this.#head >= length ? first : undefined;
  }

  /** Where in the buffer from {@link peekNow} the next unread byte is. */
  get headAt(): number {
    return this.#head;
  }

  /** Drops `length` bytes seen through {@link peekNow}. */
  consume(length: number): void {
    const first = this.#chunks[0] as Buffer;
    this.#head += length;
    if (this.#head === first.length) {
      this.#chunks.shift();
      this.#head = 0;
    }
    this.#taken(length);
  }

  /** Consumes `length` bytes without keeping them (a payload the server refuses). */
  async skip(length: number): Promise<void> {
    let left = length;
    while (left > 0) {
      const step = Math.min(left, READ_AHEAD);
      await this.#fill(step);
      this.#take(step);
      left -= step;
    }
  }

  async #fill(length: number): Promise<void> {
    while (this.#buffered < length) {
      if (this.#ended !== undefined) throw this.#ended;
      this.#need = length;
      this.#stream?.resume();
      await new Promise<void>((resolve, reject) => {
        this.#waiter = { resolve, reject };
      });
    }
    this.#need = 0;
  }

  #take(length: number): Buffer {
    let out: Buffer;
    const first = this.#chunks[0];
    const head = this.#head;
    if (first !== undefined && first.length - head >= length) {
      out = head === 0 && length === first.length ? first : first.subarray(head, head + length);
      this.#head = head + length;
      if (this.#head === first.length) {
        this.#chunks.shift();
        this.#head = 0;
      }
    } else {
      out = Buffer.allocUnsafe(length);
      let at = 0;
      while (at < length) {
        const chunk = this.#chunks[0] as Buffer;
        const from = this.#head;
        const n = Math.min(chunk.length - from, length - at);
        chunk.copy(out, at, from, from + n);
        at += n;
        if (from + n === chunk.length) {
          this.#chunks.shift();
          this.#head = 0;
        } else {
          this.#head = from + n;
        }
      }
    }
    this.#taken(length);
    return out;
  }

  #taken(length: number): void {
    this.#buffered -= length;
    // Keep one small read-ahead flowing: the next request header is usually here already.
    if (this.#buffered <= READ_AHEAD && this.#ended === undefined) this.#stream?.resume();
  }

  #finish(reason: string): void {
    this.#ended ??= new StreamEnded(reason);
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.reject(this.#ended);
  }

  #wake(): void {
    if (this.#buffered < this.#need) return;
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.resolve();
  }
}
