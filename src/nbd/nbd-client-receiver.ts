import type * as net from 'node:net';

/** Bytes of the buffer a clear (non-TLS) connection's socket reads into, reused for every read. */
const RECEIVE_BUFFER_BYTES = 256 * 1024;

/**
 * How a clear NBD connection receives: net's `onread` option makes the
 * socket read into one reused buffer and call back with it, instead of
 * allocating a Buffer per chunk and pushing it through the stream. The
 * bytes are only valid during the call: the reply parser copies a read
 * reply's data straight from them into the caller's target and keeps
 * nothing past its `push` (nbd-client-replies.ts).
 *
 * `onread` is fixed when the socket is made, before the handshake, whose
 * reader listens for `data` events and keeps chunks between reads: until
 * {@link deliverTo} is called, each chunk is copied and emitted as `data`.
 * TLS connections do not use this: the TLS socket reads from the raw one.
 */
export class SocketReceiver {
  /** For `net.connect`'s `onread` option. */
  readonly onread: net.OnReadOpts;
  #socket: net.Socket | undefined;
  #deliver: ((bytes: Buffer) => void) | undefined;

  constructor() {
    const buffer = Buffer.allocUnsafe(RECEIVE_BUFFER_BYTES);
    this.onread = {
      buffer,
      callback: (length) => {
        const bytes = buffer.subarray(0, length);
        if (this.#deliver !== undefined) this.#deliver(bytes);
        else this.#socket?.emit('data', Buffer.from(bytes));
        return true;
      },
    };
  }

  /** The socket made with {@link onread}: during the handshake its chunks are emitted on it as `data`. */
  attach(socket: net.Socket): void {
    this.#socket = socket;
  }

  /** From now on, hands every chunk to `deliver`, valid only during the call. */
  deliverTo(deliver: (bytes: Buffer) => void): void {
    this.#deliver = deliver;
  }
}
