import { CheckReportBuilder } from '../base/index.js';
import type { CheckOptions, CheckProblem, CheckReport, Extent, ProgressEvent } from '../device.js';
import { type GroupSnapshots, PARTITION_SNAPSHOT_TAG } from './group-snapshots.js';
import type { Partition } from './partition.js';
import { coalesce, type PartitionMap } from './partition-map.js';
import type { VolumeStore } from './volume-store.js';

/*
 * `VirtualVolume.check()` (docs/ARCHITECTURE.md, "VirtualVolume", check):
 * three walks merged into one report. The volume store — its superblock
 * slots and the state they name — and the catalog against the partitions'
 * snapshot lists are read in the admin queue, between catalog changes, so
 * the store and the lists stand still while they are compared; every
 * partition's COW store is checked at the same time by the processor that
 * owns it, with the volume in use.
 *
 * Orphans — partition snapshots tagged for an overall id the catalog does
 * not hold, and no snapshot in progress — are listed apart, not reported
 * as problems: they are what the group-snapshot protocol leaves after a
 * failure, a dead processor or a power cut, `open` and `restartProcessor`
 * delete them, and they hold space but nothing anyone can read.
 */

/** A partition snapshot no overall snapshot owns (see {@link VolumeCheckReport.orphans}). */
export interface OrphanPartitionSnapshot {
  /** The partition that holds it. */
  readonly partition: number;
  /** The partition's snapshot id. */
  readonly id: string;
  /** The overall snapshot id it was made for, which the catalog does not hold. */
  readonly overallId: string;
}

/** What `VirtualVolume.check()` found: a {@link CheckReport} of the whole volume, and its orphans. */
export interface VolumeCheckReport extends CheckReport {
  /**
   * Partition snapshots made for an overall snapshot that was never
   * committed or was deleted part way: not damage (the next `open` or
   * `restartProcessor` deletes them), but space still held.
   */
  readonly orphans: readonly OrphanPartitionSnapshot[];
}

/** The volume store's part of the report, and what the catalog says each partition holds. */
interface CatalogCheck {
  readonly report: CheckReport;
  readonly orphans: OrphanPartitionSnapshot[];
  /** Per overall snapshot, the partition snapshot id on each partition. */
  readonly records: readonly { readonly id: string; readonly partitions: readonly string[] }[];
  /** Per overall snapshot id, partitions that lost their partition snapshot. */
  readonly lost: ReadonlyMap<string, readonly number[]>;
}

/**
 * Checks the volume store, the catalog against the partitions, and every
 * partition's COW store, and merges them.
 * @throws `EIO` if a store read fails or a processor is dead.
 */
export async function checkVolume(
  store: VolumeStore,
  snapshots: GroupSnapshots,
  partitions: readonly Partition[],
  map: PartitionMap,
  options: CheckOptions,
): Promise<VolumeCheckReport> {
  const progress = new VolumeCheckProgress(partitions.length + 1, options.onProgress);
  const [catalog, reports] = await Promise.all([
    snapshots
      .admin(() => checkCatalog(store, snapshots, partitions))
      .then((check) => {
        const bytes = check.report.checked.bytes;
        progress.update(0, { operation: 'check', done: bytes, total: bytes });
        return check;
      }),
    Promise.all(
      partitions.map((p, i) =>
        p.check({
          verifyData: options.verifyData,
          onProgress: options.onProgress && ((event) => progress.update(i + 1, event)),
        }),
      ),
    ),
  ]);
  progress.rethrow();
  const all: { where: string; report: CheckReport }[] = [
    { where: 'volume store', report: catalog.report },
    ...reports.map((report, i) => ({ where: `partition ${i}`, report })),
  ];
  const checked = { ...catalog.report.checked };
  for (const { report } of all.slice(1)) {
    for (const key of Object.keys(checked) as (keyof typeof checked)[]) {
      checked[key] += report.checked[key];
    }
  }
  const problems: CheckProblem[] = all.flatMap(({ where, report }) =>
    report.problems.map((p) => ({ ...p, message: `${where}: ${p.message}` })),
  );
  const live = coalesce(reports.flatMap((r, i) => map.toVolume(i, r.readable.live)));
  const overall = catalog.records.map((record) => {
    const damaged: Extent[] = [];
    record.partitions.forEach((id, i) => {
      const found = reports[i]!.readable.snapshots.find((s) => s.id === id);
      if (found !== undefined) damaged.push(...map.toVolume(i, found.damaged));
    });
    // A partition that lost its snapshot loses the snapshot's whole share of it.
    for (const i of catalog.lost.get(record.id) ?? []) {
      damaged.push(...map.toVolume(i, [{ offset: 0, length: map.sizes[i]! }]));
    }
    return { id: record.id, damaged: coalesce(damaged) };
  });
  return {
    checked,
    problems,
    readable: {
      reopens: all.every(({ report }) => report.readable.reopens),
      live,
      snapshots: overall,
    },
    skipped: all.reduce((sum, { report }) => sum + report.skipped, 0),
    orphans: catalog.orphans,
  };
}

/**
 * The volume's check progress: the sum of its parts' (the volume store's,
 * counted once its walk is over, and each partition's COW check, as its
 * processor reports it). Nothing is reported until every part has given its
 * total, so the sum's total never changes; each part's `done` only grows,
 * so the sum's does too, and the last part's last event makes `done ===
 * total`. A callback that throws is not called again and its error is the
 * check's, once every part has settled: a partition's check in a worker
 * cannot be stopped half way from here.
 */
class VolumeCheckProgress {
  readonly #parts: (ProgressEvent | undefined)[];
  readonly #callback: ((event: ProgressEvent) => void) | undefined;
  #failure: { err: unknown } | undefined;

  constructor(parts: number, callback: ((event: ProgressEvent) => void) | undefined) {
    this.#parts = new Array<ProgressEvent | undefined>(parts).fill(undefined);
    this.#callback = callback;
  }

  /** Records part `index`'s event; reports the sum once every part has a total. */
  update(index: number, event: ProgressEvent): void {
    this.#parts[index] = event;
    if (this.#callback === undefined || this.#failure !== undefined) return;
    let done = 0;
    let total = 0;
    for (const part of this.#parts) {
      if (part === undefined) return;
      done += part.done;
      total += part.total;
    }
    try {
      this.#callback({ operation: 'check', done, total });
    } catch (err) {
      this.#failure = { err };
    }
  }

  /** Throws what the callback threw, if it did. */
  rethrow(): void {
    if (this.#failure !== undefined) throw this.#failure.err;
  }
}

/**
 * The volume store's superblocks and state, then every catalog record's
 * partition snapshots against each partition's list, and the restore
 * intent against the catalog. Runs in the admin queue.
 */
async function checkCatalog(
  store: VolumeStore,
  snapshots: GroupSnapshots,
  partitions: readonly Partition[],
): Promise<CatalogCheck> {
  const report = new CheckReportBuilder();
  const at = await store.check(report);
  const state = store.state;
  const lists = await Promise.all(partitions.map((p) => p.listSnapshots()));
  const committed = new Set(state.snapshots.map((r) => r.id));
  const lost = new Map<string, number[]>();
  const orphans: OrphanPartitionSnapshot[] = [];
  lists.forEach((infos, i) => {
    const held = new Set(infos.map((s) => s.id));
    for (const record of state.snapshots) {
      const id = record.partitions[i]?.id;
      if (id !== undefined && held.has(id)) continue;
      lost.set(record.id, [...(lost.get(record.id) ?? []), i]);
      // `open` refuses such a volume (ECORRUPT): it cannot restore it whole.
      report.problem(
        'catalog',
        at,
        `snapshot ${record.id}${record.name === undefined ? '' : ` (${record.name})`} names partition ${i}'s snapshot ${id ?? '(none)'}, which partition ${i} does not hold`,
        true,
      );
    }
    for (const info of infos) {
      if (!info.name?.startsWith(PARTITION_SNAPSHOT_TAG)) continue;
      const overallId = info.name.slice(PARTITION_SNAPSHOT_TAG.length);
      if (!committed.has(overallId) && !snapshots.isPending(overallId)) {
        orphans.push({ partition: i, id: info.id, overallId });
      }
    }
  });
  if (state.restoring !== undefined && !committed.has(state.restoring)) {
    report.problem(
      'catalog',
      at,
      `the restore intent names snapshot ${state.restoring}, which the catalog does not hold`,
      true,
    );
  }
  const records = state.snapshots.map((r) => ({
    id: r.id,
    partitions: r.partitions.map((p) => p.id),
  }));
  return { report: report.build([], []), orphans, records, lost };
}
