import * as net from 'node:net';
import type { ByteReader } from './server-reader.js';

/** Bytes of the buffer a clear connection's socket reads into, reused for every read. */
const RECEIVE_BUFFER_BYTES = 256 * 1024;

/** The handle net keeps under a private name; net's own Socket constructor takes it back as `handle`. */
interface WithHandle {
  _handle: unknown;
}

/**
 * Moves a clear (non-TLS) accepted connection onto a socket made with net's
 * `onread` option, so that it reads into one reused buffer instead of
 * allocating a Buffer per chunk (those allocations drove most of the
 * server's garbage collection and its write latency tail;
 * docs/ARCHITECTURE.md, "NBD"). net has no `onread` for accepted sockets:
 * the server listens with `pauseOnConnect` (nothing has been read yet),
 * the new socket takes the accepted one's handle, and the accepted one,
 * left without it, is destroyed so that net.Server stops counting it.
 * Every chunk goes to `reader.receive`, valid only during that call.
 */
export function adoptClearSocket(accepted: net.Socket, reader: () => ByteReader): net.Socket {
  const handle = (accepted as unknown as WithHandle)._handle;
  if (handle === null || handle === undefined) return accepted;
  (accepted as unknown as WithHandle)._handle = null;
  accepted.destroy();
  const buffer = Buffer.allocUnsafe(RECEIVE_BUFFER_BYTES);
  const options = {
    handle,
    readable: true,
    writable: true,
    onread: {
      buffer,
      callback: (length: number) => reader().receive(buffer.subarray(0, length)),
    },
  } as net.SocketConstructorOpts;
  return new net.Socket(options);
}
