import type { Duplex } from 'node:stream';

/**
 * Reads exact byte counts from a socket during the handshake, where every
 * message is asked for and awaited in turn. The transmission phase parses
 * replies as they stream in instead (nbd-client-replies.ts); {@link detach}
 * hands it whatever arrived past the handshake.
 */
export class HandshakeReader {
  readonly #socket: Duplex;
  #chunks: Buffer[] = [];
  #buffered = 0;
  #want: { length: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined;
  #ended: Error | undefined;
  readonly #onData = (chunk: Buffer) => {
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
    this.#serve();
  };
  readonly #onEnd = () => this.#fail(new Error('the server closed the connection'));
  readonly #onError = (err: Error) => this.#fail(err);

  constructor(socket: Duplex) {
    this.#socket = socket;
    socket.on('data', this.#onData);
    socket.on('end', this.#onEnd);
    socket.on('close', this.#onEnd);
    socket.on('error', this.#onError);
  }

  /** The next `length` bytes; rejects once the socket ends or fails first. */
  read(length: number): Promise<Buffer> {
    if (this.#want !== undefined) throw new Error('HandshakeReader: one read at a time');
    return new Promise((resolve, reject) => {
      this.#want = { length, resolve, reject };
      this.#serve();
    });
  }

  /** Fails a pending read (an abort, a timeout) with `err`. */
  fail(err: Error): void {
    this.#fail(err);
  }

  /** Stops listening and returns the bytes read past the last `read`. */
  detach(): Buffer {
    const socket = this.#socket;
    socket.off('data', this.#onData);
    socket.off('end', this.#onEnd);
    socket.off('close', this.#onEnd);
    socket.off('error', this.#onError);
    const rest = Buffer.concat(this.#chunks);
    this.#chunks = [];
    this.#buffered = 0;
    return rest;
  }

  #serve(): void {
    const want = this.#want;
    if (want === undefined) return;
    if (this.#buffered >= want.length) {
      this.#want = undefined;
      want.resolve(this.#take(want.length));
    } else if (this.#ended !== undefined) {
      this.#want = undefined;
      want.reject(this.#ended);
    }
  }

  #take(length: number): Buffer {
    const all = this.#chunks.length === 1 ? this.#chunks[0]! : Buffer.concat(this.#chunks);
    this.#chunks = all.length > length ? [all.subarray(length)] : [];
    this.#buffered -= length;
    return all.subarray(0, length);
  }

  #fail(err: Error): void {
    this.#ended ??= err;
    this.#serve();
  }
}
