/**
 * Parses the transmission phase's replies as the bytes stream in (proto.md,
 * "Simple reply message", "Structured reply chunk message", and the
 * extended-header extension's "Extended reply chunk message"): replies to
 * different requests arrive in any order and structured chunks interleave,
 * so the parser keeps no state between messages beyond the request each one
 * names by its cookie. Read data is copied from the socket's chunks straight
 * into the read's own buffer: no reply payload is gathered first. Headers
 * are parsed in place in the chunk that holds them whole (the common case);
 * only one split between two chunks is gathered, into the parser's own
 * buffer — so the parser keeps no reference to a chunk once `push` returns,
 * and the socket may reuse its memory.
 *
 * Anything the spec forbids the server to send (a bad magic, an unknown
 * cookie, data outside the request, a read that claims success without
 * covering its range) is a protocol violation: the connection is closed and
 * every request on it fails, since nothing after it can be trusted.
 */
import {
  NBD_CMD_READ,
  NBD_EXTENDED_REPLY_MAGIC,
  NBD_EXTENDED_REPLY_SIZE,
  NBD_MAX_STRING,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_ERROR_BIT,
  NBD_REPLY_TYPE_ERROR_OFFSET,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REPLY_TYPE_OFFSET_HOLE,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_SIMPLE_REPLY_SIZE,
  NBD_STRUCTURED_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_SIZE,
} from './protocol.js';

/** Largest payload of a chunk that is not read data (error chunks carry a string of at most 4096 bytes). */
const MAX_CONTROL_PAYLOAD = NBD_MAX_STRING + 64;

/** A request waiting for its reply, as the parser sees it. */
export interface AwaitedReply {
  readonly command: number;
  readonly offset: number;
  readonly length: number;
  /** A read's destination, exactly `length` bytes; undefined for other commands. */
  readonly target: Uint8Array | undefined;
  /**
   * Content ranges received so far, as `start, end` pairs relative to
   * `offset` (overlap checks); undefined while nothing, or one content chunk
   * covering the whole request (the common reply), has been received — the
   * two are told apart by {@link coveredBytes}.
   */
  covered: number[] | undefined;
  /** Bytes of content received so far. */
  coveredBytes: number;
  /** The first error the server reported for this request. */
  error: { errno: number; message: string } | undefined;
}

/** Where the parser hands what it finds. */
export interface ReplySink {
  /** The request with this cookie, if it is in flight. */
  lookup(cookie: number): AwaitedReply | undefined;
  /** The request's last reply arrived (it may carry an error). */
  complete(cookie: number, request: AwaitedReply): void;
  /** The server broke the protocol; nothing more is parsed. */
  violation(message: string): void;
}

enum State {
  Header = 0,
  DataPrefix = 1,
  Data = 2,
  Payload = 3,
  Broken = 4,
}

/** The incremental parser for one connection's reply stream. */
export class ReplyParser {
  readonly #sink: ReplySink;
  readonly #extended: boolean;
  readonly #structured: boolean;
  #state = State.Header;
  /** Header, data-chunk prefix or control payload being gathered. */
  #buf = Buffer.alloc(NBD_EXTENDED_REPLY_SIZE);
  #have = 0;
  #need = 4;
  // The message being parsed.
  #magic = 0;
  #flags = 0;
  #type = 0;
  #cookie = 0;
  #request: AwaitedReply | undefined;
  #payloadLength = 0;
  /** Data state: where the next byte goes in the target, and how many are left. */
  #dataAt = 0;
  #dataLeft = 0;

  constructor(sink: ReplySink, structured: boolean, extended: boolean) {
    this.#sink = sink;
    this.#structured = structured;
    this.#extended = extended;
  }

  /** Feeds bytes from the socket, in order; `chunk` is not used once this returns. */
  push(chunk: Buffer): void {
    let pos = 0;
    const end = chunk.length;
    while (pos < end) {
      const state = this.#state;
      if (state === State.Data) {
        const n = Math.min(this.#dataLeft, end - pos);
        this.#request!.target!.set(chunk.subarray(pos, pos + n), this.#dataAt);
        this.#dataAt += n;
        this.#dataLeft -= n;
        pos += n;
        if (this.#dataLeft === 0) this.#endOfMessage();
        continue;
      }
      if (state === State.Broken) return;
      if (this.#have === 0) {
        // In place: the whole header (or data prefix) is in this chunk.
        if (state === State.Header && end - pos >= 4) {
          const size = this.#headerSize(chunk.readUInt32BE(pos));
          if (size !== 0 && end - pos >= size) {
            this.#header(chunk, pos);
            pos += size;
            continue;
          }
        } else if (state === State.DataPrefix && end - pos >= 8) {
          this.#dataPrefix(chunk, pos);
          pos += 8;
          continue;
        }
      }
      const n = Math.min(this.#need - this.#have, end - pos);
      chunk.copy(this.#buf, this.#have, pos, pos + n);
      this.#have += n;
      pos += n;
      if (this.#have === this.#need) this.#gathered();
    }
  }

  #gather(state: State, length: number): void {
    if (length > this.#buf.length) this.#buf = Buffer.alloc(length);
    this.#state = state;
    this.#have = 0;
    this.#need = length;
    if (length === 0) this.#gathered();
  }

  #violation(message: string): void {
    this.#state = State.Broken;
    this.#sink.violation(message);
  }

  #gathered(): void {
    switch (this.#state) {
      case State.Header:
        this.#gatheredHeader();
        return;
      case State.DataPrefix:
        this.#dataPrefix(this.#buf, 0);
        return;
      case State.Payload:
        this.#controlPayload();
    }
  }

  /** A header gathered across chunks: its magic first, which tells its size, then the rest. */
  #gatheredHeader(): void {
    if (this.#have === 4) {
      const magic = this.#buf.readUInt32BE(0);
      const size = this.#headerSize(magic);
      if (size === 0) {
        this.#violation(`bad reply magic 0x${magic.toString(16).padStart(8, '0')}`);
        return;
      }
      this.#need = size;
      return;
    }
    this.#header(this.#buf, 0);
  }

  /** A whole reply header at `at` in `buf`, its magic one {@link #headerSize} allows. */
  #header(buf: Buffer, at: number): void {
    this.#magic = buf.readUInt32BE(at);
    if (buf.readUInt32BE(at + 8) !== 0) {
      this.#violation('reply to a cookie never sent');
      return;
    }
    this.#cookie = buf.readUInt32BE(at + 12);
    const request = this.#sink.lookup(this.#cookie);
    if (request === undefined) {
      this.#violation(`reply to unknown cookie ${this.#cookie}`);
      return;
    }
    this.#request = request;
    if (this.#magic === NBD_SIMPLE_REPLY_MAGIC) {
      this.#simple(request, buf.readUInt32BE(at + 4));
      return;
    }
    this.#flags = buf.readUInt16BE(at + 4);
    this.#type = buf.readUInt16BE(at + 6);
    if (this.#magic === NBD_EXTENDED_REPLY_MAGIC) {
      const offset = buf.readUInt32BE(at + 16) * 2 ** 32 + buf.readUInt32BE(at + 20);
      if (offset !== request.offset) {
        this.#violation('extended reply names another offset');
        return;
      }
      if (buf.readUInt32BE(at + 24) !== 0) {
        this.#violation('extended reply longer than 4 GiB');
        return;
      }
      this.#payloadLength = buf.readUInt32BE(at + 28);
    } else {
      this.#payloadLength = buf.readUInt32BE(at + 16);
    }
    this.#chunk(request);
  }

  /** 16, 20 or 32 for a magic allowed by what was negotiated, 0 for any other. */
  #headerSize(magic: number): number {
    if (this.#extended) return magic === NBD_EXTENDED_REPLY_MAGIC ? NBD_EXTENDED_REPLY_SIZE : 0;
    if (magic === NBD_SIMPLE_REPLY_MAGIC) return NBD_SIMPLE_REPLY_SIZE;
    if (magic === NBD_STRUCTURED_REPLY_MAGIC && this.#structured) return NBD_STRUCTURED_REPLY_SIZE;
    return 0;
  }

  #simple(request: AwaitedReply, errno: number): void {
    if (errno !== 0) {
      request.error = { errno, message: '' };
      this.#endOfMessage();
      return;
    }
    if (request.command !== NBD_CMD_READ) {
      this.#endOfMessage();
      return;
    }
    // With structured replies a successful read must come as chunks: the
    // length of a simple reply's data could not be trusted to be the read's.
    if (this.#structured) {
      this.#violation('simple reply with data to a read');
      return;
    }
    request.coveredBytes = request.length;
    this.#data(0, request.length);
  }

  #data(at: number, length: number): void {
    this.#state = State.Data;
    this.#dataAt = at;
    this.#dataLeft = length;
    if (length === 0) this.#endOfMessage();
  }

  #chunk(request: AwaitedReply): void {
    const type = this.#type;
    const length = this.#payloadLength;
    if (type === NBD_REPLY_TYPE_OFFSET_DATA) {
      if (request.command !== NBD_CMD_READ) {
        this.#violation('data chunk to a non-read');
        return;
      }
      if (length < 9) {
        this.#violation('data chunk shorter than 9 bytes');
        return;
      }
      this.#gather(State.DataPrefix, 8);
      return;
    }
    if (length > MAX_CONTROL_PAYLOAD) {
      this.#violation(`reply chunk of ${length} bytes`);
      return;
    }
    this.#gather(State.Payload, length);
  }

  /** A data chunk's 8-byte offset at `at` in `buf`. */
  #dataPrefix(buf: Buffer, at: number): void {
    const request = this.#request!;
    const offset = buf.readUInt32BE(at) * 2 ** 32 + buf.readUInt32BE(at + 4);
    const length = this.#payloadLength - 8;
    if (!this.#cover(request, offset, length)) return;
    this.#data(offset - request.offset, length);
  }

  /** Records content `[offset, offset + length)`; a violation if outside the request or seen before. */
  #cover(request: AwaitedReply, offset: number, length: number): boolean {
    const start = offset - request.offset;
    const end = start + length;
    if (start < 0 || end > request.length) {
      this.#violation('reply chunk outside the requested range');
      return false;
    }
    const covered = request.covered;
    if (covered === undefined) {
      if (request.coveredBytes === 0) {
        // The first content chunk: one covering the whole request needs no list.
        if (end - start !== request.length) request.covered = [start, end];
        request.coveredBytes = length;
        return true;
      }
      // The whole request is covered already: any content overlaps it.
      this.#violation('reply chunks overlap');
      return false;
    }
    for (let i = 0; i < covered.length; i += 2) {
      if (start < covered[i + 1]! && covered[i]! < end) {
        this.#violation('reply chunks overlap');
        return false;
      }
    }
    covered.push(start, end);
    request.coveredBytes += length;
    return true;
  }

  #controlPayload(): void {
    const request = this.#request!;
    const payload = this.#buf.subarray(0, this.#need);
    const type = this.#type;
    if (type === NBD_REPLY_TYPE_NONE) {
      if (payload.length !== 0 || (this.#flags & NBD_REPLY_FLAG_DONE) === 0) {
        this.#violation('NONE chunk with a payload or without DONE');
        return;
      }
    } else if (type === NBD_REPLY_TYPE_OFFSET_HOLE) {
      if (request.command !== NBD_CMD_READ || payload.length !== 12) {
        this.#violation('bad hole chunk');
        return;
      }
      const offset = payload.readUInt32BE(0) * 2 ** 32 + payload.readUInt32BE(4);
      const size = payload.readUInt32BE(8);
      if (size === 0) {
        this.#violation('empty hole chunk');
        return;
      }
      if (!this.#cover(request, offset, size)) return;
      const start = offset - request.offset;
      request.target!.fill(0, start, start + size);
    } else if ((type & NBD_REPLY_TYPE_ERROR_BIT) !== 0) {
      // proto.md: an error chunk of a type not known is still an error; only
      // a message longer than the chunk breaks the stream.
      if (payload.length < 6) {
        this.#violation('error chunk shorter than 6 bytes');
        return;
      }
      const errno = payload.readUInt32BE(0);
      const messageLength = payload.readUInt16BE(4);
      const fixedTail = type === NBD_REPLY_TYPE_ERROR_OFFSET ? 8 : 0;
      if (6 + messageLength + fixedTail > payload.length) {
        this.#violation('error message longer than its chunk');
        return;
      }
      if (type === NBD_REPLY_TYPE_ERROR || type === NBD_REPLY_TYPE_ERROR_OFFSET) {
        if (errno === 0) {
          this.#violation('error chunk with error 0');
          return;
        }
      }
      const message = payload.toString('utf8', 6, 6 + messageLength);
      // An unknown error value counts as EINVAL (proto.md, "Error values"); 0 in an unknown type too.
      request.error ??= { errno: errno === 0 ? 22 : errno, message };
    } else {
      // BLOCK_STATUS chunks answer a command this client never sends.
      this.#violation(`unexpected reply chunk type ${type}`);
      return;
    }
    this.#endOfMessage();
  }

  #endOfMessage(): void {
    const request = this.#request!;
    const last =
      this.#magic === NBD_SIMPLE_REPLY_MAGIC || (this.#flags & NBD_REPLY_FLAG_DONE) !== 0;
    this.#request = undefined;
    this.#flags = 0;
    this.#gather(State.Header, 4);
    if (!last) return;
    if (
      request.error === undefined &&
      request.command === NBD_CMD_READ &&
      request.coveredBytes !== request.length
    ) {
      this.#violation('a read reply claimed success without all of its data');
      return;
    }
    this.#sink.complete(this.#cookie, request);
  }
}
