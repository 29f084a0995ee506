import net from 'node:net';
import {
  NBD_CMD_FLAG_PAYLOAD_LEN,
  NBD_EXTENDED_REPLY_MAGIC,
  NBD_EXTENDED_REQUEST_MAGIC,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_INFO_BLOCK_SIZE,
  NBD_OPT_GO,
  NBD_OPTION_REPLY_MAGIC,
  NBD_OPTS_MAGIC,
  NBD_REP_ACK,
  NBD_REQUEST_MAGIC,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
} from '../../src/nbd/index.js';

/** One option reply as the server sent it. */
export interface OptionReply {
  readonly option: number;
  readonly type: number;
  readonly data: Buffer;
}

/** One transmission reply (simple, or one structured or extended chunk). */
export interface TransmissionReply {
  readonly kind: 'simple' | 'structured' | 'extended';
  /** The cookie as a number (the raw client sends small numbers). */
  readonly cookie: number;
  /** Simple: the error; chunks: 0 (see `payload` for error chunks). */
  readonly error: number;
  readonly flags: number;
  readonly type: number;
  /** Extended replies: the offset echoed from the request. */
  readonly offset: bigint;
  readonly payload: Buffer;
}

/**
 * A deliberately small NBD client over a raw socket, for tests that need to
 * send exactly the bytes a misbehaving client would: every read is an
 * exact-length read with a time bound, and nothing is validated that the
 * test does not check itself.
 */
export class RawNbdClient {
  readonly socket: net.Socket;
  #chunks: Buffer[] = [];
  #buffered = 0;
  #closed = false;
  #waiter: (() => void) | undefined;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (d: Buffer) => {
      this.#chunks.push(d);
      this.#buffered += d.length;
      this.#waiter?.();
    });
    socket.on('close', () => {
      this.#closed = true;
      this.#waiter?.();
    });
    socket.on('error', () => {});
  }

  /** Connects to a TCP port on 127.0.0.1 or to a Unix socket path. */
  static connect(where: number | string): Promise<RawNbdClient> {
    return new Promise((resolve, reject) => {
      const socket =
        typeof where === 'number' ? net.connect(where, '127.0.0.1') : net.connect(where);
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(new RawNbdClient(socket));
      });
    });
  }

  /** Whether the server closed the connection. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Exactly `n` bytes; rejects if the connection closes first or after `ms`. */
  async read(n: number, ms = 5000): Promise<Buffer> {
    const deadline = Date.now() + ms;
    while (this.#buffered < n) {
      if (this.#closed) throw new Error(`connection closed with ${this.#buffered} of ${n} bytes`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${n} bytes after ${ms} ms (have ${this.#buffered})`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    const all = Buffer.concat(this.#chunks);
    this.#chunks = [all.subarray(n)];
    this.#buffered -= n;
    return all.subarray(0, n);
  }

  /** Resolves once the server closed the connection (rejects after `ms`). */
  async waitClosed(ms = 5000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!this.#closed) {
      if (Date.now() > deadline) throw new Error(`connection still open after ${ms} ms`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  write(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  /** Reads the greeting and answers with `clientFlags` (fixed newstyle, no zeroes by default). */
  async greet(
    clientFlags = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES,
  ): Promise<{ magic: bigint; optsMagic: bigint; flags: number }> {
    const g = await this.read(18);
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(clientFlags >>> 0);
    this.write(flags);
    return {
      magic: g.readBigUInt64BE(0),
      optsMagic: g.readBigUInt64BE(8),
      flags: g.readUInt16BE(16),
    };
  }

  /** Sends an option: IHAVEOPT, option, length (by default `data`'s), data. */
  sendOption(option: number, data: Uint8Array = new Uint8Array(0), length = data.length): void {
    const h = Buffer.alloc(16);
    h.writeBigUInt64BE(NBD_OPTS_MAGIC, 0);
    h.writeUInt32BE(option, 8);
    h.writeUInt32BE(length >>> 0, 12);
    this.write(Buffer.concat([h, data]));
  }

  /** Reads one option reply, checking its magic. */
  async optionReply(): Promise<OptionReply> {
    const h = await this.read(20);
    if (h.readBigUInt64BE(0) !== NBD_OPTION_REPLY_MAGIC) throw new Error('bad option reply magic');
    const data = await this.read(h.readUInt32BE(16));
    return { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data };
  }

  /** Reads option replies up to and including the final one (ACK or an error). */
  async optionReplies(): Promise<OptionReply[]> {
    const out: OptionReply[] = [];
    for (;;) {
      const r = await this.optionReply();
      out.push(r);
      if (r.type === NBD_REP_ACK || (r.type & 0x80000000) !== 0) return out;
    }
  }

  /** Sends an option and reads its replies. */
  async option(option: number, data?: Uint8Array): Promise<OptionReply[]> {
    this.sendOption(option, data);
    return this.optionReplies();
  }

  /** GO/INFO data for `name` with information requests `infos`. */
  static goData(name: string, infos: readonly number[] = [NBD_INFO_BLOCK_SIZE]): Buffer {
    const n = Buffer.from(name, 'utf8');
    const d = Buffer.alloc(4 + n.length + 2 + 2 * infos.length);
    d.writeUInt32BE(n.length, 0);
    n.copy(d, 4);
    d.writeUInt16BE(infos.length, 4 + n.length);
    for (const [i, info] of infos.entries()) d.writeUInt16BE(info, 6 + n.length + 2 * i);
    return d;
  }

  /** Meta context option data: export name and queries. */
  static metaData(name: string, queries: readonly string[]): Buffer {
    const parts: Buffer[] = [];
    const u32 = (v: number) => {
      const b = Buffer.alloc(4);
      b.writeUInt32BE(v);
      return b;
    };
    const n = Buffer.from(name, 'utf8');
    parts.push(u32(n.length), n, u32(queries.length));
    for (const q of queries) {
      const b = Buffer.from(q, 'utf8');
      parts.push(u32(b.length), b);
    }
    return Buffer.concat(parts);
  }

  /** Greets, sends the given options, then GO `name`; returns the export size and flags. */
  async go(name: string, before: readonly number[] = []): Promise<{ size: bigint; flags: number }> {
    await this.greet();
    for (const option of before) {
      const [r] = await this.option(option);
      if (r?.type !== NBD_REP_ACK) throw new Error(`option ${option} refused: ${r?.type}`);
    }
    const replies = await this.option(NBD_OPT_GO, RawNbdClient.goData(name));
    const last = replies[replies.length - 1];
    if (last?.type !== NBD_REP_ACK) throw new Error(`GO refused: 0x${last?.type.toString(16)}`);
    const info = replies.find((r) => r.data.readUInt16BE(0) === 0) as OptionReply;
    return { size: info.data.readBigUInt64BE(2), flags: info.data.readUInt16BE(10) };
  }

  /** Sends a compact request (28-byte header) followed by `payload`. */
  request(
    type: number,
    flags: number,
    cookie: number,
    offset: number | bigint,
    length: number,
    payload?: Uint8Array,
  ): void {
    const h = Buffer.alloc(28);
    h.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
    h.writeUInt16BE(flags, 4);
    h.writeUInt16BE(type, 6);
    h.writeBigUInt64BE(BigInt(cookie), 8);
    h.writeBigUInt64BE(BigInt(offset), 16);
    h.writeUInt32BE(length >>> 0, 24);
    this.write(payload === undefined ? h : Buffer.concat([h, payload]));
  }

  /** Sends an extended request (32-byte header); a payload sets `PAYLOAD_LEN` unless `length` is given. */
  extendedRequest(
    type: number,
    flags: number,
    cookie: number,
    offset: number | bigint,
    length: number | bigint,
    payload?: Uint8Array,
  ): void {
    const h = Buffer.alloc(32);
    h.writeUInt32BE(NBD_EXTENDED_REQUEST_MAGIC, 0);
    h.writeUInt16BE(payload === undefined ? flags : flags | NBD_CMD_FLAG_PAYLOAD_LEN, 4);
    h.writeUInt16BE(type, 6);
    h.writeBigUInt64BE(BigInt(cookie), 8);
    h.writeBigUInt64BE(BigInt(offset), 16);
    h.writeBigUInt64BE(BigInt(length), 24);
    this.write(payload === undefined ? h : Buffer.concat([h, payload]));
  }

  /**
   * Reads one reply; a simple reply to a READ carries `readLength` bytes
   * of data when its error is 0 (the client must know, as the spec says).
   */
  async reply(readLength = 0): Promise<TransmissionReply> {
    const magic = (await this.read(4)).readUInt32BE(0);
    if (magic === NBD_SIMPLE_REPLY_MAGIC) {
      const h = await this.read(12);
      const error = h.readUInt32BE(0);
      const payload = error === 0 && readLength > 0 ? await this.read(readLength) : Buffer.alloc(0);
      const cookie = Number(h.readBigUInt64BE(4));
      return { kind: 'simple', cookie, error, flags: 0, type: 0, offset: 0n, payload };
    }
    if (magic === NBD_STRUCTURED_REPLY_MAGIC) {
      const h = await this.read(16);
      const payload = await this.read(h.readUInt32BE(12));
      return {
        kind: 'structured',
        cookie: Number(h.readBigUInt64BE(4)),
        error: 0,
        flags: h.readUInt16BE(0),
        type: h.readUInt16BE(2),
        offset: 0n,
        payload,
      };
    }
    if (magic === NBD_EXTENDED_REPLY_MAGIC) {
      const h = await this.read(28);
      const payload = await this.read(Number(h.readBigUInt64BE(20)));
      return {
        kind: 'extended',
        cookie: Number(h.readBigUInt64BE(4)),
        error: 0,
        flags: h.readUInt16BE(0),
        type: h.readUInt16BE(2),
        offset: h.readBigUInt64BE(12),
        payload,
      };
    }
    throw new Error(`unknown reply magic 0x${magic.toString(16)}`);
  }

  /** The NBD error of a reply: a simple reply's error, an error chunk's errno, else 0. */
  static errorOf(reply: TransmissionReply): number {
    if (reply.kind === 'simple') return reply.error;
    return (reply.type & 0x8000) !== 0 ? reply.payload.readUInt32BE(0) : 0;
  }

  /** Closes the socket (abruptly, as a vanishing client would). */
  destroy(): void {
    this.socket.destroy();
  }
}
