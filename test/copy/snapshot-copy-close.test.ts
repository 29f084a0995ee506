import { describe, expect, it } from 'vitest';
import { MemoryDevice, SnapshotCopyJob } from '../../src/index.js';
import { FaultyDevice } from '../../src/testing/index.js';
import { expectSameBytes, seededBytes } from '../support/bytes.js';

const KiB = 1024;

describe('closing job.device while the copy runs', () => {
  for (const conflictPolicy of ['copy-first', 'queue'] as const) {
    it(`ends the job with ECLOSED, applies every held write, and never passes a post-start byte off as the copy (${conflictPolicy})`, async () => {
      const size = 4096 * KiB;
      const initial = seededBytes(size, 11);
      const source = await MemoryDevice.create({ size, blockSize: 4 * KiB });
      await source.write(0, initial);
      // A slow destination keeps most of the range uncopied when the device is closed.
      const destination = new FaultyDevice(
        await MemoryDevice.create({ size, blockSize: 4 * KiB }),
        { latency: (op) => (op.kind === 'write' ? 20 : 0) },
      );
      const job = await SnapshotCopyJob.start({
        source: source.reopen(),
        destination,
        chunkSize: 4 * KiB,
        conflictPolicy,
      });
      const near = job.device.write(size - 8 * KiB, new Uint8Array(4 * KiB).fill(0xaa));
      await new Promise((resolve) => setTimeout(resolve, 5));
      const closing = job.device.close();
      await near;
      await closing;
      const outcome = await job.done.then(
        (report) => ({ report }),
        (error: unknown) => ({ error }),
      );
      expect(
        'error' in outcome && (outcome.error as { code?: string }).code,
        JSON.stringify(outcome),
      ).toBe('ECLOSED');
      const after = await source.read(0, size);
      expect(after[size - 8 * KiB]).toBe(0xaa);
      // Whatever reached the destination is the source as it was at start.
      expect(job.progress.copiedBytes).toBeLessThan(size);
      const dest = await destination.read(0, size);
      for (let at = 0; at < size; at += 4 * KiB) {
        const chunk = dest.subarray(at, at + 4 * KiB);
        if (chunk.every((b) => b === 0)) continue;
        expectSameBytes(`destination chunk at ${at}`, chunk, initial.subarray(at, at + 4 * KiB));
      }
    });
  }
});
