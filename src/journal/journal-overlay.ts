import { readResultBuffer, SECTOR } from '../base/index.js';
import type { BlockDevice } from '../device.js';
import { RING_START } from './journal-format.js';
import type { ChangesTable } from './journal-table.js';

/** The two devices a journal device reads from, and its block size. */
export interface OverlaySources {
  readonly production: BlockDevice;
  readonly journal: BlockDevice;
  readonly blockSize: number;
}

/** {@link singleRunAt}: the read lies whole on production, at its own offset. */
export const ON_PRODUCTION = -1;
/** {@link singleRunAt}: the read's blocks lie in several runs. */
export const SEVERAL_RUNS = -2;

/**
 * Where `[offset, offset + length)` lies if its blocks all sit in one run —
 * none changed ({@link ON_PRODUCTION}), or all in adjacent journal sectors
 * (a 4 KiB read over 1 KiB blocks written 4 KiB at a time): then the byte
 * offset on the journal store — or {@link SEVERAL_RUNS}. One table lookup
 * per block, nothing allocated: the hot path of every live read.
 */
export function singleRunAt(
  table: ChangesTable,
  bs: number,
  offset: number,
  length: number,
): number {
  const first = Math.floor(offset / bs);
  const last = Math.floor((offset + length - 1) / bs);
  const sector = table.get(first);
  let b = first + 1;
  if (sector < 0) {
    while (b <= last && table.get(b) < 0) b++;
    return b > last ? ON_PRODUCTION : SEVERAL_RUNS;
  }
  const step = bs / SECTOR;
  while (b <= last && table.get(b) === sector + (b - first) * step) b++;
  return b > last ? RING_START + sector * SECTOR + (offset - first * bs) : SEVERAL_RUNS;
}

/**
 * Reads `[offset, offset + length)` of the device a changes table describes:
 * each block from the journal sector `table` maps it to, or else from
 * production. One read per run of blocks adjacent on the same device, so a
 * read within one block is one I/O, whose promise is returned as is. The
 * caller keeps the table's locations valid until this settles; errors are
 * the lower devices' own.
 */
export function readOverlay(
  sources: OverlaySources,
  table: ChangesTable,
  offset: number,
  length: number,
): Promise<Uint8Array> {
  try {
    const at = singleRunAt(table, sources.blockSize, offset, length);
    if (at === ON_PRODUCTION) return sources.production.read(offset, length);
    if (at !== SEVERAL_RUNS) return sources.journal.read(at, length);
    return readRuns(sources, table, offset, length);
  } catch (err) {
    // A device that throws instead of rejecting.
    return Promise.reject(err);
  }
}

/** The general case: the blocks lie in several runs, one read each, gathered into one buffer. */
function readRuns(
  sources: OverlaySources,
  table: ChangesTable,
  offset: number,
  length: number,
): Promise<Uint8Array> {
  const { production, journal, blockSize: bs } = sources;
  const end = offset + length;
  const first = Math.floor(offset / bs);
  const last = Math.floor((end - 1) / bs);
  const runs: { device: BlockDevice; at: number; out: number; length: number }[] = [];
  for (let b = first; b <= last; b++) {
    const lo = Math.max(offset, b * bs);
    const hi = Math.min(end, (b + 1) * bs);
    const sector = table.get(b);
    const device = sector < 0 ? production : journal;
    const at = sector < 0 ? lo : RING_START + sector * SECTOR + (lo - b * bs);
    const run = runs[runs.length - 1];
    if (run !== undefined && run.device === device && run.at + run.length === at) {
      run.length += hi - lo;
    } else {
      runs.push({ device, at, out: lo - offset, length: hi - lo });
    }
  }
  // Handed to the reader (a buffer of its own), and not zero-filled: the
  // runs cover every byte, and a failed run fails the whole read.
  const out = readResultBuffer(length);
  return Promise.all(
    runs.map((r) => r.device.read(r.at, r.length).then((data) => out.set(data, r.out))),
  ).then(() => out);
}
