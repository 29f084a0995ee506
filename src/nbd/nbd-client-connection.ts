/**
 * One NBD client connection in the transmission phase: requests go out in
 * batches, one socket write for those made in one turn of the event loop
 * (nbd-client-requests.ts), each under a cookie of its own; replies come
 * back in any order and are matched by it (nbd-client-replies.ts parses
 * them). A clear connection's socket reads into one reused buffer
 * (nbd-client-receiver.ts) that the parser reads replies from in place. `NbdDevice` (src/devices/) runs on
 * one or several of these.
 *
 * A connection fails as a whole: when the socket drops, a request gets no
 * reply within its timeout, or the server breaks the protocol, every request
 * in flight and every later one rejects with `EIO` — a reply that may still
 * come cannot be trusted, and a write whose fate is unknown must not be
 * followed by others as if it had not happened.
 */
import * as net from 'node:net';
import type { Duplex } from 'node:stream';
import { BlockDeviceError } from '../errors.js';
import { serverErrorToDeviceError } from './nbd-client-errors.js';
import { type HandshakeTls, type NegotiatedExport, negotiate } from './nbd-client-handshake.js';
import { SocketReceiver } from './nbd-client-receiver.js';
import { type AwaitedReply, ReplyParser, type ReplySink } from './nbd-client-replies.js';
import { RequestBatch, requestHeaderSize, writeRequestHeader } from './nbd-client-requests.js';
import {
  NBD_CMD_DISC,
  NBD_CMD_FLAG_PAYLOAD_LEN,
  NBD_CMD_READ,
  NBD_COMMAND_NAMES,
  NBD_ESHUTDOWN,
} from './protocol.js';

/** Where and how to connect. */
export interface ConnectionTarget {
  readonly host: string | undefined;
  readonly port: number | undefined;
  readonly path: string | undefined;
  readonly exportName: string;
  readonly tls: HandshakeTls | undefined;
  /** Bound on connecting plus the handshake, and on each request's reply. */
  readonly timeoutMs: number;
  readonly signal: AbortSignal | undefined;
}

interface Pending extends AwaitedReply {
  readonly deadline: number;
  /** Settles the caller's promise: a read's with its target, any other request's with undefined. */
  resolve(value: Uint8Array | undefined): void;
  reject(err: Error): void;
  /** Called once the request settles, either way, after its promise is settled. */
  readonly settled: (() => void) | undefined;
}

/** An NBD connection past the handshake. */
export class NbdClientConnection implements ReplySink {
  /** What the handshake agreed on. */
  readonly info: NegotiatedExport;
  readonly #stream: Duplex;
  readonly #timeoutMs: number;
  readonly #pending = new Map<number, Pending>();
  readonly #parser: ReplyParser;
  readonly #requests: RequestBatch;
  #nextCookie = 1;
  #timer: NodeJS.Timeout | undefined;
  #failure: BlockDeviceError | undefined;
  /** The server answered `ESHUTDOWN`: no new requests; disconnect once the rest are answered. */
  #shuttingDown = false;
  #disconnected: Promise<void> | undefined;
  readonly #closed: Promise<void>;
  /** Called once, when the connection fails (not on a clean disconnect). */
  onFailure: ((err: BlockDeviceError) => void) | undefined;

  /**
   * @param receiver - the clear socket's `onread` receiver; undefined for
   *   TLS, whose stream emits `data`.
   */
  private constructor(
    stream: Duplex,
    receiver: SocketReceiver | undefined,
    info: NegotiatedExport,
    leftover: Buffer,
    timeoutMs: number,
  ) {
    this.#stream = stream;
    this.info = info;
    this.#timeoutMs = timeoutMs;
    this.#requests = new RequestBatch(stream, info.extended);
    const parser = new ReplyParser(this, info.structured, info.extended);
    this.#parser = parser;
    this.#closed = new Promise((resolve) => stream.once('close', () => resolve()));
    if (receiver !== undefined) receiver.deliverTo((bytes) => parser.push(bytes));
    else stream.on('data', (chunk: Buffer) => parser.push(chunk));
    stream.on('error', (err) => this.#fail('the connection failed', err));
    stream.on('close', () => this.#fail('the server closed the connection'));
    if (leftover.length > 0) this.#parser.push(leftover);
  }

  /**
   * Connects and runs the handshake, within `timeoutMs` and until `signal` aborts.
   * @throws `EIO` (cause: the socket's error) when the server cannot be
   *   reached or the handshake fails, `ENOENT` when the export does not exist,
   *   the signal's reason when aborted.
   */
  static async open(target: ConnectionTarget): Promise<NbdClientConnection> {
    target.signal?.throwIfAborted();
    // TLS reads through its own socket; a clear connection reads into a reused buffer.
    const receiver = target.tls === undefined ? new SocketReceiver() : undefined;
    const onread = receiver?.onread;
    const socket =
      target.path !== undefined
        ? net.connect({ path: target.path, onread })
        : net.connect({ host: target.host, port: target.port ?? 0, noDelay: true, onread });
    receiver?.attach(socket);
    const where = target.path ?? `${target.host}:${target.port}`;
    let stop: ((err: Error) => void) | undefined;
    const abort = () => {
      const reason = target.signal!.reason as Error;
      stop?.(reason);
      socket.destroy(reason);
    };
    target.signal?.addEventListener('abort', abort, { once: true });
    const timer = setTimeout(() => {
      const err = new BlockDeviceError(
        'EIO',
        `NBD connect to ${where}: no answer within ${target.timeoutMs} ms`,
      );
      stop?.(err);
      socket.destroy(err);
    }, target.timeoutMs);
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve);
        socket.once('error', reject);
      });
      const handshake = negotiate(socket, target.host, target.exportName, target.tls);
      stop = handshake.stop;
      const { stream, info, leftover } = await handshake.result;
      return new NbdClientConnection(stream, receiver, info, leftover, target.timeoutMs);
    } catch (err) {
      socket.destroy();
      if (target.signal?.aborted && err === target.signal.reason) throw err;
      if (BlockDeviceError.is(err)) throw err;
      const detail = err instanceof Error ? err.message : String(err);
      throw new BlockDeviceError('EIO', `NBD connect to ${where}: ${detail}`, { cause: err });
    } finally {
      clearTimeout(timer);
      target.signal?.removeEventListener('abort', abort);
    }
  }

  /** Requests in flight. */
  get inFlight(): number {
    return this.#pending.size;
  }

  /** Why the connection failed, if it did. */
  get failure(): BlockDeviceError | undefined {
    return this.#failure;
  }

  /**
   * Sends one request other than a read and resolves when its reply
   * arrives: a write's `payload` is then with the server. The request is
   * queued before this returns (`payload` copied, so the caller may reuse
   * it at once) and leaves with the others made in the same turn of the
   * event loop.
   */
  request(command: number, offset: number, length: number, payload?: Uint8Array): Promise<void> {
    return this.#send(command, offset, length, payload, undefined, undefined);
  }

  /**
   * Sends an `NBD_CMD_READ` of `target.length` bytes at `offset` and
   * resolves with `target` once the reply's data is in it: the promise is
   * settled from the reply parser itself, with no reaction in between.
   * `settled`, if given, is called once the read settles, either way —
   * also when this rejects at once on a failed connection.
   */
  read(offset: number, target: Uint8Array, settled?: () => void): Promise<Uint8Array> {
    return this.#send(NBD_CMD_READ, offset, target.length, undefined, target, settled);
  }

  #send<T extends Uint8Array | undefined>(
    command: number,
    offset: number,
    length: number,
    payload: Uint8Array | undefined,
    target: T,
    settled: (() => void) | undefined,
  ): Promise<T> {
    let refused: BlockDeviceError | undefined;
    if (this.#failure !== undefined) refused = this.#laterFailure();
    else if (this.#shuttingDown || this.#disconnected !== undefined) {
      refused = new BlockDeviceError('EIO', 'the NBD server is shutting down this connection');
    }
    if (refused !== undefined) {
      const rejected = Promise.reject(refused);
      settled?.();
      return rejected;
    }
    const cookie = this.#cookie();
    const flags = payload !== undefined && this.info.extended ? NBD_CMD_FLAG_PAYLOAD_LEN : 0;
    this.#requests.add(flags, command, cookie, offset, length, payload);
    return new Promise<T>((resolve, reject) => {
      const deadline = Date.now() + this.#timeoutMs;
      this.#pending.set(cookie, {
        command,
        offset,
        length,
        target,
        covered: undefined,
        coveredBytes: 0,
        error: undefined,
        deadline,
        resolve: resolve as (value: Uint8Array | undefined) => void,
        reject,
        settled,
      });
      if (this.#timer === undefined) this.#armTimer(deadline);
    });
  }

  /**
   * Ends the session cleanly: `NBD_CMD_DISC` (after which the spec lets the
   * client send nothing more), then waits for the server to close, bounded
   * by the timeout. Requests still in flight are answered first by the
   * server; the caller waits for them before calling this. Idempotent.
   */
  disconnect(): Promise<void> {
    this.#disconnected ??= this.#disconnect();
    return this.#disconnected;
  }

  async #disconnect(): Promise<void> {
    if (this.#failure === undefined && !this.#stream.destroyed) {
      // Whatever is still queued goes before DISC: nothing may follow it.
      this.#requests.flush();
      const message = Buffer.alloc(requestHeaderSize(this.info.extended));
      writeRequestHeader(message, 0, this.info.extended, 0, NBD_CMD_DISC, 0, 0, 0);
      this.#stream.end(message);
      const late = setTimeout(() => this.#stream.destroy(), this.#timeoutMs);
      late.unref();
      await this.#closed;
      clearTimeout(late);
    }
    this.#stream.destroy();
    this.#clearTimer();
  }

  /** Drops the connection at once (a hard disconnect), failing whatever is in flight. */
  destroy(reason: string): void {
    this.#fail(reason);
  }

  // ReplySink: called by the parser.

  /** @internal */
  lookup(cookie: number): AwaitedReply | undefined {
    return this.#pending.get(cookie);
  }

  /** @internal */
  complete(cookie: number, reply: AwaitedReply): void {
    const pending = this.#pending.get(cookie)!;
    this.#pending.delete(cookie);
    if (this.#pending.size === 0) this.#clearTimer();
    const error = reply.error;
    if (error === undefined) pending.resolve(pending.target);
    else {
      pending.reject(serverErrorToDeviceError(error.errno, reply.command, error.message));
      // proto.md: a client that receives ESHUTDOWN must initiate a soft disconnect.
      if (error.errno === NBD_ESHUTDOWN) this.#shuttingDown = true;
    }
    pending.settled?.();
    if (this.#shuttingDown && this.#pending.size === 0) void this.disconnect();
  }

  /** @internal */
  violation(message: string): void {
    this.#fail(`the NBD server broke the protocol: ${message}`);
  }

  #cookie(): number {
    // Cookies are 32-bit counters (the high half of the 64-bit field is 0),
    // skipping any still in flight after a wrap.
    for (;;) {
      const cookie = this.#nextCookie;
      this.#nextCookie = cookie === 0xffffffff ? 1 : cookie + 1;
      if (!this.#pending.has(cookie)) return cookie;
    }
  }

  /**
   * One timer for all requests: it fires at the oldest request's deadline
   * (the Map keeps insertion order, so the first entry is the oldest).
   */
  #armTimer(deadline: number): void {
    this.#timer = setTimeout(() => this.#checkTimeouts(), Math.max(0, deadline - Date.now()));
    this.#timer.unref();
  }

  #checkTimeouts(): void {
    this.#timer = undefined;
    const oldest = this.#pending.values().next();
    if (oldest.done) return;
    if (oldest.value.deadline <= Date.now()) {
      const name = NBD_COMMAND_NAMES[oldest.value.command] ?? String(oldest.value.command);
      this.#fail(`an NBD ${name} got no reply within ${this.#timeoutMs} ms`);
    } else {
      this.#armTimer(oldest.value.deadline);
    }
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #laterFailure(): BlockDeviceError {
    const failure = this.#failure!;
    return new BlockDeviceError('EIO', `the NBD connection is down (${failure.message})`, {
      cause: failure,
    });
  }

  #fail(reason: string, cause?: unknown): void {
    if (this.#failure !== undefined) return;
    // A disconnect we asked for: the server closing is the expected end.
    if (this.#disconnected !== undefined && this.#pending.size === 0) {
      this.#failure = new BlockDeviceError('EIO', 'the NBD connection was closed');
      return;
    }
    const detail = cause instanceof Error ? `: ${cause.message}` : '';
    const failure = new BlockDeviceError('EIO', `${reason}${detail}`, { cause });
    this.#failure = failure;
    this.#clearTimer();
    this.#stream.destroy();
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const request of pending) {
      request.reject(failure);
      request.settled?.();
    }
    this.onFailure?.(failure);
  }
}
