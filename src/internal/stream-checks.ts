import { BlockDeviceError } from '../errors.js';
import { crcWorker, type RemoteCrc } from './crc-worker.js';
import { checkFrameTail, FRAME_TAIL, hex32 } from './stream-format.js';

/*
 * The frames `applyStream` has read and not yet written, each waiting for
 * its data CRC (computed on the CRC worker while the next frames are read,
 * or here). A frame is handed on to be written only once it passed its
 * checks and every frame before it did: a damaged frame is never written,
 * nor any frame after it.
 */

/** Frames read whose CRC may still be computing before the oldest must be waited for. */
const CHECKS_AHEAD = 2;

/** A frame that passed its checks, to be written. */
export interface CheckedFrame {
  readonly number: number;
  /** Where the frame's data goes on the target. */
  readonly offset: number;
  /** The frame's data: a view of `buffer`. */
  readonly data: Uint8Array;
  /** The buffer the frame was read into, whole: the caller's to reuse once written. */
  readonly buffer: Uint8Array;
  /** The target already holds the new content (a resumed incremental apply). */
  readonly skip: boolean;
}

interface PendingFrame {
  readonly number: number;
  readonly offset: number;
  readonly length: number;
  /** The frame's data then tail, from byte 0; the CRC worker hands back a new view. */
  buffer: Uint8Array;
  readonly skip: boolean;
  /** The new-content CRC the manifest lists, if any. */
  readonly expected: number | undefined;
  /** The data's CRC once known; `computing` until then. */
  crc: number | undefined;
  readonly computing: Promise<RemoteCrc> | undefined;
}

/** The queue of frames being checked, oldest first. */
export class FrameChecks {
  readonly #pending: PendingFrame[] = [];
  readonly #write: (frame: CheckedFrame) => Promise<void>;

  /** @param write - writes a frame that passed (in stream order); may wait for room. */
  constructor(write: (frame: CheckedFrame) => Promise<void>) {
    this.#write = write;
  }

  /**
   * Starts checking frame `number`, whose data (`length` bytes) and tail
   * fill `buffer` from byte 0. The buffer is the queue's until the frame is
   * handed to `write`. `expected`: the new-content CRC its manifest entry lists.
   */
  start(
    number: number,
    offset: number,
    length: number,
    buffer: Uint8Array,
    skip: boolean,
    expected: number | undefined,
  ): void {
    const crc = crcWorker.checksum(buffer, length);
    const local = typeof crc === 'number';
    const frame: PendingFrame = {
      number,
      offset,
      length,
      buffer,
      skip,
      expected,
      crc: local ? crc : undefined,
      computing: local ? undefined : crc,
    };
    frame.computing?.then(
      (remote) => {
        frame.crc = remote.crc;
        frame.buffer = remote.buffer;
      },
      // Awaited in #checkOldest; a frame dropped unchecked has no one to tell.
      () => {},
    );
    this.#pending.push(frame);
  }

  /** Checks and writes the frames whose CRC is known, and more while too many wait. */
  async ready(): Promise<void> {
    const pending = this.#pending;
    while (pending.length > CHECKS_AHEAD || (pending.length > 0 && pending[0]!.crc !== undefined)) {
      await this.#checkOldest();
    }
  }

  /** Checks and writes every frame read. */
  async all(): Promise<void> {
    while (this.#pending.length > 0) await this.#checkOldest();
  }

  /**
   * Checks the oldest frame against its tail (and manifest entry), then
   * writes it. On any failure the frames after it are dropped, unwritten.
   * @throws `ECORRUPT` for a damaged frame; what `write` throws.
   */
  async #checkOldest(): Promise<void> {
    const frame = this.#pending[0]!;
    try {
      if (frame.crc === undefined) {
        const remote = await frame.computing!;
        frame.crc = remote.crc;
        frame.buffer = remote.buffer;
      }
      const { crc, buffer, length, number } = frame;
      checkFrameTail(buffer.subarray(length, length + FRAME_TAIL), number, crc);
      if (frame.expected !== undefined && crc !== frame.expected) {
        throw new BlockDeviceError(
          'ECORRUPT',
          `frame ${number}: data CRC ${hex32(crc)} differs from the new-content CRC its manifest entry lists`,
        );
      }
      this.#pending.shift();
      const data = buffer.subarray(0, length);
      await this.#write({ number, offset: frame.offset, data, buffer, skip: frame.skip });
    } catch (err) {
      this.#pending.length = 0;
      throw err;
    }
  }
}
