import { describe, expect, it } from 'vitest';
import { WRITE_OWNED } from '../../src/base/owned-io.js';
import { BlockDeviceError, MemoryDevice, SnapshotCopyJob } from '../../src/index.js';
import { rejectionOf } from '../support/async.js';
import { fill } from '../support/bytes.js';
import { CopyCrashRig, geometry, POLICIES } from '../support/copy-job-rig.js';
import { codeOf } from '../support/error-code.js';

const CHUNK = 512;

/** A resumable job (map store) over memory disks, started, with the source's next read set to fail. */
async function failingJob(policy: (typeof POLICIES)[number]) {
  const rig = await CopyCrashRig.create(geometry(CHUNK, 24), {
    policy,
    withStore: true,
    probed: false,
  });
  const job = await rig.start();
  // Before the copier's first run (it starts on the next turn): the next
  // source read is the copy of chunk 5 that the write below needs.
  rig.faulty('source').failNext('read');
  return { rig, job };
}

describe('SnapshotCopyJob with a map store: a copy that fails', () => {
  it.each(POLICIES)(
    '%s: fails the write that needed it and the job with EIO (not ECLOSED after close), and resume still ends with an exact copy',
    async (policy) => {
      const { rig, job } = await failingJob(policy);
      const write = rig.base.write(job.device, 5 * CHUNK, fill(CHUNK, 7));
      const err = await rejectionOf(write);
      expect(BlockDeviceError.is(err, 'EIO'), String(err)).toBe(true);
      expect(String((err as Error).cause)).toMatch(/injected failure of read/);
      // The refused write never reached the source.
      rig.base.model.set(rig.base.atStart.subarray(5 * CHUNK, 6 * CHUNK), 5 * CHUNK);
      await job.device.close();
      expect(await codeOf(job.done)).toBe('EIO');
      const resumed = await rig.open();
      await resumed.done;
      await rig.base.expectCopy();
      await rig.base.expectSource();
      await resumed.device.close();
    },
  );

  it('copy-first: a later write into a part not yet copied copies it again, and lands once it is', async () => {
    const { rig, job } = await failingJob('copy-first');
    expect(await codeOf(rig.base.write(job.device, 5 * CHUNK, fill(CHUNK, 7)))).toBe('EIO');
    rig.base.model.set(rig.base.atStart.subarray(5 * CHUNK, 6 * CHUNK), 5 * CHUNK);
    await rig.base.write(job.device, 5 * CHUNK, fill(CHUNK, 8));
    await job.device.close();
    const resumed = await rig.open();
    await resumed.done;
    await rig.base.expectCopy();
    await rig.base.expectSource();
    await resumed.device.close();
  });
});

describe('SnapshotCopyJob over a source whose write throws instead of rejecting', () => {
  it.each(POLICIES)(
    '%s: the write through job.device rejects with EIO, saved or queued alike',
    async (conflictPolicy) => {
      const size = 64 * CHUNK;
      const source = await MemoryDevice.create({ size, blockSize: CHUNK });
      const destination = await MemoryDevice.create({ size, blockSize: CHUNK });
      const thrown = new Error('thrown by write');
      const throwing = (): never => {
        throw thrown;
      };
      // Both ways a layer writes to it (write, and WRITE_OWNED where it has one).
      Object.assign(source, { write: throwing, [WRITE_OWNED]: throwing });
      // A rate of 1 byte/s: the copier copies nothing, so the write saves or queues first.
      const job = await SnapshotCopyJob.start({
        source,
        destination,
        chunkSize: 4 * CHUNK,
        conflictPolicy,
        rate: 1,
      });
      const err = await rejectionOf(job.device.write(9 * CHUNK, fill(CHUNK, 3)));
      expect(BlockDeviceError.is(err, 'EIO'), String(err)).toBe(true);
      expect((err as Error).cause).toBe(thrown);
      await job.device.close();
      await job.done.catch(() => {});
    },
  );
});
