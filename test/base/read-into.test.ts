import { describe, expect, it } from 'vitest';
import { READ_CALLBACK, type ReadDone } from '../../src/base/owned-io.js';
import {
  type BlockDevice,
  CowSnapshotDevice,
  JournalDevice,
  MemoryDevice,
  readInto,
  SelectiveSnapshotDevice,
  SnapshotCopyJob,
} from '../../src/index.js';
import { expectBytes, pattern } from '../support/bytes.js';
import { codeOf } from '../support/error-code.js';
import { PassThroughDevice } from '../support/pass-through-device.js';

/*
 * readInto (BlockDevice.readInto): every layer hands the caller's buffer to
 * the device below where the bytes lie there in one piece, so a stack reads
 * into it with no buffer of its own; the conformance suite checks the bytes
 * and the errors on every device, this file checks the buffer goes down.
 */

const KiB = 1024;

/** A device of another library with `readInto` and no internal fast path: records the targets it gets. */
class IntoLogDevice extends PassThroughDevice {
  readonly targets: Uint8Array[] = [];
  reads = 0;

  override read(offset: number, length: number): Promise<Uint8Array> {
    this.reads++;
    return super.read(offset, length);
  }

  readInto(offset: number, target: Uint8Array): Promise<Uint8Array> {
    this.targets.push(target);
    return readInto(this.inner, offset, target);
  }
}

async function memory(size: number, blockSize = 4096, content?: Uint8Array): Promise<MemoryDevice> {
  const device = await MemoryDevice.create({ size, blockSize });
  if (content !== undefined) await device.write(0, content);
  return device;
}

/** Reads `[offset, +length)` by readInto and by read; expects the same bytes, and the target back. */
async function expectReadInto(device: BlockDevice, offset: number, length: number) {
  const target = new Uint8Array(length).fill(0xee);
  expect(await readInto(device, offset, target)).toBe(target);
  expectBytes(`readInto(${offset}, ${length})`, target, await device.read(offset, length));
  return target;
}

describe('readInto reaches the device below with the caller’s buffer', () => {
  it.each([
    ['CowSnapshotDevice', CowSnapshotDevice.create.bind(CowSnapshotDevice)],
    ['SelectiveSnapshotDevice', SelectiveSnapshotDevice.create.bind(SelectiveSnapshotDevice)],
  ] as const)('%s: an origin read goes into the target, not through read', async (_n, create) => {
    const origin = new IntoLogDevice(await memory(256 * KiB, 4096, pattern(256 * KiB, 1)));
    const device = await create(origin, await memory(1 << 20));
    await device.snapshot();
    const before = origin.reads;
    const target = await expectReadInto(device, 5000, 9000);
    expect(origin.targets[0]).toBe(target);
    // Only expectReadInto's own read went through read.
    expect(origin.reads - before).toBe(1);
    await device.close();
  });

  it('JournalDevice: production, or the journal store for a read in one run, gets the target', async () => {
    const production = new IntoLogDevice(await memory(256 * KiB, 4096, pattern(256 * KiB, 2)));
    const journal = new IntoLogDevice(await memory(8192 + (1 << 20), 512));
    const device = await JournalDevice.create(production, journal);
    const onProduction = await expectReadInto(device, 100, 10_000);
    expect(production.targets.at(-1)).toBe(onProduction);

    await device.write(64 * KiB, pattern(16 * KiB, 3));
    const inJournal = await expectReadInto(device, 64 * KiB + 10, 8 * KiB);
    expect(journal.targets.at(-1)).toBe(inJournal);

    // Across production and the journal: assembled, then copied in.
    const [p, j] = [production.targets.length, journal.targets.length];
    await expectReadInto(device, 60 * KiB, 8 * KiB);
    expect([production.targets.length, journal.targets.length]).toEqual([p, j]);
    await device.close();
  });

  it('SnapshotCopyJob.device: the source gets the target', async () => {
    const source = new IntoLogDevice(await memory(256 * KiB, 4096, pattern(256 * KiB, 4)));
    const job = await SnapshotCopyJob.start({ source, destination: await memory(256 * KiB) });
    const target = await expectReadInto(job.device, 3, 70_000);
    expect(source.targets).toContain(target);
    await job.done;
    await job.device.close();
  });

  it('a layer over a store whose READ_CALLBACK ignores the target still fills it', async () => {
    // A READ_CALLBACK with no `into` argument, as one written before readInto existed.
    const old = new (class extends PassThroughDevice {
      [READ_CALLBACK](offset: number, length: number, done: ReadDone): void {
        this.inner.read(offset, length).then(
          (data) => done(null, data),
          (err: unknown) => done(err as Error, undefined),
        );
      }
    })(await memory(64 * KiB, 4096, pattern(64 * KiB, 5)));
    const device = await CowSnapshotDevice.create(old, await memory(1 << 20));
    await expectReadInto(device, 4000, 5000);
    await device.close();
  });
});

describe('readInto(device, offset, target) over a device without readInto', () => {
  it('reads and copies, with readInto’s checks before the read', async () => {
    const content = pattern(64 * KiB, 6);
    const device = new IntoLogDevice(await memory(64 * KiB, 4096, content));
    const plain = new PassThroughDevice(device);
    const target = new Uint8Array(5000);
    expect(await readInto(plain, 1234, target)).toBe(target);
    expectBytes('fallback', target, content.subarray(1234, 6234));
    expect(device.reads).toBe(1);

    for (const [offset, bad, code] of [
      [0, 'abc', 'EINVAL'],
      [0, new Uint16Array(4), 'EINVAL'],
      [64 * KiB - 1, new Uint8Array(2), 'ERANGE'],
      [-1, new Uint8Array(2), 'ERANGE'],
    ] as const) {
      await expect(codeOf(readInto(plain, offset, bad as unknown as Uint8Array))).resolves.toBe(
        code,
      );
    }
    expect(device.reads).toBe(1);
    await plain.close();
  });

  it('a read that returns the wrong length is EIO, not a half-filled target taken for good', async () => {
    const short = new (class extends PassThroughDevice {
      override async read(offset: number, length: number): Promise<Uint8Array> {
        return (await super.read(offset, length)).subarray(1);
      }
    })(await memory(64 * KiB));
    await expect(codeOf(readInto(short, 0, new Uint8Array(100)))).resolves.toBe('EIO');
    await short.close();
  });
});
