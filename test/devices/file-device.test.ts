import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type OwnedIO, READ_CALLBACK, WRITE_NOW, WRITE_OWNED } from '../../src/base/owned-io.js';
import { FileDevice } from '../../src/devices/file-device.js';
import { BlockDeviceError } from '../../src/errors.js';
import { expectCode } from '../support/error-code.js';
import { withHeldFs } from '../support/held-fs.js';

let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'blocksnap-file-device-'));
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

describe('FileDevice.open', () => {
  it('creates a zero-filled file of the given size', async () => {
    const path = join(dir, 'disk.img');
    await using device = await FileDevice.open(path, { size: 8192, blockSize: 512, create: true });
    expect([device.size, device.blockSize, device.readOnly, device.path]).toEqual([
      8192,
      512,
      false,
      path,
    ]);
    expect((await stat(path)).size).toBe(8192);
    expect(await device.read(0, 8192)).toEqual(new Uint8Array(8192));
  });

  it('create needs a size (EINVAL) and then creates nothing', async () => {
    const path = join(dir, 'disk.img');
    await expectCode(FileDevice.open(path, { create: true }), 'EINVAL');
    expect(await exists(path)).toBe(false);
  });

  it('create on an existing file opens it and keeps its content', async () => {
    const path = join(dir, 'disk.img');
    await writeFile(path, new Uint8Array(4096).fill(3));
    await using device = await FileDevice.open(path, { size: 4096, create: true });
    expect(await device.read(0, 4096)).toEqual(new Uint8Array(4096).fill(3));
  });

  it('a missing file without create is ENOENT', async () => {
    await expectCode(FileDevice.open(join(dir, 'missing.img')), 'ENOENT');
    await expectCode(FileDevice.open(join(dir, 'missing.img'), { size: 4096 }), 'ENOENT');
  });

  it('refuses a file whose size is not a multiple of blockSize (EINVAL)', async () => {
    const path = join(dir, 'odd.img');
    await writeFile(path, new Uint8Array(1000));
    await expectCode(FileDevice.open(path), 'EINVAL');
    await expectCode(FileDevice.open(path, { blockSize: 512 }), 'EINVAL');
    await writeFile(path, new Uint8Array(6144));
    await expectCode(FileDevice.open(path), 'EINVAL');
    await using device = await FileDevice.open(path, { blockSize: 2048 });
    expect(device.size).toBe(6144);
  });

  it('an existing file whose size differs from the size option is EINVAL', async () => {
    const path = join(dir, 'disk.img');
    await writeFile(path, new Uint8Array(8192));
    await expectCode(FileDevice.open(path, { size: 4096 }), 'EINVAL');
    await expectCode(FileDevice.open(path, { size: 16384, create: true }), 'EINVAL');
    expect((await stat(path)).size).toBe(8192);
  });

  it('create together with readOnly is EINVAL', async () => {
    const path = join(dir, 'disk.img');
    await expectCode(FileDevice.open(path, { size: 4096, create: true, readOnly: true }), 'EINVAL');
    expect(await exists(path)).toBe(false);
  });

  it('bad options and paths are EINVAL', async () => {
    const path = join(dir, 'disk.img');
    await expectCode(FileDevice.open(''), 'EINVAL');
    await expectCode(FileDevice.open(5 as unknown as string), 'EINVAL');
    for (const blockSize of [256, 1000, 2 * 1024 * 1024]) {
      await expectCode(FileDevice.open(path, { size: 8192, blockSize, create: true }), 'EINVAL');
    }
    await expectCode(FileDevice.open(path, { size: 5000, create: true }), 'EINVAL');
    await expectCode(FileDevice.open(path, { size: -4096, create: true }), 'EINVAL');
    await expectCode(FileDevice.open(path, null as unknown as object), 'EINVAL');
    expect(await exists(path)).toBe(false);
  });

  it('two creates racing on one path both open the same file (without the lock)', async () => {
    const path = join(dir, 'race.img');
    const devices = await Promise.all(
      Array.from({ length: 4 }, () =>
        FileDevice.open(path, { size: 8192, create: true, lock: false }),
      ),
    );
    await devices[0]!.write(0, new Uint8Array([7]));
    expect(await devices[3]!.read(0, 1)).toEqual(new Uint8Array([7]));
    await Promise.all(devices.map((d) => d.close()));
  });

  it('other file-system failures are EIO with the cause', async () => {
    const err = await expectCode(FileDevice.open(dir), 'EIO');
    expect((err as Error).cause).toMatchObject({ code: 'EISDIR' });
  });
});

describe('FileDevice I/O', () => {
  it('readOnly opens the file read-only: writes are EROFS, reads and flush work', async () => {
    const path = join(dir, 'disk.img');
    const content = new Uint8Array(8192).map((_, i) => i & 0xff);
    await writeFile(path, content);
    await using device = await FileDevice.open(path, { readOnly: true });
    expect(device.readOnly).toBe(true);
    await expectCode(device.write(0, new Uint8Array(1)), 'EROFS');
    await device.flush();
    expect(await device.read(0, 8192)).toEqual(content);
    expect(new Uint8Array(await readFile(path))).toEqual(content);
  });

  it('reopening keeps the data', async () => {
    const path = join(dir, 'disk.img');
    const data = new Uint8Array(5000).map((_, i) => (i * 7) & 0xff);
    const first = await FileDevice.open(path, { size: 16384, create: true });
    await first.write(1000, data);
    await first.close();

    await using second = await FileDevice.open(path, { blockSize: 4096 });
    expect(second.size).toBe(16384);
    expect(await second.read(1000, 5000)).toEqual(data);
    expect(await second.read(0, 1000)).toEqual(new Uint8Array(1000));
    const onDisk = new Uint8Array(await readFile(path));
    expect(onDisk.subarray(1000, 6000)).toEqual(data);
  });

  it('a file that shrank under the device reads as EIO, never as zeros', async () => {
    const path = join(dir, 'disk.img');
    await using device = await FileDevice.open(path, { size: 8192, create: true });
    await writeFile(path, new Uint8Array(4096));
    await expectCode(device.read(4096, 4096), 'EIO');
  });

  it("READ_CALLBACK, the layers' fast path, calls back once: with the bytes in `into`, or EIO with its cause", async () => {
    const path = join(dir, 'disk.img');
    await using device = await FileDevice.open(path, { size: 8192, create: true });
    await device.write(0, new Uint8Array(8192).fill(5));
    const read = (offset: number, into: Uint8Array) =>
      new Promise<[Error | null, Uint8Array | undefined][]>((resolve) => {
        const calls: [Error | null, Uint8Array | undefined][] = [];
        device[READ_CALLBACK](
          offset,
          into.length,
          (err, data) => {
            calls.push([err, data]);
            setTimeout(() => resolve(calls), 10);
          },
          into,
        );
      });
    const into = new Uint8Array(4096);
    const [ok, ...again] = await read(4096, into);
    expect(again).toEqual([]);
    expect(ok![0]).toBeNull();
    expect(ok![1]).toBe(into);
    expect(into).toEqual(new Uint8Array(4096).fill(5));

    await writeFile(path, new Uint8Array(4096));
    const [failed, ...more] = await read(4096, new Uint8Array(4096));
    expect(more).toEqual([]);
    expect(BlockDeviceError.is(failed![0], 'EIO')).toBe(true);
    expect((failed![0] as Error).cause).toBeInstanceOf(Error);
    expect(failed![1]).toBeUndefined();
    await expectCode(device.readInto(4096, new Uint8Array(4096)), 'EIO');
  });
});

describe('FileDevice: close waits for I/O in flight', () => {
  // FileDevice counts its own I/O in flight, in the callback that settles
  // it (no promise reaction per I/O): close must still wait for every kind.
  const data = new Uint8Array(8192).fill(7);
  type Issue = (device: FileDevice, at: number) => Promise<unknown>;
  const bulk = (device: FileDevice) => device as unknown as OwnedIO;
  const kinds: [string, ('read' | 'write' | 'writev')[], Issue, number][] = [
    ['read', ['read'], (d, at) => d.read(at, 8192), 1],
    ['write', ['write'], (d, at) => d.write(at, data), 7],
    ['readInto', ['read'], (d, at) => d.readInto(at, new Uint8Array(8192)), 1],
    ['WRITE_OWNED, one block', ['write'], (d, at) => bulk(d)[WRITE_OWNED](at, [data]), 7],
    [
      'WRITE_OWNED, several blocks',
      ['writev'],
      (d, at) => bulk(d)[WRITE_OWNED](at, [data.subarray(0, 4096), data.subarray(4096)]),
      7,
    ],
  ];

  it.each(kinds)('%s', async (_kind, calls, issue, expected) => {
    const path = join(dir, 'held.img');
    const device = await FileDevice.open(path, { size: 64 * 1024, blockSize: 4096, create: true });
    await device.write(0, new Uint8Array(64 * 1024).fill(1));
    await withHeldFs(calls, async (held) => {
      let settled = 0;
      const ops = [0, 1, 2].map((i) => issue(device, i * 8192).then(() => settled++));
      await held.closeWaitsFor(device, 3);
      await Promise.all(ops);
      expect(settled).toBe(3);
    });
    expect((await readFile(path))[8192 * 2 + 100]).toBe(expected);
  });
});

describe('FileDevice WRITE_NOW (the journal durable mark)', () => {
  it('writes before it returns, and refuses what write refuses, throwing', async () => {
    const path = join(dir, 'now.img');
    const d = await FileDevice.open(path, { size: 8192, blockSize: 512, create: true });
    d[WRITE_NOW](512, new Uint8Array(512).fill(7));
    // No await in between: the bytes are in the file already.
    expect((await readFile(path)).subarray(512, 1024)).toEqual(Buffer.alloc(512, 7));
    expect(() => d[WRITE_NOW](8000, new Uint8Array(512))).toThrow(/ERANGE/);
    await d.close();
    expect(() => d[WRITE_NOW](0, new Uint8Array(512))).toThrow(/ECLOSED/);
    const ro = await FileDevice.open(path, { readOnly: true, blockSize: 512 });
    expect(() => ro[WRITE_NOW](0, new Uint8Array(512))).toThrow(/EROFS/);
    await ro.close();
  });
});
