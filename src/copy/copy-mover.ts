import { io, readerInto } from '../base/index.js';
import type { BlockDevice } from '../device.js';
import type { CopySink } from './copy-sink.js';

/** Bytes of spare buffers kept per buffer size: four runs of a megabyte, or 64 chunks of 64 KiB. */
const SPARE_BYTES = 4 << 20;

/**
 * Moves a copy job's runs: one source read per run, written to the sink as
 * fixed-size chunks (seed 004, claim 45). Where the source can read into a buffer of
 * ours (`readInto`) and the sink takes buffers over (`writeBlocks`), run
 * buffers are reused: a fresh megabyte per run costs as much in page faults
 * as copying it. Buffers come in power-of-two sizes from 4 KiB up to the
 * largest run, kept per size up to {@link SPARE_BYTES}: a copy-first
 * copy of one chunk takes a chunk-sized buffer, not a megabyte.
 */
export class RunMover {
  readonly #source: BlockDevice;
  readonly #sink: CopySink;
  /** Source offset of range byte 0. */
  readonly #offset: number;
  readonly #chunkSize: number;
  readonly #runBytes: number;
  readonly #readInto: ((offset: number, buffer: Uint8Array) => Promise<Uint8Array>) | undefined;
  /** Per buffer size: buffers whose writes have completed, for the next runs to be read into. */
  readonly #spare = new Map<number, Uint8Array[]>();

  /**
   * @param runBytes - the largest run that gets a reused buffer.
   */
  constructor(
    source: BlockDevice,
    sink: CopySink,
    offset: number,
    chunkSize: number,
    runBytes: number,
  ) {
    this.#source = source;
    this.#sink = sink;
    this.#offset = offset;
    this.#chunkSize = chunkSize;
    this.#runBytes = runBytes;
    this.#readInto = sink.writeBlocks === undefined ? undefined : readerInto(source);
  }

  /** A buffer of at least `length` bytes (≤ the largest run): a spare of its size, or a new one. */
  #take(length: number): Uint8Array {
    let size = 4096;
    while (size < length) size *= 2;
    return this.#spare.get(size)?.pop() ?? new Uint8Array(size);
  }

  /** Keeps `buffer` for a later run, unless its size has spares enough. */
  #keep(buffer: Uint8Array): void {
    const spares = this.#spare.get(buffer.length) ?? [];
    if (spares.length === 0) this.#spare.set(buffer.length, spares);
    if ((spares.length + 1) * buffer.length <= SPARE_BYTES) spares.push(buffer);
  }

  /**
   * Copies range bytes `[start, end)`: resolves once every chunk write has
   * completed; `read` is called once the source read has returned, with
   * the run's bytes (its buffer, which the source never changes), which it
   * may patch before they are written. The chunks are views of that buffer,
   * which nothing else changes until then, so they need no copy of their own.
   */
  async move(start: number, end: number, read?: (run: Uint8Array) => void): Promise<void> {
    const length = end - start;
    const sink = this.#sink;
    const at = this.#offset + start;
    const readInto = this.#readInto;
    const buffer =
      readInto !== undefined && length <= this.#runBytes ? this.#take(length) : undefined;
    const data = await io(
      'source read',
      buffer === undefined
        ? this.#source.read(at, length)
        : readInto!(at, buffer.subarray(0, length)),
    );
    read?.(data);
    const cs = this.#chunkSize;
    const chunks: Uint8Array[] = [];
    for (let from = 0; from < length; from += cs) chunks.push(data.subarray(from, from + cs));
    if (sink.writeBlocks === undefined) {
      await Promise.all(chunks.map((chunk, i) => sink.write(start + i * cs, chunk)));
      return;
    }
    // One round trip for the run, not one per chunk: on a file, the
    // per-write cost, not the bytes, is what bounds a small chunk size.
    try {
      await sink.writeBlocks(start, chunks);
    } finally {
      // Settled, whatever the outcome: the device is done with the buffer.
      if (buffer !== undefined) this.#keep(buffer);
    }
  }
}
