import { type CallbackReader, callbackReaderOrRead, type ReadDone } from '../base/index.js';
import { checksum } from '../checksum/index.js';
import { BlockDeviceError, wrapIO } from '../errors.js';
import type { CowState, SnapshotRecord } from './cow-state.js';
import type { CowStore } from './cow-store.js';

/**
 * Reads of one block of a snapshot's view through the origin's and the
 * store's read callbacks: the snapshot-read hot path, with no promise of its
 * own (its caller settles the one promise of the read). What it answers is
 * exactly what `CowStore.readView` resolves or rejects with for the same
 * bytes. Like CowStore it knows nothing of locks or gates: the caller holds
 * the block's lock.
 */
export class BlockViewReads {
  /** The store's state and where its chunks start, held here: a read reaches them in one hop. */
  readonly #state: CowState;
  readonly #dataOffset: number;
  readonly #bs: number;
  readonly #originReader: CallbackReader;
  readonly #storeReader: CallbackReader;
  /**
   * Chunk buffers a `readInto` of part of a preserved block reads the whole
   * chunk into (its CRC covers the whole chunk), reused rather than
   * allocated per read; at most {@link SPARE_CHUNKS} kept.
   */
  readonly #spareChunks: Uint8Array[] = [];

  constructor(cow: CowStore) {
    this.#state = cow.state;
    this.#dataOffset = cow.layout.dataOffset;
    this.#bs = cow.layout.blockSize;
    this.#originReader = callbackReaderOrRead(cow.origin);
    this.#storeReader = callbackReaderOrRead(cow.store);
  }

  /**
   * Reads `[offset, offset+length)`, which lies inside one block, as live
   * snapshot `snap` sees it, and calls `done` with the bytes: a preserved
   * chunk is checked against its CRC-32 first (`ECORRUPT`, never stale
   * data); a failed or throwing read is `EIO`. `done` may run before this
   * returns, and more than once only if a device below calls back more than
   * once (the caller guards against that).
   *
   * With `target` (the caller's `readInto` buffer: `length` is
   * `target.length`) the bytes go into it, and `done` gets `target` — or,
   * from a device below whose READ_CALLBACK ignores `into`, a buffer of its
   * own with the same bytes, which the caller copies. An origin block is
   * read straight into `target`, and so is a preserved block when the read
   * covers it whole, its CRC-32 checked there: on `ECORRUPT` `target` holds
   * the damaged bytes, and no other memory was written. Part of a preserved
   * block is read whole into a reused chunk buffer, checked, and only then
   * copied into `target`.
   */
  read(
    snap: SnapshotRecord,
    offset: number,
    length: number,
    target: Uint8Array | undefined,
    done: ReadDone,
  ): void {
    const bs = this.#bs;
    const block = Math.floor(offset / bs);
    const ref = this.#state.locate(snap.seq, block, snap);
    if (ref === undefined) {
      readWrapped(this.#originReader, 'origin read', offset, length, done, target);
      return;
    }
    const { chunk, crc } = ref;
    const at = this.#dataOffset + chunk * bs;
    // The whole chunk is read (its CRC covers all of it): into `target` when
    // the read is the whole block, into a reused spare for part of one, and
    // for `read` into a fresh buffer of the store's.
    const into = length === bs ? target : target && (this.#spareChunks.pop() ?? new Uint8Array(bs));
    let called = false;
    // One callback, wrapping a failure as `io` (src/base/lower-io.ts) would:
    // the hot path pays for no closure in between.
    const onChunk: ReadDone = (err, data) => {
      // Once only: a second call would pool a spare twice, and two reads
      // would then share it.
      if (called) return;
      called = true;
      const damage =
        err !== null ? wrapIO('store read', err) : chunkDamage(data!, crc, chunk, block, at);
      let bytes = data;
      if (damage === undefined && length !== bs) {
        // Part of the block is copied out, as readView does: a view would
        // hand the reader a buffer larger than the read (BlockDevice.read).
        const within = offset - block * bs;
        if (target === undefined) bytes = data!.slice(within, within + length);
        else {
          target.set(data!.subarray(within, within + length));
          bytes = target;
        }
      }
      if (into !== undefined && into !== target && this.#spareChunks.length < SPARE_CHUNKS) {
        this.#spareChunks.push(into);
      }
      if (damage === undefined) done(null, bytes);
      else done(damage, undefined);
    };
    try {
      this.#storeReader(at, bs, onChunk, into);
    } catch (err) {
      onChunk(err instanceof Error ? err : new Error(String(err)), undefined);
    }
  }
}

/** How many chunk buffers a {@link BlockViewReads} keeps for partial-block `readInto`s. */
const SPARE_CHUNKS = 4;

/**
 * `ECORRUPT` if `data`, read from store chunk `chunk` (at store offset `at`,
 * holding `block`), does not have its recorded CRC-32 `crc`; else undefined.
 */
export function chunkDamage(
  data: Uint8Array,
  crc: number,
  chunk: number,
  block: number,
  at: number,
): BlockDeviceError | undefined {
  if (checksum(data) === crc) return undefined;
  return new BlockDeviceError(
    'ECORRUPT',
    `store chunk ${chunk} (block ${block}) at store offset ${at} fails its checksum`,
  );
}

/**
 * Reads through `read` (into `into`, if given) and calls `done` with the
 * bytes, or with the failure wrapped as `io` (src/base/lower-io.ts) wraps
 * it, a throw included.
 */
function readWrapped(
  read: CallbackReader,
  what: string,
  offset: number,
  length: number,
  done: ReadDone,
  into?: Uint8Array,
): void {
  try {
    read(
      offset,
      length,
      (err, data) => {
        if (err === null) done(null, data);
        else done(wrapIO(what, err), undefined);
      },
      into,
    );
  } catch (err) {
    done(wrapIO(what, err), undefined);
  }
}
