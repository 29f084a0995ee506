import type { Duplex } from 'node:stream';
import {
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_HAS_FLAGS,
  NBD_FLAG_NO_ZEROES,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_CACHE,
  NBD_FLAG_SEND_DF,
  NBD_FLAG_SEND_FAST_ZERO,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_EXPORT,
  NBD_INFO_NAME,
  NBD_MAGIC,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_EXTENDED_HEADERS,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_LIST_META_CONTEXT,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STARTTLS,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_OPTION_NAMES,
  NBD_OPTS_MAGIC,
  NBD_REP_ACK,
  NBD_REP_ERR_EXT_HEADER_REQD,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_POLICY,
  NBD_REP_ERR_TLS_REQD,
  NBD_REP_ERR_TOO_BIG,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_SERVER,
} from './protocol.js';
import type { ExportLease, ExportTable } from './server-exports.js';
import { type MetaContext, metaContextOption } from './server-meta-context.js';
import type { ByteReader } from './server-reader.js';
import type { TlsUpgrader } from './server-tls.js';
import {
  decodeName,
  optionError,
  optionReply,
  type ReplyStyle,
  utf8Capped,
} from './server-wire.js';

/** Longest option data the server reads; a longer option is refused and the connection closed. */
export const MAX_OPTION_LENGTH = 64 * 1024;
/** Most options one connection may send before it is taken for a denial of service. */
export const MAX_OPTIONS = 256;

/** A client broke the protocol in a way that leaves no safe way on: the connection closes. */
export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
}

/** What the handshake works on: the connection's reader and current stream, and the server's settings. */
export interface HandshakeContext {
  readonly reader: ByteReader;
  /** The stream replies go to: the TCP socket, then the TLS socket after STARTTLS. */
  stream: Duplex;
  readonly exports: ExportTable;
  readonly tls: TlsUpgrader | undefined;
  readonly maxPayload: number;
}

/** The outcome of a handshake that reached the transmission phase. */
export interface Negotiated {
  readonly lease: ExportLease;
  readonly style: ReplyStyle;
  readonly contexts: readonly MetaContext[];
  /** The transmission flags announced for the export. */
  readonly flags: number;
}

interface State {
  style: ReplyStyle;
  secure: boolean;
  /** The canonical export name the contexts were selected for. */
  metaExport: string | undefined;
  contexts: MetaContext[];
}

/**
 * Runs fixed-newstyle option haggling (docs/ARCHITECTURE.md, "NBD"): resolves
 * with the export and what was negotiated once the client sends GO (or
 * EXPORT_NAME), or undefined when it aborts or fails TLS.
 * @throws {@link ProtocolError} for a violation that forces a hard
 *   disconnect; `StreamEnded` when the client goes away.
 */
export async function negotiate(ctx: HandshakeContext): Promise<Negotiated | undefined> {
  const greeting = Buffer.allocUnsafe(18);
  greeting.writeBigUInt64BE(NBD_MAGIC, 0);
  greeting.writeBigUInt64BE(NBD_OPTS_MAGIC, 8);
  greeting.writeUInt16BE(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES, 16);
  ctx.stream.write(greeting);
  const clientFlags = (await ctx.reader.read(4)).readUInt32BE(0);
  if ((clientFlags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) !== 0) {
    throw new ProtocolError(`unknown client flags 0x${clientFlags.toString(16)}`);
  }
  const fixed = (clientFlags & NBD_FLAG_C_FIXED_NEWSTYLE) !== 0;
  const noZeroes = (clientFlags & NBD_FLAG_C_NO_ZEROES) !== 0;
  if (ctx.tls?.required === true && !fixed) {
    throw new ProtocolError('TLS is required, and a client without fixed newstyle cannot start it');
  }
  const state: State = { style: 'simple', secure: false, metaExport: undefined, contexts: [] };
  for (let count = 0; ; count++) {
    if (count === MAX_OPTIONS) throw new ProtocolError(`more than ${MAX_OPTIONS} options`);
    const header = await ctx.reader.read(16);
    if (header.readBigUInt64BE(0) !== NBD_OPTS_MAGIC) {
      throw new ProtocolError('option without the IHAVEOPT magic');
    }
    const option = header.readUInt32BE(8);
    const length = header.readUInt32BE(12);
    if (length > MAX_OPTION_LENGTH) {
      // Its data cannot be skipped at no cost: refuse it and close, as for a denial of service.
      if (option !== NBD_OPT_EXPORT_NAME) {
        ctx.stream.write(
          optionError(
            option,
            NBD_REP_ERR_TOO_BIG,
            `option data of ${length} bytes is over ${MAX_OPTION_LENGTH}`,
          ),
        );
      }
      throw new ProtocolError(`option ${nameOf(option)} with ${length} bytes of data`);
    }
    const data = await ctx.reader.read(length);
    if (
      ctx.tls?.required === true &&
      !state.secure &&
      option !== NBD_OPT_STARTTLS &&
      option !== NBD_OPT_ABORT
    ) {
      if (option === NBD_OPT_EXPORT_NAME)
        throw new ProtocolError('EXPORT_NAME before the required TLS upgrade');
      ctx.stream.write(
        optionError(option, NBD_REP_ERR_TLS_REQD, 'TLS is required: send STARTTLS first'),
      );
      continue;
    }
    const outcome = await handleOption(ctx, state, option, data, noZeroes);
    if (outcome === 'abort') return undefined;
    if (outcome !== undefined) return outcome;
  }
}

async function handleOption(
  ctx: HandshakeContext,
  state: State,
  option: number,
  data: Buffer,
  noZeroes: boolean,
): Promise<Negotiated | 'abort' | undefined> {
  const reply = (type: number, payload?: Uint8Array) =>
    ctx.stream.write(optionReply(option, type, payload));
  const refuse = (type: number, message: string) =>
    ctx.stream.write(optionError(option, type, message));
  switch (option) {
    case NBD_OPT_ABORT:
      reply(NBD_REP_ACK);
      return 'abort';
    case NBD_OPT_EXPORT_NAME:
      return exportName(ctx, state, data, noZeroes);
    case NBD_OPT_LIST: {
      if (data.length !== 0) return void refuse(NBD_REP_ERR_INVALID, 'LIST takes no data');
      const parts = ctx.exports.list().map(({ name, description }) => {
        const nameBytes = Buffer.from(name, 'utf8');
        const text = description === undefined ? Buffer.alloc(0) : utf8Capped(description);
        const payload = Buffer.allocUnsafe(4 + nameBytes.length + text.length);
        payload.writeUInt32BE(nameBytes.length, 0);
        nameBytes.copy(payload, 4);
        text.copy(payload, 4 + nameBytes.length);
        return optionReply(option, NBD_REP_SERVER, payload);
      });
      ctx.stream.write(Buffer.concat([...parts, optionReply(option, NBD_REP_ACK)]));
      return undefined;
    }
    case NBD_OPT_STARTTLS:
      return startTls(ctx, state, data);
    case NBD_OPT_INFO:
    case NBD_OPT_GO:
      return infoOrGo(ctx, state, option, data);
    case NBD_OPT_STRUCTURED_REPLY:
      if (data.length !== 0)
        return void refuse(NBD_REP_ERR_INVALID, 'STRUCTURED_REPLY takes no data');
      if (state.style === 'extended') {
        return void refuse(NBD_REP_ERR_EXT_HEADER_REQD, 'extended headers are already on');
      }
      state.style = 'structured';
      return void reply(NBD_REP_ACK);
    case NBD_OPT_EXTENDED_HEADERS:
      if (data.length !== 0)
        return void refuse(NBD_REP_ERR_INVALID, 'EXTENDED_HEADERS takes no data');
      state.style = 'extended';
      return void reply(NBD_REP_ACK);
    case NBD_OPT_LIST_META_CONTEXT:
    case NBD_OPT_SET_META_CONTEXT:
      return metaContextOption(ctx, state, option, data);
    default:
      return void refuse(NBD_REP_ERR_UNSUP, `option ${nameOf(option)} is not supported`);
  }
}

async function exportName(
  ctx: HandshakeContext,
  state: State,
  data: Buffer,
  noZeroes: boolean,
): Promise<Negotiated> {
  // EXPORT_NAME cannot carry an error: every refusal is a hard disconnect.
  if (state.style === 'extended') throw new ProtocolError('EXPORT_NAME after extended headers');
  const name = decodeName(data);
  if (name === undefined)
    throw new ProtocolError('EXPORT_NAME with a name that is not a valid string');
  const lease = await ctx.exports.acquire(name).catch((err: unknown) => {
    throw new ProtocolError(`export ${JSON.stringify(name)}: ${String(err)}`);
  });
  if (lease === undefined)
    throw new ProtocolError(`EXPORT_NAME of unknown export ${JSON.stringify(name)}`);
  const flags = transmissionFlags(lease, state.style);
  const out = Buffer.alloc(noZeroes ? 10 : 134);
  out.writeBigUInt64BE(BigInt(lease.device.size), 0);
  out.writeUInt16BE(flags, 8);
  ctx.stream.write(out);
  return finish(state, lease, flags);
}

function finish(state: State, lease: ExportLease, flags: number): Negotiated {
  // Contexts selected for another export do not apply (the spec: same name, no STARTTLS between).
  const contexts = state.metaExport === lease.name ? state.contexts : [];
  return { lease, style: state.style, contexts, flags };
}

async function startTls(
  ctx: HandshakeContext,
  state: State,
  data: Buffer,
): Promise<'abort' | undefined> {
  const option = NBD_OPT_STARTTLS;
  if (ctx.tls === undefined) {
    ctx.stream.write(optionError(option, NBD_REP_ERR_POLICY, 'this server offers no TLS'));
    return undefined;
  }
  if (state.secure) {
    ctx.stream.write(optionError(option, NBD_REP_ERR_INVALID, 'TLS is already on'));
    return undefined;
  }
  if (data.length !== 0) {
    ctx.stream.write(optionError(option, NBD_REP_ERR_INVALID, 'STARTTLS takes no data'));
    return undefined;
  }
  ctx.stream.write(optionReply(option, NBD_REP_ACK));
  // The client may send nothing but its TLS hello after our ACK, and only after reading it.
  if (ctx.reader.buffered !== 0) throw new ProtocolError('data before the TLS handshake');
  ctx.reader.detach();
  let secure: Duplex;
  try {
    secure = await ctx.tls.upgrade(ctx.stream as import('node:net').Socket);
  } catch (err) {
    throw new ProtocolError(
      `TLS handshake failed: ${err instanceof Error ? err.message : String(err)}`,
    );
  }
  ctx.stream = secure;
  ctx.reader.attach(secure);
  // Nothing negotiated in the clear carries over (the spec, NBD_OPT_STARTTLS).
  state.secure = true;
  state.style = 'simple';
  state.metaExport = undefined;
  state.contexts = [];
  return undefined;
}

async function infoOrGo(
  ctx: HandshakeContext,
  state: State,
  option: number,
  data: Buffer,
): Promise<Negotiated | undefined> {
  const refuse = (type: number, message: string) =>
    void ctx.stream.write(optionError(option, type, message));
  if (data.length < 6) return refuse(NBD_REP_ERR_INVALID, 'option data shorter than 6 bytes');
  const nameLength = data.readUInt32BE(0);
  if (nameLength > data.length - 6)
    return refuse(NBD_REP_ERR_INVALID, 'name length past the option data');
  const name = decodeName(data.subarray(4, 4 + nameLength));
  if (name === undefined)
    return refuse(NBD_REP_ERR_INVALID, 'the export name is not a valid string');
  const count = data.readUInt16BE(4 + nameLength);
  if (data.length !== 6 + nameLength + 2 * count) {
    return refuse(
      NBD_REP_ERR_INVALID,
      'the information request count does not match the option length',
    );
  }
  const requested = new Set<number>();
  for (let i = 0; i < count; i++) requested.add(data.readUInt16BE(6 + nameLength + 2 * i));
  let lease: ExportLease | undefined;
  try {
    lease = await ctx.exports.acquire(name);
  } catch (err) {
    return refuse(NBD_REP_ERR_UNKNOWN, `export ${JSON.stringify(name)} failed: ${String(err)}`);
  }
  if (lease === undefined)
    return refuse(NBD_REP_ERR_UNKNOWN, `no export named ${JSON.stringify(name)}`);
  const flags = transmissionFlags(lease, state.style);
  const infos: Buffer[] = [];
  const exportInfo = Buffer.allocUnsafe(12);
  exportInfo.writeUInt16BE(NBD_INFO_EXPORT, 0);
  exportInfo.writeBigUInt64BE(BigInt(lease.device.size), 2);
  exportInfo.writeUInt16BE(flags, 10);
  infos.push(exportInfo);
  if (requested.has(NBD_INFO_NAME)) infos.push(stringInfo(NBD_INFO_NAME, lease.name));
  if (requested.has(NBD_INFO_DESCRIPTION) && lease.description !== undefined) {
    infos.push(stringInfo(NBD_INFO_DESCRIPTION, lease.description));
  }
  // Sent whether asked or not: minimum 1 (unaligned requests are handled), preferred the
  // device's block size (aligned I/O avoids read-modify-write), maximum the payload bound.
  const sizes = Buffer.allocUnsafe(14);
  sizes.writeUInt16BE(NBD_INFO_BLOCK_SIZE, 0);
  sizes.writeUInt32BE(1, 2);
  sizes.writeUInt32BE(lease.device.blockSize, 6);
  sizes.writeUInt32BE(ctx.maxPayload, 10);
  infos.push(sizes);
  ctx.stream.write(
    Buffer.concat([
      ...infos.map((info) => optionReply(option, NBD_REP_INFO, info)),
      optionReply(option, NBD_REP_ACK),
    ]),
  );
  if (option === NBD_OPT_INFO) {
    lease.release();
    return undefined;
  }
  return finish(state, lease, flags);
}

function stringInfo(type: number, text: string): Buffer {
  const bytes = utf8Capped(text);
  const out = Buffer.allocUnsafe(2 + bytes.length);
  out.writeUInt16BE(type, 0);
  bytes.copy(out, 2);
  return out;
}

/**
 * The transmission flags of an export: flush, FUA, trim, zeroes (with the
 * honest FAST_ZERO refusal) and cache on writable exports; `SEND_DF` once
 * replies can be structured (a READ is always answered in one chunk);
 * `CAN_MULTI_CONN` always, since every connection to a name shares one
 * device object, whose flush covers every write it acknowledged.
 */
function transmissionFlags(lease: ExportLease, style: ReplyStyle): number {
  let flags =
    NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_CACHE | NBD_FLAG_CAN_MULTI_CONN;
  if (lease.readOnly) flags |= NBD_FLAG_READ_ONLY;
  else {
    flags |=
      NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO;
  }
  if (style !== 'simple') flags |= NBD_FLAG_SEND_DF;
  return flags;
}

function nameOf(option: number): string {
  return NBD_OPTION_NAMES[option] ?? String(option);
}
