import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import { checksum } from '../../src/checksum/crc32.js';
import {
  type BlockDevice,
  BlockDeviceError,
  CowSnapshotDevice,
  type Extent,
  FileDevice,
  MemoryDevice,
  SelectiveSnapshotDevice,
  type Snapshot,
} from '../../src/index.js';
import { STORED_CHECKSUM } from '../../src/snapshot/snapshot-handle.js';
import { applyStream, exportStream, StreamApplyError } from '../../src/stream/stream.js';
import { KEEP_FOR_FRAMES } from '../../src/stream/stream-export.js';
import { FRAME_DATA_MAX } from '../../src/stream/stream-format.js';
import { MANIFEST_CRC, MANIFEST_HEAD } from '../../src/stream/stream-manifest.js';
import { expectSameBytes, seededBytes } from '../support/bytes.js';
import { CountingDevice } from '../support/counting-device.js';
import { CowRig } from '../support/cow-rig.js';
import { codeOf } from '../support/error-code.js';
import { ReadLogDevice } from '../support/read-log-device.js';
import { chunked, collect, layoutOf, withFrames } from '../support/stream-bytes.js';

const SOAK = process.env.BLOCKSNAP_SOAK === '1';
const KiB = 1024;
const MiB = 1 << 20;
const BS = 4 * KiB;
/** 4 MiB: a full stream is 4 pieces, and an extent past 1 MiB is cut into several. */
const BLOCKS = 1024;
const SIZE = BS * BLOCKS;
/** Bytes of the scenario's A in blocks that are not all zero: what a full stream of it carries. */
const A_DATA = SIZE / 2 + 2 * BS;
/**
 * A full stream of A: the first two MiB in a data frame each; the third cut
 * into zeros, the two blocks of A's write at 3,000,000, zeros; the fourth
 * zeros.
 */
const A_FRAMES = 6;
const A_ZERO_FRAMES = 3;

async function cowDevice(): Promise<CowSnapshotDevice> {
  return CowSnapshotDevice.create(
    await MemoryDevice.create({ size: SIZE, blockSize: BS }),
    await MemoryDevice.create({ size: 16 * MiB, blockSize: BS }),
    { maxSnapshots: 8 },
  );
}

/** A memory device of the exporting geometry holding `content` (zeros if none). */
async function targetWith(content?: Uint8Array): Promise<MemoryDevice> {
  const target = await MemoryDevice.create({ size: SIZE, blockSize: BS });
  if (content !== undefined) await target.write(0, content);
  return target;
}

function contentOf(device: BlockDevice): Promise<Uint8Array> {
  return device.read(0, device.size);
}

function bytesOf(extents: readonly Extent[]): number {
  return extents.reduce((sum, e) => sum + e.length, 0);
}

async function rejection(promise: Promise<unknown>): Promise<StreamApplyError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, 'expected a rejection').toBeInstanceOf(StreamApplyError);
  return err as StreamApplyError;
}

/**
 * A device with snapshot A (half of it written, plus an unaligned write) and
 * a writable snapshot B taken after writes that make an extent longer than a
 * frame, with a write of its own; the origin is written again after B.
 */
async function scenario() {
  const cow = await cowDevice();
  await cow.write(0, seededBytes(SIZE / 2, 1));
  await cow.write(3_000_000, seededBytes(5000, 2));
  const a = await cow.snapshot({ name: 'A' });
  await cow.write(10 * BS + 100, seededBytes(2 * BS, 3));
  await cow.write(300 * BS, seededBytes(400 * BS, 4));
  const b = await cow.snapshot({ name: 'B', writable: true });
  await b.write(800 * BS + 5, seededBytes(10, 5));
  await cow.write(900 * BS, seededBytes(BS, 6));
  return { cow, a, b, aContent: await contentOf(a), bContent: await contentOf(b) };
}

describe('exportStream and applyStream round trip', () => {
  it('full A, then incremental A→B (a writable snapshot with its own writes), then B→C reproduce each snapshot', async () => {
    const { cow, a, b, aContent, bContent } = await scenario();
    const target = await targetWith();

    const full = await applyStream(exportStream(cow, { to: a.id }), target);
    expect(full).toMatchObject({
      incremental: false,
      from: undefined,
      to: a.id,
      frames: A_FRAMES,
      // Zero frames over the target's zeros: nothing to write.
      framesSkipped: A_ZERO_FRAMES,
      dataBytes: SIZE,
      bytesWritten: A_DATA,
      extents: 1,
    });
    expectSameBytes('target', await contentOf(target), aContent);

    const changedAB = cow.changedExtents(a.id, b.id);
    // Blocks 10–12, 300–699 and B's own 800; not 900 (written after B).
    expect(changedAB).toEqual([
      { offset: 10 * BS, length: 3 * BS },
      { offset: 300 * BS, length: 400 * BS },
      { offset: 800 * BS, length: BS },
    ]);
    const ab = await applyStream(exportStream(cow, { from: a.id, to: b.id }), target);
    expect(ab).toMatchObject({
      incremental: true,
      from: a.id,
      to: b.id,
      // The 400-block extent is 1.56 MiB: two frames.
      frames: 4,
      framesSkipped: 0,
      dataBytes: bytesOf(changedAB),
      bytesWritten: bytesOf(changedAB),
      extents: 3,
    });
    expectSameBytes('target', await contentOf(target), bContent);

    await b.write(20 * BS, seededBytes(BS, 7));
    await cow.write(40 * BS, seededBytes(3 * BS, 8));
    const c = await cow.snapshot({ name: 'C' });
    const bc = await applyStream(exportStream(cow, { from: b.id, to: c.id }), target);
    expect(bc.dataBytes).toBe(bytesOf(cow.changedExtents(b.id, c.id)));
    expectSameBytes('target', await contentOf(target), await contentOf(c));
    await cow.close();
  });

  it('takes the input in any chunking, one byte at a time included', async () => {
    const { cow, a, b, aContent, bContent } = await scenario();
    const bytes = await collect(exportStream(cow, { from: a.id, to: b.id }));
    const target = await targetWith(aContent);
    await applyStream(chunked(bytes, [1]), target);
    expectSameBytes('target', await contentOf(target), bContent);
    const again = await targetWith(aContent);
    await applyStream(chunked(bytes, [7, 1, 4093, 40, 1 << 20]), again);
    expectSameBytes('again', await contentOf(again), bContent);
    await cow.close();
  });

  it('goes through Node streams and files: Readable.fromWeb to a file, a file ReadStream into a FileDevice', async () => {
    const { cow, a, aContent } = await scenario();
    const dir = fs.mkdtempSync(join(tmpdir(), 'blocksnap-stream-'));
    try {
      const file = join(dir, 'a.bsnap');
      await pipeline(Readable.fromWeb(exportStream(cow, { to: a.id })), fs.createWriteStream(file));
      const target = await FileDevice.open(join(dir, 'a.img'), {
        size: SIZE,
        blockSize: BS,
        create: true,
      });
      const report = await applyStream(
        fs.createReadStream(file, { highWaterMark: 100_000 }),
        target,
      );
      expect(report.bytesWritten).toBe(A_DATA);
      expectSameBytes('target', await contentOf(target), aContent);
      await target.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
      await cow.close();
    }
  });
});

describe('applyStream to a FileDevice, frames written uncopied', () => {
  /** As a reader filling one buffer hands chunks over: each chunk overwrites the one before. */
  async function* reusingOneBuffer(stream: Uint8Array): AsyncGenerator<Uint8Array> {
    const buffer = new Uint8Array(64 * KiB);
    for (let at = 0; at < stream.length; at += buffer.length) {
      const n = Math.min(buffer.length, stream.length - at);
      buffer.set(stream.subarray(at, at + n));
      yield buffer.subarray(0, n);
    }
  }

  it('applies a source that reuses its buffer exactly; a damaged frame stops it with only the frames before it written', async () => {
    const { cow, a, aContent } = await scenario();
    const bytes = await collect(exportStream(cow, { to: a.id }));
    const layout = layoutOf(bytes);
    expect(layout.frames.map((f) => f.zero)).toEqual([false, false, true, false, true, true]);
    const dir = fs.mkdtempSync(join(tmpdir(), 'blocksnap-stream-'));
    try {
      const open = (name: string) =>
        FileDevice.open(join(dir, name), { size: SIZE, blockSize: BS, create: true });
      const target = await open('a.img');
      const report = await applyStream(reusingOneBuffer(bytes), target);
      expect(report.bytesWritten).toBe(A_DATA);
      expectSameBytes('target', await contentOf(target), aContent);
      await target.close();

      // Frame 3, A's two blocks, after a zero frame.
      const damaged = bytes.slice();
      const frame3 = layout.frames[3]!;
      damaged[frame3.data.byteOffset - bytes.byteOffset + 1_234]! ^= 0x10;
      const other = await open('b.img');
      const err = await rejection(applyStream(reusingOneBuffer(damaged), other));
      expect(err.code).toBe('ECORRUPT');
      expect(err.message).toMatch(/frame 3: data checksum/);
      const before = layout.frames.slice(0, 3);
      expect(err.applied).toEqual({ frames: 3, bytes: 2 * MiB });
      expectSameBytes(
        'damaged target',
        await contentOf(other),
        withFrames(new Uint8Array(SIZE), before),
      );
      await other.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
      await cow.close();
    }
  });
});

describe('applyStream flushes early on a long stream', () => {
  /** 40 MiB: past two early flushes (one per 16 MiB applied). */
  const LONG = 40 * MiB;

  async function longStream(): Promise<{ bytes: Uint8Array; content: Uint8Array }> {
    const source = await MemoryDevice.create({ size: LONG, blockSize: BS });
    const content = seededBytes(LONG, 7);
    await source.write(0, content);
    const cow = await CowSnapshotDevice.create(
      source,
      await MemoryDevice.create({ size: 16 * MiB, blockSize: BS }),
    );
    try {
      const snap = await cow.snapshot();
      return { bytes: await collect(exportStream(cow, { to: snap.id })), content };
    } finally {
      await cow.close();
    }
  }

  /** A target whose flushes are counted, and fail from the `failFrom`-th on. */
  async function flushTarget(failFrom = Number.POSITIVE_INFINITY) {
    const target = await MemoryDevice.create({ size: LONG, blockSize: BS });
    const flush = target.flush.bind(target);
    let flushes = 0;
    target.flush = () => {
      flushes++;
      return flushes >= failFrom
        ? Promise.reject(new BlockDeviceError('EIO', 'flush failed'))
        : flush();
    };
    return { target, flushes: () => flushes };
  }

  it('flushes while it writes, and ends exact', async () => {
    const { bytes, content } = await longStream();
    const { target, flushes } = await flushTarget();
    const report = await applyStream(chunked(bytes, [64 * KiB]), target);
    expect(report.bytesWritten).toBe(LONG);
    expect(flushes()).toBe(3);
    expectSameBytes('target', await contentOf(target), content);
  });

  it('an early flush that fails stops the apply with the target’s error, a prefix applied', async () => {
    const { bytes, content } = await longStream();
    const { target } = await flushTarget(1);
    const err = await rejection(applyStream(chunked(bytes, [64 * KiB]), target));
    expect(err.code).toBe('EIO');
    expect(err.message).toMatch(/target flush failed/);
    const { frames, bytes: applied } = err.applied;
    expect(applied).toBe(frames * MiB);
    expect(applied).toBeGreaterThanOrEqual(16 * MiB);
    expect(applied).toBeLessThan(LONG);
    const expected = new Uint8Array(LONG);
    expected.set(content.subarray(0, applied));
    expectSameBytes('target', await contentOf(target), expected);
  });
});

describe('selective snapshots', () => {
  it('a full stream carries what the snapshot holds; an incremental one to a snapshot holding more carries the rest too', async () => {
    const device = await SelectiveSnapshotDevice.create(
      await MemoryDevice.create({ size: SIZE, blockSize: BS }),
      await MemoryDevice.create({ size: 16 * MiB, blockSize: BS }),
      { maxSnapshots: 8 },
    );
    await device.write(0, seededBytes(SIZE, 1));
    // A holds blocks 0–99, B blocks 0–599: 100–599 are B's alone.
    const a = await device.snapshot({ include: [{ offset: 0, length: 100 * BS }] });
    await device.write(50 * BS, seededBytes(BS, 2));
    await device.write(700 * BS, seededBytes(BS, 3)); // held by neither
    const b = await device.snapshot({ include: [{ offset: 0, length: 600 * BS }] });
    const target = await targetWith(seededBytes(SIZE, 4));
    const before = await contentOf(target);

    const full = await applyStream(exportStream(device, { to: a.id }), target);
    expect(full.dataBytes).toBe(100 * BS);
    const expected = before.slice();
    expected.set(await a.read(0, 100 * BS), 0);
    expectSameBytes('target after A', await contentOf(target), expected);

    // Blocks 100–599 have no base in A: written whatever the target holds there.
    const ab = await applyStream(exportStream(device, { from: a.id, to: b.id }), target);
    expect(ab.dataBytes).toBe(BS + 500 * BS);
    expected.set(await b.read(0, 600 * BS), 0);
    expectSameBytes('target after A→B', await contentOf(target), expected);

    // Where A does hold a block, the base is still proved.
    const notA = await targetWith(before);
    const err = await rejection(applyStream(exportStream(device, { from: a.id, to: b.id }), notA));
    expect(err.code).toBe('EINVAL');
    expectSameBytes('refused target', await contentOf(notA), before);
    await device.close();
  });
});

describe('applyStream proves the base before writing', () => {
  it('refuses an incremental stream for a target not at its base, and writes nothing', async () => {
    const { cow, a, b, aContent } = await scenario();
    const stream = await collect(exportStream(cow, { from: a.id, to: b.id }));
    // One byte off inside an extent the stream changes.
    const almostA = aContent.slice();
    almostA[300 * BS + 17]! ^= 1;
    const target = new CountingDevice(await targetWith(almostA));
    const err = await rejection(applyStream(chunked(stream), target));
    expect(err.code).toBe('EINVAL');
    expect(err.message).toMatch(/does not hold the stream's base/);
    expect(err.message).toContain(`[${300 * BS}, `);
    expect(err.applied).toEqual({ frames: 0, bytes: 0 });
    expect(target.writes).toBe(0);
    expectSameBytes('target', await contentOf(target), almostA);

    // An empty device is not at A either.
    const empty = new CountingDevice(await targetWith());
    expect((await rejection(applyStream(chunked(stream), empty))).code).toBe('EINVAL');
    expect(empty.writes).toBe(0);
    await cow.close();
  });

  it('refuses a target of another size or block size before writing', async () => {
    const { cow, a } = await scenario();
    const stream = await collect(exportStream(cow, { to: a.id }));
    for (const geometry of [
      { size: SIZE * 2, blockSize: BS },
      { size: SIZE, blockSize: BS * 2 },
    ]) {
      const target = new CountingDevice(await MemoryDevice.create(geometry));
      const err = await rejection(applyStream(chunked(stream), target));
      expect(err.code).toBe('EINVAL');
      expect(target.writes).toBe(0);
    }
    await cow.close();
  });
});

describe('applyStream resumes and repeats harmlessly', () => {
  it('a stream cut off anywhere fails ECORRUPT saying how far it got; applying it whole then ends exact', async () => {
    const { cow, a, b, aContent, bContent } = await scenario();
    const bytes = await collect(exportStream(cow, { from: a.id, to: b.id }));
    const layout = layoutOf(bytes);
    const cuts = [
      5,
      layout.headerEnd + 10,
      layout.frames[0]!.start + 50,
      layout.frames[1]!.end,
      layout.frames[2]!.end - 1,
      layout.trailerStart + 3,
    ];
    for (const cut of cuts) {
      const target = await targetWith(aContent);
      const err = await rejection(applyStream(chunked(bytes.subarray(0, cut), [4096]), target));
      expect(err.code).toBe('ECORRUPT');
      expect(err.message).toMatch(/truncated|ends at byte/);
      const whole = layout.frames.filter((f) => f.end <= cut);
      expect(err.applied).toEqual({
        frames: whole.length,
        bytes: bytesOf(whole.map((f) => ({ offset: f.offset, length: f.data.length }))),
      });
      expectSameBytes('target', await contentOf(target), withFrames(aContent, whole));

      const report = await applyStream(chunked(bytes), target);
      expect(report.framesSkipped).toBe(whole.length);
      expectSameBytes('target', await contentOf(target), bContent);
    }
    await cow.close();
  });

  it('a fresh export of the same change also resumes a cut-off apply', async () => {
    const { cow, a, b, aContent, bContent } = await scenario();
    const first = await collect(exportStream(cow, { from: a.id, to: b.id }));
    const target = await targetWith(aContent);
    await rejection(
      applyStream(chunked(first.subarray(0, layoutOf(first).frames[2]!.end)), target),
    );
    const report = await applyStream(exportStream(cow, { from: a.id, to: b.id }), target);
    expect(report.framesSkipped).toBe(3);
    expectSameBytes('target', await contentOf(target), bContent);
    await cow.close();
  });

  it('applying the same stream twice is harmless: a full one rewrites its data frames, an incremental one skips', async () => {
    const { cow, a, b, aContent, bContent } = await scenario();
    const full = await collect(exportStream(cow, { to: a.id }));
    const target = await targetWith();
    await applyStream(chunked(full), target);
    const again = await applyStream(chunked(full), target);
    expect(again).toMatchObject({ bytesWritten: A_DATA, framesSkipped: A_ZERO_FRAMES });
    expectSameBytes('target', await contentOf(target), aContent);

    const incremental = await collect(exportStream(cow, { from: a.id, to: b.id }));
    const first = await applyStream(chunked(incremental), target);
    const second = await applyStream(chunked(incremental), target);
    expect(second).toEqual({ ...first, framesSkipped: first.frames, bytesWritten: 0 });
    expectSameBytes('target', await contentOf(target), bContent);
    await cow.close();
  });
});

describe('stream format versioning', () => {
  /** The stream with header byte `at` set to `value` and the header CRC made right again. */
  function reheadered(bytes: Uint8Array, at: number, value: number): Uint8Array {
    const out = bytes.slice();
    const view = new DataView(out.buffer);
    const length = view.getUint16(10, true);
    out[at] = value;
    view.setUint32(length - 4, checksum(out.subarray(0, length - 4)), true);
    return out;
  }

  it('an intact manifest entry with unknown flags is EINVAL, not ECORRUPT', async () => {
    const { cow, a, b, aContent } = await scenario();
    const bytes = await collect(exportStream(cow, { from: a.id, to: b.id }));
    const { headerEnd, manifestEnd } = layoutOf(bytes);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const entries = bytes.subarray(headerEnd + MANIFEST_HEAD, manifestEnd - MANIFEST_CRC);
    view.setUint32(headerEnd + MANIFEST_HEAD + 12, 0x2, true); // entry 0: an unknown flag
    const headCrc = view.getUint32(headerEnd + MANIFEST_HEAD - 4, true);
    view.setUint32(manifestEnd - MANIFEST_CRC, checksum(entries, headCrc), true);
    const target = new CountingDevice(await targetWith(aContent));
    const err = await rejection(applyStream(chunked(bytes), target));
    expect(err.code).toBe('EINVAL');
    expect(err.message).toMatch(/unknown flags/);
    expect(target.writes).toBe(0);
    await cow.close();
  });

  it('an intact header of another version or with unknown flags is EINVAL, not ECORRUPT', async () => {
    const { cow, a } = await scenario();
    const bytes = await collect(exportStream(cow, { to: a.id }));
    for (const [at, value] of [
      [8, 4], // version 4, a future one
      [8, 1], // version 1, whose frames carried CRC-32s
      [12, 0x02], // an unknown flag
    ] as const) {
      const target = new CountingDevice(await targetWith());
      const err = await rejection(applyStream(chunked(reheadered(bytes, at, value)), target));
      expect(err.code).toBe('EINVAL');
      expect(target.writes).toBe(0);
    }
    await cow.close();
  });

  it('a header allowing frames over 1 MiB is refused ECORRUPT before anything is written: Fletcher-4 guarantees three-bit errors up to 1 MiB', async () => {
    const { cow, a } = await scenario();
    const bytes = await collect(exportStream(cow, { to: a.id }));
    // Max frame data is bytes [28, 32): 0x00100000 (1 MiB) becomes 0x00200000.
    expect(new DataView(bytes.buffer, bytes.byteOffset).getUint32(28, true)).toBe(FRAME_DATA_MAX);
    const target = new CountingDevice(await targetWith());
    const err = await rejection(applyStream(chunked(reheadered(bytes, 30, 0x20)), target));
    expect(err.code).toBe('ECORRUPT');
    expect(err.message).toMatch(/frames of up to 2097152 bytes/);
    expect(target.writes).toBe(0);
    await cow.close();
  });
});

describe('exportStream and applyStream arguments', () => {
  it('exportStream refuses bad arguments synchronously, before reading anything', async () => {
    const { cow, a } = await scenario();
    const thrown = (f: () => unknown): string | undefined => {
      try {
        f();
        return undefined;
      } catch (err) {
        return BlockDeviceError.is(err) ? err.code : String(err);
      }
    };
    const device = cow as unknown as Parameters<typeof exportStream>[0];
    expect(thrown(() => exportStream({} as typeof device, { to: a.id }))).toBe('EINVAL');
    expect(thrown(() => exportStream(null as unknown as typeof device, { to: a.id }))).toBe(
      'EINVAL',
    );
    expect(thrown(() => exportStream(cow, undefined as unknown as { to: string }))).toBe('EINVAL');
    expect(thrown(() => exportStream(cow, { to: '' }))).toBe('EINVAL');
    expect(thrown(() => exportStream(cow, { to: 42 as unknown as string }))).toBe('EINVAL');
    expect(thrown(() => exportStream(cow, { to: a.id, from: 7 as unknown as string }))).toBe(
      'EINVAL',
    );
    expect(
      thrown(() => exportStream(cow, { to: a.id, signal: {} as unknown as AbortSignal })),
    ).toBe('EINVAL');
    expect(thrown(() => exportStream(cow, { to: 'no-such-snapshot' }))).toBe('ENOENT');
    expect(thrown(() => exportStream(cow, { to: a.id, from: 'no-such-snapshot' }))).toBe('ENOENT');
    expect(thrown(() => exportStream(cow, { to: 'live' }))).toBe('ENOENT');
    await cow.close();
    expect(thrown(() => exportStream(cow, { to: a.id }))).toBe('ECLOSED');
  });

  it('applyStream refuses bad arguments without reading the stream', async () => {
    const { cow, a } = await scenario();
    const bytes = await collect(exportStream(cow, { to: a.id }));
    let pulled = 0;
    async function* watched(): AsyncGenerator<Uint8Array> {
      pulled++;
      yield bytes;
    }
    const target = await targetWith();
    expect(await codeOf(applyStream(watched(), {} as BlockDevice))).toBe('EINVAL');
    expect(await codeOf(applyStream(watched(), target.reopen({ readOnly: true })))).toBe('EROFS');
    expect(await codeOf(applyStream(watched(), target, null as unknown as object))).toBe('EINVAL');
    expect(
      await codeOf(applyStream(watched(), target, { signal: 'x' as unknown as AbortSignal })),
    ).toBe('EINVAL');
    expect(pulled).toBe(0);
    expect(await codeOf(applyStream(bytes as unknown as AsyncIterable<Uint8Array>, target))).toBe(
      'EINVAL',
    );
    await cow.close();
  });

  it('applyStream tells a stream that is not bytes (EINVAL) from one that is not a blocksnap stream (ECORRUPT)', async () => {
    const target = new CountingDevice(await targetWith());
    async function* strings(): AsyncGenerator<Uint8Array> {
      yield 'text' as unknown as Uint8Array;
    }
    expect(await codeOf(applyStream(strings(), target))).toBe('EINVAL');
    expect(await codeOf(applyStream(chunked(new Uint8Array(0)), target))).toBe('ECORRUPT');
    expect(await codeOf(applyStream(chunked(seededBytes(5000, 9)), target))).toBe('ECORRUPT');
    expect(target.writes).toBe(0);
  });
});

describe('cancel, abort and concurrent change', () => {
  /** The device with its snapshot handles counted: open until closed. */
  function countingHandles(cow: CowSnapshotDevice) {
    const open = new Set<Snapshot>();
    const device = new Proxy(cow, {
      get(target, property) {
        if (property === 'openSnapshot') {
          return async (id: string) => {
            const handle = await target.openSnapshot(id);
            open.add(handle);
            const close = handle.close.bind(handle);
            handle.close = () => {
              open.delete(handle);
              return close();
            };
            return handle;
          };
        }
        const value = Reflect.get(target, property, target);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    return { device, open };
  }

  it('closes its snapshot handles at the end, on cancel and on abort', async () => {
    const { cow, a, b } = await scenario();
    const { device, open } = countingHandles(cow);

    await collect(exportStream(device, { from: a.id, to: b.id }));
    expect(open.size).toBe(0);

    const cancelled = exportStream(device, { from: a.id, to: b.id }).getReader();
    await cancelled.read();
    expect(open.size).toBe(2);
    await cancelled.cancel();
    await vi.waitFor(() => expect(open.size).toBe(0));

    const controller = new AbortController();
    const aborted = exportStream(device, { to: a.id, signal: controller.signal }).getReader();
    await aborted.read();
    const reason = new Error('stop the export');
    controller.abort(reason);
    await expect(aborted.read()).rejects.toBe(reason);
    await vi.waitFor(() => expect(open.size).toBe(0));
    await cow.close();
  });

  it('applyStream stops at an abort with the signal’s reason, having written the frames read before it', async () => {
    const { cow, a, aContent } = await scenario();
    const bytes = await collect(exportStream(cow, { to: a.id }));
    const layout = layoutOf(bytes);
    const before = new AbortController();
    before.abort(new Error('never started'));
    const untouched = new CountingDevice(await targetWith());
    await expect(applyStream(chunked(bytes), untouched, { signal: before.signal })).rejects.toThrow(
      'never started',
    );
    expect(untouched.writes).toBe(0);

    const during = new AbortController();
    const reason = new Error('stop applying');
    async function* abortAfterTwoFrames(): AsyncGenerator<Uint8Array> {
      yield bytes.subarray(0, layout.frames[1]!.end);
      during.abort(reason);
      yield bytes.subarray(layout.frames[1]!.end);
    }
    const target = await targetWith();
    await expect(
      applyStream(abortAfterTwoFrames(), target, { signal: during.signal }),
    ).rejects.toBe(reason);
    // The two frames read before the abort are written; the third, read
    // after it, is not.
    const twoFrames = withFrames(new Uint8Array(SIZE), layout.frames.slice(0, 2));
    expectSameBytes('target', await contentOf(target), twoFrames);
    expectSameBytes('first 2 MiB', twoFrames.subarray(0, 2 * MiB), aContent.subarray(0, 2 * MiB));
    await cow.close();
  });

  it('a snapshot’s stored CRCs are those of what it reads, and a deleted one’s fail ENOENT rather than name another snapshot’s blocks', async () => {
    const cow = await cowDevice();
    const a = await cow.snapshot({ name: 'A' });
    await cow.write(5 * BS, seededBytes(2 * BS, 1)); // preserved for A
    await cow.snapshot({ name: 'C' });
    await cow.write(5 * BS, seededBytes(2 * BS, 2)); // preserved for C: other content
    const handle = (await cow.openSnapshot(a.id)) as Snapshot & {
      [STORED_CHECKSUM](offset: number, length: number): number | undefined;
    };
    expect(handle[STORED_CHECKSUM](5 * BS, 2 * BS)).toBe(
      checksum(await handle.read(5 * BS, 2 * BS)),
    );
    // Block 0 is read from the origin: no CRC is kept for it.
    expect(handle[STORED_CHECKSUM](0, BS)).toBeUndefined();
    // A's records go; C's, for the same blocks, stay — and say nothing about A.
    await cow.deleteSnapshot(a.id);
    expect(() => handle[STORED_CHECKSUM](5 * BS, 2 * BS)).toThrow(
      expect.objectContaining({ code: 'ENOENT' }),
    );
    await cow.close();
  });
});

describe('incremental export cost', () => {
  it('an incremental of more than the manifest pass keeps reproduces its snapshot: frames past it are read again', async () => {
    // 24 MiB changed in 64 KiB blocks, every other block so each is a frame
    // of its own: the first 16 MiB go out from what the manifest pass read.
    const bs = 64 * KiB;
    const size = 64 * MiB;
    const origin = new ReadLogDevice(await MemoryDevice.create({ size, blockSize: bs }));
    const cow = await CowSnapshotDevice.create(
      origin,
      await MemoryDevice.create({ size, blockSize: bs }),
    );
    await cow.write(0, seededBytes(size, 1));
    const a = await cow.snapshot();
    const base = await cow.read(0, size);
    const changedBytes = KEEP_FOR_FRAMES + 8 * MiB;
    for (let at = 0; at < changedBytes; at += bs) {
      await cow.write(2 * at, seededBytes(bs, 100 + at / bs));
    }
    const b = await cow.snapshot();
    const wanted = await cow.read(0, size);
    origin.logging = true;
    const bytes = await collect(exportStream(cow, { from: a.id, to: b.id }));
    origin.logging = false;
    expect(origin.bytesRead).toBe(2 * changedBytes - KEEP_FOR_FRAMES);
    const target = await MemoryDevice.create({ size, blockSize: bs });
    await target.write(0, base);
    const report = await applyStream(chunked(bytes, [100_000]), target);
    expect(report.frames).toBe(changedBytes / bs);
    expectSameBytes('target after the apply', await target.read(0, size), wanted, bs);
    await cow.close();
  });

  it('frames handed to the consumer keep the snapshot’s bytes while the live device is overwritten', async () => {
    // Frames the manifest pass built and frames read at send time alike:
    // each chunk is the consumer's once enqueued, so overwriting the live
    // blocks (the frames' source in the origin) after every chunk must
    // change none of the chunks already held.
    const bs = 64 * KiB;
    const size = 64 * MiB;
    const cow = await CowSnapshotDevice.create(
      await MemoryDevice.create({ size, blockSize: bs }),
      await MemoryDevice.create({ size, blockSize: bs }),
    );
    await cow.write(0, seededBytes(size / 2, 1));
    const a = await cow.snapshot();
    const base = await cow.read(0, size);
    const changedBytes = KEEP_FOR_FRAMES + 4 * MiB;
    for (let at = 0; at < changedBytes; at += bs) {
      await cow.write(2 * at, seededBytes(bs, 100 + at / bs));
    }
    const b = await cow.snapshot();
    const wanted = await cow.read(0, size);
    const held: Uint8Array[] = [];
    const copies: Uint8Array[] = [];
    let version = 0;
    for await (const chunk of exportStream(cow, { from: a.id, to: b.id })) {
      held.push(chunk);
      copies.push(chunk.slice());
      const at = 2 * bs * (version % (changedBytes / bs));
      await cow.write(at, seededBytes(bs, 10_000 + version++));
    }
    expect(held.length).toBeGreaterThan(changedBytes / bs);
    const changedChunks = held.filter((chunk, i) => Buffer.compare(chunk, copies[i]!) !== 0);
    expect(changedChunks.length).toBe(0);
    const target = await MemoryDevice.create({ size, blockSize: bs });
    await target.write(0, base);
    await applyStream(chunked(Buffer.concat(held), [100_000]), target);
    expectSameBytes('target after the apply', await target.read(0, size), wanted, bs);
    await cow.close();
  });

  it('reads only the changed blocks of a 64 GiB sparse device with 1 % changed', async () => {
    // The real figures: 64 GiB in 64 KiB blocks is 1,048,576 blocks; 1 %
    // of them, 10,486 blocks (655 MiB), change between A and B. Memory holds
    // the changed blocks twice (origin and preserved copies, ~1.3 GiB).
    const bs = 64 * KiB;
    const size = 64 * 2 ** 30;
    const blocks = size / bs;
    const originDisk = new ReadLogDevice(await MemoryDevice.create({ size, blockSize: bs }));
    const storeDisk = new ReadLogDevice(
      await MemoryDevice.create({ size: 2 ** 30, blockSize: bs }),
    );
    const cow = await CowSnapshotDevice.create(originDisk, storeDisk, { maxSnapshots: 8 });

    const changed = new Set<number>();
    const candidates = fc.sample(fc.integer({ min: 0, max: blocks - 1 }), {
      numRuns: 2 * Math.round(blocks / 100),
      seed: 0x5eed,
    });
    for (const block of candidates) if (changed.size < Math.round(blocks / 100)) changed.add(block);
    const changedBlocks = [...changed].sort((x, y) => x - y);
    expect(changedBlocks.length).toBe(10_486);

    // A stamp naming the block and the version, so a read can be traced to what it read.
    const stamp = (block: number, version: number): Uint8Array => {
      const out = new Uint8Array(8);
      new DataView(out.buffer).setUint32(0, block, true);
      new DataView(out.buffer).setUint32(4, version, true);
      return out;
    };
    const inBatches = async (work: (block: number) => Promise<void>): Promise<void> => {
      for (let i = 0; i < changedBlocks.length; i += 64) {
        await Promise.all(changedBlocks.slice(i, i + 64).map(work));
      }
    };
    await inBatches((block) => cow.write(block * bs, stamp(block, 0xa)));
    const a = await cow.snapshot();
    const newContent = new Uint8Array(bs).fill(0xbb);
    await inBatches((block) => {
      newContent.set(stamp(block, 0xb));
      return cow.write(block * bs, newContent);
    });
    const b = await cow.snapshot();
    const changedExtents = cow.changedExtents(a.id, b.id);
    expect(bytesOf(changedExtents)).toBe(changedBlocks.length * bs);

    originDisk.logging = true;
    storeDisk.logging = true;
    let streamBytes = 0;
    for await (const chunk of exportStream(cow, { from: a.id, to: b.id })) {
      streamBytes += chunk.length;
    }
    originDisk.logging = false;
    storeDisk.logging = false;

    const changedBytes = changedBlocks.length * bs;
    // The base (A) of every changed block is preserved in the store, whose
    // records carry each block's CRC: the manifest's base CRCs come from
    // there, so the store is not read at all.
    expect(storeDisk.bytesRead).toBe(0);
    // The new content (B, still on the origin): all of it for the manifest's
    // new checksums, and again for the frames but for the first 16 MiB or
    // so, kept from the manifest pass. Never a block that did not change.
    expect(originDisk.bytesRead).toBeGreaterThanOrEqual(2 * changedBytes - KEEP_FOR_FRAMES);
    expect(originDisk.bytesRead).toBeLessThanOrEqual(
      2 * changedBytes - KEEP_FOR_FRAMES + FRAME_DATA_MAX,
    );
    for (const read of originDisk.reads) {
      for (let block = read.offset / bs; block < (read.offset + read.length) / bs; block++) {
        expect(changed.has(block), `origin read of unchanged block ${block}`).toBe(true);
      }
    }
    expect(streamBytes).toBeGreaterThan(changedBytes);
    expect(streamBytes).toBeLessThan(changedBytes * 1.01);
    await cow.close();
  }, 120_000);
});

describe('after a power cut', () => {
  const CUT_BS = 512;
  const CUT_BLOCKS = 64;
  const CUT_SIZE = CUT_BS * CUT_BLOCKS;

  const write = fc.record({
    offset: fc.nat(CUT_SIZE - 1),
    length: fc.integer({ min: 1, max: 3 * CUT_BS }),
    seed: fc.nat(1000),
  });
  type PlannedWrite = { offset: number; length: number; seed: number };

  function blocksOf(w: PlannedWrite): number[] {
    const end = Math.min(CUT_SIZE, w.offset + w.length);
    const out = [];
    for (let b = Math.floor(w.offset / CUT_BS); b * CUT_BS < end; b++) out.push(b);
    return out;
  }

  function dataOf(w: PlannedWrite): Uint8Array {
    return seededBytes(Math.min(w.length, CUT_SIZE - w.offset), w.seed);
  }

  function blockSet(extents: readonly Extent[]): Set<number> {
    const out = new Set<number>();
    for (const e of extents) {
      for (let b = e.offset / CUT_BS; b < (e.offset + e.length) / CUT_BS; b++) out.add(b);
    }
    return out;
  }

  function differingBlocks(x: Uint8Array, y: Uint8Array): number[] {
    const out = [];
    for (let b = 0; b < CUT_BLOCKS; b++) {
      const range = [b * CUT_BS, (b + 1) * CUT_BS] as const;
      if (Buffer.compare(x.subarray(...range), y.subarray(...range)) !== 0) out.push(b);
    }
    return out;
  }

  it(
    'changedExtents and the incremental export stay exact after a power cut, with no full backup forced',
    async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.record({
            before: fc.array(write, { maxLength: 6 }),
            between: fc.array(write, { minLength: 1, maxLength: 8 }),
            after: fc.array(write, { maxLength: 6 }),
            /** Whether the power fails between A and B, or after B. */
            cutBeforeB: fc.boolean(),
            cutAfterOps: fc.nat(40),
            crashSeed: fc.nat(),
          }),
          async (plan) => {
            const rig = await CowRig.create({
              blockSize: CUT_BS,
              blocks: CUT_BLOCKS,
              storeBytes: 256 * KiB,
              maxSnapshots: 8,
            });
            let cow = rig.device;
            for (const w of plan.before) await cow.write(w.offset, dataOf(w));
            const a = await cow.snapshot({ name: 'A' });
            const aContent = await contentOf(a);
            const written = new Set<number>();
            const writeAll = async (writes: PlannedWrite[], tracked: boolean) => {
              for (const w of writes) {
                if (tracked) for (const b of blocksOf(w)) written.add(b);
                await cow.write(w.offset, dataOf(w)).catch(() => {});
              }
              await cow.flush().catch(() => {});
            };
            let bId: string | undefined;
            let bContent: Uint8Array | undefined;
            if (plan.cutBeforeB) {
              rig.power.cutAfter(plan.cutAfterOps);
              await writeAll(plan.between, true);
            } else {
              await writeAll(plan.between, true);
              const b = await cow.snapshot({ name: 'B' });
              bId = b.id;
              bContent = await contentOf(b);
              rig.power.cutAfter(plan.cutAfterOps);
              await writeAll(plan.after, false);
            }
            cow = await rig.crashAndReopen(plan.crashSeed);
            // Cut before B: B is what the crash left of the live device.
            if (bId === undefined) {
              const b = await cow.snapshot({ name: 'B after the cut' });
              bId = b.id;
              bContent = await contentOf(b);
            }
            expectSameBytes('A', await contentOf(await cow.openSnapshot(a.id)), aContent);

            const changed = blockSet(cow.changedExtents(a.id, bId));
            for (const block of differingBlocks(aContent, bContent!)) {
              expect(changed.has(block), `block ${block} differs but is not listed`).toBe(true);
            }
            for (const block of changed) {
              expect(written.has(block), `block ${block} was never written`).toBe(true);
            }
            // Every write between A and B completed before B: then exactly those blocks.
            if (!plan.cutBeforeB)
              expect([...changed].sort((x, y) => x - y)).toEqual(
                [...written].sort((x, y) => x - y),
              );

            const target = await MemoryDevice.create({ size: CUT_SIZE, blockSize: CUT_BS });
            await target.write(0, aContent);
            const report = await applyStream(exportStream(cow, { from: a.id, to: bId }), target);
            expect(report.incremental).toBe(true);
            expect(report.dataBytes).toBe(changed.size * CUT_BS);
            expectSameBytes('target', await contentOf(target), bContent!);
            await cow.close();
          },
        ),
        { numRuns: SOAK ? 2000 : 150, seed: 0x57ea },
      );
    },
    SOAK ? 60 * 60_000 : undefined,
  );
});
