/**
 * A scripted NBD server on loopback for the client's protocol tests: the
 * handshake variants real servers here do not offer (no fixed newstyle, no
 * GO, simple replies only, extended headers) and replies no honest server
 * sends (bad magic, unknown cookies, data outside the request, replies held
 * back and sent in another order). It serves a memory image unless a test's
 * `handle` answers a request itself.
 */
import net from 'node:net';
import * as P from '../../src/nbd/index.js';

export interface FakeRequest {
  readonly flags: number;
  readonly command: number;
  readonly cookie: Buffer;
  readonly offset: number;
  readonly length: number;
  readonly payload: Buffer | undefined;
}

/** What a test's handler may do with a request. */
export interface FakeReplies {
  /** Sends raw bytes. */
  send(bytes: Buffer): void;
  /** The reply the server would send by default (writes applied, reads served). */
  standard(request: FakeRequest): Buffer;
  simple(cookie: Buffer, error: number, data?: Buffer): Buffer;
  chunk(request: FakeRequest, flags: number, type: number, payload: Buffer): Buffer;
  /** Drops the connection. */
  destroy(): void;
}

export interface FakeServerOptions {
  size: number;
  /** Advertise NBD_FLAG_FIXED_NEWSTYLE. @default true */
  fixed?: boolean;
  /** Answer NBD_OPT_GO (else NBD_REP_ERR_UNSUP). @default true */
  go?: boolean;
  /** Accept NBD_OPT_STRUCTURED_REPLY. @default true */
  structured?: boolean;
  /** Accept NBD_OPT_EXTENDED_HEADERS. @default false */
  extended?: boolean;
  /** Transmission flags. @default HAS_FLAGS | SEND_FLUSH */
  flags?: number;
  /** Export names served; any other gets NBD_REP_ERR_UNKNOWN. @default [''] */
  exports?: string[];
  /** Answers a request itself: return true when it did. */
  handle?: (request: FakeRequest, replies: FakeReplies) => boolean;
}

/** A running fake server. */
export interface FakeServer {
  readonly port: number;
  readonly image: Uint8Array;
  /** Every request received, in order, by connection index. */
  readonly requests: { connection: number; request: FakeRequest }[];
  /** Connections accepted so far. */
  readonly connections: number;
  close(): Promise<void>;
}

/** Starts a fake server on a free loopback port. */
export async function startFakeServer(options: FakeServerOptions): Promise<FakeServer> {
  const image = new Uint8Array(options.size);
  const requests: { connection: number; request: FakeRequest }[] = [];
  const sockets = new Set<net.Socket>();
  let connections = 0;
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    const index = connections++;
    void serve(socket, options, image, (request) => requests.push({ connection: index, request }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    image,
    requests,
    get connections() {
      return connections;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

class Input {
  #buf = Buffer.alloc(0);
  #waiter: (() => void) | undefined;
  #ended = false;
  constructor(socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.#buf = Buffer.concat([this.#buf, d]);
      this.#waiter?.();
    });
    socket.on('close', () => {
      this.#ended = true;
      this.#waiter?.();
    });
  }
  async read(n: number): Promise<Buffer | undefined> {
    while (this.#buf.length < n) {
      if (this.#ended) return undefined;
      await new Promise<void>((resolve) => {
        this.#waiter = resolve;
      });
    }
    const out = this.#buf.subarray(0, n);
    this.#buf = this.#buf.subarray(n);
    return Buffer.from(out);
  }
}

function u64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
}

async function serve(
  socket: net.Socket,
  o: FakeServerOptions,
  image: Uint8Array,
  record: (r: FakeRequest) => void,
): Promise<void> {
  const input = new Input(socket);
  const fixed = o.fixed ?? true;
  const greeting = Buffer.alloc(18);
  greeting.writeBigUInt64BE(P.NBD_MAGIC, 0);
  greeting.writeBigUInt64BE(P.NBD_OPTS_MAGIC, 8);
  greeting.writeUInt16BE((fixed ? P.NBD_FLAG_FIXED_NEWSTYLE : 0) | P.NBD_FLAG_NO_ZEROES, 16);
  socket.write(greeting);
  const clientFlags = await input.read(4);
  if (clientFlags === undefined) return;
  const noZeroes = (clientFlags.readUInt32BE(0) & P.NBD_FLAG_C_NO_ZEROES) !== 0;
  const flags = o.flags ?? P.NBD_FLAG_HAS_FLAGS | P.NBD_FLAG_SEND_FLUSH;
  const exports = o.exports ?? [''];
  let structured = false;
  let extended = false;
  const optReply = (option: number, type: number, data = Buffer.alloc(0)) => {
    const h = Buffer.alloc(20);
    h.writeBigUInt64BE(P.NBD_OPTION_REPLY_MAGIC, 0);
    h.writeUInt32BE(option, 8);
    h.writeUInt32BE(type, 12);
    h.writeUInt32BE(data.length, 16);
    socket.write(Buffer.concat([h, data]));
  };
  for (;;) {
    const head = await input.read(16);
    if (head === undefined) return;
    const option = head.readUInt32BE(8);
    const data = (await input.read(head.readUInt32BE(12))) ?? Buffer.alloc(0);
    if (option === P.NBD_OPT_EXPORT_NAME) {
      if (!exports.includes(data.toString())) return void socket.destroy();
      socket.write(Buffer.concat([u64(o.size), Buffer.from([flags >> 8, flags & 0xff])]));
      if (!noZeroes) socket.write(Buffer.alloc(124));
      break;
    }
    if (!fixed) return void socket.destroy();
    if (option === P.NBD_OPT_STRUCTURED_REPLY && (o.structured ?? true)) {
      structured = true;
      optReply(option, P.NBD_REP_ACK);
    } else if (option === P.NBD_OPT_EXTENDED_HEADERS && o.extended) {
      extended = true;
      optReply(option, P.NBD_REP_ACK);
    } else if (option === P.NBD_OPT_GO && (o.go ?? true)) {
      const name = data.toString('utf8', 4, 4 + data.readUInt32BE(0));
      if (!exports.includes(name)) {
        optReply(option, P.NBD_REP_ERR_UNKNOWN, Buffer.from(`no export ${name}`));
        continue;
      }
      const info = Buffer.alloc(12);
      info.writeUInt16BE(P.NBD_INFO_EXPORT, 0);
      info.writeBigUInt64BE(BigInt(o.size), 2);
      info.writeUInt16BE(flags, 10);
      optReply(option, P.NBD_REP_INFO, info);
      optReply(option, P.NBD_REP_ACK);
      break;
    } else {
      optReply(option, P.NBD_REP_ERR_UNSUP);
    }
  }
  const headerSize = extended ? P.NBD_EXTENDED_REQUEST_SIZE : P.NBD_REQUEST_SIZE;
  const replies: FakeReplies = {
    send: (bytes) => socket.write(bytes),
    destroy: () => socket.destroy(),
    simple(cookie, error, data) {
      const h = Buffer.alloc(16);
      h.writeUInt32BE(P.NBD_SIMPLE_REPLY_MAGIC, 0);
      h.writeUInt32BE(error, 4);
      cookie.copy(h, 8);
      return data === undefined ? h : Buffer.concat([h, data]);
    },
    chunk(request, chunkFlags, type, payload) {
      if (extended) {
        const h = Buffer.alloc(32);
        h.writeUInt32BE(P.NBD_EXTENDED_REPLY_MAGIC, 0);
        h.writeUInt16BE(chunkFlags, 4);
        h.writeUInt16BE(type, 6);
        request.cookie.copy(h, 8);
        h.writeBigUInt64BE(BigInt(request.offset), 16);
        h.writeBigUInt64BE(BigInt(payload.length), 24);
        return Buffer.concat([h, payload]);
      }
      const h = Buffer.alloc(20);
      h.writeUInt32BE(P.NBD_STRUCTURED_REPLY_MAGIC, 0);
      h.writeUInt16BE(chunkFlags, 4);
      h.writeUInt16BE(type, 6);
      request.cookie.copy(h, 8);
      h.writeUInt32BE(payload.length, 16);
      return Buffer.concat([h, payload]);
    },
    standard(r) {
      if (r.command === P.NBD_CMD_WRITE) image.set(r.payload!, r.offset);
      const done = P.NBD_REPLY_FLAG_DONE;
      if (r.command !== P.NBD_CMD_READ) {
        return structured || extended
          ? replies.chunk(r, done, P.NBD_REPLY_TYPE_NONE, Buffer.alloc(0))
          : replies.simple(r.cookie, 0);
      }
      const data = Buffer.from(image.subarray(r.offset, r.offset + r.length));
      if (!(structured || extended)) return replies.simple(r.cookie, 0, data);
      return replies.chunk(
        r,
        done,
        P.NBD_REPLY_TYPE_OFFSET_DATA,
        Buffer.concat([u64(r.offset), data]),
      );
    },
  };
  for (;;) {
    const h = await input.read(headerSize);
    if (h === undefined) return;
    const reqFlags = h.readUInt16BE(4);
    const command = h.readUInt16BE(6);
    const offset = Number(h.readBigUInt64BE(16));
    const length = extended ? Number(h.readBigUInt64BE(24)) : h.readUInt32BE(24);
    const payload = command === P.NBD_CMD_WRITE ? await input.read(length) : undefined;
    const request: FakeRequest = {
      flags: reqFlags,
      command,
      cookie: h.subarray(8, 16),
      offset,
      length,
      payload,
    };
    record(request);
    if (command === P.NBD_CMD_DISC) {
      socket.end();
      return;
    }
    if (o.handle?.(request, replies)) continue;
    socket.write(replies.standard(request));
  }
}
