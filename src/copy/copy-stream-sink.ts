import { randomUUID } from 'node:crypto';
import { fletcher4 } from '../checksum/index.js';
import { BlockDeviceError } from '../errors.js';
import {
  encodeFrameHead,
  encodeFrameTail,
  encodeHeader,
  encodeTrailer,
  FRAME_DATA_MAX,
  uuidBytes,
} from '../stream/index.js';
import type { CopyGeometry } from './copy-map.js';
import type { CopySink } from './copy-sink.js';

/** Bytes of copied chunks held for their turn before the copier is made to wait. */
const BUFFER_LIMIT = 16 << 20;

/**
 * A copy job's destination when it is a stream: the copied range as a full
 * stream of the verified format (docs/stream-format.md), which `applyStream`
 * turns back into the range on any device of `destinationOffset + length`
 * bytes. Frames must go out in ascending order, but a copy-first copy takes
 * chunks out of turn: those are kept in memory until the stream reaches
 * them. Chunks in turn wait for the stream to accept them, and `ready`
 * holds the copier back while more than {@link BUFFER_LIMIT} bytes wait for
 * their turn and the stream has what it needs next: the copier's
 * back-pressure, which keeps memory bounded by a slow reader.
 */
export class StreamCopySink implements CopySink {
  /** The id the stream gives the copy as its `to` point. */
  readonly copyId = randomUUID();
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #geometry: CopyGeometry;
  readonly #streamId = randomUUID();
  readonly #streamIdBytes: Uint8Array;
  /** Chunks copied but not yet framed, by range offset. */
  readonly #waiting = new Map<number, { data: Uint8Array; sent: () => void }>();
  /** The next range offset the stream carries. */
  #next = 0;
  #frames = 0;
  #bufferedBytes = 0;
  /** Copier waits from `ready`, woken whenever a chunk goes out. */
  #readyWaiters: (() => void)[] = [];
  #pumping: Promise<void> | undefined;
  #failure: unknown;

  private constructor(writable: WritableStream<Uint8Array>, geometry: CopyGeometry) {
    this.#writer = writable.getWriter();
    this.#geometry = geometry;
    this.#streamIdBytes = uuidBytes(this.#streamId);
  }

  /**
   * Opens the stream: writes its header. The stream's block size is the
   * largest power of two up to `blockSize` that the range and its
   * destination offset are whole multiples of.
   * @throws `EINVAL` if they are not multiples of 512 bytes (the format's unit).
   */
  static async open(
    writable: WritableStream<Uint8Array>,
    geometry: CopyGeometry,
    blockSize: number,
  ): Promise<StreamCopySink> {
    const sink = new StreamCopySink(writable, geometry);
    const { destinationOffset, length } = geometry;
    let bs = Math.min(blockSize, geometry.chunkSize);
    while (bs > 512 && (destinationOffset % bs !== 0 || length % bs !== 0)) bs /= 2;
    if (destinationOffset % bs !== 0 || length % bs !== 0) {
      throw new BlockDeviceError(
        'EINVAL',
        `a stream destination needs destinationOffset and length in whole 512-byte sectors, not ${destinationOffset} and ${length}`,
      );
    }
    await sink.#writer.write(
      encodeHeader({
        incremental: false,
        deviceSize: destinationOffset + length,
        blockSize: bs,
        maxFrameData: Math.min(FRAME_DATA_MAX, geometry.chunkSize),
        // The frames carry the whole range.
        totalBytes: length,
        streamId: sink.#streamId,
        from: undefined,
        to: sink.copyId,
      }),
    );
    return sink;
  }

  write(rangeOffset: number, data: Uint8Array): Promise<void> {
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    // The chunk in turn waits until the stream takes it; one out of turn is safe once held here.
    const inTurn = rangeOffset === this.#next;
    return new Promise<void>((resolve, reject) => {
      const sent = inTurn ? resolve : () => {};
      // A read's buffer belongs to its caller (the BlockDevice contract), so
      // the chunk can wait for its turn without a copy.
      this.#waiting.set(rangeOffset, { data, sent });
      this.#bufferedBytes += data.length;
      this.#pump().catch(reject);
      if (!inTurn) resolve();
    });
  }

  /**
   * Resolves when the copier may start another run: few enough bytes wait
   * for their turn, or the chunk the stream needs next has not come yet
   * (holding the copier then could hold it forever).
   */
  ready(): Promise<void> {
    if (this.#bufferedBytes <= BUFFER_LIMIT || !this.#waiting.has(this.#next)) {
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => this.#readyWaiters.push(resolve)).then(() =>
      this.ready(),
    );
  }

  /** Writes the trailer and closes the stream, once every chunk is framed. */
  async finish(): Promise<void> {
    await this.#pump();
    if (this.#failure !== undefined) throw this.#failure;
    const { length } = this.#geometry;
    if (this.#next !== length) {
      throw new BlockDeviceError(
        'EIO',
        `stream ends at ${this.#next} of the range's ${length} bytes`,
      );
    }
    await this.#writer.write(
      encodeTrailer(
        { frames: this.#frames, dataBytes: length, extents: length === 0 ? 0 : 1 },
        this.#streamIdBytes,
      ),
    );
    await this.#writer.close();
  }

  /** Errors the stream, so its reader sees the copy did not finish. */
  async abort(reason: unknown): Promise<void> {
    this.#failure ??= reason;
    await this.#writer.abort(reason).catch(() => {});
  }

  /** Frames the chunks now in turn, one pump at a time. */
  #pump(): Promise<void> {
    this.#pumping ??= this.#pumpNow().finally(() => {
      this.#pumping = undefined;
    });
    return this.#pumping;
  }

  async #pumpNow(): Promise<void> {
    for (;;) {
      const chunk = this.#waiting.get(this.#next);
      if (chunk === undefined) return;
      this.#waiting.delete(this.#next);
      const { data } = chunk;
      for (let at = 0; at < data.length; at += FRAME_DATA_MAX) {
        const piece = data.subarray(at, Math.min(data.length, at + FRAME_DATA_MAX));
        const number = this.#frames++;
        const offset = this.#geometry.destinationOffset + this.#next + at;
        try {
          await this.#writer.write(
            encodeFrameHead(number, offset, piece.length, this.#streamIdBytes),
          );
          await this.#writer.write(ownBuffer(piece));
          await this.#writer.write(encodeFrameTail(number, fletcher4(piece)));
        } catch (err) {
          this.#failure ??= err;
          throw err;
        }
      }
      this.#next += data.length;
      this.#bufferedBytes -= data.length;
      chunk.sent();
      const waiters = this.#readyWaiters;
      this.#readyWaiters = [];
      for (const wake of waiters) wake();
    }
  }
}

/**
 * `piece` as a buffer of its own, copied unless it already is one. The
 * stream's consumer may keep or transfer what it is given (as a read's
 * caller may, BlockDevice.read), but a chunk is often a view of a run read
 * whole, whose other chunks are still waiting: transferring one would detach
 * them all.
 */
function ownBuffer(piece: Uint8Array): Uint8Array {
  return piece.byteOffset === 0 && piece.buffer.byteLength === piece.length ? piece : piece.slice();
}
