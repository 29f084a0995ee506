import { type CallbackRead, callbackReaderOrRead, type ReadDone } from '../base/index.js';
import { checksum } from '../checksum/index.js';
import { BlockDeviceError, wrapIO } from '../errors.js';
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
  readonly #cow: CowStore;
  readonly #bs: number;
  readonly #originReader: CallbackRead;
  readonly #storeReader: CallbackRead;

  constructor(cow: CowStore) {
    this.#cow = cow;
    this.#bs = cow.layout.blockSize;
    this.#originReader = callbackReaderOrRead(cow.origin);
    this.#storeReader = callbackReaderOrRead(cow.store);
  }

  /**
   * Reads `[offset, offset+length)`, which lies inside one block, as
   * snapshot `seq` sees it, and calls `done` with the bytes: a preserved
   * chunk is checked against its CRC-32 first (`ECORRUPT`, never stale
   * data); a failed or throwing read is `EIO`. `done` may run before this
   * returns, and more than once only if a device below calls back more than
   * once (the caller guards against that).
   */
  read(seq: number, offset: number, length: number, done: ReadDone): void {
    const bs = this.#bs;
    const block = Math.floor(offset / bs);
    const ref = this.#cow.state.locate(seq, block);
    if (ref === undefined) {
      readWrapped(this.#originReader, 'origin read', offset, length, done);
      return;
    }
    const at = this.#cow.layout.dataOffset + ref.chunk * bs;
    readWrapped(this.#storeReader, 'store read', at, bs, (err, chunk) => {
      if (err !== null) {
        done(err, undefined);
        return;
      }
      const damage = chunkDamage(chunk!, ref.crc, ref.chunk, block, at);
      if (damage !== undefined) {
        done(damage, undefined);
        return;
      }
      // Part of the block is copied out, as readView does: a view would hand
      // the reader a buffer larger than the read (BlockDevice.read).
      const within = offset - block * bs;
      done(null, length === bs ? chunk : chunk!.slice(within, within + length));
    });
  }
}

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
 * Reads through `read` and calls `done` with the bytes, or with the failure
 * wrapped as `io` (src/base/lower-io.ts) wraps it, a throw included.
 */
function readWrapped(
  read: CallbackRead,
  what: string,
  offset: number,
  length: number,
  done: ReadDone,
): void {
  try {
    read(offset, length, (err, data) => {
      if (err === null) done(null, data);
      else done(wrapIO(what, err), undefined);
    });
  } catch (err) {
    done(wrapIO(what, err), undefined);
  }
}
