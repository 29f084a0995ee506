import { type CheckReportBuilder, io, isZeroed } from '../base/index.js';
import type { BlockDevice } from '../device.js';
import {
  decodeSuperblock,
  SUPERBLOCK_BYTES,
  SUPERBLOCK_SLOT,
  type Superblock,
} from './superblock.js';

/*
 * The superblock half of a store's `check()` (docs/ARCHITECTURE.md,
 * "check()"), shared by every store that keeps the two-slot superblock: the
 * COW store and the volume store read it alike, so they judge it alike.
 */

/**
 * Both superblock slots: the one of the generation the device last wrote
 * must hold exactly it; the other may be unwritten (zeros, since format),
 * or must be a valid older generation.
 */
export async function checkSuperblocks(
  store: BlockDevice,
  sb: Superblock,
  report: CheckReportBuilder,
): Promise<void> {
  const both = report.read(await io('store read superblocks', store.read(0, 2 * SUPERBLOCK_SLOT)));
  for (const slot of [0, 1]) {
    const at = slot * SUPERBLOCK_SLOT;
    const bytes = both.subarray(at, at + SUPERBLOCK_BYTES);
    const inUse = slot === sb.generation % 2;
    report.counts.superblocks++;
    const where = `superblock slot ${slot} at store offset ${at}${inUse ? ' (in use)' : ''}`;
    if (!inUse && isZeroed(bytes)) continue;
    const decoded = decodeSuperblock(bytes);
    if (typeof decoded === 'string') {
      report.problem('superblock', at, `${where}: ${decoded}`, inUse);
    } else if (inUse && !sameSuperblock(decoded, sb)) {
      report.problem(
        'superblock',
        at,
        `${where} holds generation ${decoded.generation} (epoch ${decoded.epoch}), not the generation ${sb.generation} (epoch ${sb.epoch}) the device wrote`,
        true,
      );
    } else if (!inUse && decoded.generation >= sb.generation) {
      report.problem(
        'superblock',
        at,
        `${where} holds generation ${decoded.generation}, newer than the ${sb.generation} in use`,
        true,
      );
    }
  }
}

function sameSuperblock(a: Superblock, b: Superblock): boolean {
  return (
    a.kind === b.kind &&
    a.generation === b.generation &&
    a.epoch === b.epoch &&
    a.active === b.active &&
    a.tableBytes === b.tableBytes &&
    a.tableCount === b.tableCount &&
    a.tableCrc === b.tableCrc &&
    a.tableCapacity === b.tableCapacity &&
    a.logCapacity === b.logCapacity &&
    a.closedFrames === b.closedFrames &&
    a.attestedFrames === b.attestedFrames
  );
}
