/**
 * The stacks the EIO matrix (eio-layers.test.ts) puts a failing device
 * under: each built over a disk rig whose disks consult one `failures`
 * function, set up without faults, then driven by the workload and checked
 * after a reopen with the fault gone.
 */
import { expect } from 'vitest';
import type {
  BlockDevice,
  SelectiveSnapshotOptions,
  Snapshot,
  SnapshotCapable,
} from '../../src/index.js';
import type { FaultyOperation } from '../../src/testing/index.js';
import { expectBytes } from '../support/bytes.js';
import { CopyCrashRig, geometry } from '../support/copy-job-rig.js';
import { CowOverCowRig } from '../support/cow-over-cow-rig.js';
import { CowRig } from '../support/cow-rig.js';
import type { DiskRig, SnapshotRig } from '../support/disk-rig.js';
import { JournalRig } from '../support/journal-rig.js';
import { SelectiveRig } from '../support/selective-rig.js';
import { ByteModel } from './byte-model.js';
import type { Target, WorkloadShape } from './eio-workload.js';

/** Decides, per disk, which operation fails (the FaultPlan's). */
export type Failures = (disk: string, op: FaultyOperation) => boolean;

const BS = 512;
const BLOCKS = 32;
const SIZE = BS * BLOCKS;

/** A stack set up and ready for the workload. */
export interface EioSubject {
  readonly shape: WorkloadShape;
  /** The handle a workload target goes through. */
  handle(target: Target): BlockDevice;
  /** The model of the device, and of its writable snapshot if it has one. */
  readonly model: ByteModel;
  readonly writableModel: ByteModel | undefined;
  /** What the read-only snapshot (and the lower layer's) must read: the device as it was at setup. */
  readonly pointInTime: Uint8Array;
  /** Failures reported outside any call (`error` events, a copy job's `done`). */
  readonly background: unknown[];
  /** Closes the top of the stack (what the caller of a stack closes). */
  close(): Promise<void>;
  /** The disks the stack owns (its close closes them) that are still open. */
  openDisks(): string[];
  /**
   * Cuts the power of the old stack's disks (so nothing it still runs can
   * land, and what no completed flush covered may be lost: `crashSeed`
   * picks what each disk keeps of it), opens the stack again on fresh
   * handles with no faults, and checks it against the models; then closes
   * it.
   */
  reopenAndCheck(what: string, crashSeed: number): Promise<void>;
}

/** One stack of the matrix: its name, the disk under each layer, and how to build it. */
export interface EioStack {
  readonly name: string;
  /** Layer label (as the report names it) → rig disk. */
  readonly layers: Readonly<Record<string, string>>;
  build(failures: Failures): Promise<EioSubject>;
}

/** Every block gets its own value (1..90), so a block read from the wrong place shows. */
export function initialContent(): Uint8Array {
  const out = new Uint8Array(SIZE);
  for (let b = 0; b < BLOCKS; b++) out.fill(1 + (b % 90), b * BS, (b + 1) * BS);
  return out;
}

/** The device of a snapshot stack, with what setup needs of it. */
type SnapshotDevice = BlockDevice &
  SnapshotCapable & { on(event: 'error', listener: (err: Error) => void): unknown };

interface SnapshotStackPlan<D extends SnapshotDevice> {
  rig: SnapshotRig<string, D>;
  /** Every disk of the rig. */
  disks: readonly string[];
  /** Options of the read-only snapshot and the bytes it holds; none: the device takes no snapshots. */
  snapshot?: { options: SelectiveSnapshotOptions; held: readonly [number, number] };
  /**
   * The layer below and the read-only snapshot of its own it took of the
   * initial content before the device was stacked on it (an owned layer
   * refuses a snapshot called directly).
   */
  lower?: () => { device: SnapshotCapable; snapshotId: string };
}

/**
 * Setup, without faults: the whole device written (one value per block) and
 * flushed (the layer below holds a snapshot of that content, where the stack
 * has one); then, where the stack has them, a read-only and a writable snapshot; then blocks 0–3 of the device and 4–5
 * of the writable snapshot overwritten (so preserves and the snapshot's own
 * writes exist before the workload), and flushed.
 */
async function snapshotSubject<D extends SnapshotDevice>(
  plan: SnapshotStackPlan<D>,
): Promise<EioSubject> {
  const { rig } = plan;
  const device = (): D => rig.device;
  const initial = initialContent();
  for (let at = 0; at < SIZE; at += 4096) await device().write(at, initial.subarray(at, at + 4096));
  await device().flush();
  const lowerId = plan.lower?.().snapshotId;
  let snapshotId: string | undefined;
  let writableId: string | undefined;
  const handles = new Map<Target, BlockDevice>([['device', rig.device]]);
  if (plan.snapshot !== undefined) {
    const s = await device().snapshot(plan.snapshot.options);
    const w = await device().snapshot({ writable: true });
    snapshotId = s.id;
    writableId = w.id;
    handles.set('snapshot', s);
    handles.set('writable', w);
    await w.write(4 * BS, new Uint8Array(2 * BS).fill(96));
  }
  if (lowerId !== undefined) {
    handles.set('lower', await plan.lower!().device.openSnapshot(lowerId));
  }
  await device().write(0, new Uint8Array(4 * BS).fill(95));
  await device().flush();
  const now = initial.slice();
  now.fill(95, 0, 4 * BS);
  const model = new ByteModel(now);
  const writableNow = initial.slice();
  writableNow.fill(96, 4 * BS, 6 * BS);
  const writableModel = writableId === undefined ? undefined : new ByteModel(writableNow);
  const background: unknown[] = [];
  device().on('error', (err) => background.push(err));
  const held = plan.snapshot?.held ?? [0, SIZE];
  return {
    shape: {
      size: SIZE,
      writable: writableId !== undefined,
      snapshot: snapshotId === undefined ? undefined : held,
      lower: lowerId !== undefined,
    },
    handle: (target) => handles.get(target)!,
    model,
    writableModel,
    pointInTime: initial,
    background,
    close: () => device().close(),
    openDisks: () => plan.disks.filter((name) => !rig.faulty(name).closed),
    async reopenAndCheck(what, crashSeed) {
      const d = await crashAndOpen(rig, plan.disks, crashSeed);
      model.check(`${what}: device after reopen`, 0, await d.read(0, SIZE), [], true);
      const opened: Snapshot[] = [];
      const open = async (id: string, on: SnapshotCapable = d): Promise<Snapshot> => {
        const s = await on.openSnapshot(id);
        opened.push(s);
        return s;
      };
      if (snapshotId !== undefined) {
        const [from, to] = held;
        const s = await open(snapshotId);
        expectBytes(
          `${what}: snapshot after reopen`,
          await s.read(from, to - from),
          initial.subarray(from, to),
        );
      }
      if (writableId !== undefined) {
        const w = await open(writableId);
        writableModel!.check(`${what}: writable after reopen`, 0, await w.read(0, SIZE), [], true);
      }
      if (lowerId !== undefined) {
        const l = await open(lowerId, plan.lower!().device);
        expectBytes(`${what}: lower snapshot after reopen`, await l.read(0, SIZE), initial);
      }
      for (const s of opened) await s.close();
      await d.close();
    },
  };
}

/**
 * A power cut on every disk of `rig` still open (one its stack closed
 * cleanly has nothing left to lose), each keeping what `seed` picks of what
 * no completed flush covered; then the stack opened on fresh handles.
 */
async function crashAndOpen<D>(
  rig: DiskRig<string, D>,
  disks: readonly string[],
  seed: number,
): Promise<D> {
  rig.power.cut();
  for (const [i, name] of disks.entries()) {
    const disk = rig.faulty(name);
    if (!disk.closed) await disk.crash(seed + i);
  }
  rig.attach();
  return rig.openAttached();
}

const WHOLE = { options: {}, held: [0, SIZE] as const };

/** The COW, selective, journal and COW-over-COW stacks. */
export const SNAPSHOT_STACKS: readonly EioStack[] = [
  {
    name: 'cow',
    layers: { origin: 'origin', store: 'store' },
    build: async (failures) =>
      snapshotSubject({
        rig: await CowRig.create({ failures }),
        disks: ['origin', 'store'],
        snapshot: WHOLE,
      }),
  },
  {
    name: 'selective',
    layers: { origin: 'origin', store: 'store' },
    build: async (failures) =>
      snapshotSubject({
        rig: await SelectiveRig.create({ failures }),
        disks: ['origin', 'store'],
        // Half the device: designated blocks are preserved, the rest are not.
        snapshot: { options: { include: [{ offset: 0, length: SIZE / 2 }] }, held: [0, SIZE / 2] },
      }),
  },
  {
    name: 'journal',
    layers: { journal: 'journal', production: 'production' },
    build: async (failures) =>
      snapshotSubject({
        rig: await JournalRig.create({ failures, ringBytes: 32 * 1024 }),
        disks: ['production', 'journal'],
      }),
  },
  {
    name: 'journal-over-cow',
    layers: { journal: 'journal', 'cow-store': 'store', 'cow-origin': 'production' },
    build: async (failures) =>
      snapshotSubject({
        rig: await JournalRig.create({
          failures,
          cow: true,
          ringBytes: 32 * 1024,
          maxSnapshots: 4,
        }),
        disks: ['production', 'store', 'journal'],
        snapshot: WHOLE,
      }),
  },
  {
    name: 'cow-over-cow',
    layers: { 'lower-origin': 'origin', 'lower-store': 'lowerStore', 'upper-store': 'upperStore' },
    build: async (failures) => {
      const rig = await CowOverCowRig.create({ failures, lowerSnapshotOf: initialContent() });
      return snapshotSubject({
        rig,
        disks: ['origin', 'lowerStore', 'upperStore'],
        snapshot: WHOLE,
        lower: () => ({ device: rig.lower!, snapshotId: rig.lowerSnapshotId! }),
      });
    },
  },
];

/**
 * A SnapshotCopyJob (copy-first, with a map store) copying 24 chunks of 512
 * bytes while the workload goes through `job.device`; after the reopen the
 * job resumes from its map store and must end with the exact copy of the
 * range as it was at start.
 */
export const COPY_JOB_STACK: EioStack = {
  name: 'copy-job',
  layers: { source: 'source', destination: 'destination', 'map-store': 'mapStore' },
  async build(failures): Promise<EioSubject> {
    const disks = Object.values(this.layers);
    const g = geometry(512, 24);
    const rig = await CopyCrashRig.create(
      g,
      { policy: 'copy-first', withStore: true, probed: false },
      1,
      { failures },
    );
    const job = await rig.start();
    const background: unknown[] = [];
    job.done.catch((err: unknown) => background.push(err));
    const model = new ByteModel(rig.base.atStart);
    return {
      shape: { size: g.sourceSize, writable: false, snapshot: undefined, lower: false },
      handle: () => job.device,
      model,
      writableModel: undefined,
      pointInTime: rig.base.snapshot(),
      background,
      close: () => job.device.close(),
      // The destination and the map store stay the caller's.
      openDisks: () => (rig.faulty('source').closed ? [] : ['source']),
      async reopenAndCheck(what, crashSeed) {
        const resumed = await crashAndOpen(rig, disks, crashSeed);
        await resumed.done;
        await rig.base.expectCopy(`${what}: destination after resume`);
        model.check(`${what}: source after reopen`, 0, await rig.source(), [], true);
        expect(resumed.progress.copiedBytes).toBe(g.length);
        await resumed.device.close();
      },
    };
  },
};
