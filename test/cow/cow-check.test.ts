import { describe, expect, it } from 'vitest';
import { cowCodec, readCowParams } from '../../src/cow/cow-layout.js';
import { FRAME_HEADER, type ScannedFrame, scanLog } from '../../src/cow/log-format.js';
import type { CowEntry } from '../../src/cow/metadata-codec.js';
import {
  type CheckReport,
  CowSnapshotDevice,
  MemoryDevice,
  SelectiveSnapshotDevice,
  type Snapshot,
} from '../../src/index.js';
import { logOffset, SUPERBLOCK_SLOT, tableOffset } from '../../src/store/index.js';
import { sleep, within } from '../support/async.js';
import { fill, flipBit, pattern } from '../support/bytes.js';
import { CowRig } from '../support/cow-rig.js';
import type { DiskRigOptions } from '../support/disk-rig.js';
import { expectCode } from '../support/error-code.js';
import { GatedDevice } from '../support/gated-device.js';
import { recordProgress } from '../support/progress.js';
import { SelectiveRig } from '../support/selective-rig.js';
import { newestSuperblock } from '../support/superblock.js';

/*
 * check() on the COW devices (docs/ARCHITECTURE.md, "check()"): a clean store
 * reports nothing; one flipped bit in each structure the store holds is
 * reported with that structure and its store offset, and with what it leaves
 * unreadable; check writes nothing, and a workload running through it —
 * snapshots, deletes, log checkpoints, chunks freed and reused — is never
 * reported as damage.
 */

const BS = 512;
const BLOCKS = 16;
const SIZE = BLOCKS * BS;

interface Subject {
  rig: CowRig | SelectiveRig;
  /** A snapshot holding blocks 0–7 at least. */
  snapshot(options?: { writable?: boolean }): Promise<Snapshot>;
}

async function cowSubject(options: DiskRigOptions = {}): Promise<Subject> {
  const rig = await CowRig.create({ ...options, blocks: BLOCKS, storeBytes: 128 * 1024 });
  return { rig, snapshot: (o) => rig.device.snapshot(o) };
}

async function selectiveSubject(options: DiskRigOptions = {}): Promise<Subject> {
  const rig = await SelectiveRig.create({ ...options, blocks: BLOCKS, storeBytes: 128 * 1024 });
  return {
    rig,
    snapshot: (o) => rig.device.snapshot({ ...o, include: [{ offset: 0, length: 8 * BS }] }),
  };
}

const subjects = [
  { device: 'CowSnapshotDevice', make: cowSubject },
  { device: 'SelectiveSnapshotDevice', make: selectiveSubject },
];

/**
 * Enough snapshots, first writes and deletes to fill the log more than once
 * (so the active table holds entries), then a read-only snapshot whose block
 * 2 is preserved and a writable one with its own block 5.
 */
async function workload(subject: Subject): Promise<{ readOnly: Snapshot; writable: Snapshot }> {
  const device = subject.rig.device;
  await device.write(0, pattern(SIZE, 3));
  for (let i = 0; i < 40; i++) {
    const snap = await subject.snapshot();
    await device.write((i % 8) * BS, fill(BS, i));
    await device.deleteSnapshot(snap.id);
  }
  const readOnly = await subject.snapshot();
  await device.write(2 * BS, fill(BS, 0xee));
  const writable = await subject.snapshot({ writable: true });
  await writable.write(5 * BS, fill(BS, 0x55));
  return { readOnly, writable };
}

/** Where the store keeps what the workload left: superblock slot, table, frames, chunks. */
async function storeMap(disk: MemoryDevice): Promise<{
  slot: number;
  tableAt: number;
  tableBytes: number;
  dataOffset: number;
  frames: ScannedFrame<CowEntry>[];
  /** Store offset of the chunk the newest entry of `kind` for `block` names. */
  chunkOf(kind: 'preserve' | 'private', block: number): number;
}> {
  const { sb, slot } = await newestSuperblock(disk);
  const layout = readCowParams(sb.params, disk);
  const frames = await scanLog(disk, sb, cowCodec);
  return {
    slot,
    tableAt: tableOffset(sb, sb.active),
    tableBytes: sb.tableBytes,
    dataOffset: layout.dataOffset,
    frames,
    chunkOf(kind, block) {
      const entry = frames
        .flatMap((f) => f.entries)
        .filter((e) => e.kind === kind && e.block === block)
        .at(-1);
      if (entry === undefined || (entry.kind !== 'preserve' && entry.kind !== 'private')) {
        throw new Error(`no ${kind} entry for block ${block} in the log`);
      }
      return layout.dataOffset + entry.chunk * layout.blockSize;
    },
  };
}

function found(report: CheckReport): [string, number][] {
  return report.problems.map((p) => [p.structure, p.offset]);
}

function damagedOf(report: CheckReport, id: string): unknown {
  return report.readable.snapshots.find((s) => s.id === id)?.damaged;
}

interface DamageCase {
  what: string;
  /** The offset to flip a bit at, and the problem that must be reported. */
  where(map: Awaited<ReturnType<typeof storeMap>>): {
    flip: number;
    structure: string;
    offset: number;
  };
  reopens: boolean;
  /** The block each snapshot can no longer read. */
  readOnlyLoses?: number;
  writableLoses?: number;
}

const cases: DamageCase[] = [
  {
    what: 'the superblock slot in use',
    where: ({ slot }) => ({
      flip: slot * SUPERBLOCK_SLOT + 13,
      structure: 'superblock',
      offset: slot * SUPERBLOCK_SLOT,
    }),
    reopens: false,
  },
  {
    what: 'the older superblock slot',
    where: ({ slot }) => ({
      flip: (1 - slot) * SUPERBLOCK_SLOT + 13,
      structure: 'superblock',
      offset: (1 - slot) * SUPERBLOCK_SLOT,
    }),
    reopens: true,
  },
  {
    what: 'the checkpoint table',
    where: ({ tableAt, tableBytes }) => ({
      flip: tableAt + tableBytes - 1,
      structure: 'table',
      offset: tableAt,
    }),
    reopens: false,
  },
  {
    what: "a log frame's header",
    where: ({ frames }) => ({
      flip: frames[0]!.offset + 8,
      structure: 'log-frame',
      offset: frames[0]!.offset,
    }),
    reopens: false,
  },
  {
    what: "a log frame's entries",
    where: ({ frames }) => ({
      flip: frames.at(-1)!.offset + FRAME_HEADER + 1,
      structure: 'log-frame',
      offset: frames.at(-1)!.offset,
    }),
    reopens: false,
  },
  {
    what: 'a preserved chunk',
    where: ({ chunkOf }) => ({
      flip: chunkOf('preserve', 2) + 100,
      structure: 'chunk',
      offset: chunkOf('preserve', 2),
    }),
    reopens: true,
    readOnlyLoses: 2,
  },
  {
    what: "a writable snapshot's own chunk",
    where: ({ chunkOf }) => ({
      flip: chunkOf('private', 5) + 100,
      structure: 'chunk',
      offset: chunkOf('private', 5),
    }),
    reopens: true,
    writableLoses: 5,
  },
];

const lost = (block: number | undefined): unknown =>
  block === undefined ? [] : [{ offset: block * BS, length: BS }];

describe.each(subjects)('$device check()', ({ make }) => {
  it('reports nothing on an undamaged store, after walking all of it', async () => {
    const subject = await make();
    const { readOnly, writable } = await workload(subject);
    const { frames, tableBytes } = await storeMap(subject.rig.disk('store'));
    expect(tableBytes).toBeGreaterThan(0);
    const report = await subject.rig.device.check();
    expect(report.problems).toEqual([]);
    expect(report.readable).toEqual({
      reopens: true,
      live: [],
      snapshots: [
        { id: readOnly.id, damaged: [] },
        { id: writable.id, damaged: [] },
      ],
    });
    expect(report.checked).toMatchObject({ superblocks: 2, tables: 1, frames: frames.length });
    // The preserved block 2 and the writable snapshot's block 5, at least.
    expect(report.checked.chunks).toBeGreaterThanOrEqual(2);
    expect(report.checked.records).toBeGreaterThan(frames.length);
    expect(report.skipped).toBe(0);
    await subject.rig.device.close();
  });

  it.each(cases)(
    'reports a flipped bit in $what with its structure and store offset',
    async (c) => {
      const subject = await make();
      const { readOnly, writable } = await workload(subject);
      const disk = subject.rig.disk('store');
      const { flip, structure, offset } = c.where(await storeMap(disk));
      await flipBit(disk, flip);
      const report = await subject.rig.device.check();
      expect(found(report)).toEqual([[structure, offset]]);
      expect(report.problems[0]!.message).toContain(`store offset ${offset}`);
      expect(report.readable.reopens).toBe(c.reopens);
      expect(damagedOf(report, readOnly.id)).toEqual(lost(c.readOnlyLoses));
      expect(damagedOf(report, writable.id)).toEqual(lost(c.writableLoses));
      await subject.rig.device.close();
    },
  );

  it('with verifyData false reads no chunk, so a damaged chunk goes unseen', async () => {
    const subject = await make();
    await workload(subject);
    const disk = subject.rig.disk('store');
    await flipBit(disk, (await storeMap(disk)).chunkOf('preserve', 2));
    const report = await subject.rig.device.check({ verifyData: false });
    expect(report.problems).toEqual([]);
    expect(report.checked.chunks).toBe(0);
    await subject.rig.device.close();
  });

  it('writes and flushes nothing, on the store or the origin', async () => {
    const subject = await make();
    await workload(subject);
    const { store, origin } = subject.rig;
    store.resetStats();
    origin.resetStats();
    const report = await subject.rig.device.check();
    expect(report.problems).toEqual([]);
    for (const disk of [store, origin]) {
      expect(disk.stats).toMatchObject({ writes: 0, flushes: 0, bytesWritten: 0 });
    }
    expect(store.stats.reads).toBeGreaterThan(0);
    await subject.rig.device.close();
  });

  it('a failing store read is EIO with the cause kept, not damage', async () => {
    const subject = await make();
    await workload(subject);
    subject.rig.store.failNext('read');
    const err = await expectCode(subject.rig.device.check(), 'EIO');
    expect(err.cause).toBeInstanceOf(Error);
    // Nothing was changed by the failed check.
    expect((await subject.rig.device.check()).problems).toEqual([]);
    await subject.rig.device.close();
  });

  it('reports nothing while writes, flushes, snapshots, deletes, log checkpoints and chunk reuse run through it', async () => {
    // Reads take a millisecond, so a check's chunk reads overlap the deletes
    // that free those chunks and the writes that reuse them.
    const subject = await make({ latency: (op) => (op.kind === 'read' ? 1 : 0) });
    const device = subject.rig.device;
    await device.write(0, pattern(SIZE, 9));
    let running = true;
    const work = (async () => {
      for (let i = 0; i < 40; i++) {
        const writable = await subject.snapshot({ writable: true });
        const readOnly = await subject.snapshot();
        await Promise.all([
          device.write((i % 8) * BS, fill(2 * BS, i)),
          writable.write(((i + 3) % 8) * BS, fill(BS, i + 1)),
          writable.write(((i + 4) % 8) * BS, fill(BS, i + 2)),
        ]);
        // Replaces the writable snapshot's own chunk: the old one is freed.
        await writable.write(((i + 3) % 8) * BS, fill(BS, i + 3));
        // A flush writes the superblock that attests the frames.
        if (i % 3 === 0) await device.flush();
        await device.deleteSnapshot((i % 2 === 0 ? writable : readOnly).id);
        await device.deleteSnapshot((i % 2 === 0 ? readOnly : writable).id);
      }
    })().finally(() => {
      running = false;
    });
    const reports: CheckReport[] = [];
    while (running) reports.push(await device.check());
    await work;
    expect(reports.flatMap((r) => r.problems)).toEqual([]);
    expect(reports.length).toBeGreaterThan(1);
    await device.close();
  });

  it('reports progress in bytes of store read: after the metadata, after each chunk read, ending at checked.bytes', async () => {
    const subject = await make();
    await workload(subject);
    const full = recordProgress();
    const report = await subject.rig.device.check({ onProgress: full.onProgress });
    expect(full.expectWellFormed('check')).toBe(report.checked.bytes);
    // The metadata first: the chunks are still to be read.
    expect(full.events.length).toBeGreaterThanOrEqual(2);
    expect(full.events[0]!.done).toBeLessThan(full.events[0]!.total);
    const quick = recordProgress();
    const metadataOnly = await subject.rig.device.check({
      verifyData: false,
      onProgress: quick.onProgress,
    });
    expect(quick.expectWellFormed('check')).toBe(metadataOnly.checked.bytes);
    expect(quick.events).toHaveLength(1);
    await subject.rig.device.close();
  });

  it('a throwing onProgress ends the check with what it threw, and the device is unharmed', async () => {
    const subject = await make();
    await workload(subject);
    const thrown = new Error('stop the check');
    let calls = 0;
    await expect(
      subject.rig.device.check({
        onProgress: () => {
          calls++;
          throw thrown;
        },
      }),
    ).rejects.toBe(thrown);
    expect(calls).toBe(1);
    // The release watch was stopped and the log is not held: the device goes on.
    await subject.rig.device.write(0, fill(BS, 1));
    await subject.rig.device.flush();
    expect((await subject.rig.device.check()).problems).toEqual([]);
    await subject.rig.device.close();
  });

  it('is ECLOSED after close, and EINVAL for bad options', async () => {
    const subject = await make();
    await expectCode(
      subject.rig.device.check({ verifyData: 'yes' as unknown as boolean }),
      'EINVAL',
    );
    await expectCode(
      subject.rig.device.check({ onProgress: 1 as unknown as () => void }),
      'EINVAL',
    );
    await subject.rig.device.close();
    await expectCode(subject.rig.device.check(), 'ECLOSED');
  });
});

interface GatedSubject {
  device: CowSnapshotDevice | SelectiveSnapshotDevice;
  disk: MemoryDevice;
  gated: GatedDevice;
  snapshot(options?: { writable?: boolean }): Promise<Snapshot>;
}

/** A device whose store a test can stop at one read, to run the device through the check at that point. */
async function gated(selective: boolean): Promise<GatedSubject> {
  const origin = await MemoryDevice.create({ size: SIZE, blockSize: BS });
  const disk = await MemoryDevice.create({ size: 128 * 1024, blockSize: BS });
  const gated = new GatedDevice(disk);
  await origin.write(0, pattern(SIZE, 5));
  if (selective) {
    const device = await SelectiveSnapshotDevice.create(origin, gated, { maxSnapshots: 4 });
    return {
      device,
      disk,
      gated,
      snapshot: (o) => device.snapshot({ ...o, include: [{ offset: 0, length: SIZE }] }),
    };
  }
  const device = await CowSnapshotDevice.create(origin, gated, { maxSnapshots: 4 });
  return { device, disk, gated, snapshot: (o) => device.snapshot(o) };
}

const covers =
  (at: number) =>
  (offset: number, length: number): boolean =>
    offset <= at && at < offset + length;

describe.each([
  { device: 'CowSnapshotDevice', selective: false },
  { device: 'SelectiveSnapshotDevice', selective: true },
])('$device check() on a live device', ({ selective }) => {
  it('skips a chunk freed and reused while the check read it, instead of reporting it', async () => {
    const { device, disk, gated: store, snapshot } = await gated(selective);
    const writable = await snapshot({ writable: true });
    await writable.write(5 * BS, fill(BS, 0x55));
    const map = await storeMap(disk);
    const own = map.chunkOf('private', 5);
    const chunkAt = (chunk: number): number => map.dataOffset + chunk * BS;
    const chunkRead = store.gate('read', covers(own));
    const checking = device.check();
    await within(chunkRead.reached, 5000, 'the check reading the chunk');
    // The check has the chunk in its list; now it is freed, and reused by
    // preserves of other data until one lands on it.
    await device.deleteSnapshot(writable.id);
    let reused = false;
    device.on('preserve', ({ chunk }) => {
      reused ||= chunkAt(chunk) === own;
    });
    for (let i = 0; !reused && i < 1000; i++) {
      const snap = await snapshot();
      await device.write((i % BLOCKS) * BS, fill(BS, 0x80 + (i % 64)));
      await device.deleteSnapshot(snap.id);
    }
    expect(reused).toBe(true);
    chunkRead.open();
    const report = await checking;
    expect(report.problems).toEqual([]);
    expect(report.skipped).toBe(1);
    await device.close();
  });

  it('holds the attestation a flush writes while it reads the superblocks', async () => {
    const { device, gated: store, snapshot } = await gated(selective);
    await snapshot();
    await device.write(0, fill(BS, 1));
    const superblocksRead = store.gate('read', covers(0));
    const checking = device.check();
    await within(superblocksRead.reached, 5000, 'the check reading the superblocks');
    // The flush's attestation is a new superblock generation: it must wait.
    const flushed = device.flush();
    await sleep(10);
    superblocksRead.open();
    const report = await checking;
    await flushed;
    expect(report.problems).toEqual([]);
    expect((await device.check()).problems).toEqual([]);
    await device.close();
  });

  it('reads the metadata as it stood when it began, while snapshots and deletes roll the log over', async () => {
    const { device, disk, gated: store, snapshot } = await gated(selective);
    const before = await snapshot();
    await device.write(0, fill(BS, 1));
    const { sb } = await newestSuperblock(disk);
    const logRead = store.gate('read', covers(logOffset(sb)));
    const checking = device.check();
    await within(logRead.reached, 5000, 'the check reading the log');
    // Enough frames to fill the log: its checkpoint rewrites the table and
    // starts a new epoch over the frames the check is about to read.
    const work = (async () => {
      for (let i = 0; i < 40; i++) await device.deleteSnapshot((await snapshot()).id);
    })();
    await sleep(10);
    logRead.open();
    const report = await checking;
    await work;
    expect(report.problems).toEqual([]);
    expect((await newestSuperblock(disk)).sb.epoch).not.toBe(sb.epoch);
    expect((await device.check()).problems).toEqual([]);
    await device.deleteSnapshot(before.id);
    await device.close();
  });
});
