import {
  checkStackedOver,
  newLayerId,
  type StackIdentity,
  stackIdentityOf,
} from '../base/index.js';
import type { BlockDevice } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import type { EntryCodec, LogLayout } from './log-format.js';
import { type CowEntry, decodeEntries, encodeEntries, entrySize } from './metadata-codec.js';
import { MetadataLog } from './metadata-log.js';

/** Where a copy-on-write store keeps what, fixed when it is formatted. */
export interface CowLayout {
  originSize: number;
  /** Origin block size: the copy-on-write unit, and the size of a store chunk. */
  blockSize: number;
  chunkCount: number;
  /** Store offset of chunk 0. */
  dataOffset: number;
  maxSnapshots: number;
  /**
   * Most runs of blocks a selective snapshot's designation (or a partial
   * restore's extent list) may have; 0 for a store whose snapshots hold
   * every block.
   */
  maxRuns: number;
  log: LogLayout;
  /** This store's own id, random at format (0: a store formatted before ids were kept). */
  id: number;
  /** The device the store was formatted over (undefined before identities were kept). */
  origin: StackIdentity | undefined;
}

/** The metadata codec of copy-on-write stores. */
export const cowCodec: EntryCodec<CowEntry> = {
  size: entrySize,
  encode: encodeEntries,
  decode: decodeEntries,
};

/** Largest encoding of a snapshot entry: a UUID id and a 255-byte name. */
const SNAPSHOT_ENTRY_MAX = 4 + 13 + 1 + 36 + 1 + 255;
/** A preserved or own block's entry. */
const BLOCK_ENTRY = 24;
const PAGE = 4096;
/** Small stores get a small log: checkpoints then run often, and cost little. */
const MIN_LOG = 16 * 1024;

function alignUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

/** Bytes a run list of `maxRuns` adds to an entry: a count and a pair of float64 per run. */
function runListBytes(maxRuns: number): number {
  return maxRuns === 0 ? 0 : 4 + 16 * maxRuns;
}

function layoutFor(
  chunks: number,
  blockSize: number,
  maxSnapshots: number,
  maxRuns: number,
): { log: LogLayout; dataOffset: number } {
  // A checkpoint table must hold the largest possible state: every chunk in
  // use by one entry, every snapshot with its run list, a partial restore's
  // extents, and the few fixed entries.
  const runs = runListBytes(maxRuns);
  const tableCapacity = alignUp(
    chunks * BLOCK_ENTRY + maxSnapshots * (SNAPSHOT_ENTRY_MAX + runs) + runs + 64,
    PAGE,
  );
  // A log about half the table keeps checkpoints (which rewrite the table)
  // amortized against the frames that filled the log.
  const logCapacity = Math.max(MIN_LOG, alignUp(tableCapacity / 2, PAGE));
  const log = { tableCapacity, logCapacity };
  const dataOffset = alignUp(MetadataLog.reservedBytes(log), Math.max(PAGE, blockSize));
  return { log, dataOffset };
}

/**
 * Splits `store` into metadata and as many origin-block-sized chunks as fit.
 * @throws `EINVAL` if not even one chunk fits.
 */
export function planCowLayout(
  origin: BlockDevice,
  store: BlockDevice,
  maxSnapshots: number,
  maxRuns = 0,
): CowLayout {
  const bs = origin.blockSize;
  const fits = (n: number): boolean => {
    const { dataOffset } = layoutFor(n, bs, maxSnapshots, maxRuns);
    return dataOffset + n * bs <= store.size;
  };
  let lo = 0;
  let hi = Math.max(0, Math.floor(store.size / bs));
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (fits(mid)) lo = mid;
    else hi = mid - 1;
  }
  // Chunk numbers are stored as 32-bit integers.
  const chunkCount = Math.min(lo, 0xffffffff);
  if (chunkCount < 1) {
    const { dataOffset } = layoutFor(1, bs, maxSnapshots, maxRuns);
    throw new BlockDeviceError(
      'EINVAL',
      `store of ${store.size} bytes is too small: metadata alone needs ${dataOffset} bytes plus one ${bs}-byte chunk`,
    );
  }
  const { log, dataOffset } = layoutFor(chunkCount, bs, maxSnapshots, maxRuns);
  return {
    originSize: origin.size,
    blockSize: bs,
    chunkCount,
    dataOffset,
    maxSnapshots,
    maxRuns,
    log,
    id: newLayerId(),
    origin: stackIdentityOf(origin),
  };
}

/** Serializes the layout into the superblock's owner parameters. */
export function writeCowParams(layout: CowLayout): Uint8Array {
  const out = new Uint8Array(60);
  const view = new DataView(out.buffer);
  view.setFloat64(0, layout.originSize, true);
  view.setUint32(8, layout.blockSize, true);
  view.setUint32(12, layout.chunkCount, true);
  view.setFloat64(16, layout.dataOffset, true);
  view.setUint32(24, layout.maxSnapshots, true);
  view.setFloat64(28, layout.log.tableCapacity, true);
  view.setFloat64(36, layout.log.logCapacity, true);
  view.setUint32(44, layout.maxRuns, true);
  view.setUint32(48, layout.id, true);
  view.setUint32(52, layout.origin?.kind ?? 0, true);
  view.setUint32(56, layout.origin?.id ?? 0, true);
  return out;
}

/**
 * Reads the layout back and checks it against the store it came from.
 * @throws `ECORRUPT` if it cannot describe this store.
 */
export function readCowParams(params: Uint8Array, store: BlockDevice): CowLayout {
  if (params.length < 44)
    throw new BlockDeviceError('ECORRUPT', 'superblock parameters are truncated');
  const view = new DataView(params.buffer, params.byteOffset, params.byteLength);
  const layout: CowLayout = {
    originSize: view.getFloat64(0, true),
    blockSize: view.getUint32(8, true),
    chunkCount: view.getUint32(12, true),
    dataOffset: view.getFloat64(16, true),
    maxSnapshots: view.getUint32(24, true),
    // Stores formatted before selective snapshots have no field here: 0.
    maxRuns: params.length >= 48 ? view.getUint32(44, true) : 0,
    log: { tableCapacity: view.getFloat64(28, true), logCapacity: view.getFloat64(36, true) },
    // Stores formatted before stack identities have neither.
    id: params.length >= 60 ? view.getUint32(48, true) : 0,
    origin:
      params.length >= 60
        ? { kind: view.getUint32(52, true), id: view.getUint32(56, true) }
        : undefined,
  };
  if (layout.dataOffset + layout.chunkCount * layout.blockSize > store.size) {
    throw new BlockDeviceError(
      'ECORRUPT',
      `superblock describes ${layout.chunkCount} chunks from offset ${layout.dataOffset}, past the store's ${store.size} bytes`,
    );
  }
  return layout;
}

/**
 * `layout`, once `origin` is the device the store was formatted over: its
 * geometry, and its kind of layer and id where the store recorded them
 * (before the log is read, whose check reads the origin).
 * @throws `EINVAL` naming what the store expects.
 */
export function checkedLayout(layout: CowLayout, origin: BlockDevice): CowLayout {
  const { originSize: size, blockSize, origin: identity } = layout;
  checkStackedOver({ size, blockSize, identity }, origin, 'the COW store', 'origin');
  return layout;
}
