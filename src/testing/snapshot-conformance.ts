/**
 * `runSnapshotConformanceSuite`: the snapshot contract (docs/ARCHITECTURE.md,
 * Snapshot rules) as tests any snapshot-capable device can run, in the style
 * of abstract-level's suite: the caller hands over a factory and a
 * `supports` manifest, and cases for what the device does not offer are not
 * registered. The cases are in snapshot-cases.ts and
 * snapshot-lifecycle-cases.ts; the per-test state in snapshot-harness.ts.
 */
import assert from 'node:assert/strict';
import { type DescribeFn, type ItFn, runEach, startingContent } from './conformance-support.js';
import { registerSnapshotCases } from './snapshot-cases.js';
import { type SnapshotDevice, SnapshotHarness } from './snapshot-harness.js';
import { registerLifecycleCases } from './snapshot-lifecycle-cases.js';
import { registerCallOrderCases } from './snapshot-order-cases.js';

export type { SnapshotDevice } from './snapshot-harness.js';

/**
 * What a snapshot-capable device can do, so the suite registers only the
 * cases that apply. Every flag is required: declaring a capability is a
 * claim the suite then checks.
 */
export interface SnapshotSupport {
  /**
   * `snapshot({ writable: true })` makes a writable snapshot (a clone):
   * checks that writes to it change neither the origin nor another
   * snapshot, that deleting it and restoring it work.
   */
  writable: boolean;
  /** `restore(id)` makes the live content the snapshot's: checks restore. */
  restore: boolean;
  /**
   * `snapshot()` may be called with writes still in flight and holds exactly
   * the writes called before it (rule 1): checks it with writes started
   * before and after, none awaited. False only for a device that documents
   * that callers must wait for their writes first.
   */
  pointInTime: boolean;
  /**
   * The subject can close the device and open it again over the same stores
   * ({@link SnapshotConformanceSubject.reopen}): checks every snapshot, its
   * name, time and content, comes back bit for bit (rule 5).
   */
  reopen: boolean;
  /**
   * `snapshot()` also takes `include`/`exclude` byte ranges, as
   * `SelectiveSnapshotDevice` does, and a read touching a block the snapshot
   * does not hold fails with `EEXCLUDED` (its default `excludedReads:
   * 'error'`): checks what a selective snapshot holds.
   */
  selective: boolean;
  /**
   * The device is an event emitter with a `preserve` event for every block it
   * copies before that block's first overwrite (`BlockDeviceEvents`): checks
   * that a block is preserved once per generation, shared by every snapshot
   * (rule 3), and with `selective`, only the blocks a snapshot holds.
   */
  preserveEvents: boolean;
}

/** A snapshot-capable device handed to the snapshot suite, and how to reopen and dispose of it. */
export interface SnapshotConformanceSubject {
  /**
   * The device under test, open, with no snapshots; the suite closes it at
   * the end of each test. At least 8 blocks; keep it small (64 KiB of
   * 4 KiB blocks is plenty), since tests read the whole device often.
   */
  device: SnapshotDevice;
  /** The device's content when handed over, exactly `device.size` bytes. @default all zeros */
  expected?: Uint8Array;
  /**
   * Opens the device again over the same stores, after the suite closed it
   * (and with it every snapshot handle). Required with `supports.reopen`;
   * may be called several times in one test, and the device it returns is
   * the one the suite closes at the end.
   */
  reopen?: () => Promise<SnapshotDevice>;
  /** Called once after the device is closed, pass or fail: remove files, close what it owns. */
  cleanup?: () => Promise<void>;
  /**
   * Brings every snapshot of `device` to its settled form, for a device
   * whose snapshots change form over time (a JournalDevice's checkpoint
   * materializes pending ones into production): the call-order cases then
   * run once on snapshots as taken and once on settled ones.
   */
  settle?: (device: SnapshotDevice) => Promise<void>;
}

/** Options for {@link runSnapshotConformanceSuite}. */
export interface SnapshotConformanceOptions {
  /** The name of the outermost `describe` group, e.g. the device's class. */
  name: string;
  /** Makes a fresh subject for one test; every test calls it once. */
  create: () => Promise<SnapshotConformanceSubject>;
  /** What the device can do: cases for the rest are not registered. */
  supports: SnapshotSupport;
  /** The test runner's `describe` (vitest, mocha, jest, `node:test`). */
  describe: DescribeFn;
  /** The test runner's `it` (or `test`). */
  it: ItFn;
}

/** Registers one test: `body` runs on a fresh harness. */
export type SnapshotTestFn = (title: string, body: (h: SnapshotHarness) => Promise<void>) => void;

/**
 * Registers the snapshot conformance suite: snapshot handles (geometry,
 * `listSnapshots`, `EROFS`, closing a handle), `ENOENT` for unknown ids,
 * point in time with writes in flight (rule 1), independence of the origin,
 * snapshots and clones (rule 2), delete keeping what other snapshots need,
 * handles of deleted snapshots, restore, reopen (rule 5), one copy per block
 * per generation (rule 3), and selective snapshots — each as far as
 * `supports` declares. Every case checks whole-device content against a
 * byte-array model, so a lost, stale or misplaced byte fails it.
 *
 * It depends on no test runner: pass yours, and failures surface as
 * `node:assert` errors.
 *
 * @example
 * ```ts
 * import { describe, it } from 'vitest';
 * import { runSnapshotConformanceSuite } from 'blocksnap/testing';
 *
 * runSnapshotConformanceSuite({
 *   name: 'MySnapshotDevice',
 *   create: async () => {
 *     const disk = await makeDisks();
 *     return {
 *       device: await MySnapshotDevice.create(disk.origin, disk.store),
 *       reopen: () => MySnapshotDevice.open(disk.origin.reopen(), disk.store.reopen()),
 *     };
 *   },
 *   supports: {
 *     writable: true,
 *     restore: true,
 *     pointInTime: true,
 *     reopen: true,
 *     selective: false,
 *     preserveEvents: false,
 *   },
 *   describe,
 *   it,
 * });
 * ```
 */
export function runSnapshotConformanceSuite(options: SnapshotConformanceOptions): void {
  const { name, create, supports, describe, it } = options;
  const test: SnapshotTestFn = (title, body) =>
    it(title, () => withSnapshotHarness(create, supports, body));
  describe(name, () => {
    registerSnapshotCases(describe, test, supports);
    registerLifecycleCases(describe, test, supports);
    registerCallOrderCases(describe, test, supports);
  });
}

/**
 * Runs `body` on a fresh subject, then closes the device (the reopened one,
 * if the test reopened it) and runs the cleanup whatever happened,
 * reporting the first failure.
 */
async function withSnapshotHarness(
  create: () => Promise<SnapshotConformanceSubject>,
  supports: SnapshotSupport,
  body: (h: SnapshotHarness) => Promise<void>,
): Promise<void> {
  const { device, expected, reopen, cleanup, settle } = await create();
  let harness: SnapshotHarness | undefined;
  await runEach([
    async () => {
      const content = startingContent(device, expected, 8, 'the snapshot suite');
      assert.deepEqual(device.listSnapshots(), [], 'the subject starts with no snapshots');
      if (supports.reopen) {
        assert.equal(typeof reopen, 'function', 'supports.reopen needs subject.reopen');
      }
      harness = new SnapshotHarness(device, content, reopen, settle);
      await body(harness);
    },
    // The harness's device, if the test reopened it.
    () => (harness?.device ?? device).close(),
    async () => cleanup?.(),
  ]);
}
