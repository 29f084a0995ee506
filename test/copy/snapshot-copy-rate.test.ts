import { describe, expect, it } from 'vitest';
import { SnapshotCopyJob } from '../../src/index.js';
import { rejectionOf, settle, until, within } from '../support/async.js';
import { pattern } from '../support/bytes.js';
import { CopyRig, geometry } from '../support/copy-job-rig.js';
import { codeOf } from '../support/error-code.js';

/*
 * `rate` and `setRate` through the public API. A rate of 1 byte per second
 * holds the copier after its first run for over an hour of budget, so what
 * these tests see never depends on the machine's speed; the budget itself
 * is tested on a fake clock in copy-pacing.test.ts.
 */

const CHUNK = 4096;
const G = geometry(CHUNK, 16, { offset: 4096 });

/** Waits until the job copied `bytes`, then lets the event loop turn: it must copy no more. */
async function expectHeldAt(job: SnapshotCopyJob, bytes: number): Promise<void> {
  await until(() => job.progress.copiedBytes >= bytes, `${bytes} bytes are copied`);
  for (let i = 0; i < 20; i++) await settle();
  expect(job.progress.copiedBytes).toBe(bytes);
}

describe('SnapshotCopyJob rate', () => {
  it('start({ rate }) holds the copier to its budget; setRate(0) while it waits lets it finish', async () => {
    const rig = await CopyRig.create(G);
    const job = await SnapshotCopyJob.start(rig.options({ rate: 1 }));
    expect(job.rate).toBe(1);
    await expectHeldAt(job, CHUNK);
    job.setRate(0);
    expect(job.rate).toBe(0);
    await within(rig.expectDone(job), 10_000, 'the copy after setRate(0)');
  });

  it('setRate lowers the rate of a running job from its next run on', async () => {
    const rig = await CopyRig.create(G);
    const job = await SnapshotCopyJob.start(rig.options());
    // Set in the same turn as start: the copier has not begun.
    job.setRate(1);
    await expectHeldAt(job, CHUNK);
    job.setRate(0);
    await within(rig.expectDone(job), 10_000, 'the copy after setRate(0)');
  });

  it.each([false, true])(
    'a write into a part not yet copied is not held by the rate (copy-first, map store: %s)',
    async (store) => {
      const rig = await CopyRig.create(G);
      const job = await SnapshotCopyJob.start(rig.options({ rate: 1 }, store));
      await expectHeldAt(job, CHUNK);
      await within(
        rig.write(job.device, G.offset + 9 * CHUNK + 10, pattern(100, 1)),
        10_000,
        'the copy-first write',
      );
      // With a map store the chunk is copied first; without one only the
      // write's old bytes are saved, and the copier copies the chunk.
      expect(job.progress.copyFirstBytes).toBe(store ? CHUNK : 0);
      job.setRate(0);
      await within(rig.expectDone(job), 10_000, 'the copy after setRate(0)');
    },
  );

  it('abort and close end a job waiting on its budget at once', async () => {
    const rig = await CopyRig.create(G);
    const controller = new AbortController();
    const job = await SnapshotCopyJob.start(rig.options({ rate: 1, signal: controller.signal }));
    await expectHeldAt(job, CHUNK);
    controller.abort(new Error('stop'));
    expect(await within(rejectionOf(job.done), 10_000, 'done after abort')).toMatchObject({
      message: 'stop',
    });
    const rig2 = await CopyRig.create(G);
    const job2 = await SnapshotCopyJob.start(rig2.options({ rate: 1 }));
    await expectHeldAt(job2, CHUNK);
    await within(job2.device.close(), 10_000, 'close');
    expect(await codeOf(job2.done)).toBe('ECLOSED');
  });

  it.each([
    ['-1', -1],
    ['NaN', Number.NaN],
    ['Infinity', Number.POSITIVE_INFINITY],
    ["'100'", '100'],
    ['undefined', undefined],
  ])('setRate(%s) is EINVAL and changes nothing', async (_, bad) => {
    const rig = await CopyRig.create(G);
    const job = await SnapshotCopyJob.start(rig.options({ rate: 1 }));
    expect(() => job.setRate(bad as number)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(job.rate).toBe(1);
    await expectHeldAt(job, CHUNK);
    job.setRate(0);
    await rig.expectDone(job);
  });

  it.each([
    ['-1', -1],
    ['NaN', Number.NaN],
    ['Infinity', Number.POSITIVE_INFINITY],
    ["'100'", '100'],
  ])('start({ rate: %s }) is EINVAL and touches nothing', async (_, bad) => {
    const rig = await CopyRig.create(G);
    expect(await codeOf(SnapshotCopyJob.start(rig.options({ rate: bad as number })))).toBe(
      'EINVAL',
    );
    expect(rig.source.of('read')).toEqual([]);
    expect(rig.destination.of('write')).toEqual([]);
    // The source is not left claimed: a job starts on it.
    await (await SnapshotCopyJob.start(rig.options())).done;
  });

  it('resume takes a rate, as start does', async () => {
    const rig = await CopyRig.create(G);
    const controller = new AbortController();
    const first = await SnapshotCopyJob.start(
      rig.options({ rate: 1, signal: controller.signal }, true),
    );
    await expectHeldAt(first, CHUNK);
    controller.abort();
    await rejectionOf(first.done);
    const job = await SnapshotCopyJob.resume({
      ...rig.options({ rate: 1 }, true),
      destination: rig.destination,
      mapStore: rig.mapStore,
    });
    expect(job.rate).toBe(1);
    // The chunk the first job copied, and one run of the resumed one.
    await expectHeldAt(job, 2 * CHUNK);
    job.setRate(0);
    const report = await within(rig.expectDone(job), 10_000, 'the resumed copy');
    expect(report.resumedBytes).toBe(CHUNK);
    expect(
      await codeOf(SnapshotCopyJob.resume({ ...rig.options({ rate: -5 }, true) } as never)),
    ).toBe('EINVAL');
  });
});
