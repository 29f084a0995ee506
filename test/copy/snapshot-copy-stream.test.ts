import { TransformStream } from 'node:stream/web';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { applyStream, BlockDeviceError, MemoryDevice, SnapshotCopyJob } from '../../src/index.js';
import { expectSameBytes, seededBytes } from '../support/bytes.js';

const KiB = 1024;

describe('SnapshotCopyJob with a stream destination', () => {
  it('produces a stream that applyStream turns back into the range as it was at start, under both policies and racing writes', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('copy-first' as const, 'queue' as const),
        fc.constantFrom(512, 4 * KiB, 64 * KiB),
        fc.integer({ min: 0, max: 64 }),
        fc.integer({ min: 1, max: 256 }),
        fc.integer({ min: 0, max: 16 }),
        fc.array(
          fc.record({
            at: fc.nat({ max: 512 * KiB - 1 }),
            length: fc.integer({ min: 1, max: 9000 }),
          }),
          { maxLength: 40 },
        ),
        fc.nat(),
        async (policy, chunkSize, startSector, sectors, destSector, writes, seed) => {
          const size = 512 * KiB;
          const offset = Math.min(startSector * 512, size - 512);
          const length = Math.min(sectors * 512, size - offset);
          const destinationOffset = destSector * 512;
          const initial = seededBytes(size, seed);
          const source = await MemoryDevice.create({ size, blockSize: 512 });
          await source.write(0, initial);
          const pipe = new TransformStream<Uint8Array, Uint8Array>();
          const target = await MemoryDevice.create({
            size: destinationOffset + length,
            blockSize: 512,
          });
          const applied = applyStream(pipe.readable, target);
          const job = await SnapshotCopyJob.start({
            source,
            destination: pipe.writable,
            offset,
            length,
            destinationOffset,
            chunkSize,
            conflictPolicy: policy,
          });
          const model = initial.slice();
          await Promise.all(
            writes.map(({ at, length: n }, i) => {
              const data = new Uint8Array(Math.min(n, size - at)).fill(i + 1);
              model.set(data, at);
              return job.device.write(at, data);
            }),
          );
          const report = await job.done;
          const applyReport = await applied;
          expect(report.totalBytes).toBe(length);
          expect(applyReport.dataBytes).toBe(length);
          expectSameBytes(
            'target range',
            await target.read(destinationOffset, length),
            initial.subarray(offset, offset + length),
          );
          expectSameBytes('source', await source.read(0, size), model);
        },
      ),
      { numRuns: 40, seed: 0x5c01 },
    );
  });

  it('errors the stream when the job is aborted, so applyStream fails (EIO, the stream error as cause) and the source keeps every write', async () => {
    const size = 1024 * KiB;
    const source = await MemoryDevice.create({ size, blockSize: 4 * KiB });
    const pipe = new TransformStream<Uint8Array, Uint8Array>();
    const target = await MemoryDevice.create({ size, blockSize: 4 * KiB });
    const applied = applyStream(pipe.readable, target);
    const controller = new AbortController();
    const job = await SnapshotCopyJob.start({
      source,
      destination: pipe.writable,
      chunkSize: 4 * KiB,
      conflictPolicy: 'queue',
      signal: controller.signal,
    });
    const write = job.device.write(size - 4 * KiB, new Uint8Array(4 * KiB).fill(7));
    controller.abort();
    await expect(job.done).rejects.toMatchObject({ name: 'AbortError' });
    await write;
    expect((await source.read(size - 4 * KiB, 1))[0]).toBe(7);
    const err = await applied.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(BlockDeviceError.is(err, 'EIO')).toBe(true);
    expect((err as Error).cause).toMatchObject({ name: 'AbortError' });
  });

  it('hands the destination stream chunks of their own: a sink that transfers each one still gets the whole range', async () => {
    const size = 512 * KiB;
    const initial = seededBytes(size, 9);
    const source = await MemoryDevice.create({ size, blockSize: 4 * KiB });
    await source.write(0, initial);
    // A sink that moves every chunk's buffer away as it takes it, as a
    // hand-off to a worker does.
    const taken: Uint8Array[] = [];
    const destination = new WritableStream<Uint8Array>({
      write(chunk) {
        expect(chunk.byteOffset, 'a chunk starts its buffer').toBe(0);
        expect(chunk.buffer.byteLength, 'a chunk is its whole buffer').toBe(chunk.length);
        taken.push(structuredClone(chunk, { transfer: [chunk.buffer as ArrayBuffer] }));
      },
    });
    // Small chunks: each run the copier reads is cut into several of them.
    const job = await SnapshotCopyJob.start({ source, destination, chunkSize: 4 * KiB });
    await job.done;
    const target = await MemoryDevice.create({ size, blockSize: 4 * KiB });
    await applyStream(
      (async function* () {
        yield* taken;
      })(),
      target,
    );
    expectSameBytes('target', await target.read(0, size), initial);
  });

  it('refuses a mapStore and unaligned ranges with a stream destination, before anything starts', async () => {
    const source = await MemoryDevice.create({ size: 64 * KiB, blockSize: 512 });
    const mapStore = await MemoryDevice.create({ size: 64 * KiB, blockSize: 512 });
    await expect(
      SnapshotCopyJob.start({ source, destination: new TransformStream().writable, mapStore }),
    ).rejects.toMatchObject({ code: 'EINVAL' });
    await expect(
      SnapshotCopyJob.start({ source, destination: new TransformStream().writable, length: 1000 }),
    ).rejects.toMatchObject({ code: 'EINVAL' });
  });
});
