import type { Extent } from '../device.js';
import type { CowState } from './cow-state.js';

/** A part of one block that a restore writes back: `[offset, offset + length)` inside `block`. */
export interface RestorePiece {
  block: number;
  offset: number;
  length: number;
}

/**
 * What restoring snapshot `seq` writes, ascending: every block the snapshot
 * holds whose content may differ from the origin's, whole — or, with
 * `extents`, only the bytes of those blocks inside the extents, so a
 * partial restore leaves every other byte alone. Computed from the lookup
 * table, so running it again after a power cut yields what is still left.
 */
export function restorePieces(
  state: CowState,
  seq: number,
  extents: readonly Extent[] | undefined,
  blockSize: number,
): RestorePiece[] {
  const blocks = state.divergedBlocks(seq);
  if (extents === undefined) {
    return blocks.map((block) => ({ block, offset: block * blockSize, length: blockSize }));
  }
  const wanted = mergeExtents(extents);
  const out: RestorePiece[] = [];
  let i = 0;
  for (const block of blocks) {
    const start = block * blockSize;
    const end = start + blockSize;
    while (i < wanted.length && wanted[i]!.offset + wanted[i]!.length <= start) i++;
    for (let k = i; k < wanted.length && wanted[k]!.offset < end; k++) {
      const from = Math.max(start, wanted[k]!.offset);
      const to = Math.min(end, wanted[k]!.offset + wanted[k]!.length);
      if (to > from) out.push({ block, offset: from, length: to - from });
    }
  }
  return out;
}

/** Sorts byte extents and merges the overlapping and touching ones. */
export function mergeExtents(extents: readonly Extent[]): Extent[] {
  const sorted = extents.filter((e) => e.length > 0).sort((a, b) => a.offset - b.offset);
  const out: { offset: number; length: number }[] = [];
  for (const e of sorted) {
    const last = out[out.length - 1];
    if (last !== undefined && e.offset <= last.offset + last.length) {
      last.length = Math.max(last.length, e.offset + e.length - last.offset);
    } else {
      out.push({ offset: e.offset, length: e.length });
    }
  }
  return out;
}
