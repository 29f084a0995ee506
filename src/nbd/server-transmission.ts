import type { Duplex } from 'node:stream';
import { BlockDeviceError } from '../errors.js';
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_CACHE,
  NBD_CMD_DISC,
  NBD_CMD_FLAG_DF,
  NBD_CMD_FLAG_FAST_ZERO,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLAG_PAYLOAD_LEN,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_COMMAND_NAMES,
  NBD_DEFAULT_MAX_PAYLOAD,
  NBD_EINVAL,
  NBD_EIO,
  NBD_ENOSPC,
  NBD_ENOTSUP,
  NBD_EOVERFLOW,
  NBD_EPERM,
  NBD_EXTENDED_REQUEST_MAGIC,
  NBD_EXTENDED_REQUEST_SIZE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_BLOCK_STATUS_EXT,
  NBD_REQUEST_MAGIC,
  NBD_REQUEST_SIZE,
} from './protocol.js';
import type { Negotiated } from './server-handshake.js';
import { ProtocolError } from './server-handshake.js';
import { blockStatus } from './server-meta-context.js';
import type { ByteReader } from './server-reader.js';
import {
  blockStatusChunk,
  doneReply,
  errorReply,
  type ReplyStyle,
  type ReplyTo,
  readHeader,
} from './server-wire.js';

/** Most requests one connection has in flight; past it the server stops reading requests. */
export const MAX_IN_FLIGHT = 64;
/** Bytes of reply the socket may hold unsent before the server stops reading requests. */
export const MAX_UNSENT = 16 * 1024 * 1024;
/** Bytes WRITE_ZEROES writes per device write (one shared zero buffer). */
const ZERO_STEP = 1024 * 1024;
const ZEROES = new Uint8Array(ZERO_STEP);

/** Flags each command accepts; any other flag is `EINVAL` (FUA is valid on every command). */
const ALLOWED_FLAGS: Readonly<Record<number, number>> = {
  [NBD_CMD_READ]: NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_DF,
  [NBD_CMD_WRITE]: NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_PAYLOAD_LEN,
  [NBD_CMD_FLUSH]: NBD_CMD_FLAG_FUA,
  [NBD_CMD_TRIM]: NBD_CMD_FLAG_FUA,
  [NBD_CMD_CACHE]: NBD_CMD_FLAG_FUA,
  [NBD_CMD_WRITE_ZEROES]: NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO,
  [NBD_CMD_BLOCK_STATUS]: NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_REQ_ONE,
};

interface Request extends ReplyTo {
  readonly type: number;
  readonly flags: number;
  /** The effect length (or, for WRITE, the payload length). */
  readonly length: bigint;
  readonly payload: Buffer | undefined;
}

/** A refusal: the NBD error and a message for the client's user. */
interface Refusal {
  readonly error: number;
  readonly message: string;
}

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
  readonly #stream: Duplex;
  readonly #negotiated: Negotiated;
  readonly #style: ReplyStyle;
  readonly #maxPayload: number;
  readonly #byteBudget: number;
  readonly #inFlight = new Set<Promise<void>>();
  #inFlightBytes = 0;
  #stopping = false;
  #wakeRoom: (() => void) | undefined;
  #corked = false;

  constructor(reader: ByteReader, stream: Duplex, negotiated: Negotiated, maxPayload: number) {
    this.#reader = reader;
    this.#stream = stream;
    this.#negotiated = negotiated;
    this.#style = negotiated.style;
    this.#maxPayload = maxPayload;
    this.#byteBudget = 2 * maxPayload;
    stream.on('drain', () => this.#wake());
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
    try {
      for (;;) {
        await this.#room();
        if (this.#stopping) return;
        const header = await this.#reader.read(headerSize);
        if (this.#stopping) return;
        const request = await this.#readRequest(header, extended);
        if (request === undefined) continue;
        if (request.type === NBD_CMD_DISC) return;
        this.#start(request);
      }
    } finally {
      this.#stopping = true;
      await Promise.allSettled([...this.#inFlight]);
    }
  }

  /** Stops reading requests (the server is closing); `run` resolves once in-flight ones are answered. */
  stop(): void {
    this.#stopping = true;
    this.#reader.interrupt('the server is closing');
    this.#wake();
  }

  async #readRequest(header: Buffer, extended: boolean): Promise<Request | undefined> {
    const magic = header.readUInt32BE(0);
    if (magic !== (extended ? NBD_EXTENDED_REQUEST_MAGIC : NBD_REQUEST_MAGIC)) {
      throw new ProtocolError(`request with magic 0x${magic.toString(16)}`);
    }
    const flags = header.readUInt16BE(4);
    const type = header.readUInt16BE(6);
    const to = { cookie: Buffer.from(header.subarray(8, 16)), offset: header.readBigUInt64BE(16) };
    const length = extended ? header.readBigUInt64BE(24) : BigInt(header.readUInt32BE(24));
    const hasPayload = extended ? (flags & NBD_CMD_FLAG_PAYLOAD_LEN) !== 0 : type === NBD_CMD_WRITE;
    if (!hasPayload) return { ...to, type, flags, length, payload: undefined };
    if (length > BigInt(this.#maxPayload)) {
      const refusal = {
        error: NBD_EINVAL,
        message: `payload of ${length} bytes is over ${this.#maxPayload}`,
      };
      // Payloads up to the spec's 32 MiB are never a denial of service: skip them and go on.
      // A longer one cannot be skipped at a bounded cost: answer, then close.
      if (length <= BigInt(NBD_DEFAULT_MAX_PAYLOAD)) {
        await this.#reader.skip(Number(length));
        this.#send([errorReply(this.#style, to, refusal.error, refusal.message)]);
        return undefined;
      }
      this.#send([errorReply(this.#style, to, refusal.error, refusal.message)]);
      throw new ProtocolError(`${commandName(type)} with a payload of ${length} bytes`);
    }
    const payload = await this.#reader.read(Number(length));
    return { ...to, type, flags, length, payload };
  }

  #start(request: Request): void {
    const cost =
      request.type === NBD_CMD_READ ? Number(request.length) : (request.payload?.length ?? 0);
    this.#inFlightBytes += cost;
    const done = this.#serve(request)
      .then(
        (reply) => this.#send(reply),
        (err: unknown) =>
          this.#send([errorReply(this.#style, request, errnoOf(err), messageOf(err))]),
      )
      .finally(() => {
        this.#inFlight.delete(done);
        this.#inFlightBytes -= cost;
        this.#wake();
      });
    this.#inFlight.add(done);
  }

  /** Checks and runs one request; resolves with its reply (one or more buffers sent as one). */
  async #serve(request: Request): Promise<Buffer[]> {
    const refusal = this.#check(request);
    if (refusal !== undefined)
      return [errorReply(this.#style, request, refusal.error, refusal.message)];
    const { device } = this.#negotiated.lease;
    const offset = Number(request.offset);
    const length = Number(request.length);
    const fua = (request.flags & NBD_CMD_FLAG_FUA) !== 0;
    switch (request.type) {
      case NBD_CMD_READ: {
        const data = await device.read(offset, length);
        const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
        return [readHeader(this.#style, request, bytes.length), bytes];
      }
      case NBD_CMD_WRITE:
        await device.write(offset, request.payload as Buffer);
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
        return [this.#blockStatus(request, offset, length)];
      // TRIM is a hint the device contract has no call for, and CACHE has nothing to warm:
      // both change nothing, so ordering and FUA hold trivially.
    }
    return [doneReply(this.#style, request)];
  }

  #check(request: Request): Refusal | undefined {
    const { type, flags } = request;
    const allowed = ALLOWED_FLAGS[type];
    if (allowed === undefined) return { error: NBD_EINVAL, message: `unknown command ${type}` };
    let valid = allowed;
    if (this.#style === 'simple') valid &= ~NBD_CMD_FLAG_DF;
    if (this.#style !== 'extended') valid &= ~NBD_CMD_FLAG_PAYLOAD_LEN;
    if ((flags & ~valid) !== 0) {
      return {
        error: NBD_EINVAL,
        message: `${commandName(type)} with flags 0x${flags.toString(16)}`,
      };
    }
    if (type === NBD_CMD_WRITE && this.#style === 'extended' && request.payload === undefined) {
      return { error: NBD_EINVAL, message: 'WRITE without NBD_CMD_FLAG_PAYLOAD_LEN' };
    }
    if (type === NBD_CMD_FLUSH) return undefined;
    const { device, readOnly } = this.#negotiated.lease;
    const writes = type === NBD_CMD_WRITE || type === NBD_CMD_WRITE_ZEROES;
    if (type === NBD_CMD_READ && request.length > BigInt(this.#maxPayload)) {
      return {
        error: NBD_EOVERFLOW,
        message: `READ of ${request.length} bytes is over ${this.#maxPayload}`,
      };
    }
    if (request.offset + request.length > BigInt(device.size)) {
      return {
        // The spec: ENOSPC for writes past the end, EINVAL for the rest.
        error: writes ? NBD_ENOSPC : NBD_EINVAL,
        message: `${commandName(type)} of ${request.length} bytes at ${request.offset} is past the end (${device.size})`,
      };
    }
    if (readOnly && (writes || type === NBD_CMD_TRIM)) {
      return { error: NBD_EPERM, message: 'the export is read-only' };
    }
    if (type === NBD_CMD_WRITE_ZEROES && (flags & NBD_CMD_FLAG_FAST_ZERO) !== 0) {
      // Zeroes are written as bytes, no faster than a WRITE: the spec asks for a fast ENOTSUP.
      return { error: NBD_ENOTSUP, message: 'zeroing is not faster than writing here' };
    }
    if (type === NBD_CMD_READ && request.length === 0n) {
      return { error: NBD_EINVAL, message: 'READ of 0 bytes' };
    }
    if (type === NBD_CMD_BLOCK_STATUS) {
      if (this.#negotiated.contexts.length === 0) {
        return { error: NBD_EINVAL, message: 'BLOCK_STATUS without a metadata context selected' };
      }
      if (request.length === 0n) return { error: NBD_EINVAL, message: 'BLOCK_STATUS of 0 bytes' };
    }
    return undefined;
  }

  #blockStatus(request: Request, offset: number, length: number): Buffer {
    const { device } = this.#negotiated.lease;
    const style = this.#style === 'extended' ? 'extended' : 'structured';
    const type =
      style === 'extended' ? NBD_REPLY_TYPE_BLOCK_STATUS_EXT : NBD_REPLY_TYPE_BLOCK_STATUS;
    // Compact descriptors have 32-bit lengths: keep runs to whole blocks below 4 GiB.
    const maxLength = style === 'extended' ? Number.MAX_SAFE_INTEGER : 2 ** 32 - device.blockSize;
    const one = (request.flags & NBD_CMD_FLAG_REQ_ONE) !== 0;
    const { contexts } = this.#negotiated;
    return Buffer.concat(
      contexts.map((context, i) =>
        blockStatusChunk(
          style,
          request,
          type,
          context.id,
          blockStatus(context, device, offset, length, maxLength, one),
          i === contexts.length - 1,
        ),
      ),
    );
  }

  /**
   * Writes one reply whole. Replies finished in the same turn of the event
   * loop are corked together and leave in one writev when the turn ends
   * (one system call for many replies at queue depth), never split.
   */
  #send(parts: Buffer[]): void {
    const stream = this.#stream;
    if (stream.destroyed || stream.writableEnded) return;
    if (!this.#corked) {
      this.#corked = true;
      stream.cork();
      process.nextTick(() => {
        this.#corked = false;
        stream.uncork();
      });
    }
    for (const part of parts) stream.write(part);
  }

  async #room(): Promise<void> {
    while (
      !this.#stopping &&
      (this.#inFlight.size >= MAX_IN_FLIGHT ||
        this.#inFlightBytes >= this.#byteBudget ||
        this.#stream.writableLength >= MAX_UNSENT)
    ) {
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

/**
 * The NBD error for a device failure: `ERANGE` and `EINVAL` → `EINVAL`,
 * `EROFS` → `EPERM`, `ENOSPC` → `ENOSPC`, anything else → `EIO`.
 */
export function errnoOf(err: unknown): number {
  if (!BlockDeviceError.is(err)) return NBD_EIO;
  switch (err.code) {
    case 'ERANGE':
    case 'EINVAL':
      return NBD_EINVAL;
    case 'EROFS':
      return NBD_EPERM;
    case 'ENOSPC':
      return NBD_ENOSPC;
    default:
      return NBD_EIO;
  }
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function commandName(type: number): string {
  return NBD_COMMAND_NAMES[type] ?? `command ${type}`;
}
