import { BlockDeviceError } from '../errors.js';
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_CACHE,
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
  NBD_EINVAL,
  NBD_EIO,
  NBD_ENOSPC,
  NBD_ENOTSUP,
  NBD_EOVERFLOW,
  NBD_EPERM,
  NBD_EXTENDED_REQUEST_MAGIC,
  NBD_REQUEST_MAGIC,
} from './protocol.js';
import { type Negotiated, ProtocolError } from './server-handshake.js';
import type { ReplyStyle, ReplyTo } from './server-wire.js';

/*
 * Transmission requests (docs/ARCHITECTURE.md, "NBD"): parsing a request
 * header, the checks every request passes before the device sees it, and
 * the NBD error a device failure becomes.
 */

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

/** One transmission request, parsed from its header (the payload, if any, is separate). */
export interface Request extends ReplyTo {
  readonly type: number;
  readonly flags: number;
  /**
   * The offset as a number: exact below 2^53, and at least 2^53 above —
   * past the end of any device, so refused (the message reads the exact
   * figure from the header).
   */
  readonly offset: number;
  /** The effect length (or, for WRITE, the payload length), as `offset` is. */
  readonly length: number;
  /** Whether a payload of `length` bytes follows the header. */
  readonly hasPayload: boolean;
  /** The length field's high 32 bits (0 in a compact header), for {@link exactLength}. */
  readonly lengthHigh: number;
  /** The length field's low 32 bits. */
  readonly lengthLow: number;
}

/** A refusal: the NBD error and a message for the client's user. */
export interface Refusal {
  readonly error: number;
  readonly message: string;
}

/**
 * Parses the request header at `at` in `buffer` (where it arrived, no view
 * of it made): 64-bit fields as numbers (two 32-bit halves, no BigInt per
 * request), the cookie and offset also as the halves replies echo.
 * @throws {@link ProtocolError} for a header without the request magic.
 */
export function parseRequest(buffer: Buffer, at: number, extended: boolean): Request {
  const magic = buffer.readUInt32BE(at);
  if (magic !== (extended ? NBD_EXTENDED_REQUEST_MAGIC : NBD_REQUEST_MAGIC)) {
    throw new ProtocolError(`request with magic 0x${magic.toString(16)}`);
  }
  const flags = buffer.readUInt16BE(at + 4);
  const type = buffer.readUInt16BE(at + 6);
  const offsetHigh = buffer.readUInt32BE(at + 16);
  const offsetLow = buffer.readUInt32BE(at + 20);
  const lengthHigh = extended ? buffer.readUInt32BE(at + 24) : 0;
  const lengthLow = buffer.readUInt32BE(extended ? at + 28 : at + 24);
  return {
    cookieHigh: buffer.readUInt32BE(at + 8),
    cookieLow: buffer.readUInt32BE(at + 12),
    offsetHigh,
    offsetLow,
    type,
    flags,
    // Exact below 2^53; at or above, at least 2^53: past the end of any device.
    offset: offsetHigh * 2 ** 32 + offsetLow,
    length: lengthHigh * 2 ** 32 + lengthLow,
    hasPayload: extended ? (flags & NBD_CMD_FLAG_PAYLOAD_LEN) !== 0 : type === NBD_CMD_WRITE,
    lengthHigh,
    lengthLow,
  };
}

/** What a request is checked against: the connection's reply style, payload limit and export. */
export interface RequestContext {
  readonly style: ReplyStyle;
  readonly maxPayload: number;
  readonly negotiated: Negotiated;
}

/**
 * Why `request` must be refused before the device sees it (bad flags, a
 * range past the end, a write to a read-only export…), or undefined.
 */
export function checkRequest(
  request: Request,
  payload: Uint8Array | undefined,
  context: RequestContext,
): Refusal | undefined {
  const { style, maxPayload, negotiated } = context;
  const { type, flags, offset, length } = request;
  const allowed = ALLOWED_FLAGS[type];
  if (allowed === undefined) return { error: NBD_EINVAL, message: `unknown command ${type}` };
  let valid = allowed;
  if (style === 'simple') valid &= ~NBD_CMD_FLAG_DF;
  if (style !== 'extended') valid &= ~NBD_CMD_FLAG_PAYLOAD_LEN;
  if ((flags & ~valid) !== 0) {
    return {
      error: NBD_EINVAL,
      message: `${commandName(type)} with flags 0x${flags.toString(16)}`,
    };
  }
  if (type === NBD_CMD_WRITE && style === 'extended' && payload === undefined) {
    return { error: NBD_EINVAL, message: 'WRITE without NBD_CMD_FLAG_PAYLOAD_LEN' };
  }
  if (type === NBD_CMD_FLUSH) return undefined;
  const { device, readOnly } = negotiated.lease;
  const writes = type === NBD_CMD_WRITE || type === NBD_CMD_WRITE_ZEROES;
  if (type === NBD_CMD_READ && length > maxPayload) {
    return {
      error: NBD_EOVERFLOW,
      message: `READ of ${exactLength(request)} bytes is over ${maxPayload}`,
    };
  }
  // Both below 2^53 the sum is exact up to 2^53; a sum at or past 2^53
  // rounds to at least 2^53, still past the end of any device.
  if (offset + length > device.size) {
    return {
      // The spec: ENOSPC for writes past the end, EINVAL for the rest.
      error: writes ? NBD_ENOSPC : NBD_EINVAL,
      message: `${commandName(type)} of ${exactLength(request)} bytes at ${(BigInt(request.offsetHigh) << 32n) | BigInt(request.offsetLow)} is past the end (${device.size})`,
    };
  }
  if (readOnly && (writes || type === NBD_CMD_TRIM)) {
    return { error: NBD_EPERM, message: 'the export is read-only' };
  }
  if (type === NBD_CMD_WRITE_ZEROES && (flags & NBD_CMD_FLAG_FAST_ZERO) !== 0) {
    // Zeroes are written as bytes, no faster than a WRITE: the spec asks for a fast ENOTSUP.
    return { error: NBD_ENOTSUP, message: 'zeroing is not faster than writing here' };
  }
  if (type === NBD_CMD_READ && length === 0) {
    return { error: NBD_EINVAL, message: 'READ of 0 bytes' };
  }
  if (type === NBD_CMD_BLOCK_STATUS) {
    if (negotiated.contexts.length === 0) {
      return { error: NBD_EINVAL, message: 'BLOCK_STATUS without a metadata context selected' };
    }
    if (length === 0) return { error: NBD_EINVAL, message: 'BLOCK_STATUS of 0 bytes' };
  }
  return undefined;
}

/** The request's length exactly as sent (for messages: a double is inexact past 2^53). */
export function exactLength(request: Request): bigint {
  return (BigInt(request.lengthHigh) << 32n) | BigInt(request.lengthLow);
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

/** A failure's message for the client's user. */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** A command's name for messages (`READ`, `command 99`). */
export function commandName(type: number): string {
  return NBD_COMMAND_NAMES[type] ?? `command ${type}`;
}
