import { describe, expect, it } from 'vitest';
import { expectCode } from '../support/error-code.js';
import { memoryVolume } from '../support/volume-rig.js';

/*
 * Snapshots on a schedule (seed 001, claims 21–22): taken every `every` ms,
 * the oldest of the schedule's name deleted beyond `keep`, with events;
 * stopped by stop(), an AbortSignal, or close().
 */

const shape = { partitions: 2, partitionSize: 8 * 4096 };

function nextEvent(emitter: { once(e: string, l: (...a: unknown[]) => void): unknown }, e: string) {
  return new Promise<unknown[]>((resolve) => emitter.once(e, (...args) => resolve(args)));
}

describe('VirtualVolume.schedule', () => {
  it('takes snapshots periodically and keeps the newest `keep` of its name', async () => {
    const { volume } = await memoryVolume({ ...shape, maxSnapshots: 8 });
    const manual = await volume.snapshot({ name: 'manual' });
    const schedule = volume.schedule({ every: 20, keep: 2, name: 'hourly' });
    const taken: string[] = [];
    const deleted: string[] = [];
    schedule.on('snapshot', (info) => taken.push(info.id));
    schedule.on('deleted', (id) => deleted.push(id));
    while (taken.length < 4) await nextEvent(schedule, 'snapshot');
    await schedule.settled();
    schedule.stop();
    await schedule.settled();
    const names = volume.listSnapshots().map((s) => s.name);
    expect(names).toEqual(['manual', 'hourly', 'hourly']);
    expect(volume.listSnapshots()[0]!.id).toBe(manual.id);
    expect(deleted).toEqual(taken.slice(0, taken.length - 2));
    await volume.close();
  });

  it('stops on an abort and on close, and checks its options', async () => {
    const { volume } = await memoryVolume(shape);
    expect(() => volume.schedule({ every: 0 })).toThrow(/every/);
    expect(() => volume.schedule({ every: 20, keep: 0 })).toThrow(/keep/);
    const controller = new AbortController();
    const aborted = volume.schedule({ every: 20, signal: controller.signal });
    const stopped = nextEvent(aborted, 'stopped');
    controller.abort();
    await stopped;
    expect(aborted.stopped).toBe(true);

    const running = volume.schedule({ every: 20 });
    let events = 0;
    running.on('snapshot', () => events++);
    running.on('error', () => events++);
    await nextEvent(running, 'snapshot');
    await volume.close();
    expect(running.stopped).toBe(true);
    const atClose = events;
    await new Promise((r) => setTimeout(r, 60));
    expect(events, 'no run after close').toBe(atClose);
    expect(() => volume.schedule({ every: 20 })).toThrow(/closed/);
    await expectCode(volume.snapshot(), 'ECLOSED');
  });
});
