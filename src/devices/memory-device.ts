import {
  AbstractBlockDevice,
  checkGeometry,
  checkOptions,
  checkRange,
  inFlightCounter,
  LEND_READ,
  type LentBytes,
  READ_CALLBACK,
  type ReadDone,
  readResultBuffer,
  WRITE_NOW,
} from '../base/index.js';
import { BlockDeviceError } from '../errors.js';
import { BlockTable } from './memory-blocks.js';

/** Options for {@link MemoryDevice.create}. */
export interface MemoryDeviceOptions {
  /** Size in bytes; a multiple of `blockSize`. */
  size: number;
  /** Block size in bytes: a power of two from 512 to 1 MiB. @default 4096 */
  blockSize?: number | undefined;
  /** Whether writes fail with `EROFS`. @default false */
  readOnly?: boolean | undefined;
}

/**
 * A sparse in-memory block device: only blocks ever written take memory, so a
 * 1 TiB device costs nothing until used. Nothing survives the process; `flush`
 * is a no-op that keeps the ordering contract trivially.
 */
export class MemoryDevice extends AbstractBlockDevice {
  readonly #blocks: BlockTable;

  private constructor(
    size: number,
    blockSize: number,
    readOnly: boolean,
    blocks = new BlockTable(blockSize),
  ) {
    super('MemoryDevice', size, blockSize, readOnly);
    this.#blocks = blocks;
    // Every read and write has copied its bytes before its promise is
    // returned: none is ever in flight for close() to wait for, so none is
    // counted (one promise reaction less per I/O). flush() is still counted.
    const inFlight = inFlightCounter(this);
    inFlight.ownReads = true;
    inFlight.ownPassedWrites = true;
    inFlight.ownWrites = true;
  }

  /**
   * Creates an empty (all-zero) device.
   * @throws `EINVAL` for a bad size or block size.
   */
  static async create(options: MemoryDeviceOptions): Promise<MemoryDevice> {
    if (options === undefined)
      throw new BlockDeviceError('EINVAL', 'MemoryDevice: options are required');
    checkOptions(
      options,
      { size: 'number', blockSize: 'number', readOnly: 'boolean' },
      'MemoryDevice.create',
    );
    const blockSize = options.blockSize ?? 4096;
    checkGeometry('MemoryDevice', options.size, blockSize);
    return new MemoryDevice(options.size, blockSize, options.readOnly ?? false);
  }

  /** Bytes of memory held by written blocks. */
  get allocatedBytes(): number {
    return this.#blocks.size * this.blockSize;
  }

  /**
   * A new handle on the same memory, as opening the same file again gives a
   * new descriptor: it works after this handle is closed, and sees (and makes)
   * the same content. This is how a layer over memory is closed and opened again.
   */
  reopen(options?: { readOnly?: boolean }): MemoryDevice {
    return new MemoryDevice(
      this.size,
      this.blockSize,
      options?.readOnly ?? this.readOnly,
      this.#blocks,
    );
  }

  /**
   * A new, independent device with this one's current content (copied, still
   * sparse). Used by the test harness to model what a disk holds.
   */
  async clone(options?: { readOnly?: boolean }): Promise<MemoryDevice> {
    const copy = new MemoryDevice(this.size, this.blockSize, options?.readOnly ?? this.readOnly);
    for (const [index, block] of this.#blocks.entries()) {
      copy.#blocks.write(index * this.blockSize, block);
    }
    return copy;
  }

  protected async _read(offset: number, length: number): Promise<Uint8Array> {
    return this.readNow(offset, length);
  }

  protected async _write(offset: number, data: Uint8Array): Promise<void> {
    this.writeNow(offset, data);
  }

  /**
   * Copies `data` into the blocks before returning, so the base class need
   * not take a private copy first: a write costs one copy, not two.
   */
  protected override _writeThrough(offset: number, data: Uint8Array): Promise<void> {
    this.writeNow(offset, data);
    return Promise.resolve();
  }

  /**
   * See {@link WRITE_NOW}: `write`'s checks, thrown, then the copy into the
   * blocks, before this returns. A COW store's group commit writes its
   * chunks and frame this way, with no promise and no await per commit.
   * @internal A fast path for the library's own layers.
   */
  [WRITE_NOW](offset: number, data: Uint8Array): void {
    this.checkOpen();
    checkRange(this.size, offset, data.length);
    this.checkWritable();
    this.writeNow(offset, data);
  }

  /**
   * See {@link READ_CALLBACK}: `read` with a callback, called before this returns.
   * @internal A fast path for the library's own layers.
   */
  [READ_CALLBACK](offset: number, length: number, done: ReadDone, into?: Uint8Array): void {
    let data: Uint8Array;
    try {
      this.checkOpen();
      checkRange(this.size, offset, length);
      if (into === undefined) data = this.readNow(offset, length);
      else {
        this.fillFrom(offset, into);
        data = into;
      }
    } catch (err) {
      done(err as Error, undefined);
      return;
    }
    done(null, data);
  }

  /**
   * See {@link LEND_READ}: the bytes as a view of the arena holding them,
   * if they lie in one run of written blocks; undefined on a closed device
   * or a bad range as where they do not (the caller's read reports those).
   * Writes meanwhile move the lent blocks (`memory-blocks.ts`).
   * @internal A fast path for the library's own layers.
   */
  [LEND_READ](offset: number, length: number): LentBytes | undefined {
    if (this.closed || !Number.isSafeInteger(offset) || !Number.isSafeInteger(length)) {
      return undefined;
    }
    if (offset < 0 || length <= 0 || offset + length > this.size) return undefined;
    return this.#blocks.lend(offset, length);
  }

  /** Copies the blocks straight into the caller's buffer before returning. */
  protected override _readInto(offset: number, target: Uint8Array): Promise<Uint8Array> {
    this.fillFrom(offset, target);
    return Promise.resolve(target);
  }

  protected async _flush(): Promise<void> {}

  /** The memory stays with any other handle from {@link MemoryDevice.reopen}. */
  protected async _close(): Promise<void> {}

  /** Synchronous read: a memory device has nothing to wait for. */
  private readNow(offset: number, length: number): Uint8Array {
    // Not zero-filled when allocated: every byte is written below, from its
    // block or, where the block was never written, with a zero.
    const out = readResultBuffer(length);
    this.fillFrom(offset, out);
    return out;
  }

  /** Fills `out` with the `out.length` bytes at `offset`: every byte, from its block or a zero. */
  private fillFrom(offset: number, out: Uint8Array): void {
    this.#blocks.read(offset, out);
  }

  /** Synchronous write: each block is updated whole before the promise resolves. */
  private writeNow(offset: number, data: Uint8Array): void {
    this.#blocks.write(offset, data);
  }
}
