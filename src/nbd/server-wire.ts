import {
  NBD_EXTENDED_REPLY_MAGIC,
  NBD_MAX_STRING,
  NBD_OPTION_REPLY_MAGIC,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
} from './protocol.js';

/**
 * The server's side of the wire formats (docs/ARCHITECTURE.md, "NBD"): option
 * replies during the handshake and the three reply headers of the
 * transmission phase. Every function returns whole messages so that each
 * reply goes out in one socket write.
 */

/** Which reply headers the connection negotiated: simple only, structured, or extended. */
export type ReplyStyle = 'simple' | 'structured' | 'extended';

/** An option reply: magic, option, type, length, then `data`. */
export function optionReply(option: number, type: number, data?: Uint8Array): Buffer {
  const length = data?.length ?? 0;
  const out = Buffer.allocUnsafe(20 + length);
  out.writeBigUInt64BE(NBD_OPTION_REPLY_MAGIC, 0);
  out.writeUInt32BE(option, 8);
  out.writeUInt32BE(type, 12);
  out.writeUInt32BE(length, 16);
  if (data !== undefined) out.set(data, 20);
  return out;
}

/** An error option reply whose data is a message for a human (capped at the spec's string limit). */
export function optionError(option: number, type: number, message: string): Buffer {
  return optionReply(option, type, utf8Capped(message));
}

/** A string's UTF-8 bytes, cut at {@link NBD_MAX_STRING} (messages only: names are refused instead). */
export function utf8Capped(text: string): Buffer {
  const bytes = Buffer.from(text, 'utf8');
  return bytes.length <= NBD_MAX_STRING ? bytes : bytes.subarray(0, NBD_MAX_STRING);
}

const STRICT_UTF8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Decodes a name the client sent (export or metadata context): valid UTF-8,
 * no NUL, at most {@link NBD_MAX_STRING} bytes, as the spec requires of
 * every string. Returns undefined for anything else.
 */
export function decodeName(bytes: Uint8Array): string | undefined {
  if (bytes.length > NBD_MAX_STRING || bytes.includes(0)) return undefined;
  try {
    return STRICT_UTF8.decode(bytes);
  } catch {
    return undefined;
  }
}

/**
 * What a transmission reply answers: the request's cookie (opaque) and
 * offset, which replies echo byte for byte, as the two 32-bit halves each
 * arrived in (no copy of the header kept per request, no 64-bit number).
 */
export interface ReplyTo {
  readonly cookieHigh: number;
  readonly cookieLow: number;
  readonly offsetHigh: number;
  readonly offsetLow: number;
}

/** Writes the 8 bytes of `to`'s cookie at `at`. */
function writeCookie(out: Buffer, to: ReplyTo, at: number): void {
  out.writeUInt32BE(to.cookieHigh, at);
  out.writeUInt32BE(to.cookieLow, at + 4);
}

/** Writes the 8 bytes of `to`'s offset, as the request carried it, at `at`. */
function writeOffset(out: Buffer, to: ReplyTo, at: number): void {
  out.writeUInt32BE(to.offsetHigh, at);
  out.writeUInt32BE(to.offsetLow, at + 4);
}

/** Bytes of the header a READ reply's data follows (with the chunk's offset field). */
export function readHeaderLength(style: ReplyStyle): number {
  return style === 'simple' ? 16 : style === 'structured' ? 20 + 8 : 32 + 8;
}

/**
 * Writes at the start of `out` the header of a structured or extended reply
 * chunk whose payload is `payload` bytes; returns where the payload starts.
 */
function writeChunkHeader(
  out: Buffer,
  style: 'structured' | 'extended',
  to: ReplyTo,
  flags: number,
  type: number,
  payload: number,
): number {
  out.writeUInt16BE(flags, 4);
  out.writeUInt16BE(type, 6);
  writeCookie(out, to, 8);
  if (style === 'structured') {
    out.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, 0);
    out.writeUInt32BE(payload, 16);
    return 20;
  }
  out.writeUInt32BE(NBD_EXTENDED_REPLY_MAGIC, 0);
  writeOffset(out, to, 16);
  // A payload length is below 2^53 (a buffer's length): two 32-bit halves.
  out.writeUInt32BE(Math.floor(payload / 2 ** 32), 24);
  out.writeUInt32BE(payload >>> 0, 28);
  return 32;
}

/**
 * The header of a structured or extended reply chunk followed by room for
 * `payload` bytes, which the caller writes at the returned `at`.
 */
function chunk(
  style: 'structured' | 'extended',
  to: ReplyTo,
  flags: number,
  type: number,
  payload: number,
): { out: Buffer; at: number } {
  const out = Buffer.allocUnsafe((style === 'structured' ? 20 : 32) + payload);
  return { out, at: writeChunkHeader(out, style, to, flags, type, payload) };
}

/**
 * The success reply of a command without data: a simple reply, or (extended
 * headers forbid simple replies) an extended `NONE` chunk.
 */
export function doneReply(style: ReplyStyle, to: ReplyTo): Buffer {
  if (style === 'extended')
    return chunk(style, to, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, 0).out;
  return simpleHeader(to, 0);
}

/** A simple reply header (16 bytes), with `error` (0: success). */
export function simpleHeader(to: ReplyTo, error: number): Buffer {
  const out = Buffer.allocUnsafe(16);
  writeSimpleHeader(out, to, error);
  return out;
}

function writeSimpleHeader(out: Buffer, to: ReplyTo, error: number): void {
  out.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  out.writeUInt32BE(error, 4);
  writeCookie(out, to, 8);
}

/**
 * An error reply: a simple reply with the errno, or a final `ERROR` chunk
 * carrying `message` too (structured and extended replies; a READ must not
 * get a simple reply once structured replies are on).
 */
export function errorReply(style: ReplyStyle, to: ReplyTo, error: number, message: string): Buffer {
  if (style === 'simple') return simpleHeader(to, error);
  const text = utf8Capped(message);
  const { out, at } = chunk(style, to, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, 6 + text.length);
  out.writeUInt32BE(error, at);
  out.writeUInt16BE(text.length, at + 4);
  text.copy(out, at + 6);
  return out;
}

/**
 * Writes, in the first {@link readHeaderLength} bytes of `out`, the header
 * that goes before a READ's `dataLength` bytes of data: a simple reply
 * header, or the header of one final `OFFSET_DATA` chunk (whose payload
 * starts with the offset, included here) covering all of the data.
 */
export function writeReadHeader(
  out: Buffer,
  style: ReplyStyle,
  to: ReplyTo,
  dataLength: number,
): void {
  if (style === 'simple') {
    writeSimpleHeader(out, to, 0);
    return;
  }
  const flags = NBD_REPLY_FLAG_DONE;
  const at = writeChunkHeader(out, style, to, flags, NBD_REPLY_TYPE_OFFSET_DATA, 8 + dataLength);
  writeOffset(out, to, at);
}

/**
 * A block status chunk for one metadata context: `NBD_REPLY_TYPE_BLOCK_STATUS`
 * (32-bit lengths and flags) or, with extended headers,
 * `NBD_REPLY_TYPE_BLOCK_STATUS_EXT` (64-bit, with a descriptor count).
 */
export function blockStatusChunk(
  style: 'structured' | 'extended',
  to: ReplyTo,
  type: number,
  contextId: number,
  extents: readonly { readonly length: number; readonly flags: number }[],
  done: boolean,
): Buffer {
  const flags = done ? NBD_REPLY_FLAG_DONE : 0;
  if (style === 'structured') {
    const { out, at } = chunk(style, to, flags, type, 4 + 8 * extents.length);
    out.writeUInt32BE(contextId, at);
    let p = at + 4;
    for (const e of extents) {
      out.writeUInt32BE(e.length, p);
      out.writeUInt32BE(e.flags, p + 4);
      p += 8;
    }
    return out;
  }
  const { out, at } = chunk(style, to, flags, type, 8 + 16 * extents.length);
  out.writeUInt32BE(contextId, at);
  out.writeUInt32BE(extents.length, at + 4);
  let p = at + 8;
  for (const e of extents) {
    out.writeBigUInt64BE(BigInt(e.length), p);
    out.writeBigUInt64BE(BigInt(e.flags), p + 8);
    p += 16;
  }
  return out;
}
