import type { BlockDevice } from '../device.js';
import type { BlockTable } from './block-table.js';
import { allocateBuffer } from './buffer-pool.js';
import { RING_START } from './journal-format.js';
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
 */
export function readOverlay(
  sources: OverlaySources,
  table: BlockTable,
  offset: number,
  length: number,
): Promise<Uint8Array> {
  const { production, journal, blockSize: bs } = sources;
  const end = offset + length;
  const first = Math.floor(offset / bs);
  const last = Math.floor((end - 1) / bs);
  if (first === last) {
    // The common case, without the bookkeeping of runs.
    const sector = table.get(first);
    if (sector < 0) return production.read(offset, length);
    return journal.read(RING_START + sector * SECTOR + (offset - first * bs), length);
  }
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
  try {
    if (runs.length === 1) return runs[0]!.device.read(runs[0]!.at, length);
    const out = allocateBuffer(length);
    return Promise.all(
      runs.map((r) => r.device.read(r.at, r.length).then((data) => out.set(data, r.out))),
    ).then(() => out);
  } catch (err) {
    // A device that throws instead of rejecting.
    return Promise.reject(err);
  }
}
