import type { Duplex } from 'node:stream';
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_DISC,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_DEFAULT_MAX_PAYLOAD,
  NBD_EINVAL,
  NBD_EXTENDED_REQUEST_MAGIC,
  NBD_EXTENDED_REQUEST_SIZE,
  NBD_REQUEST_MAGIC,
  NBD_REQUEST_SIZE,
} from './protocol.js';
import type { Negotiated } from './server-handshake.js';
import { ProtocolError } from './server-handshake.js';
import { blockStatusReply } from './server-meta-context.js';
import { ReadReplies } from './server-read-replies.js';
import type { ByteReader } from './server-reader.js';
import { ReplyWriter } from './server-reply-writer.js';
import {
  checkRequest,
  commandName,
  errnoOf,
  exactLength,
  messageOf,
  parseRequest,
  type Request,
  type RequestContext,
} from './server-request.js';
import { doneReply, errorReply, type ReplyStyle } from './server-wire.js';

/** Most requests one connection has in flight; past it the server stops reading requests. */
export const MAX_IN_FLIGHT = 64;
/** Bytes of reply the socket may hold unsent before the server stops reading requests. */
export const MAX_UNSENT = 16 * 1024 * 1024;
/**
 * Bytes of free READ reply buffers one connection keeps: what a full
 * pipeline of 256 KiB READs holds, a buffer for each of {@link MAX_IN_FLIGHT}
 * requests in flight and for each reply the socket has not taken yet (up to
 * {@link MAX_UNSENT}, then one more), each a header over (at most 40 bytes;
 * 64 counted). With 16 MiB flat, one READ in six of a 1 GiB nbdcopy (about
 * 108 buffers in use per connection) allocated its buffer afresh, and
 * those allocations drove a major garbage collection every few hundred
 * milliseconds.
 */
export const MAX_POOLED = 2 * (MAX_UNSENT + MAX_IN_FLIGHT * 64);
/** Bytes WRITE_ZEROES writes per device write (one shared zero buffer). */
const ZERO_STEP = 1024 * 1024;
const ZEROES = new Uint8Array(ZERO_STEP);

/**
 * The transmission phase of one connection (docs/ARCHITECTURE.md, "NBD"):
 * reads requests while there is room (in-flight count, in-flight bytes,
 * unsent reply bytes all bounded), runs them concurrently against the
 * device, and answers each whole as it finishes, in any order (the replies of one
 * event-loop turn leave in one writev).
 * A request is checked in full before the device sees it: bad flags, a
 * range past the end, a write to a read-only export are refused without a
 * device call, and a WRITE's payload reaches the device only once all of it
 * has arrived.
 */
export class Transmission {
  readonly #reader: ByteReader;
  readonly #negotiated: Negotiated;
  readonly #style: ReplyStyle;
  readonly #maxPayload: number;
  readonly #byteBudget: number;
  readonly #context: RequestContext;
  /** READ replies: from the device's memory, through its callback read or `readInto`, or `read`. */
  readonly #reads: ReadReplies;
  /** Replies go out through it; READ replies in its pooled buffers, at most {@link MAX_POOLED} kept free. */
  readonly #replies: ReplyWriter;
  #inFlight = 0;
  #inFlightBytes = 0;
  #stopping = false;
  /** Whether {@link run} waits at a request boundary: only then may {@link #parseArrived} take requests. */
  #atBoundary = false;
  /** What {@link #parseArrived} threw, for {@link run} to throw. */
  #arrivalError: unknown;
  #wakeRoom: (() => void) | undefined;
  #wakeIdle: (() => void) | undefined;

  constructor(reader: ByteReader, stream: Duplex, negotiated: Negotiated, maxPayload: number) {
    this.#reader = reader;
    this.#negotiated = negotiated;
    this.#style = negotiated.style;
    this.#maxPayload = maxPayload;
    this.#byteBudget = 2 * maxPayload;
    this.#context = { style: this.#style, maxPayload, negotiated };
    this.#replies = new ReplyWriter(stream, MAX_POOLED, () => {
      if (this.#wakeRoom !== undefined) this.#wake();
    });
    this.#reads = new ReadReplies(negotiated.lease.device, this.#replies, this.#style);
  }

  /**
   * Serves requests until the client disconnects (DISC or a closed socket)
   * or {@link stop} is called; resolves once every request read has been
   * answered (or its connection is gone).
   * @throws {@link ProtocolError} for a request that leaves no safe way on.
   */
  async run(): Promise<void> {
    const extended = this.#style === 'extended';
    const headerSize = extended ? NBD_EXTENDED_REQUEST_SIZE : NBD_REQUEST_SIZE;
    const reader = this.#reader;
    reader.onArrival(this.#parseArrived);
    try {
      for (;;) {
        // Requests that arrived together are parsed and started in one
        // synchronous pass: the loop awaits only for room or for bytes.
        if (!this.#hasRoom()) {
          this.#atBoundary = true;
          await this.#room();
          this.#atBoundary = false;
          this.#replies.parsing();
        }
        if (this.#stopping) return;
        // A header that arrived whole is parsed where it lies; one split
        // across socket reads is gathered first.
        let request: Request;
        const buffered = reader.peekNow(headerSize);
        if (buffered !== undefined) {
          request = parseRequest(buffered, reader.headAt, extended);
          reader.consume(headerSize);
        } else {
          this.#atBoundary = true;
          const header = await reader.read(headerSize);
          this.#atBoundary = false;
          this.#replies.parsing();
          if (this.#stopping) return;
          request = parseRequest(header, 0, extended);
        }
        let payload: Buffer | undefined;
        if (request.hasPayload) {
          if (request.length > this.#maxPayload) {
            await this.#refusePayload(request);
            continue;
          }
          payload = reader.takeNow(request.length) ?? (await reader.read(request.length));
        }
        if (request.type === NBD_CMD_DISC) return;
        this.#start(request, payload);
      }
    } catch (err) {
      throw this.#arrivalError ?? err;
    } finally {
      this.#stopping = true;
      reader.onArrival(undefined);
      if (this.#inFlight > 0) {
        await new Promise<void>((resolve) => {
          this.#wakeIdle = resolve;
        });
      }
      this.#replies.clear();
    }
  }

  /**
   * Starts the requests lying whole in bytes a clear socket lent the reader
   * ({@link ByteReader.receive}), a WRITE's payload as a view of them, as the
   * contract allows (docs/ARCHITECTURE.md, "NBD"). Leaves to {@link run} all
   * it would wait for or refuse (split payload, over maxPayload, DISC, bad magic).
   */
  readonly #parseArrived = (): void => {
    if (!this.#atBoundary) return;
    const reader = this.#reader;
    const extended = this.#style === 'extended';
    const headerSize = extended ? NBD_EXTENDED_REQUEST_SIZE : NBD_REQUEST_SIZE;
    const magic = extended ? NBD_EXTENDED_REQUEST_MAGIC : NBD_REQUEST_MAGIC;
    this.#replies.parsing();
    try {
      while (!this.#stopping && this.#hasRoom()) {
        const buffered = reader.peekNow(headerSize);
        if (buffered === undefined || buffered.readUInt32BE(reader.headAt) !== magic) return;
        const request = parseRequest(buffered, reader.headAt, extended);
        const length = request.hasPayload ? request.length : 0;
        if (request.type === NBD_CMD_DISC) return;
        if (length > this.#maxPayload || reader.buffered < headerSize + length) return;
        reader.consume(headerSize);
        const lent = request.hasPayload ? reader.takeNow(length) : undefined;
        // A plain Uint8Array: a device that copies with `slice()` gets a copy (a Buffer's is a view).
        this.#start(request, lent && new Uint8Array(lent.buffer, lent.byteOffset, lent.length));
      }
    } catch (err) {
      // Thrown inside net's read callback it would be uncaught: `run` throws it instead.
      this.#arrivalError = err;
      this.#reader.interrupt('a request failed');
    }
  };

  /** Stops reading requests (the server is closing); `run` resolves once in-flight ones are answered. */
  stop(): void {
    this.#stopping = true;
    this.#reader.interrupt('the server is closing');
    this.#wake();
  }

  /**
   * Answers a request whose payload is over maxPayload. Payloads up to the
   * spec's 32 MiB are never a denial of service: skipped, and the
   * connection goes on. A longer one cannot be skipped at a bounded cost:
   * answered, then the connection is closed (throws).
   */
  async #refusePayload(request: Request): Promise<void> {
    const length = exactLength(request);
    const reply = errorReply(
      this.#style,
      request,
      NBD_EINVAL,
      `payload of ${length} bytes is over ${this.#maxPayload}`,
    );
    if (request.length <= NBD_DEFAULT_MAX_PAYLOAD) {
      await this.#reader.skip(request.length);
      this.#replies.send(reply);
      return;
    }
    this.#replies.send(reply);
    throw new ProtocolError(`${commandName(request.type)} with a payload of ${length} bytes`);
  }

  #start(request: Request, payload: Uint8Array | undefined): void {
    const cost = request.type === NBD_CMD_READ ? request.length : (payload?.length ?? 0);
    this.#inFlight++;
    this.#inFlightBytes += cost;
    if (request.type === NBD_CMD_READ && this.#reads.inline) {
      const refusal = checkRequest(request, undefined, this.#context);
      if (refusal === undefined) {
        this.#reads.serve(request, cost, this.#readAnswered);
        return;
      }
      this.#replies.send(errorReply(this.#style, request, refusal.error, refusal.message));
      this.#finished(cost);
    } else {
      void this.#serve(request, payload, cost);
    }
  }

  /** {@link #finished} for {@link ReadReplies.serve}, made once rather than a closure per READ. */
  readonly #readAnswered = (cost: number): void => this.#finished(cost);

  /** A request has been answered (or its connection is gone): its room is free again. */
  #finished(cost: number): void {
    this.#inFlight--;
    this.#inFlightBytes -= cost;
    if (this.#inFlight === 0) this.#wakeIdle?.();
    this.#wake();
  }

  /**
   * Checks and runs one request and sends its reply (or its error); never
   * rejects. Runs without a closure or a promise chain of its own: one
   * async call per request.
   */
  async #serve(request: Request, payload: Uint8Array | undefined, cost: number): Promise<void> {
    try {
      const refusal = checkRequest(request, payload, this.#context);
      if (refusal !== undefined) {
        this.#replies.send(errorReply(this.#style, request, refusal.error, refusal.message));
        return;
      }
      const { device } = this.#negotiated.lease;
      const { offset, length } = request;
      const fua = (request.flags & NBD_CMD_FLAG_FUA) !== 0;
      switch (request.type) {
        case NBD_CMD_READ:
          await this.#reads.serveAsync(request);
          return;
        case NBD_CMD_WRITE:
          await device.write(offset, payload as Uint8Array);
          if (fua) await device.flush();
          break;
        case NBD_CMD_WRITE_ZEROES:
          // Zero bytes are written, never a hole: NO_HOLE holds either way.
          for (let at = offset; at < offset + length; at += ZERO_STEP) {
            await device.write(at, ZEROES.subarray(0, Math.min(ZERO_STEP, offset + length - at)));
          }
          if (fua) await device.flush();
          break;
        case NBD_CMD_FLUSH:
          await device.flush();
          break;
        case NBD_CMD_BLOCK_STATUS:
          this.#replies.send(
            blockStatusReply(this.#negotiated, this.#style, request, offset, length),
          );
          return;
        // TRIM is a hint the device contract has no call for, and CACHE has nothing to warm:
        // both change nothing, so ordering and FUA hold trivially.
      }
      this.#replies.send(doneReply(this.#style, request));
    } catch (err) {
      this.#replies.send(errorReply(this.#style, request, errnoOf(err), messageOf(err)));
    } finally {
      this.#finished(cost);
    }
  }

  #hasRoom(): boolean {
    return (
      this.#stopping ||
      (this.#inFlight < MAX_IN_FLIGHT &&
        this.#inFlightBytes < this.#byteBudget &&
        this.#replies.unsent < MAX_UNSENT)
    );
  }

  async #room(): Promise<void> {
    while (!this.#hasRoom()) {
      await new Promise<void>((resolve) => {
        this.#wakeRoom = resolve;
      });
    }
  }

  #wake(): void {
    const wake = this.#wakeRoom;
    this.#wakeRoom = undefined;
    wake?.();
  }
}
