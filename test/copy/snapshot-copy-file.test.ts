import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type OwnedIO, WRITE_OWNED } from '../../src/base/owned-io.js';
import { FileDevice, SnapshotCopyJob } from '../../src/index.js';
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

describe('foreground writes to a FileDevice source', () => {
  it.each(POLICIES)(
    '%s: reach it as the job device’s own copy, through WRITE_OWNED, not copied again by write',
    async (conflictPolicy) => {
      const size = 4 * MiB;
      const original = noise(size, 11);
      const source = await fileWith('source.img', original);
      const destination = await fileWith('destination.img', noise(size, 12));
      const owned: Uint8Array[] = [];
      let writes = 0;
      const ownedWrite = bulk(source)[WRITE_OWNED].bind(source);
      const write = source.write.bind(source);
      Object.assign(source, {
        [WRITE_OWNED]: (offset: number, blocks: readonly Uint8Array[]) => {
          owned.push(...blocks);
          return ownedWrite(offset, blocks);
        },
        write: (offset: number, data: Uint8Array) => {
          writes++;
          return write(offset, data);
        },
      });
      // A rate of 1 byte/s: the copier copies nothing, so every write saves or queues first.
      const job = await SnapshotCopyJob.start({ source, destination, conflictPolicy, rate: 1 });
      const model = original.slice();
      const pending: Promise<void>[] = [];
      const callers: Uint8Array[] = [];
      for (let i = 0; i < 8; i++) {
        const at = i * 300_000 + 4096;
        const data = noise(4096, 20 + i);
        model.set(data, at);
        callers.push(data);
        pending.push(job.device.write(at, data));
        // The caller may reuse its buffer as soon as write returns.
        data.fill(0xee);
      }
      await Promise.all(pending);
      expect(writes).toBe(0);
      expect(owned).toHaveLength(8);
      for (const block of owned) expect(callers).not.toContain(block);
      expectSameBytes('source', await source.read(0, size), model);
      await job.device.close();
      await destination.close();
    },
  );
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
