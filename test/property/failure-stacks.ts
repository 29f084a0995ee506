/**
 * The stacks the failure property test (failure-model.test.ts) drives: the
 * EIO matrix's rigs (eio-stacks.ts) brought up with nothing but their
 * initial content, so the commands take, write, delete and restore
 * snapshots themselves.
 */
import type {
  BlockDevice,
  SelectiveSnapshotOptions,
  Snapshot,
  SnapshotCapable,
} from '../../src/index.js';
import { CopyCrashRig, geometry } from '../support/copy-job-rig.js';
import { CowOverCowRig } from '../support/cow-over-cow-rig.js';
import { CowRig } from '../support/cow-rig.js';
import type { DiskRig, SnapshotRig } from '../support/disk-rig.js';
import { JournalRig } from '../support/journal-rig.js';
import { SelectiveRig } from '../support/selective-rig.js';
import { type Failures, initialContent } from './eio-stacks.js';

/** A stack brought up over disks that consult one `failures` function. */
export interface FailureSubject {
  /** Bytes of the top device. */
  readonly size: number;
  /** What the top device holds once set up (flushed). */
  readonly initial: Uint8Array;
  /** The top of the stack: what the application reads and writes. */
  device(): BlockDevice;
  /** The top device's snapshot API; undefined for a copy job. */
  snapshots(): SnapshotCapable | undefined;
  /** A handle on snapshot `id`, kept until the device reopens or {@link forget} drops it. */
  handle(id: string): Promise<Snapshot>;
  forget(id: string): void;
  /** Closes the top of the stack, as its caller does. */
  close(): Promise<void>;
  /** The disks the stack owns (its close closes them) that are still open. */
  openDisks(): string[];
  /** Opens the stack again over fresh handles on the disks as they are. */
  open(): Promise<void>;
  /** A power cut on every disk (each keeping what `seed` picks of what no flush covered), then open. */
  crashAndOpen(seed: number): Promise<void>;
  /** Failures reported outside any call (`error` events, a copy job's `done`), drained by the caller. */
  readonly background: unknown[];
  /** After the last reopen: what the stack must have done by then (a copy job: the exact copy). */
  finish(what: string): Promise<void>;
}

/** One stack: its name, the disks a command can make fail, and how to bring it up. */
export interface FailureStack {
  readonly name: string;
  readonly disks: readonly string[];
  /** Options and held bytes of a read-only snapshot that holds part of the device (selective); none: whole. */
  readonly partial?: { options: SelectiveSnapshotOptions; held: readonly [number, number] };
  /**
   * Calls may wait for a checkpoint, and fail with its `EIO` while
   * checkpoints fail after a failure below (a production COW device in
   * fail-stop refuses them until reopen), with nothing failing at the call:
   * a restore, a write needing ring space (docs/ARCHITECTURE.md, "After an
   * I/O error", the JournalDevice row), a snapshot operation or a write
   * through a writable snapshot that production refuses. (Reads through a
   * snapshot's handle go on: test/journal/journal-eio.test.ts.)
   */
  readonly needsCheckpoints?: boolean;
  build(failures: Failures): Promise<FailureSubject>;
}

/** Open and crash+open over `rig`, calling `watch` on each new device. */
function lifecycle(
  rig: DiskRig<string, unknown>,
  watch: () => void,
): Pick<FailureSubject, 'open' | 'crashAndOpen'> {
  return {
    async open() {
      // Nothing the closed stack still runs may land on the new handles' disks.
      rig.abandon();
      await rig.open();
      watch();
    },
    async crashAndOpen(seed) {
      await rig.crashAndReopen(seed);
      watch();
    },
  };
}

type Device = BlockDevice &
  SnapshotCapable & { on(event: 'error', listener: (err: Error) => void): unknown };

/** Writes the initial content through the top device, flushes, and wraps the rig. */
async function snapshotSubject<D extends Device>(
  rig: SnapshotRig<string, D>,
  disks: readonly string[],
): Promise<FailureSubject> {
  const initial = initialContent();
  const size = initial.length;
  for (let at = 0; at < size; at += 4096)
    await rig.device.write(at, initial.subarray(at, at + 4096));
  await rig.device.flush();
  const background: unknown[] = [];
  const watch = () => rig.device.on('error', (err) => background.push(err));
  watch();
  return {
    size,
    initial,
    device: () => rig.device,
    snapshots: () => rig.device,
    handle: (id) => rig.handle(id),
    forget: (id) => rig.handles.delete(id),
    close: () => rig.device.close(),
    openDisks: () => disks.filter((name) => !rig.faulty(name).closed),
    ...lifecycle(rig, watch),
    background,
    finish: async () => {},
  };
}

/** The COW, selective, journal-over-COW and COW-over-COW stacks, and the copy job. */
export const FAILURE_STACKS: readonly FailureStack[] = [
  {
    name: 'cow',
    disks: ['origin', 'store'],
    build: async (failures) =>
      snapshotSubject(await CowRig.create({ failures }), ['origin', 'store']),
  },
  {
    name: 'selective',
    disks: ['origin', 'store'],
    partial: {
      options: { include: [{ offset: 0, length: 8192 }] },
      held: [0, 8192],
    },
    build: async (failures) =>
      snapshotSubject(await SelectiveRig.create({ failures }), ['origin', 'store']),
  },
  {
    name: 'journal-over-cow',
    disks: ['journal', 'store', 'production'],
    needsCheckpoints: true,
    build: async (failures) =>
      snapshotSubject(
        await JournalRig.create({ failures, cow: true, ringBytes: 32 * 1024, maxSnapshots: 4 }),
        ['production', 'store', 'journal'],
      ),
  },
  {
    name: 'cow-over-cow',
    disks: ['origin', 'lowerStore', 'upperStore'],
    build: async (failures) =>
      snapshotSubject(await CowOverCowRig.create({ failures }), [
        'origin',
        'lowerStore',
        'upperStore',
      ]),
  },
  {
    name: 'copy-job',
    disks: ['source', 'destination', 'mapStore'],
    async build(failures): Promise<FailureSubject> {
      const g = geometry(512, 24);
      const rig = await CopyCrashRig.create(
        g,
        { policy: 'copy-first', withStore: true, probed: false },
        1,
        { failures },
      );
      await rig.start();
      const background: unknown[] = [];
      const watch = () => rig.device.done.catch((err: unknown) => background.push(err));
      watch();
      const none = (): never => {
        throw new Error('a copy job has no snapshots');
      };
      return {
        size: g.sourceSize,
        initial: rig.base.atStart,
        device: () => rig.device.device,
        snapshots: () => undefined,
        handle: none,
        forget: none,
        close: () => rig.device.device.close(),
        // The destination and the map store stay the caller's.
        openDisks: () => (rig.faulty('source').closed ? [] : ['source']),
        ...lifecycle(rig, watch),
        background,
        async finish(what) {
          // Resumed with nothing failing, the job ends with the exact copy of the range at start.
          await rig.device.done;
          await rig.base.expectCopy(`${what}: destination`);
        },
      };
    },
  },
];
