import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type OwnedIO, READ_NOW, WRITE_OWNED } from '../../src/base/owned-io.js';
import { FileDevice, SnapshotCopyJob } from '../../src/index.js';
import { until } from '../support/async.js';
import { expectSameBytes } from '../support/bytes.js';
import { noise, POLICIES } from '../support/copy-job-rig.js';
import { codeOf } from '../support/error-code.js';

/*
 * A copy job between two FileDevices takes the bulk path: each run is read
 * into a buffer of the job's own (FileDevice's readInto) and its chunks go
 * to the destination in one vectored, uncopied write (WRITE_OWNED). The
 * other copy-job tests use wrapped memory devices, which have neither.
 */

const KiB = 1024;
const MiB = 1 << 20;

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(join(tmpdir(), 'blocksnap-copy-file-'));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

async function fileWith(name: string, content: Uint8Array): Promise<FileDevice> {
  const device = await FileDevice.open(join(dir, name), {
    size: content.length,
    blockSize: 4096,
    create: true,
  });
  await device.write(0, content);
  return device;
}

function bulk(device: FileDevice): OwnedIO {
  return device as unknown as OwnedIO;
}

describe('SnapshotCopyJob between FileDevices', () => {
  const cases = POLICIES.flatMap((policy) =>
    [512, 64 * KiB, 2 * MiB].map((chunkSize) => [policy, chunkSize] as const),
  );
  it.each(cases)(
    '%s, chunkSize %i: the destination gets the range as it was at start(), the source every write',
    async (conflictPolicy, chunkSize) => {
      const size = 8 * MiB;
      const original = noise(size, 1);
      const before = noise(size, 2);
      const source = await fileWith('source.img', original);
      const destination = await fileWith('destination.img', before);
      const offset = 3 * 4096 + 100;
      const length = 5 * MiB + 1234;
      const destinationOffset = 777;
      const job = await SnapshotCopyJob.start({
        source,
        destination,
        offset,
        length,
        destinationOffset,
        chunkSize,
        conflictPolicy,
      });
      // Disjoint writes racing the copier, inside, across and outside the range.
      const model = original.slice();
      const writes: Promise<void>[] = [];
      for (let i = 0; i < 40; i++) {
        const at = i * 200_000 + ((i * 7919) % 1000);
        const data = noise(1 + ((i * 104_729) % 9000), 100 + i);
        model.set(data, at);
        writes.push(job.device.write(at, data));
      }
      await Promise.all(writes);
      const report = await job.done;
      expect(report.copierBytes + report.copyFirstBytes).toBe(length);
      const expected = before.slice();
      expected.set(original.subarray(offset, offset + length), destinationOffset);
      expectSameBytes('destination', await destination.read(0, size), expected);
      expectSameBytes('source', await source.read(0, size), model);
      await job.device.close();
      await destination.close();
    },
  );
});

describe('SnapshotCopyJob between FileDevices: old bytes saved on the calling thread', () => {
  it.each(POLICIES)(
    '%s: a small save reads by READ_NOW, a large one through the thread pool; the destination gets the start() image',
    async (conflictPolicy) => {
      const size = 1 * MiB;
      const chunkSize = 64 * KiB;
      const original = noise(size, 11);
      const source = await fileWith('source.img', original);
      const destination = await fileWith('destination.img', noise(size, 12));
      const immediate: [number, number][] = [];
      const readNow = (source as unknown as Record<symbol, (o: number, l: number) => Uint8Array>)[
        READ_NOW
      ]!.bind(source);
      // On the instance, before start(): the job binds the source's READ_NOW then.
      Object.defineProperty(source, READ_NOW, {
        value: (offset: number, length: number) => {
          immediate.push([offset, length]);
          return readNow(offset, length);
        },
      });
      const pooled: [number, number][] = [];
      const read = source.read.bind(source);
      source.read = (offset: number, length: number) => {
        pooled.push([offset, length]);
        return read(offset, length);
      };
      // The copier held after its first chunk: the writes below land in chunks not yet copied.
      const job = await SnapshotCopyJob.start({
        source,
        destination,
        chunkSize,
        conflictPolicy,
        rate: 1,
      });
      await until(() => job.progress.copiedBytes >= chunkSize, 'the first chunk is copied');
      const small = noise(4096, 13);
      const large = noise(20 * KiB, 14);
      await job.device.write(5 * chunkSize + 100, small);
      await job.device.write(9 * chunkSize - 1000, large);
      expect(immediate).toEqual([[5 * chunkSize + 100, 4096]]);
      expect(pooled).toContainEqual([9 * chunkSize - 1000, 20 * KiB]);
      expect(job.progress.copyFirstBytes).toBe(0);
      job.setRate(0);
      await job.done;
      expectSameBytes('destination', await destination.read(0, size), original);
      const model = original.slice();
      model.set(small, 5 * chunkSize + 100);
      model.set(large, 9 * chunkSize - 1000);
      expectSameBytes('source', await source.read(0, size), model);
      await job.device.close();
      await destination.close();
    },
  );
});

describe('FileDevice READ_NOW', () => {
  it('reads before it returns, into a buffer of its own, and refuses what read refuses, throwing', async () => {
    const content = noise(64 * KiB, 15);
    const device = await fileWith('now.img', content);
    const readNow = (offset: number, length: number): Uint8Array =>
      (device as unknown as Record<symbol, (o: number, l: number) => Uint8Array>)[READ_NOW]!.call(
        device,
        offset,
        length,
      );
    const got = readNow(1000, 5000);
    expect(got.byteOffset).toBe(0);
    expect(got.buffer.byteLength).toBe(5000);
    expectSameBytes('read now', got, content.subarray(1000, 6000));
    // What the file holds at the call, not later: the buffer is the caller's.
    await device.write(1000, new Uint8Array(10));
    expectSameBytes('after a write', got, content.subarray(1000, 6000));
    expect(() => readNow(64 * KiB - 5, 10)).toThrow(/ERANGE/);
    await device.close();
    expect(() => readNow(0, 10)).toThrow(/ECLOSED/);
  });
});

describe('FileDevice bulk I/O (readInto, WRITE_OWNED)', () => {
  it('reads into the caller’s buffer and writes blocks back to back, as read and write would', async () => {
    const device = await fileWith('a.img', noise(1 * MiB, 3));
    const blocks = [noise(4096, 4), new Uint8Array(0), noise(100_000, 5), noise(1, 6)];
    await bulk(device)[WRITE_OWNED](5000, blocks);
    const expected = noise(1 * MiB, 3);
    let at = 5000;
    for (const block of blocks) {
      expected.set(block, at);
      at += block.length;
    }
    const into = new Uint8Array(700_000);
    const got = await device.readInto(1000, into);
    expect(got).toBe(into);
    expectSameBytes('read into', into, expected.subarray(1000, 701_000));
    expectSameBytes('read', await device.read(0, 1 * MiB), expected);
    await device.close();
  });

  it('checks its input as read and write do, and changes nothing on bad input', async () => {
    const content = noise(64 * KiB, 7);
    const device = await fileWith('b.img', content);
    const io = bulk(device);
    await expect(codeOf(io[WRITE_OWNED](60 * KiB, [new Uint8Array(4 * KiB + 1)]))).resolves.toBe(
      'ERANGE',
    );
    await expect(
      codeOf(io[WRITE_OWNED](0, [new Uint8Array(10), 'x' as unknown as Uint8Array])),
    ).resolves.toBe('EINVAL');
    await expect(codeOf(device.readInto(-1, new Uint8Array(10)))).resolves.toBe('ERANGE');
    await expect(codeOf(device.readInto(64 * KiB - 5, new Uint8Array(10)))).resolves.toBe('ERANGE');
    expectSameBytes('after bad input', await device.read(0, 64 * KiB), content);
    await device.close();
    await expect(codeOf(device.readInto(0, new Uint8Array(10)))).resolves.toBe('ECLOSED');
    await expect(codeOf(io[WRITE_OWNED](0, [new Uint8Array(10)]))).resolves.toBe('ECLOSED');

    const readOnly = await FileDevice.open(join(dir, 'b.img'), { readOnly: true });
    await expect(codeOf(bulk(readOnly)[WRITE_OWNED](0, [new Uint8Array(10)]))).resolves.toBe(
      'EROFS',
    );
    await readOnly.close();
  });
});
