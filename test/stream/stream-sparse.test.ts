import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checksum } from '../../src/checksum/crc32.js';
import { CowSnapshotDevice, FileDevice, MemoryDevice } from '../../src/index.js';
import { applyStream, exportStream, type StreamApplyError } from '../../src/stream/stream.js';
import { expectSameBytes, seededBytes } from '../support/bytes.js';
import { CountingDevice } from '../support/counting-device.js';
import { chunked, collect, layoutOf } from '../support/stream-bytes.js';
import { V2_FIXTURE, v2FixtureDevice } from '../support/stream-v2-fixture.js';

const KiB = 1024;
const MiB = 1 << 20;
const BS = 4 * KiB;
const SIZE = 64 * MiB;
/** Where the sparse device holds data: 16 writes of 64 KiB, 1 MiB in all, spread over it. */
const WRITES = Array.from({ length: 16 }, (_, i) => ({ at: i * 4 * MiB + i * 12 * KiB, seed: i }));
const WRITTEN = 16 * 64 * KiB;
/** What a stream may spend on structure: the header, and a few 40-byte heads and tails per MiB. */
const OVERHEAD = 64 * 4 * 120 + 1024;

/** A 64 MiB device holding 1 MiB (see WRITES), snapshot A of it, and A's content. */
async function sparseDevice() {
  const cow = await CowSnapshotDevice.create(
    await MemoryDevice.create({ size: SIZE, blockSize: BS }),
    await MemoryDevice.create({ size: 16 * MiB, blockSize: BS }),
    { maxSnapshots: 4 },
  );
  for (const w of WRITES) await cow.write(w.at, seededBytes(64 * KiB, w.seed));
  const a = await cow.snapshot({ name: 'A' });
  return { cow, a, aContent: await a.read(0, SIZE) };
}

/** Bytes the file system has allocated to `path`. */
function allocated(path: string): number {
  return fs.statSync(path).blocks * 512;
}

async function inTempDir<T>(run: (dir: string) => Promise<T>): Promise<T> {
  const dir = fs.mkdtempSync(join(tmpdir(), 'blocksnap-sparse-'));
  try {
    return await run(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe('sparse streams: zero extents travel without their bytes', () => {
  it('a full stream of a 64 MiB device holding 1 MiB is 1 MiB and a little', async () => {
    const { cow, a } = await sparseDevice();
    const bytes = await collect(exportStream(cow, { to: a.id }));
    expect(bytes.length).toBeLessThanOrEqual(WRITTEN + OVERHEAD);
    const { frames } = layoutOf(bytes);
    const carried = frames.filter((f) => !f.zero).reduce((sum, f) => sum + f.data.length, 0);
    expect(carried).toBe(WRITTEN);
    // Every byte is still covered, by a frame of either kind, in order.
    expect(frames.reduce((sum, f) => sum + f.data.length, 0)).toBe(SIZE);
    await cow.close();
  });

  it('applied to a new FileDevice, it leaves the file sparse and the content exact', async () => {
    const { cow, a, aContent } = await sparseDevice();
    const bytes = await collect(exportStream(cow, { to: a.id }));
    await inTempDir(async (dir) => {
      const path = join(dir, 'restored.img');
      const target = await FileDevice.open(path, { size: SIZE, blockSize: BS, create: true });
      // The precondition: this file system keeps holes.
      expect(allocated(path)).toBeLessThan(MiB);
      const report = await applyStream(chunked(bytes, [100_000]), target);
      expect(report).toMatchObject({ dataBytes: SIZE, bytesWritten: WRITTEN });
      await target.close();
      expect(allocated(path)).toBeLessThanOrEqual(WRITTEN + MiB);
      const reopened = await FileDevice.open(path, { blockSize: BS });
      expectSameBytes('restored', await reopened.read(0, SIZE), aContent, BS);
      await reopened.close();
    });
    await cow.close();
  });

  it('over a target holding other data, zeros are written where it is not zero, and only there', async () => {
    const { cow, a, aContent } = await sparseDevice();
    const bytes = await collect(exportStream(cow, { to: a.id }));
    const target = new CountingDevice(await MemoryDevice.create({ size: SIZE, blockSize: BS }));
    // Old data: a whole MiB, a block straddling a written extent's end, and
    // 100 bytes inside a unit that is otherwise zero.
    await target.write(5 * MiB, seededBytes(MiB, 90));
    await target.write(WRITES[3]!.at + 64 * KiB - BS, seededBytes(2 * BS, 91));
    await target.write(40 * MiB + 777, seededBytes(100, 92));
    target.reset();
    const report = await applyStream(chunked(bytes), target);
    expectSameBytes('target', await target.read(0, SIZE), aContent, BS);
    // The data frames, then zeros over the MiB, the block past the extent and the one unit.
    expect(report.bytesWritten).toBe(WRITTEN + MiB + BS + BS);
    await cow.close();
  });

  it('an incremental stream sends a zeroed extent as a zero frame, applied only where the target is not zero, and skipped once there', async () => {
    const { cow, a, aContent } = await sparseDevice();
    // Two written extents zeroed (a discard), one rewritten, one zeroed block of never-written space.
    await cow.write(WRITES[1]!.at, new Uint8Array(64 * KiB));
    await cow.write(WRITES[2]!.at, new Uint8Array(64 * KiB));
    await cow.write(WRITES[5]!.at, seededBytes(64 * KiB, 55));
    await cow.write(30 * MiB, new Uint8Array(BS));
    const b = await cow.snapshot({ name: 'B' });
    const bytes = await collect(exportStream(cow, { from: a.id, to: b.id }));
    const { frames } = layoutOf(bytes);
    expect(frames.map((f) => [f.offset, f.zero])).toEqual([
      [WRITES[1]!.at, true],
      [WRITES[2]!.at, true],
      [WRITES[5]!.at, false],
      [30 * MiB, true],
    ]);
    expect(bytes.length).toBeLessThan(64 * KiB + 2 * KiB);

    const target = await MemoryDevice.create({ size: SIZE, blockSize: BS });
    await target.write(0, aContent);
    const first = await applyStream(chunked(bytes), target);
    // The never-written block was zero on the target already.
    expect(first).toMatchObject({ frames: 4, framesSkipped: 1, bytesWritten: 3 * 64 * KiB });
    expectSameBytes('target', await target.read(0, SIZE), await b.read(0, SIZE), BS);
    const again = await applyStream(chunked(bytes), target);
    expect(again).toMatchObject({ framesSkipped: 4, bytesWritten: 0 });
    await cow.close();
  });

  it('a zero frame is checked against its manifest entry: one listing content that is not zeros is refused', async () => {
    const { cow, a, aContent } = await sparseDevice();
    await cow.write(WRITES[1]!.at, new Uint8Array(64 * KiB));
    await cow.write(WRITES[5]!.at, seededBytes(64 * KiB, 55));
    const b = await cow.snapshot({ name: 'B' });
    const bytes = await collect(exportStream(cow, { from: a.id, to: b.id }));
    const { headerEnd, frames } = layoutOf(bytes);
    // Entry 0's new checksum (bytes 20-51 of the entry) made non-zero, the
    // manifest's CRC made right: only the zero frame's check can see it.
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const entries = headerEnd + 36;
    bytes[entries + 20] = 1;
    const entriesEnd = entries + 2 * 52;
    const headCrc = view.getUint32(entries - 4, true);
    view.setUint32(entriesEnd, checksum(bytes.subarray(entries, entriesEnd), headCrc), true);
    expect(frames[0]!.zero).toBe(true);
    const target = await MemoryDevice.create({ size: SIZE, blockSize: BS });
    await target.write(0, aContent);
    const err = await applyStream(chunked(bytes), target).then(
      () => undefined,
      (e: StreamApplyError) => e,
    );
    expect(err?.code).toBe('ECORRUPT');
    expect(err?.message).toMatch(/zero frame, its manifest entry lists content that is not zeros/);
    expect(err?.applied).toEqual({ frames: 0, bytes: 0 });
    await cow.close();
  });
});

describe('stream format version 2', () => {
  const fixture = (name: string) =>
    fs.readFileSync(new URL(`../fixtures/stream-v2/${name}`, import.meta.url));

  it('streams written by version 2 (blocksnap at a2fda24) are still applied exactly', async () => {
    const { cow, aContent, bContent } = await v2FixtureDevice();
    await cow.close();
    const full = fixture('full.bin');
    const incremental = fixture('incremental.bin');
    expect(new DataView(full.buffer, full.byteOffset).getUint16(8, true)).toBe(2);
    const target = await MemoryDevice.create(V2_FIXTURE);
    const events: { done: number; total: number }[] = [];
    const first = await applyStream(chunked(full, [3000]), target, {
      onProgress: (e) => events.push(e),
    });
    expect(first).toMatchObject({ incremental: false, dataBytes: V2_FIXTURE.size });
    expectSameBytes('after the full stream', await target.read(0, V2_FIXTURE.size), aContent);
    // A version-2 full stream does not say its total: the device size bounds it.
    expect(events.at(-1)).toEqual({
      operation: 'apply',
      done: V2_FIXTURE.size,
      total: V2_FIXTURE.size,
    });

    const second = await applyStream(chunked(incremental, [1, 5000]), target);
    expect(second).toMatchObject({ incremental: true, framesSkipped: 0 });
    expectSameBytes('after the incremental', await target.read(0, V2_FIXTURE.size), bContent);
  });

  it('a version-2 stream holding a zero frame is refused ECORRUPT: version 2 has none', async () => {
    const full = fixture('full.bin');
    const bytes = Buffer.from(full);
    const { frames } = layoutOf(bytes);
    // The frame's magic "BSFR" made "BSZF", its head CRC made right.
    const start = frames[0]!.start;
    bytes.write('BSZF', start, 'latin1');
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    view.setUint32(start + 36, checksum(bytes.subarray(start, start + 36)), true);
    const target = new CountingDevice(await MemoryDevice.create(V2_FIXTURE));
    const err = await applyStream(chunked(bytes), target).then(
      () => undefined,
      (e: StreamApplyError) => e,
    );
    expect(err?.code).toBe('ECORRUPT');
    expect(err?.message).toMatch(/neither a frame nor the trailer/);
    expect(target.writes).toBe(0);
  });
});

describe('the header total (version 3)', () => {
  it('frames covering more than the header says are refused ECORRUPT at the frame that passes it', async () => {
    const { cow, a } = await sparseDevice();
    const bytes = Buffer.from(await collect(exportStream(cow, { to: a.id })));
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const headerEnd = view.getUint16(10, true);
    // Total (bytes [48, 56)) lowered to 2 MiB, the header CRC made right.
    expect(view.getUint32(48, true)).toBe(SIZE);
    view.setUint32(48, 2 * MiB, true);
    view.setUint32(headerEnd - 4, checksum(bytes.subarray(0, headerEnd - 4)), true);
    const target = await MemoryDevice.create({ size: SIZE, blockSize: BS });
    const err = await applyStream(chunked(bytes), target).then(
      () => undefined,
      (e: StreamApplyError) => e,
    );
    expect(err?.code).toBe('ECORRUPT');
    expect(err?.message).toMatch(/ends past the 2097152 bytes the stream says it covers/);
    // Only frames inside the stated total were applied.
    const { frames } = layoutOf(bytes);
    const inside = frames.filter((f) => f.offset + f.data.length <= 2 * MiB);
    expect(err?.applied.frames).toBe(inside.length);
    await cow.close();
  });
});

describe('the header total (version 3), when frames cover less', () => {
  it('an intact stream whose header states more than its frames cover is refused ECORRUPT at its trailer', async () => {
    const { cow, a, aContent } = await sparseDevice();
    await cow.write(WRITES[5]!.at, seededBytes(64 * KiB, 55));
    const b = await cow.snapshot({ name: 'B' });
    const bytes = Buffer.from(await collect(exportStream(cow, { from: a.id, to: b.id })));
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const headerEnd = view.getUint16(10, true);
    expect(view.getUint32(48, true)).toBe(64 * KiB);
    view.setUint32(48, 64 * KiB + BS, true);
    view.setUint32(headerEnd - 4, checksum(bytes.subarray(0, headerEnd - 4)), true);
    const target = await MemoryDevice.create({ size: SIZE, blockSize: BS });
    await target.write(0, aContent);
    const err = await applyStream(chunked(bytes), target).then(
      () => undefined,
      (e: StreamApplyError) => e,
    );
    expect(err?.code).toBe('ECORRUPT');
    expect(err?.message).toMatch(/header: 69632 bytes/);
    await cow.close();
  });
});
