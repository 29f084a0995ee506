/**
 * The request side of an NBD client connection: request headers written in
 * place (proto.md, "Request message" and the extended-header extension's
 * "Extended request header"), and {@link RequestBatch}, which sends the
 * requests one turn of the event loop makes in one socket write.
 */
import type { Duplex } from 'node:stream';
import {
  NBD_EXTENDED_REQUEST_MAGIC,
  NBD_EXTENDED_REQUEST_SIZE,
  NBD_REQUEST_MAGIC,
  NBD_REQUEST_SIZE,
} from './protocol.js';

/** Bytes of one batch buffer; a request that does not fit in what is left of it starts the next one. */
const BATCH_BYTES = 64 * 1024;
/** A message this long or longer (a large write) is sent as a Buffer of its own, not copied into a batch. */
const OWN_MESSAGE_BYTES = BATCH_BYTES / 4;

/** Bytes of a request header: 32 with extended headers, else 28. */
export function requestHeaderSize(extended: boolean): number {
  return extended ? NBD_EXTENDED_REQUEST_SIZE : NBD_REQUEST_SIZE;
}

/**
 * Writes a request header at `at` in `into`: the 64-bit fields as two 32-bit
 * halves, the cookie a 32-bit one (the high half of its field is 0).
 * Positional arguments: this runs once per request, and an object per
 * request would be one more allocation on the hot path.
 */
export function writeRequestHeader(
  into: Buffer,
  at: number,
  extended: boolean,
  flags: number,
  command: number,
  cookie: number,
  offset: number,
  length: number,
): void {
  into.writeUInt32BE(extended ? NBD_EXTENDED_REQUEST_MAGIC : NBD_REQUEST_MAGIC, at);
  into.writeUInt16BE(flags, at + 4);
  into.writeUInt16BE(command, at + 6);
  into.writeUInt32BE(0, at + 8);
  into.writeUInt32BE(cookie, at + 12);
  into.writeUInt32BE(Math.floor(offset / 2 ** 32), at + 16);
  into.writeUInt32BE(offset >>> 0, at + 20);
  if (extended) {
    into.writeUInt32BE(Math.floor(length / 2 ** 32), at + 24);
    into.writeUInt32BE(length >>> 0, at + 28);
  } else {
    into.writeUInt32BE(length, at + 24);
  }
}

/**
 * Requests waiting for their socket write: each is written (header, and a
 * write's payload copied) into a shared buffer as it is made, and the bytes
 * gathered go out in one `write` on the next tick — after the synchronous
 * code and the promise reactions of the turn that made them, so the reads a
 * batch of replies sets off leave together. A full buffer is sent at once,
 * and a large message goes out on its own after the ones before it: the
 * bytes reach the socket in the order the requests were made.
 *
 * Bytes handed to the socket are never written again (the socket may still
 * hold them): later requests go past them, into a new buffer once this one
 * is full.
 */
export class RequestBatch {
  readonly #stream: Duplex;
  readonly #extended: boolean;
  readonly #headerSize: number;
  #buffer = Buffer.allocUnsafe(BATCH_BYTES);
  /** `[#sent, #end)` of the buffer is queued and not yet handed to the socket. */
  #sent = 0;
  #end = 0;
  #scheduled = false;
  readonly #flushScheduled = () => {
    this.#scheduled = false;
    this.flush();
  };

  constructor(stream: Duplex, extended: boolean) {
    this.#stream = stream;
    this.#extended = extended;
    this.#headerSize = requestHeaderSize(extended);
  }

  /**
   * Queues one request (fields as {@link writeRequestHeader} takes them); a
   * write's `payload` is copied before this returns.
   */
  add(
    flags: number,
    command: number,
    cookie: number,
    offset: number,
    length: number,
    payload?: Uint8Array,
  ): void {
    const size = this.#headerSize + (payload?.length ?? 0);
    if (size >= OWN_MESSAGE_BYTES) {
      this.flush();
      const message = Buffer.allocUnsafe(size);
      writeRequestHeader(message, 0, this.#extended, flags, command, cookie, offset, length);
      if (payload !== undefined) message.set(payload, this.#headerSize);
      this.#send(message);
      return;
    }
    if (this.#end + size > this.#buffer.length) {
      this.flush();
      this.#buffer = Buffer.allocUnsafe(BATCH_BYTES);
      this.#sent = 0;
      this.#end = 0;
    }
    writeRequestHeader(
      this.#buffer,
      this.#end,
      this.#extended,
      flags,
      command,
      cookie,
      offset,
      length,
    );
    if (payload !== undefined) this.#buffer.set(payload, this.#end + this.#headerSize);
    this.#end += size;
    if (!this.#scheduled) {
      this.#scheduled = true;
      process.nextTick(this.#flushScheduled);
    }
  }

  /** Hands every queued request to the socket now, in one write. */
  flush(): void {
    if (this.#end === this.#sent) return;
    const bytes = this.#buffer.subarray(this.#sent, this.#end);
    this.#sent = this.#end;
    this.#send(bytes);
  }

  #send(bytes: Buffer): void {
    // A failed connection has failed every request already: nothing to send.
    if (!this.#stream.destroyed) this.#stream.write(bytes);
  }
}
