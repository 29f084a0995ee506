import { io, readerInto } from '../base/index.js';
import type { BlockDevice } from '../device.js';
import type { CopySink } from './copy-engine.js';

/**
 * Moves a copy job's runs: one source read per run, written to the sink as
 * fixed-size chunks (seed 004, claim 45). Where the source can read into a buffer of
 * ours (`readInto`) and the sink takes buffers over (`writeBlocks`), run
 * buffers are reused: a fresh megabyte per run costs as much in page faults
 * as copying it.
 */
export class RunMover {
  readonly #source: BlockDevice;
  readonly #sink: CopySink;
  /** Source offset of range byte 0. */
  readonly #offset: number;
  readonly #chunkSize: number;
  readonly #runBytes: number;
  readonly #spares: number;
  readonly #readInto: ((offset: number, buffer: Uint8Array) => Promise<Uint8Array>) | undefined;
  /** Run buffers whose writes have completed, for the next runs to be read into. */
  readonly #spare: Uint8Array[] = [];

  /**
   * @param limits - `runBytes`: the largest run that gets a reused buffer;
   *   `spares`: how many such buffers are kept between runs.
   */
  constructor(
    source: BlockDevice,
    sink: CopySink,
    offset: number,
    chunkSize: number,
    limits: { runBytes: number; spares: number },
  ) {
    this.#source = source;
    this.#sink = sink;
    this.#offset = offset;
    this.#chunkSize = chunkSize;
    this.#runBytes = limits.runBytes;
    this.#spares = limits.spares;
    this.#readInto = sink.writeBlocks === undefined ? undefined : readerInto(source);
  }

  /**
   * Copies range bytes `[start, end)`: resolves once every chunk write has
   * completed. The chunks are views of the run's buffer, which nothing
   * changes until then, so they need no copy of their own.
   */
  async move(start: number, end: number): Promise<void> {
    const length = end - start;
    const sink = this.#sink;
    const at = this.#offset + start;
    const readInto = this.#readInto;
    const buffer =
      readInto !== undefined && length <= this.#runBytes
        ? (this.#spare.pop() ?? new Uint8Array(this.#runBytes))
        : undefined;
    const data = await io(
      'source read',
      buffer === undefined
        ? this.#source.read(at, length)
        : readInto!(at, buffer.subarray(0, length)),
    );
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
      if (buffer !== undefined && this.#spare.length < this.#spares) this.#spare.push(buffer);
    }
  }
}
