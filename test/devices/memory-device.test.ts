import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { WRITE_NOW } from '../../src/base/owned-io.js';
import { BLOCKS_PER_GROUP } from '../../src/devices/memory-blocks.js';
import { MemoryDevice, type MemoryDeviceOptions } from '../../src/devices/memory-device.js';
import { BlockDeviceError } from '../../src/errors.js';

const TiB = 2 ** 40;

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
