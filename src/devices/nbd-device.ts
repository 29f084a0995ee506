import {
  AbstractBlockDevice,
  type InFlightCounter,
  inFlightCounter,
  LockTable,
  readResultBuffer,
} from '../base/index.js';
import { BlockDeviceError } from '../errors.js';
import {
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_WRITE,
  NBD_DEFAULT_MAX_PAYLOAD,
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_FLUSH,
  NbdClientConnection,
  type NegotiatedExport,
} from '../nbd/index.js';
import { chooseBlockSize, type NbdDeviceOptions, resolveTarget } from './nbd-device-options.js';

export type { NbdClientTlsOptions, NbdDeviceOptions } from './nbd-device-options.js';

/** What the NBD handshake agreed on with the server. */
export interface NbdNegotiated {
  /** The export's transmission flags (`NBD_FLAG_*` of the protocol). */
  readonly flags: number;
  /** Minimum block size: the client aligns every request to it (read-modify-write at unaligned edges). */
  readonly minimumBlock: number;
  /** The server's preferred block size. */
  readonly preferredBlock: number;
  /** Largest payload of one request; longer reads and writes are split. */
  readonly maxPayload: number;
  /** Whether replies are structured (`NBD_OPT_STRUCTURED_REPLY`). */
  readonly structuredReplies: boolean;
  /** Whether requests and replies use the 64-bit extended headers. */
  readonly extendedHeaders: boolean;
  /** Connections in use (more than 1 only where the export allows multi-conn). */
  readonly connections: number;
}

/** Events of an {@link NbdDevice}. */
export type NbdDeviceEvents = {
  /** The connection failed (dropped, timed out, or broken by the server); every call now fails `EIO`. */
  error: (err: Error) => void;
};

/**
 * A block device over an NBD export (QEMU's qemu-nbd, nbdkit, a blocksnap
 * `serveNbd`, Ceph behind qemu-nbd …): reads are `NBD_CMD_READ`, writes
 * `NBD_CMD_WRITE`, `flush()` is `NBD_CMD_FLUSH` — so a resolved flush means
 * the server made every acknowledged write durable (proto.md, "Ordering of
 * messages and writes"); on an export that does not advertise flush there
 * is nothing to make durable and `flush()` resolves at once.
 *
 * Many requests are in flight at once. A failed request rejects with `EIO`
 * (the server's `NbdServerError` as `cause`), `EROFS` for a write refused
 * with `EPERM`, `ENOSPC` for one refused for space, and the device stays
 * usable. A dropped connection, a request unanswered within `timeoutMs`, or
 * a reply that breaks the protocol fails every call in flight and every
 * later one with `EIO` — never a hang — and emits `error`; connect again
 * to go on. `close()` waits for I/O in flight, flushes, and sends
 * `NBD_CMD_DISC`. The wire side is in src/nbd/ (docs/ARCHITECTURE.md,
 * "NBD client").
 */
export class NbdDevice extends AbstractBlockDevice<NbdDeviceEvents> {
  /** The export's name on the server. */
  readonly exportName: string;
  /** What the handshake agreed on. */
  readonly negotiated: NbdNegotiated;
  readonly #connections: NbdClientConnection[];
  #next = 0;
  readonly #minimumBlock: number;
  /** Longest request payload, a multiple of the minimum block size. */
  readonly #piece: number;
  /** Locks of minimum blocks, only where the server's minimum block is over 1 (read-modify-write). */
  readonly #locks: LockTable | undefined;
  /**
   * Reads count themselves: a read of one request hands the counter's
   * `settled` to the connection, which calls it as the reply settles the
   * read — no reaction per read just to count it.
   */
  readonly #inFlight: InFlightCounter = inFlightCounter(this);

  private constructor(
    exportName: string,
    info: NegotiatedExport,
    blockSize: number,
    readOnly: boolean,
    connections: NbdClientConnection[],
  ) {
    super('NbdDevice', info.size, blockSize, readOnly);
    this.exportName = exportName;
    this.#connections = connections;
    this.#minimumBlock = info.minimumBlock;
    const cap = Math.min(info.maxPayload, NBD_DEFAULT_MAX_PAYLOAD);
    const unit = cap >= blockSize ? blockSize : info.minimumBlock;
    this.#piece = Math.floor(cap / unit) * unit;
    this.#locks = info.minimumBlock > 1 ? new LockTable() : undefined;
    this.negotiated = {
      flags: info.flags,
      minimumBlock: info.minimumBlock,
      preferredBlock: info.preferredBlock,
      maxPayload: info.maxPayload,
      structuredReplies: info.structured || info.extended,
      extendedHeaders: info.extended,
      connections: connections.length,
    };
    for (const connection of connections) {
      connection.onFailure = (err) => this.#connectionFailed(err);
    }
    this.#inFlight.ownReads = true;
  }

  /**
   * Connects to an NBD export, given as a URL (`nbd://host[:port]/name`,
   * `nbd+unix:///name?socket=path`, `nbds://…`, `nbds+unix://…`) with
   * `options` for the rest, or as options alone. Negotiates fixed newstyle
   * with `NBD_OPT_GO` (`EXPORT_NAME` where the server lacks it), structured
   * replies or extended headers where offered, and the server's block sizes.
   *
   * `blockSize` is the server's preferred block size clamped to 512 B..1 MiB
   * (halved while it does not divide the export's size); `readOnly` follows
   * the export's flags.
   * @throws `EINVAL` for a bad URL or options, or an export whose size is
   *   not a multiple of 512; `ENOENT` when the server has no such export;
   *   `EIO` when the server cannot be reached or the handshake fails (TLS
   *   included); the signal's reason when aborted.
   */
  static async connect(
    target: string | URL | NbdDeviceOptions,
    options?: NbdDeviceOptions,
  ): Promise<NbdDevice> {
    const { connection: where, count, readOnly } = resolveTarget(target, options);
    const first = await NbdClientConnection.open(where);
    const connections = [first];
    try {
      const info = first.info;
      const blockSize = chooseBlockSize(info);
      if (count > 1 && (info.flags & NBD_FLAG_CAN_MULTI_CONN) !== 0) {
        const more = await Promise.allSettled(
          Array.from({ length: count - 1 }, () => NbdClientConnection.open(where)),
        );
        for (const r of more) if (r.status === 'fulfilled') connections.push(r.value);
        const failed = more.find((r) => r.status === 'rejected');
        if (failed !== undefined) throw failed.reason;
        for (const c of connections) {
          if (c.info.size !== info.size || c.info.flags !== info.flags) {
            throw new BlockDeviceError('EIO', 'NBD: the export changed between connections');
          }
        }
      }
      const ro = readOnly || (info.flags & NBD_FLAG_READ_ONLY) !== 0;
      return new NbdDevice(where.exportName, info, blockSize, ro, connections);
    } catch (err) {
      await Promise.all(connections.map((c) => c.disconnect().catch(() => {})));
      throw err;
    }
  }

  /**
   * A read of one request (aligned, at most the payload limit — any 4 KiB
   * read) resolves straight from the reply parser with its result buffer,
   * which the reply's data was copied into; a longer one is split, an
   * unaligned one reads the aligned span.
   */
  protected _read(offset: number, length: number): Promise<Uint8Array> {
    if (this.#oneRequest(offset, length)) {
      this.#inFlight.started();
      return this.#connection().read(offset, readResultBuffer(length), this.#inFlight.settled);
    }
    return this.#inFlight.track(this.#readPieces(offset, length));
  }

  async #readPieces(offset: number, length: number): Promise<Uint8Array> {
    const m = this.#minimumBlock;
    if (offset % m === 0 && length % m === 0) {
      const result = readResultBuffer(length);
      await this.#transfer(NBD_CMD_READ, offset, result);
      return result;
    }
    // The server's minimum block binds every request (proto.md, "Size
    // constraints"): read the aligned span, hand back the asked part.
    const start = offset - (offset % m);
    const end = Math.min(this.size, Math.ceil((offset + length) / m) * m);
    const span = new Uint8Array(end - start);
    await this.#transfer(NBD_CMD_READ, start, span);
    const result = readResultBuffer(length);
    result.set(span.subarray(offset - start, offset - start + length));
    return result;
  }

  /**
   * An aligned read's reply data is copied from the socket straight into
   * the caller's buffer (a read of one request resolves from the reply
   * parser, as in `_read`); an unaligned one reads the aligned span and
   * copies the asked part in.
   */
  protected override _readInto(offset: number, target: Uint8Array): Promise<Uint8Array> {
    if (this.#oneRequest(offset, target.length)) {
      this.#inFlight.started();
      return this.#connection().read(offset, target, this.#inFlight.settled);
    }
    return this.#inFlight.track(this.#readPiecesInto(offset, target));
  }

  async #readPiecesInto(offset: number, target: Uint8Array): Promise<Uint8Array> {
    const m = this.#minimumBlock;
    if (offset % m === 0 && target.length % m === 0) {
      await this.#transfer(NBD_CMD_READ, offset, target);
      return target;
    }
    target.set(await this.#readPieces(offset, target.length));
    return target;
  }

  /** Whether a read of `[offset, offset + length)` is one aligned request. */
  #oneRequest(offset: number, length: number): boolean {
    const m = this.#minimumBlock;
    return length <= this.#piece && offset % m === 0 && length % m === 0;
  }

  protected _write(offset: number, data: Uint8Array): Promise<void> {
    return this.#write(offset, data);
  }

  /** Writes go out before this returns (each request copies its payload), so `data` needs no copy first. */
  protected override _writeThrough(offset: number, data: Uint8Array): Promise<void> {
    if (this.#locks === undefined) return this.#transfer(NBD_CMD_WRITE, offset, data);
    // Read-modify-write waits for locks: keep a copy of the caller's bytes.
    return this.#write(offset, Uint8Array.from(data));
  }

  /**
   * A write where the server's minimum block is over 1: every write locks
   * the minimum blocks it touches, so the read-modify-write of an unaligned
   * edge never puts back bytes another write changed meanwhile.
   */
  async #write(offset: number, data: Uint8Array): Promise<void> {
    const locks = this.#locks;
    if (locks === undefined) return this.#transfer(NBD_CMD_WRITE, offset, data);
    const m = this.#minimumBlock;
    const end = offset + data.length;
    const start = offset - (offset % m);
    const alignedEnd = Math.min(this.size, Math.ceil(end / m) * m);
    const release = await locks.acquire(start / m, Math.ceil(alignedEnd / m) - 1);
    try {
      if (start === offset && alignedEnd === end)
        return await this.#transfer(NBD_CMD_WRITE, offset, data);
      const merged = new Uint8Array(alignedEnd - start);
      const edges: Promise<void>[] = [];
      if (start !== offset) {
        edges.push(
          this.#transfer(NBD_CMD_READ, start, merged.subarray(0, Math.min(m, merged.length))),
        );
      }
      if (alignedEnd !== end) {
        const tail = Math.max(alignedEnd - m, start);
        edges.push(this.#transfer(NBD_CMD_READ, tail, merged.subarray(tail - start)));
      }
      await Promise.all(edges);
      merged.set(data, offset - start);
      await this.#transfer(NBD_CMD_WRITE, start, merged);
    } finally {
      release();
    }
  }

  /**
   * Reads into or writes from `buffer` at `offset`, in requests of at most
   * the server's payload limit, spread round-robin over the connections.
   * Every request is sent before this returns.
   */
  #transfer(command: number, offset: number, buffer: Uint8Array): Promise<void> {
    const piece = this.#piece;
    const read = command === NBD_CMD_READ;
    if (buffer.length <= piece) {
      const c = this.#connection();
      return read
        ? c.read(offset, buffer).then(() => undefined)
        : c.request(command, offset, buffer.length, buffer);
    }
    const parts: Promise<unknown>[] = [];
    for (let at = 0; at < buffer.length; at += piece) {
      const part = buffer.subarray(at, Math.min(buffer.length, at + piece));
      const c = this.#connection();
      parts.push(
        read ? c.read(offset + at, part) : c.request(command, offset + at, part.length, part),
      );
    }
    return Promise.all(parts).then(() => undefined);
  }

  #connection(): NbdClientConnection {
    const connections = this.#connections;
    if (connections.length === 1) return connections[0]!;
    const c = connections[this.#next]!;
    this.#next = (this.#next + 1) % connections.length;
    return c;
  }

  /**
   * `NBD_CMD_FLUSH` on one connection. Where there are several, the export
   * advertised multi-conn, under which a flush's effect covers the writes
   * completed on every connection (proto.md, "Transmission flags"); the
   * spec's one condition — the writes to cover were answered before the
   * flush is sent — is the contract's own: `flush()` covers writes
   * acknowledged before it is called.
   */
  protected async _flush(): Promise<void> {
    const c = this.#connections[0]!;
    if (c.failure !== undefined || (this.negotiated.flags & NBD_FLAG_SEND_FLUSH) !== 0) {
      // On a failed connection this rejects with its EIO: acknowledged writes may be lost.
      await c.request(NBD_CMD_FLUSH, 0, 0);
    }
  }

  /** Sends `NBD_CMD_DISC` on every connection and waits for the server to hang up. */
  protected async _close(): Promise<void> {
    await Promise.all(this.#connections.map((c) => c.disconnect()));
  }

  /** One connection failed: the device fails as a whole, so no write goes on as if another had landed. */
  #connectionFailed(err: Error): void {
    for (const c of this.#connections) if (c.failure === undefined) c.destroy(err.message);
    this.reportError(err);
  }
}
