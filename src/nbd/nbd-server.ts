import net from 'node:net';
import type { Duplex } from 'node:stream';
import { checkOptions, TypedEventEmitter } from '../base/index.js';
import { BlockDeviceError } from '../errors.js';
import { NBD_DEFAULT_MAX_PAYLOAD, NBD_DEFAULT_PORT } from './protocol.js';
import { checkExports, ExportTable, type NbdExports } from './server-exports.js';
import { type HandshakeContext, negotiate } from './server-handshake.js';
import { ByteReader, StreamEnded } from './server-reader.js';
import { adoptClearSocket } from './server-receiver.js';
import { type NbdTlsOptions, type TlsUpgrader, tlsUpgrader } from './server-tls.js';
import { Transmission } from './server-transmission.js';

/** Options for {@link serveNbd}. */
export interface NbdServerOptions {
  /** What the server serves: name → device (a `Map` or an object), or a resolver such as {@link snapshotExports}. */
  exports: NbdExports;
  /** The export a client gets when it asks for the empty name. @default undefined (the empty name is unknown) */
  defaultExport?: string | undefined;
  /** Address to listen on; never all interfaces unless asked (`'0.0.0.0'`, `'::'`). @default '127.0.0.1' */
  host?: string | undefined;
  /** TCP port; `0` lets the system pick one (read it from `server.address`). @default 10809 */
  port?: number | undefined;
  /** A Unix socket path to listen on instead of TCP (`nbd+unix:///name?socket=path`). @default undefined */
  path?: string | undefined;
  /** TLS with certificates or pre-shared keys; without it the server speaks plain NBD. @default undefined */
  tls?: NbdTlsOptions | undefined;
  /**
   * Largest READ or WRITE payload in bytes, announced in `NBD_INFO_BLOCK_SIZE`;
   * from 1 MiB to 1 GiB. Each connection holds at most about twice this in
   * requests plus 16 MiB of unsent replies. @default 33554432 (32 MiB)
   */
  maxPayload?: number | undefined;
  /** Aborting it closes the server, as `close()` does. @default undefined */
  signal?: AbortSignal | undefined;
}

/** Where a server listens. */
export type NbdServerAddress =
  | { readonly host: string; readonly port: number }
  | { readonly path: string };

/** One client connection, as the server's events describe it. */
export interface NbdConnectionInfo {
  /** A number unique within this server. */
  readonly id: number;
  /** The client's address (`host:port`, or `unix` for a Unix socket). */
  readonly remote: string;
}

/** The typed events of an {@link NbdServer}. */
export type NbdServerEvents = {
  /** A client connected. */
  connection: (connection: NbdConnectionInfo) => void;
  /** A client's connection ended; `reason` says why when the client did not end it cleanly. */
  disconnect: (connection: NbdConnectionInfo, reason: string | undefined) => void;
  /**
   * A client broke the protocol (its connection was closed), or an export's
   * `release` failed. Never thrown out of the server: with no listener it is dropped.
   */
  error: (err: Error, connection: NbdConnectionInfo | undefined) => void;
};

interface Connection {
  readonly info: NbdConnectionInfo;
  readonly context: HandshakeContext;
  transmission: Transmission | undefined;
  done: Promise<void>;
}

/** Most time a closing connection waits for the client to read what is left and hang up. */
const LINGER_MS = 2000;

/**
 * An NBD server serving block devices to any NBD client: QEMU, qemu-img,
 * nbdcopy, nbdinfo, fio, the kernel's nbd-client (docs/ARCHITECTURE.md,
 * "NBD"). Start one with {@link serveNbd}.
 *
 * Guarantees: a request is checked in full (flags, range, read-only) before
 * its device sees it, and a write reaches the device only once its whole
 * payload has arrived; every reply is one socket write; a misbehaving or
 * vanished client costs at most its connection, with memory bounded per
 * connection; the server never closes a device.
 */
export class NbdServer extends TypedEventEmitter<NbdServerEvents> implements AsyncDisposable {
  /** Where the server listens. */
  readonly address: NbdServerAddress;
  readonly #server: net.Server;
  readonly #exports: ExportTable;
  readonly #tls: TlsUpgrader | undefined;
  readonly #maxPayload: number;
  readonly #connections = new Set<Connection>();
  #nextId = 1;
  #closing: Promise<void> | undefined;
  #unlisten: (() => void) | undefined;

  /** @internal Use {@link serveNbd}. */
  constructor(
    server: net.Server,
    address: NbdServerAddress,
    exports: NbdExports,
    defaultExport: string | undefined,
    tls: TlsUpgrader | undefined,
    maxPayload: number,
    signal: AbortSignal | undefined,
  ) {
    super();
    this.#server = server;
    this.address = address;
    this.#exports = new ExportTable(exports, defaultExport, (err) =>
      this.#report(err instanceof Error ? err : new Error(String(err)), undefined),
    );
    this.#tls = tls;
    this.#maxPayload = maxPayload;
    server.on('connection', (socket) => this.#accept(socket));
    // A listening server's own failures (rare: the socket is bound) must not crash the process.
    server.on('error', (err) => this.#report(err, undefined));
    if (signal !== undefined) {
      const onAbort = () => void this.close();
      signal.addEventListener('abort', onAbort, { once: true });
      this.#unlisten = () => signal.removeEventListener('abort', onAbort);
    }
  }

  /** Connections open right now. */
  get connections(): number {
    return this.#connections.size;
  }

  /**
   * Stops accepting connections, stops reading requests, lets every request
   * already read finish and be answered, then ends every connection and
   * releases the exports the resolver gave. Closes no device. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#unlisten?.();
      const listening = new Promise<void>((resolve) => this.#server.close(() => resolve()));
      for (const connection of this.#connections) {
        if (connection.transmission !== undefined) connection.transmission.stop();
        else connection.context.reader.interrupt('the server is closing');
      }
      await Promise.all([...this.#connections].map((c) => c.done));
      await listening;
    })();
    return this.#closing;
  }

  /** Same as {@link NbdServer.close}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #accept(accepted: net.Socket): void {
    if (this.#closing !== undefined) {
      accepted.destroy();
      return;
    }
    // The listener pauses new connections only without TLS (serveNbd): those read through `onread`.
    const socket =
      this.#tls === undefined ? adoptClearSocket(accepted, () => context.reader) : accepted;
    socket.setNoDelay(true);
    // Socket errors reach the reader; this keeps one after the TLS upgrade from being unhandled.
    socket.on('error', () => {});
    const remote =
      socket.remoteAddress === undefined ? 'unix' : `${socket.remoteAddress}:${socket.remotePort}`;
    const info: NbdConnectionInfo = { id: this.#nextId++, remote };
    const context: HandshakeContext = {
      reader: new ByteReader(socket),
      stream: socket,
      exports: this.#exports,
      tls: this.#tls,
      maxPayload: this.#maxPayload,
    };
    const connection: Connection = {
      info,
      context,
      transmission: undefined,
      done: Promise.resolve(),
    };
    this.#connections.add(connection);
    connection.done = this.#serve(connection, socket);
    this.emit('connection', info);
  }

  async #serve(connection: Connection, socket: net.Socket): Promise<void> {
    const { context, info } = connection;
    let reason: string | undefined;
    try {
      const negotiated = await negotiate(context);
      if (negotiated !== undefined) {
        try {
          const transmission = new Transmission(
            context.reader,
            context.stream,
            negotiated,
            this.#maxPayload,
          );
          connection.transmission = transmission;
          if (this.#closing !== undefined) transmission.stop();
          await transmission.run();
        } finally {
          negotiated.lease.release();
        }
      }
    } catch (err) {
      if (err instanceof StreamEnded) {
        reason = err.message;
      } else {
        const error = err instanceof Error ? err : new Error(String(err));
        reason = error.message;
        this.#report(error, info);
      }
    } finally {
      await linger(context.reader, context.stream, socket);
      this.#connections.delete(connection);
      this.emit('disconnect', info, reason);
    }
  }

  #report(err: Error, info: NbdConnectionInfo | undefined): void {
    if (this.listenerCount('error') > 0) this.emit('error', err, info);
  }
}

/**
 * Ends a connection gently: replies already written are flushed, then the
 * client gets a FIN (and a TLS close_notify) and what it still sends is
 * read and dropped, so the kernel does not answer with a reset that could
 * discard replies the client has not read yet; bounded by {@link LINGER_MS}.
 */
function linger(reader: ByteReader, stream: Duplex, socket: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      stream.destroy();
      socket.destroy();
      resolve();
    };
    const timer = setTimeout(done, LINGER_MS);
    if (stream.destroyed || socket.destroyed) return done();
    stream.once('close', done);
    reader.detach();
    stream.on('data', () => {});
    stream.resume();
    stream.end();
  });
}

/**
 * Starts an NBD server (fixed newstyle; structured replies, extended headers,
 * block status, TLS) and resolves once it listens.
 * @throws `EINVAL` for bad options, `EBUSY` if the address is in use, `EIO`
 *   if listening fails otherwise; the signal's reason if it was aborted already.
 */
export async function serveNbd(options: NbdServerOptions): Promise<NbdServer> {
  if (options === undefined) throw new BlockDeviceError('EINVAL', 'serveNbd: options are required');
  // `exports` may be a function or an object: checkExports checks it.
  checkOptions<Omit<NbdServerOptions, 'exports'>>(
    options,
    {
      defaultExport: 'string',
      host: 'string',
      port: 'number',
      path: 'string',
      tls: 'object',
      maxPayload: 'number',
      signal: 'signal',
    },
    'serveNbd',
  );
  const exports = checkExports((options as { exports?: unknown }).exports);
  const maxPayload = options.maxPayload ?? NBD_DEFAULT_MAX_PAYLOAD;
  if (!Number.isSafeInteger(maxPayload) || maxPayload < 2 ** 20 || maxPayload > 2 ** 30) {
    throw new BlockDeviceError(
      'EINVAL',
      `serveNbd: maxPayload ${maxPayload} is not an integer from 1 MiB to 1 GiB`,
    );
  }
  const port = options.port ?? NBD_DEFAULT_PORT;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new BlockDeviceError(
      'EINVAL',
      `serveNbd: port ${port} is not an integer from 0 to 65535`,
    );
  }
  if (options.path !== undefined && (options.host !== undefined || options.port !== undefined)) {
    throw new BlockDeviceError('EINVAL', 'serveNbd: give either path or host and port');
  }
  const tls = options.tls === undefined ? undefined : tlsUpgrader(options.tls);
  const { signal } = options;
  if (signal?.aborted === true) throw signal.reason;
  const server = net.createServer({ noDelay: true, pauseOnConnect: tls === undefined });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      const code = err.code === 'EADDRINUSE' ? 'EBUSY' : 'EIO';
      reject(new BlockDeviceError(code, `serveNbd: cannot listen: ${err.message}`, { cause: err }));
    });
    if (options.path !== undefined) server.listen(options.path, resolve);
    else server.listen(port, options.host ?? '127.0.0.1', resolve);
  });
  server.removeAllListeners('error');
  const bound = server.address();
  const address: NbdServerAddress =
    typeof bound === 'string' || bound === null
      ? { path: options.path ?? String(bound) }
      : { host: bound.address, port: bound.port };
  return new NbdServer(server, address, exports, options.defaultExport, tls, maxPayload, signal);
}
