import { describe, expect, it } from 'vitest';
import { type CheckpointEvent, JournalDevice, type ProgressEvent } from '../../src/index.js';
import { expectBytes, fill } from '../support/bytes.js';
import { codeOf } from '../support/error-code.js';
import { JournalRig } from '../support/journal-rig.js';

describe('JournalDevice: checkpoint', () => {
  it('applies the journal in address order, coalesced, then frees it (claim 54)', async () => {
    const rig = await JournalRig.create({ blocks: 32, ringBytes: 128 * 1024 });
    const d = rig.device;
    const events: CheckpointEvent[] = [];
    const progress: ProgressEvent[] = [];
    d.on('checkpoint', (e) => events.push(e));
    d.on('progress', (e) => progress.push(e));
    // 16 adjacent blocks in scrambled order, one of them twice, and one run in a single write.
    for (const b of [5, 0, 9, 3, 14, 1, 7, 12, 2, 15, 4, 10, 8, 13, 6, 11, 5]) {
      await d.write(b * 512, fill(512, b + 1));
    }
    await d.write(20 * 512, fill(8 * 512, 0x77));
    const expected = await d.read(0, rig.size);
    rig.production.resetStats();
    rig.journal.resetStats();
    await d.checkpoint();
    // Two runs of adjacent blocks: two production writes, one production flush.
    expect(rig.production.stats).toMatchObject({ writes: 2, flushes: 1, reads: 0 });
    // 16 separate images plus one for the 8 blocks journalled together.
    expect(rig.journal.stats.reads).toBe(17);
    expectBytes('production', await rig.productionDisk.reopen().read(0, rig.size), expected);
    expectBytes('device', await d.read(0, rig.size), expected);
    expect(d.changedBlocks).toBe(0);
    expect(d.journalUsed).toBe(0);
    expect(d.oldestSequence).toBe(18);
    expect(events).toEqual([
      {
        sequence: 18,
        records: 18,
        blocks: 24,
        bytes: 24 * 512,
        freedBytes: expect.any(Number),
        snapshots: 0,
      },
    ]);
    expect(progress.at(-1)).toEqual({ operation: 'checkpoint', done: 24, total: 24 });
    await d.checkpoint(); // nothing to do
    expect(events).toHaveLength(1);
    await d.close();
  });

  it('keeps writes that land while it runs, and applies them next time', async () => {
    const rig = await JournalRig.create({ ringBytes: 128 * 1024 });
    const d = rig.device;
    for (let b = 0; b < 8; b++) await d.write(b * 512, fill(512, b + 1));
    const running = d.checkpoint();
    const during = [d.write(0, fill(512, 0xa0)), d.write(3 * 512 + 7, fill(9, 0xa3))];
    await Promise.all([running, ...during]);
    const expected = await d.read(0, rig.size);
    expect(expected[0]).toBe(0xa0);
    expect(expected[3 * 512 + 7]).toBe(0xa3);
    await d.checkpoint();
    expect(d.changedBlocks).toBe(0);
    expectBytes('production', await rig.productionDisk.reopen().read(0, rig.size), expected);
    await d.close();
  });

  it('a full journal makes writes wait for an automatic checkpoint instead of failing', async () => {
    const rig = await JournalRig.create({ ringBytes: 8 * 1024, checkpointAt: 1 });
    const d = rig.device;
    let checkpoints = 0;
    d.on('checkpoint', () => checkpoints++);
    const model = new Uint8Array(rig.size);
    for (let i = 0; i < 40; i++) {
      const b = (i * 7) % 32;
      await d.write(b * 512, fill(512, i + 1));
      model.set(fill(512, i + 1), b * 512);
      expect(d.journalUsed).toBeLessThanOrEqual(d.journalCapacity);
    }
    // Concurrent writes too, and one that needs the whole journal.
    const group = Array.from({ length: 32 }, (_, b) => fill(512, 100 + b));
    await Promise.all(group.map((data, b) => d.write(b * 512, data)));
    for (const [b, data] of group.entries()) model.set(data, b * 512);
    await d.write(0, fill(15 * 512, 0xcc));
    model.set(fill(15 * 512, 0xcc), 0);
    expect(checkpoints).toBeGreaterThanOrEqual(8);
    expectBytes('content', await d.read(0, rig.size), model);
    expectBytes('after reopen', await (await rig.reopen()).read(0, rig.size), model);
    await rig.device.close();
  });

  it('starts in the background once checkpointAt of the journal is in use', async () => {
    const rig = await JournalRig.create({ ringBytes: 16 * 1024, checkpointAt: 0.25 });
    const d = rig.device;
    const seen = new Promise<CheckpointEvent>((resolve) => d.once('checkpoint', resolve));
    for (let i = 0; i < 4; i++) await d.write(i * 512, fill(512, i + 1));
    expect((await seen).records).toBeGreaterThanOrEqual(4);
    await d.close();
  });

  it('a failed checkpoint loses nothing and can be retried', async () => {
    const rig = await JournalRig.create({ ringBytes: 8 * 1024, checkpointAt: 1 });
    const d = rig.device;
    for (let b = 0; b < 6; b++) await d.write(b * 512, fill(512, b + 1));
    const expected = await d.read(0, rig.size);
    rig.production.failNext('write');
    expect(await codeOf(d.checkpoint())).toBe('EIO');
    expectBytes('after the failure', await d.read(0, rig.size), expected);
    // The journal is nearly full: this write needs a checkpoint, which fails, so it does.
    rig.production.failNext('write');
    expect(await codeOf(d.write(6 * 512, fill(2048, 9)))).toBe('EIO');
    await d.checkpoint();
    expect(d.changedBlocks).toBe(0);
    await d.write(6 * 512, fill(512, 9));
    expected.set(fill(512, 9), 6 * 512);
    expectBytes('after the retry', await (await rig.reopen()).read(0, rig.size), expected);
    await rig.device.close();
  });

  it('a failed journal write stops writes until reopened; reads go on', async () => {
    const rig = await JournalRig.create();
    const d = rig.device;
    await d.write(0, fill(512, 1));
    rig.journal.failNext('write');
    expect(await codeOf(d.write(512, fill(512, 2)))).toBe('EIO');
    expect(await codeOf(d.write(1024, fill(512, 3)))).toBe('EIO');
    expectBytes('read', await d.read(0, 512), fill(512, 1));
    const again = await rig.reopen();
    await again.write(1024, fill(512, 3));
    expectBytes(
      'after reopen',
      await again.read(0, 1536),
      Uint8Array.from([...fill(512, 1), ...fill(512, 0), ...fill(512, 3)]),
    );
    await again.close();
  });

  it('reports replay progress while open reads the journal back, ending at done === total', async () => {
    for (const how of ['clean close', 'power cut'] as const) {
      const rig = await JournalRig.create({ ringBytes: 8 << 20, checkpointAt: 1 });
      // Over 4 MiB of journal, so events come before the last one too.
      for (let i = 0; i < 1300; i++) await rig.device.write((i % 4) * 4096, fill(4096, i + 1));
      await rig.device.flush();
      const progress: ProgressEvent[] = [];
      const onProgress = (e: ProgressEvent) => progress.push(e);
      let again: JournalDevice;
      if (how === 'clean close') {
        await rig.device.close();
        rig.attach();
        again = await JournalDevice.open(rig.production, rig.journal, { onProgress });
      } else {
        await rig.crash(1);
        again = await JournalDevice.open(rig.production, rig.journal, { onProgress });
      }
      const last = progress.at(-1)!;
      expect(last.operation).toBe('replay');
      expect(last.done, how).toBe(last.total);
      expect(last.done, how).toBeGreaterThan(1300 * 4096);
      expect(progress.length, how).toBeGreaterThan(1);
      // Never past the total it announced; after a clean close that total is exact.
      for (const e of progress) expect(e.done).toBeLessThanOrEqual(e.total);
      if (how === 'clean close') expect(progress[0]!.total).toBe(last.total);
      else expect(progress[0]!.total).toBe(again.journalCapacity);
      await again.close();
    }
  });
});
