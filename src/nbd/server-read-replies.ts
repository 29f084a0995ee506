import {
  type BytesLender,
  bytesLender,
  type CallbackReader,
  callbackReader,
  readerInto,
} from '../base/index.js';
import type { BlockDevice } from '../device.js';
import type { ReplyWriter } from './server-reply-writer.js';
import { errnoOf, messageOf, type Request } from './server-request.js';
import { errorReply, type ReplyStyle, readHeaderLength, writeReadHeader } from './server-wire.js';

/**
 * Smallest READ sent from bytes the device lends (a MemoryDevice's blocks)
 * rather than copied into a reply buffer: below it the copy costs less
 * than the lending (a header of its own, a pin, a second iovec).
 */
export const MIN_LENT_READ = 64 * 1024;

/**
 * The replies to checked READs of one connection (docs/ARCHITECTURE.md,
 * "NBD", "Transmission" and "Performance"), by the cheapest way the device
 * offers: a large READ from the device's own memory where it lends it (a
 * MemoryDevice), else read straight into a pooled reply buffer after the
 * header (its callback read, or `readInto`), else its `read` and the header
 * in one write. Each reply leaves whole, in one write.
 */
export class ReadReplies {
  readonly #device: BlockDevice;
  readonly #replies: ReplyWriter;
  readonly #style: ReplyStyle;
  /**
   * The device's lending read, if it has one: the reply goes out from the
   * device's memory, without the copy into a reply buffer.
   */
  readonly #lend: BytesLender | undefined;
  /**
   * The device's callback read (the library's own devices have one): a READ
   * then costs one closure instead of an async call, its promise and the
   * reactions of two awaits.
   */
  readonly #readCallback: CallbackReader | undefined;
  /** The device's `readInto`, if it has one: a READ's data goes straight into its reply buffer. */
  readonly #readInto: ((offset: number, buffer: Uint8Array) => Promise<Uint8Array>) | undefined;

  /** READ replies from `device`, written through `replies` in `style`. */
  constructor(device: BlockDevice, replies: ReplyWriter, style: ReplyStyle) {
    this.#device = device;
    this.#replies = replies;
    this.#style = style;
    this.#lend = bytesLender(device);
    this.#readCallback = callbackReader(device);
    this.#readInto = readerInto(device);
  }

  /** Whether {@link serve} can answer READs (the device has a callback read); else {@link serveAsync}. */
  get inline(): boolean {
    return this.#readCallback !== undefined;
  }

  /**
   * Answers a checked READ through the device's callback read, and calls
   * `done(cost)` once its reply (or its error) is sent; `done` may run
   * before this returns (a MemoryDevice). A pooled reply buffer goes back
   * to the pool only once the device called back.
   */
  serve(request: Request, cost: number, done: (cost: number) => void): void {
    const read = this.#readCallback as CallbackReader;
    const { offset, length } = request;
    const headerLength = readHeaderLength(this.#style);
    if (length >= MIN_LENT_READ && this.#lend !== undefined) {
      // Lent bytes stay as read until the socket has written them (the
      // device moves a block written meanwhile), so the reply is the read's.
      const lent = this.#lend(offset, length);
      if (lent !== undefined) {
        const header = this.#replies.take(headerLength);
        writeReadHeader(header, this.#style, request, length);
        this.#replies.sendLent(header, lent);
        done(cost);
        return;
      }
    }
    const out = this.#replies.take(headerLength + length);
    const into = out.subarray(headerLength);
    read(
      offset,
      length,
      (err, data) => {
        try {
          if (err !== null || data === undefined) {
            this.#replies.give(out);
            this.#replies.send(errorReply(this.#style, request, errnoOf(err), messageOf(err)));
            return;
          }
          // A device may answer from a buffer of its own instead of `into`.
          if (data !== into) into.set(data);
          writeReadHeader(out, this.#style, request, length);
          this.#replies.send(out, out);
        } finally {
          done(cost);
        }
      },
      into,
    );
  }

  /**
   * Answers a checked READ through `readInto` (the data read into a pooled
   * buffer right after the header: no copy, one iovec), else `read` (the
   * header and `read`'s own buffer go out together).
   * @throws what the device's read throws; nothing was sent then.
   */
  async serveAsync(request: Request): Promise<void> {
    const { offset, length } = request;
    const headerLength = readHeaderLength(this.#style);
    const readInto = this.#readInto;
    if (readInto !== undefined) {
      const out = this.#replies.take(headerLength + length);
      try {
        await readInto(offset, out.subarray(headerLength));
      } catch (err) {
        // The device is done with the buffer once its promise settled; nothing was sent from it.
        this.#replies.give(out);
        throw err;
      }
      writeReadHeader(out, this.#style, request, length);
      this.#replies.send(out, out);
      return;
    }
    const data = await this.#device.read(offset, length);
    const header = Buffer.allocUnsafe(headerLength);
    writeReadHeader(header, this.#style, request, length);
    this.#replies.send(
      header,
      undefined,
      Buffer.from(data.buffer, data.byteOffset, data.byteLength),
    );
  }
}
