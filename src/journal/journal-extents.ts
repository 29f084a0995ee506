import type { ChangeTracking, Extent } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import type { JournalCore } from './journal-core.js';
import type { JournalSnapshot } from './journal-snapshot-registry.js';

/*
 * Change tracking of a JournalDevice (docs/ARCHITECTURE.md, "JournalDevice"):
 * what changed between two of its snapshots comes from production's change
 * tables once both are materialized (a snapshot's content then is its
 * production snapshot's), and what changed since a snapshot up to the live
 * device adds the blocks the journal holds records for that no checkpoint has
 * applied yet. A pending snapshot (its marker still in the journal) has no
 * production snapshot to ask: `exportStream` materializes it first through
 * {@link prepareExport}; a direct call says so with `EBUSY`.
 */

/** Production, if it tracks changes. @throws `EINVAL` otherwise. */
function trackingProduction(core: JournalCore): ChangeTracking {
  const production = core.production as Partial<ChangeTracking>;
  if (typeof production.changedExtents !== 'function') {
    throw new BlockDeviceError(
      'EINVAL',
      'the production device does not track changes (changedExtents): a JournalDevice over it cannot say what changed',
    );
  }
  return production as ChangeTracking;
}

/** `snap`'s production snapshot id. @throws `EBUSY` while it is pending. */
function materialized(snap: JournalSnapshot): string {
  if (snap.productionId === undefined) {
    throw new BlockDeviceError(
      'EBUSY',
      `snapshot ${snap.id} is still in the journal: await checkpoint() first (exportStream does it)`,
    );
  }
  return snap.productionId;
}

/**
 * The extents that may differ between journal snapshot `from` and snapshot
 * `to` or the live device, from production's change tables and the
 * journal's changes table; no data is read.
 * @throws `ENOENT`, `EBUSY` for a pending snapshot, `EINVAL` if production
 *   does not track changes.
 */
export function journalChangedExtents(
  core: JournalCore,
  from: JournalSnapshot,
  to: JournalSnapshot | 'live',
): Extent[] {
  const production = trackingProduction(core);
  const fromId = materialized(from);
  if (to !== 'live') return production.changedExtents(fromId, materialized(to));
  const bs = production.blockSize;
  // Every record not yet applied lies after `from`'s marker (it is
  // materialized, so its marker is before the head).
  const journaled: Extent[] = [];
  for (const b of core.table.sortedKeys()) {
    const run = journaled[journaled.length - 1] as { offset: number; length: number } | undefined;
    if (run !== undefined && run.offset + run.length === b * bs) run.length += bs;
    else journaled.push({ offset: b * bs, length: bs });
  }
  return unionOf(production.changedExtents(fromId, 'live'), journaled);
}

/** The union of two ascending lists of disjoint extents, coalesced. */
function unionOf(a: readonly Extent[], b: readonly Extent[]): Extent[] {
  const all = [...a, ...b].sort((x, y) => x.offset - y.offset);
  const out: { offset: number; length: number }[] = [];
  for (const { offset, length } of all) {
    const last = out[out.length - 1];
    if (last !== undefined && offset <= last.offset + last.length) {
      last.length = Math.max(last.length, offset + length - last.offset);
    } else {
      out.push({ offset, length });
    }
  }
  return out;
}

/**
 * Materializes the pending snapshots among `snaps` (a checkpoint through
 * their markers), so their extents can be read from production.
 */
export async function prepareExport(
  snaps: readonly JournalSnapshot[],
  checkpoint: () => Promise<void>,
): Promise<void> {
  if (snaps.some((s) => s.productionId === undefined && !s.deleted)) await checkpoint();
}
