/**
 * The client's side of the fixed newstyle handshake (proto.md, "Handshake"):
 * greeting, client flags, `STARTTLS` when TLS is asked for, then
 * `EXTENDED_HEADERS` (else `STRUCTURED_REPLY`), then `GO` with an
 * `NBD_INFO_BLOCK_SIZE` request — or `EXPORT_NAME` where the server does not
 * know `GO`. Every step is awaited in turn: the spec lets a client send an
 * option only after the final reply to the previous one.
 */
import * as net from 'node:net';
import type { Duplex } from 'node:stream';
import * as tls from 'node:tls';
import { BlockDeviceError } from '../errors.js';
import { HandshakeReader } from './nbd-client-reader.js';
import {
  NBD_DEFAULT_MAX_PAYLOAD,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_NO_ZEROES,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_EXPORT,
  NBD_MAGIC,
  NBD_MAX_STRING,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_EXTENDED_HEADERS,
  NBD_OPT_GO,
  NBD_OPT_STARTTLS,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_OPTION_NAMES,
  NBD_OPTION_REPLY_MAGIC,
  NBD_OPTS_MAGIC,
  NBD_REP_ACK,
  NBD_REP_ERR_TLS_REQD,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_FLAG_ERROR,
  NBD_REP_INFO,
} from './protocol.js';

/** The oldstyle greeting's second magic (`cliserv_magic`), refused with a clear message. */
const NBD_CLISERV_MAGIC = 0x00420281861253n;
/** Longest option reply payload accepted: an info or error string is at most 4096 bytes. */
const MAX_OPTION_REPLY = NBD_MAX_STRING + 64;

/** TLS settings of an `nbds://` connection (see NbdClientTlsOptions in the device). */
export interface HandshakeTls {
  readonly ca?: string | Uint8Array | readonly (string | Uint8Array)[] | undefined;
  readonly cert?: string | Uint8Array | undefined;
  readonly key?: string | Uint8Array | undefined;
  readonly psk?: { readonly identity: string; readonly key: string | Uint8Array } | undefined;
  readonly servername?: string | undefined;
}

/** What the handshake agreed on: the export and the reply format. */
export interface NegotiatedExport {
  /** Export size in bytes. */
  readonly size: number;
  /** Transmission flags (`NBD_FLAG_*`). */
  readonly flags: number;
  /** Minimum block size: every request's offset and length are multiples of it. */
  readonly minimumBlock: number;
  /** Preferred block size. */
  readonly preferredBlock: number;
  /** Largest read or write payload per request. */
  readonly maxPayload: number;
  /** Replies may be structured (`NBD_OPT_STRUCTURED_REPLY` acknowledged). */
  readonly structured: boolean;
  /** Requests and replies use the 32-byte extended headers. */
  readonly extended: boolean;
}

/** The transmission phase's stream (the TLS one after `STARTTLS`) and the bytes already read from it. */
export interface HandshakeResult {
  readonly stream: Duplex;
  readonly info: NegotiatedExport;
  readonly leftover: Buffer;
}

/** A failed handshake: the server's refusal or a broken exchange, with its message. */
function refused(message: string, code: 'EIO' | 'ENOENT' = 'EIO'): BlockDeviceError {
  return new BlockDeviceError(code, `NBD handshake: ${message}`);
}

interface OptionReply {
  readonly type: number;
  readonly data: Buffer;
}

/** One connection's handshake, from the server's greeting to the transmission phase. */
class Handshake {
  #stream: Duplex;
  #reader: HandshakeReader;
  #noZeroes = false;
  /** The TCP host connected to, for checking the server's certificate. */
  readonly #host: string | undefined;

  constructor(socket: net.Socket, host: string | undefined) {
    this.#stream = socket;
    this.#host = host;
    this.#reader = new HandshakeReader(socket);
  }

  /** Rejects whatever read is pending (abort, timeout). */
  fail(err: Error): void {
    this.#reader.fail(err);
  }

  async run(exportName: string, tlsOptions: HandshakeTls | undefined): Promise<HandshakeResult> {
    const greeting = await this.#reader.read(18);
    if (greeting.readBigUInt64BE(0) !== NBD_MAGIC) throw refused('not an NBD server (no NBDMAGIC)');
    const second = greeting.readBigUInt64BE(8);
    if (second === NBD_CLISERV_MAGIC) throw refused('the server speaks oldstyle NBD only');
    if (second !== NBD_OPTS_MAGIC) throw refused('bad newstyle magic');
    const serverFlags = greeting.readUInt16BE(16);
    const fixed = (serverFlags & NBD_FLAG_FIXED_NEWSTYLE) !== 0;
    this.#noZeroes = (serverFlags & NBD_FLAG_NO_ZEROES) !== 0;
    const clientFlags =
      (fixed ? NBD_FLAG_C_FIXED_NEWSTYLE : 0) | (this.#noZeroes ? NBD_FLAG_C_NO_ZEROES : 0);
    const flagsOut = Buffer.alloc(4);
    flagsOut.writeUInt32BE(clientFlags >>> 0);
    this.#stream.write(flagsOut);

    if (tlsOptions !== undefined) {
      // uri.md and proto.md: a client that asked for TLS never falls back to the clear.
      if (!fixed) throw refused('TLS was asked for, but the server lacks fixed newstyle');
      const reply = await this.#option(NBD_OPT_STARTTLS, Buffer.alloc(0));
      if (reply.type !== NBD_REP_ACK) {
        throw refused(`the server refused STARTTLS (${describeReply(reply)})`);
      }
      await this.#startTls(tlsOptions);
    }
    if (!fixed) return this.#exportName(exportName, false, false);

    let extended = false;
    let structured = false;
    const ext = await this.#option(NBD_OPT_EXTENDED_HEADERS, Buffer.alloc(0));
    if (ext.type === NBD_REP_ACK) extended = true;
    else this.#checkSoftRefusal(ext, NBD_OPT_EXTENDED_HEADERS);
    if (!extended) {
      const sr = await this.#option(NBD_OPT_STRUCTURED_REPLY, Buffer.alloc(0));
      if (sr.type === NBD_REP_ACK) structured = true;
      else this.#checkSoftRefusal(sr, NBD_OPT_STRUCTURED_REPLY);
    }
    return this.#go(exportName, structured || extended, extended);
  }

  /** An optional option's refusal is fine, except one that means no option can succeed. */
  #checkSoftRefusal(reply: OptionReply, option: number): void {
    if (reply.type === NBD_REP_ERR_TLS_REQD) {
      throw refused('the server requires TLS: connect with nbds:// (or the tls option)');
    }
    if ((reply.type & NBD_REP_FLAG_ERROR) === 0) {
      throw refused(`unexpected reply ${reply.type} to ${NBD_OPTION_NAMES[option]}`);
    }
  }

  async #go(name: string, structured: boolean, extended: boolean): Promise<HandshakeResult> {
    const nameBytes = Buffer.from(name);
    const data = Buffer.alloc(4 + nameBytes.length + 2 + 2);
    data.writeUInt32BE(nameBytes.length, 0);
    nameBytes.copy(data, 4);
    data.writeUInt16BE(1, 4 + nameBytes.length);
    data.writeUInt16BE(NBD_INFO_BLOCK_SIZE, 6 + nameBytes.length);
    this.#sendOption(NBD_OPT_GO, data);
    let size: number | undefined;
    let flags = 0;
    let minimumBlock = 1;
    let preferredBlock = 4096;
    let maxPayload = NBD_DEFAULT_MAX_PAYLOAD;
    for (;;) {
      const reply = await this.#reply(NBD_OPT_GO);
      if (reply.type === NBD_REP_INFO) {
        if (reply.data.length < 2) throw refused('NBD_REP_INFO shorter than its type');
        const info = reply.data.readUInt16BE(0);
        if (info === NBD_INFO_EXPORT) {
          if (reply.data.length !== 12) throw refused('NBD_INFO_EXPORT of a bad length');
          size = toSafeSize(reply.data.readBigUInt64BE(2));
          flags = reply.data.readUInt16BE(10);
        } else if (info === NBD_INFO_BLOCK_SIZE) {
          if (reply.data.length !== 14) throw refused('NBD_INFO_BLOCK_SIZE of a bad length');
          minimumBlock = reply.data.readUInt32BE(2);
          preferredBlock = reply.data.readUInt32BE(6);
          maxPayload = reply.data.readUInt32BE(10);
          checkBlockSizes(minimumBlock, maxPayload);
        }
        // Other information types are ignored, as proto.md asks.
        continue;
      }
      if (reply.type === NBD_REP_ACK) {
        if (size === undefined) throw refused('GO acknowledged without NBD_INFO_EXPORT');
        const info = {
          size,
          flags,
          minimumBlock,
          preferredBlock,
          maxPayload,
          structured,
          extended,
        };
        return { stream: this.#stream, info, leftover: this.#reader.detach() };
      }
      if (reply.type === NBD_REP_ERR_UNSUP && !extended) {
        return this.#exportName(name, structured, false);
      }
      if (reply.type === NBD_REP_ERR_UNKNOWN) {
        throw refused(
          `no export named ${JSON.stringify(name)} (${describeReply(reply)})`,
          'ENOENT',
        );
      }
      if (reply.type === NBD_REP_ERR_TLS_REQD) {
        throw refused(
          `export ${JSON.stringify(name)} requires TLS: connect with nbds:// (or the tls option)`,
        );
      }
      throw refused(`the server refused export ${JSON.stringify(name)}: ${describeReply(reply)}`);
    }
  }

  /** The old way in, for servers without `GO`: no errors, no block sizes. */
  async #exportName(
    name: string,
    structured: boolean,
    extended: boolean,
  ): Promise<HandshakeResult> {
    this.#sendOption(NBD_OPT_EXPORT_NAME, Buffer.from(name));
    // A server that cannot serve the export just hangs up (proto.md).
    const head = await this.#reader.read(10).catch((err: unknown) => {
      throw new BlockDeviceError(
        'EIO',
        `NBD handshake: the server closed the connection on export ${JSON.stringify(name)}`,
        { cause: err },
      );
    });
    if (!this.#noZeroes) await this.#reader.read(124);
    const size = toSafeSize(head.readBigUInt64BE(0));
    const flags = head.readUInt16BE(8);
    const info: NegotiatedExport = {
      size,
      flags,
      minimumBlock: 1,
      preferredBlock: 4096,
      maxPayload: NBD_DEFAULT_MAX_PAYLOAD,
      structured,
      extended,
    };
    return { stream: this.#stream, info, leftover: this.#reader.detach() };
  }

  async #startTls(options: HandshakeTls): Promise<void> {
    const rest = this.#reader.detach();
    if (rest.length > 0) throw refused('the server sent bytes before the TLS handshake');
    const raw = this.#stream;
    const sni = options.servername ?? this.#host;
    const secure = tls.connect({
      socket: raw,
      ...(options.ca !== undefined && { ca: options.ca as tls.ConnectionOptions['ca'] }),
      ...(options.cert !== undefined && { cert: options.cert as tls.ConnectionOptions['cert'] }),
      ...(options.key !== undefined && { key: options.key as tls.ConnectionOptions['key'] }),
      // The certificate is checked against the name asked for, else the
      // host connected to (Node would check 'localhost' otherwise); SNI
      // carries names only, never an IP address.
      ...(this.#host !== undefined && { host: this.#host }),
      ...(sni !== undefined && net.isIP(sni) === 0 && { servername: sni }),
      ...(options.servername !== undefined && {
        checkServerIdentity: (_: string, cert: tls.PeerCertificate) =>
          tls.checkServerIdentity(options.servername!, cert),
      }),
      ...(options.psk !== undefined && pskSettings(options.psk)),
    });
    await new Promise<void>((resolve, reject) => {
      const fail = (err: Error) => {
        secure.destroy();
        reject(
          new BlockDeviceError('EIO', `NBD handshake: TLS failed: ${err.message}`, { cause: err }),
        );
      };
      secure.once('secureConnect', () => {
        secure.off('error', fail);
        resolve();
      });
      secure.once('error', fail);
    });
    this.#stream = secure;
    this.#reader = new HandshakeReader(secure);
  }

  #sendOption(option: number, data: Buffer): void {
    const header = Buffer.alloc(16);
    header.writeBigUInt64BE(NBD_OPTS_MAGIC, 0);
    header.writeUInt32BE(option, 8);
    header.writeUInt32BE(data.length, 12);
    this.#stream.write(Buffer.concat([header, data]));
  }

  /** Sends an option whose answer is a single reply. */
  async #option(option: number, data: Buffer): Promise<OptionReply> {
    this.#sendOption(option, data);
    return this.#reply(option);
  }

  async #reply(option: number): Promise<OptionReply> {
    const head = await this.#reader.read(20);
    if (head.readBigUInt64BE(0) !== NBD_OPTION_REPLY_MAGIC) throw refused('bad option reply magic');
    const answered = head.readUInt32BE(8);
    if (answered !== option) {
      throw refused(`reply to option ${answered} where ${NBD_OPTION_NAMES[option]} was asked`);
    }
    const type = head.readUInt32BE(12);
    const length = head.readUInt32BE(16);
    if (length > MAX_OPTION_REPLY) throw refused(`option reply of ${length} bytes`);
    const data = length === 0 ? Buffer.alloc(0) : Buffer.from(await this.#reader.read(length));
    return { type, data };
  }
}

/** Runs the handshake on a connected socket; `stop` fails it (abort, timeout). */
export function negotiate(
  socket: net.Socket,
  host: string | undefined,
  exportName: string,
  tlsOptions: HandshakeTls | undefined,
): { result: Promise<HandshakeResult>; stop(err: Error): void } {
  const handshake = new Handshake(socket, host);
  return { result: handshake.run(exportName, tlsOptions), stop: (err) => handshake.fail(err) };
}

function pskSettings(psk: NonNullable<HandshakeTls['psk']>): Partial<tls.ConnectionOptions> {
  const key = typeof psk.key === 'string' ? Buffer.from(psk.key, 'hex') : Buffer.from(psk.key);
  return {
    // Node offers PSK on TLS 1.2 only; the PSK cipher suites must be named.
    maxVersion: 'TLSv1.2',
    ciphers: 'PSK',
    pskCallback: () => ({ psk: key, identity: psk.identity }),
    checkServerIdentity: () => undefined,
  };
}

/** An option reply's type and message, for errors. */
function describeReply(reply: OptionReply): string {
  const names: Record<number, string> = {
    [NBD_REP_ERR_UNSUP]: 'NBD_REP_ERR_UNSUP',
    [NBD_REP_ERR_UNKNOWN]: 'NBD_REP_ERR_UNKNOWN',
    [NBD_REP_ERR_TLS_REQD]: 'NBD_REP_ERR_TLS_REQD',
  };
  const name = names[reply.type] ?? `reply type 0x${reply.type.toString(16)}`;
  const text = (reply.type & NBD_REP_FLAG_ERROR) !== 0 ? reply.data.toString('utf8') : '';
  return text === '' ? name : `${name}: ${text}`;
}

function toSafeSize(size: bigint): number {
  if (size > BigInt(Number.MAX_SAFE_INTEGER)) throw refused(`export size ${size} past 2^53`);
  return Number(size);
}

/**
 * proto.md, "Size constraints": the minimum block size binds the client, so a
 * bad one is refused; the preferred size is a hint, checked by the device.
 */
function checkBlockSizes(minimum: number, maxPayload: number): void {
  if (minimum <= 0 || (minimum & (minimum - 1)) !== 0 || minimum > 65536) {
    throw refused(`bad minimum block size ${minimum}`);
  }
  if (maxPayload < minimum) {
    throw refused(`maximum payload ${maxPayload} below the minimum block size ${minimum}`);
  }
}
