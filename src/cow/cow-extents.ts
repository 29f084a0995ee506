import type { Extent } from '../device.js';
import {
  type BlockRanges,
  rangesOfBlocks,
  rangesToExtents,
  subtractRanges,
  unionRanges,
} from './block-ranges.js';
import type { CowState } from './cow-state.js';

/*
 * Change tracking of a COW device (CowDeviceBase.changedExtents and
 * snapshotExtents): memory lookups in the lookup table, no data read.
 */

/**
 * The extents that may differ between snapshot `fromId` and snapshot `toId`
 * or the live device; `everyBlock` is what a full snapshot holds.
 * @throws `ENOENT` for an unknown id.
 */
export function changedExtentsOf(
  state: CowState,
  everyBlock: BlockRanges,
  blockSize: number,
  fromId: string,
  toId: string | 'live',
): Extent[] {
  const from = state.byId(fromId);
  const to = toId === 'live' ? undefined : state.byId(toId);
  // A point never differs from itself, own writes included.
  if (to === from) return [];
  const tracked = rangesOfBlocks(state.changedBlocks(from.seq, to?.seq));
  // Nothing tracked what `to` holds and `from` does not: all of it counts.
  const untracked =
    to === undefined ? [] : subtractRanges(to.ranges ?? everyBlock, from.ranges ?? everyBlock);
  return rangesToExtents(unionRanges(tracked, untracked), blockSize);
}

/** What snapshot `id` holds, as extents. @throws `ENOENT` for an unknown id. */
export function heldExtentsOf(
  state: CowState,
  everyBlock: BlockRanges,
  blockSize: number,
  id: string,
): Extent[] {
  return rangesToExtents(state.byId(id).ranges ?? everyBlock, blockSize);
}
