import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { LEND_READ, type LentBytes, WRITE_NOW } from '../../src/base/index.js';
import { BLOCKS_PER_GROUP, BlockTable } from '../../src/devices/memory-blocks.js';
import { MemoryDevice, type MemoryDeviceOptions } from '../../src/devices/memory-device.js';
import { BlockDeviceError } from '../../src/errors.js';

const TiB = 2 ** 40;
const MiB = 2 ** 20;

/** Fails with the first differing offset (a diff of 512 KiB arrays would take minutes). */
function sameBytes(actual: Uint8Array, expected: Uint8Array): void {
  expect(actual.length).toBe(expected.length);
  if (Buffer.from(actual.buffer, actual.byteOffset, actual.length).equals(expected)) return;
  const at = actual.findIndex((byte, i) => byte !== expected[i]);
  expect(at, `first difference at ${at}`).toBe(-1);
}

describe('MemoryDevice', () => {
  it('is sparse: only written blocks take memory, so 1 TiB is fine', async () => {
    await using device = await MemoryDevice.create({ size: TiB, blockSize: 4096 });
    expect(device.size).toBe(TiB);
    expect(device.allocatedBytes).toBe(0);

    expect(await device.read(TiB - 8192, 8192)).toEqual(new Uint8Array(8192));
    expect(device.allocatedBytes).toBe(0);

    await device.write(TiB - 1, Uint8Array.of(9));
    expect(device.allocatedBytes).toBe(4096);
    await device.write(TiB / 2 - 2, Uint8Array.of(1, 2, 3, 4));
    expect(device.allocatedBytes).toBe(3 * 4096);
    await device.write(TiB / 2, Uint8Array.of(5));
    expect(device.allocatedBytes).toBe(3 * 4096);

    expect(await device.read(TiB - 2, 2)).toEqual(Uint8Array.of(0, 9));
    expect(await device.read(TiB / 2 - 3, 6)).toEqual(Uint8Array.of(0, 1, 2, 5, 4, 0));
  });

  it('reads zeros where nothing was written, even into memory that held other bytes', async () => {
    // Reads are not zero-filled when allocated: each byte is written from a
    // block or with a zero. Fill memory with 0xff, free it, and read holes
    // into what the allocator hands back.
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    await using device = await MemoryDevice.create({ size: 1 << 20, blockSize: 4096 });
    await device.write(4096, new Uint8Array(4096).fill(1));
    for (let round = 0; round < 20; round++) {
      for (let i = 0; i < 256; i++) Buffer.allocUnsafeSlow(12288).fill(0xff);
      gc();
      for (let i = 0; i < 64; i++) {
        const bytes = await device.read(0, 12288);
        expect(bytes.subarray(0, 4096).every((b) => b === 0)).toBe(true);
        expect(bytes.subarray(4096, 8192).every((b) => b === 1)).toBe(true);
        expect(bytes.subarray(8192).every((b) => b === 0)).toBe(true);
      }
    }
  });

  it('reads and writes across the groups of its block table as a flat array would', async () => {
    // 512-byte blocks: a group of the table is 128 KiB, so the 512 KiB device
    // spans four and most of the ranges below cross a group's edge.
    const size = 4 * BLOCKS_PER_GROUP * 512;
    const range = fc
      .tuple(fc.integer({ min: 0, max: size - 1 }), fc.integer({ min: 1, max: 300_000 }))
      .map(([offset, length]) => ({ offset, length: Math.min(length, size - offset) }));
    const op = fc.oneof(
      fc.record({
        kind: fc.constant('write' as const),
        range,
        fill: fc.integer({ min: 1, max: 255 }),
      }),
      fc.record({ kind: fc.constant('read' as const), range }),
      fc.record({ kind: fc.constant('readInto' as const), range }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 12 }), async (ops) => {
        await using device = await MemoryDevice.create({ size, blockSize: 512 });
        const model = new Uint8Array(size);
        const touched = new Set<number>();
        for (const o of ops) {
          const { offset, length } = o.range;
          if (o.kind === 'write') {
            const data = new Uint8Array(length);
            for (let i = 0; i < length; i++) data[i] = (o.fill + i) & 0xff;
            await device.write(offset, data);
            model.set(data, offset);
            for (let b = Math.floor(offset / 512); b * 512 < offset + length; b++) touched.add(b);
          } else if (o.kind === 'read') {
            sameBytes(await device.read(offset, length), model.subarray(offset, offset + length));
          } else {
            const target = new Uint8Array(length + 2).fill(0xee);
            await device.readInto(offset, target.subarray(1, 1 + length));
            sameBytes(target.subarray(1, 1 + length), model.subarray(offset, offset + length));
            expect([target[0], target[length + 1]]).toEqual([0xee, 0xee]);
          }
        }
        expect(device.allocatedBytes).toBe(touched.size * 512);
        await using clone = await device.clone();
        const other = device.reopen();
        sameBytes(await clone.read(0, size), model);
        sameBytes(await other.read(0, size), model);
        await other.close();
      }),
      { numRuns: 60 },
    );
  });

  it('keeps each block apart whatever the block size and the order blocks were first written in', async () => {
    // 256 KiB arenas: 512 blocks of 512 bytes, 4 of 64 KiB, or 1 MiB blocks one per arena.
    for (const blockSize of [512, 64 * 1024, 1024 * 1024]) {
      const blocks = 8;
      await using device = await MemoryDevice.create({ size: blocks * blockSize, blockSize });
      const model = new Uint8Array(blocks * blockSize);
      // Written back to front (then the middle again across a block edge), so
      // neighbours on the device are not neighbours in the arenas.
      for (let b = blocks - 1; b >= 0; b -= 2) {
        const data = new Uint8Array(blockSize + 3).map((_, i) => (b * 7 + i) & 0xff);
        const offset = Math.max(0, b * blockSize - 3);
        const length = Math.min(data.length, model.length - offset);
        await device.write(offset, data.subarray(0, length));
        model.set(data.subarray(0, length), offset);
      }
      sameBytes(await device.read(0, model.length), model);
      sameBytes(
        await device.read(blockSize - 1, 2 * blockSize),
        model.subarray(blockSize - 1, 3 * blockSize - 1),
      );
    }
  });

  it('lent bytes stay as read while writes land on their blocks, whole or in part', async () => {
    const KiB = 1024;
    await using device = await MemoryDevice.create({ size: MiB, blockSize: 4 * KiB });
    const before = new Uint8Array(256 * KiB).map((_, i) => (i * 7) & 0xff);
    await device.write(0, before);
    const lent = device[LEND_READ](4 * KiB + 100, 200 * KiB) as LentBytes;
    expect(lent).toBeDefined();
    const sent = before.slice(4 * KiB + 100, 204 * KiB + 100);
    sameBytes(lent.bytes, sent);
    // A whole block, a part of one, and a write across the lent range's end.
    await device.write(8 * KiB, new Uint8Array(4 * KiB).fill(1));
    await device.write(20 * KiB + 10, new Uint8Array(5).fill(2));
    await device.write(200 * KiB, new Uint8Array(10 * KiB).fill(3));
    sameBytes(lent.bytes, sent);
    const after = before.slice();
    after.fill(1, 8 * KiB, 12 * KiB);
    after.fill(2, 20 * KiB + 10, 20 * KiB + 15);
    after.fill(3, 200 * KiB, 210 * KiB);
    const whole = new Uint8Array(MiB);
    whole.set(after);
    sameBytes(await device.read(0, MiB), whole);
    lent.release();
    lent.release();
    await device.write(8 * KiB, new Uint8Array(4 * KiB).fill(4));
    whole.fill(4, 8 * KiB, 12 * KiB);
    sameBytes(await device.read(0, MiB), whole);
    // Blocks held, not the places they moved out of.
    expect(device.allocatedBytes).toBe(256 * KiB);
  });

  it('lends only a range in one run of written blocks of one arena, on an open device', async () => {
    await using device = await MemoryDevice.create({ size: MiB, blockSize: 4096 });
    await device.write(0, new Uint8Array(8192).fill(1));
    await device.write(3 * 4096, new Uint8Array(4096).fill(2));
    expect(device[LEND_READ](0, 8192)).toBeDefined();
    expect(device[LEND_READ](0, 3 * 4096)).toBeUndefined(); // a never-written block
    expect(device[LEND_READ](4096, 3 * 4096)).toBeUndefined(); // blocks not side by side
    expect(device[LEND_READ](MiB - 4096, 8192)).toBeUndefined(); // past the end
    expect(device[LEND_READ](0, 0)).toBeUndefined();
    await device.close();
    expect(device[LEND_READ](0, 4096)).toBeUndefined();
  });

  it('lent blocks match the read they stand for under any interleaving of writes and releases', async () => {
    const size = 4 * BLOCKS_PER_GROUP * 512;
    const range = fc
      .tuple(fc.integer({ min: 0, max: size - 1 }), fc.integer({ min: 1, max: 200_000 }))
      .map(([offset, length]) => ({ offset, length: Math.min(length, size - offset) }));
    const op = fc.oneof(
      fc.record({
        kind: fc.constant('write' as const),
        range,
        fill: fc.integer({ min: 1, max: 255 }),
      }),
      fc.record({ kind: fc.constant('lend' as const), range }),
      fc.record({ kind: fc.constant('release' as const), which: fc.nat() }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 30 }), async (ops) => {
        await using device = await MemoryDevice.create({ size, blockSize: 512 });
        // Written in order first, so most ranges lie in one run and are lent.
        await device.write(
          0,
          new Uint8Array(size).map((_, i) => (i * 13) & 0xff),
        );
        const model = await device.read(0, size);
        const out: { lent: LentBytes; bytes: Uint8Array }[] = [];
        for (const o of ops) {
          if (o.kind === 'write') {
            const { offset, length } = o.range;
            const data = new Uint8Array(length).map((_, i) => (o.fill + i) & 0xff);
            await device.write(offset, data);
            model.set(data, offset);
          } else if (o.kind === 'lend') {
            const { offset, length } = o.range;
            const lent = device[LEND_READ](offset, length);
            if (lent !== undefined) {
              out.push({ lent, bytes: model.slice(offset, offset + length) });
            }
          } else if (out.length > 0) {
            out.splice(o.which % out.length, 1)[0]?.lent.release();
          }
          for (const { lent, bytes } of out) sameBytes(lent.bytes, bytes);
        }
        sameBytes(await device.read(0, size), model);
        for (const { lent } of out) lent.release();
      }),
      { numRuns: 60 },
    );
  });

  it('blocks moved while lent free their old places once released: memory stays bounded', () => {
    const table = new BlockTable(4096);
    table.write(0, new Uint8Array(256 * 1024).fill(1));
    const arenaBlocks = 64;
    for (let round = 0; round < 1000; round++) {
      const at = (round % arenaBlocks) * 4096;
      const lent = table.lend(at, 4096);
      expect(lent).toBeDefined();
      table.write(at, new Uint8Array(4096).fill(round & 0xff));
      expect(lent?.bytes.every((b) => b === (round < arenaBlocks ? 1 : (round - 64) & 0xff))).toBe(
        true,
      );
      lent?.release();
    }
    expect(table.size).toBe(arenaBlocks);
    // The blocks, plus at most the places retired while one arena was pinned.
    expect(table.places).toBeLessThanOrEqual(2 * arenaBlocks);
  });

  it('defaults blockSize to 4096 and readOnly to false', async () => {
    await using device = await MemoryDevice.create({ size: 8192 });
    expect([device.blockSize, device.readOnly]).toEqual([4096, false]);
  });

  it('a clone has the same content and is independent of the original', async () => {
    await using device = await MemoryDevice.create({ size: 16384, blockSize: 512 });
    await device.write(100, new Uint8Array(1000).fill(1));
    await using clone = await device.clone();
    expect(clone.allocatedBytes).toBe(device.allocatedBytes);
    expect(await clone.read(0, 16384)).toEqual(await device.read(0, 16384));

    await device.write(100, new Uint8Array(10).fill(2));
    await clone.write(600, new Uint8Array(10).fill(3));
    expect(await device.read(600, 10)).toEqual(new Uint8Array(10).fill(1));
    expect(await clone.read(100, 10)).toEqual(new Uint8Array(10).fill(1));
    expect(await device.read(100, 10)).toEqual(new Uint8Array(10).fill(2));
    expect(await clone.read(600, 10)).toEqual(new Uint8Array(10).fill(3));
  });

  it('a clone can be read-only', async () => {
    await using device = await MemoryDevice.create({ size: 8192 });
    await device.write(0, Uint8Array.of(7));
    await using clone = await device.clone({ readOnly: true });
    expect(clone.readOnly).toBe(true);
    expect(await clone.read(0, 1)).toEqual(Uint8Array.of(7));
    const err = await clone.write(0, Uint8Array.of(1)).catch((e: unknown) => e);
    expect(BlockDeviceError.is(err, 'EROFS')).toBe(true);
  });

  it('bad geometry is EINVAL', async () => {
    const bad: unknown[] = [
      undefined,
      {},
      { size: 8192, blockSize: 1000 },
      { size: 8192, blockSize: 256 },
      { size: 4 * 1024 * 1024, blockSize: 2 * 1024 * 1024 },
      { size: 5000, blockSize: 4096 },
      { size: -4096, blockSize: 4096 },
      { size: Number.NaN },
      { size: 2 ** 53 + 4096 },
      { size: '8192' },
      { size: 8192, blockSize: '512' },
    ];
    for (const options of bad) {
      const err = await MemoryDevice.create(options as MemoryDeviceOptions).catch(
        (e: unknown) => e,
      );
      expect(BlockDeviceError.is(err, 'EINVAL'), `${JSON.stringify(options)}: ${err}`).toBe(true);
    }
  });
});

describe('MemoryDevice WRITE_NOW (a COW group commit)', () => {
  it('writes before it returns, and refuses what write refuses, throwing', async () => {
    const d = await MemoryDevice.create({ size: 8192, blockSize: 512 });
    const data = new Uint8Array(512).fill(7);
    d[WRITE_NOW](512, data);
    // The caller's bytes are copied: changing them afterwards changes nothing.
    data.fill(9);
    expect(await d.read(512, 512)).toEqual(new Uint8Array(512).fill(7));
    expect(() => d[WRITE_NOW](8000, new Uint8Array(512))).toThrow(/ERANGE/);
    const ro = d.reopen({ readOnly: true });
    expect(() => ro[WRITE_NOW](0, new Uint8Array(512))).toThrow(/EROFS/);
    await d.close();
    expect(() => d[WRITE_NOW](0, new Uint8Array(512))).toThrow(/ECLOSED/);
  });
});
