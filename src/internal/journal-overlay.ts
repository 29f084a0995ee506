import type { BlockDevice } from '../device.js';
import { allocateBuffer } from './buffer-pool.js';
import { RING_START } from './journal-format.js';
import type { ChangesTable } from './journal-table.js';
import { SECTOR } from './log-format.js';

/** The two devices a journal device reads from, and its block size. */
export interface OverlaySources {
  readonly production: BlockDevice;
  readonly journal: BlockDevice;
  readonly blockSize: number;
}

/**
 * Reads `[offset, offset + length)` of the device a changes table describes:
 * each block from the journal sector `table` maps it to, or else from
 * production. One read per run of blocks adjacent on the same device, so a
 * read within one block is one I/O. The caller keeps the table's locations
 * valid until this settles; errors are the lower devices' own.
 *
 * The hot path is a read whose blocks all sit in one run — none changed, or
 * all written by one record (a 4 KiB read over 1 KiB blocks written 4 KiB at
 * a time): one lookup per block and the one read, with nothing allocated;
 * the lower device's promise is returned as is.
 */
export function readOverlay(
  sources: OverlaySources,
  table: ChangesTable,
  offset: number,
  length: number,
): Promise<Uint8Array> {
  try {
    const bs = sources.blockSize;
    const first = Math.floor(offset / bs);
    const last = Math.floor((offset + length - 1) / bs);
    const sector = table.get(first);
    let b = first + 1;
    if (sector < 0) {
      while (b <= last && table.get(b) < 0) b++;
      if (b > last) return sources.production.read(offset, length);
    } else {
      const step = bs / SECTOR;
      while (b <= last && table.get(b) === sector + (b - first) * step) b++;
      if (b > last) {
        return sources.journal.read(RING_START + sector * SECTOR + (offset - first * bs), length);
      }
    }
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
  const out = allocateBuffer(length);
  return Promise.all(
    runs.map((r) => r.device.read(r.at, r.length).then((data) => out.set(data, r.out))),
  ).then(() => out);
}
