import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { SECTOR, WRITE_OWNED } from '../../src/base/index.js';
import { CowSnapshotDevice, FileDevice, JournalDevice, MemoryDevice } from '../../src/index.js';
import { RING_START } from '../../src/journal/index.js';
import { watch } from '../support/async.js';
import { expectBytes, fill } from '../support/bytes.js';
import { codeOf } from '../support/error-code.js';
import { GatedDevice } from '../support/gated-device.js';
import { JournalRig } from '../support/journal-rig.js';

async function memory(size: number, blockSize = 512): Promise<MemoryDevice> {
  return MemoryDevice.create({ size, blockSize });
}

describe('JournalDevice: create and open', () => {
  it('rejects bad devices and options with EINVAL', async () => {
    const p = await memory(16 * 512);
    const j = await memory(64 * 1024);
    const notDevice = {} as unknown as MemoryDevice;
    expect(await codeOf(JournalDevice.create(notDevice, j))).toBe('EINVAL');
    expect(await codeOf(JournalDevice.create(p, notDevice))).toBe('EINVAL');
    expect(await codeOf(JournalDevice.create(p, p))).toBe('EINVAL');
    expect(await codeOf(JournalDevice.create(p, j.reopen({ readOnly: true })))).toBe('EINVAL');
    expect(await codeOf(JournalDevice.create(p.reopen({ readOnly: true }), j))).toBe('EINVAL');
    for (const checkpointAt of [0, -1, 1.5, Number.NaN, '0.5']) {
      const options = { checkpointAt } as unknown as { checkpointAt: number };
      expect(await codeOf(JournalDevice.create(p, j, options)), String(checkpointAt)).toBe(
        'EINVAL',
      );
    }
    const nullOptions = null as unknown as object;
    expect(await codeOf(JournalDevice.create(p, j, nullOptions))).toBe('EINVAL');
    const badProgress = { onProgress: 1 } as unknown as object;
    expect(await codeOf(JournalDevice.create(p, j, badProgress))).toBe('EINVAL');
    // Room for the superblocks but not for one record of one block.
    expect(await codeOf(JournalDevice.create(p, await memory(RING_START + SECTOR)))).toBe('EINVAL');
  });

  it('open refuses a store that is not a journal, or one of another geometry', async () => {
    const p = await memory(16 * 512);
    expect(await codeOf(JournalDevice.open(p, await memory(64 * 1024)))).toBe('ECORRUPT');
    const cowStore = await memory(256 * 1024);
    const cow = await CowSnapshotDevice.create(await memory(16 * 512), cowStore, {
      maxSnapshots: 2,
    });
    await cow.close();
    expect(await codeOf(JournalDevice.open(p, cowStore.reopen()))).toBe('EINVAL');
    const j = await memory(64 * 1024);
    await (await JournalDevice.create(p, j)).close();
    expect(await codeOf(JournalDevice.open(await memory(32 * 512), j.reopen()))).toBe('EINVAL');
    expect(await codeOf(JournalDevice.open(await memory(16 * 4096, 4096), j.reopen()))).toBe(
      'EINVAL',
    );
  });

  it('keeps content, sequence and point-in-time history across close and open', async () => {
    const rig = await JournalRig.create();
    const d = rig.device;
    await d.write(0, fill(512, 1));
    await d.write(700, fill(900, 2));
    await d.write(0, fill(100, 3));
    const before = await d.read(0, rig.size);
    const atTwo = await (await d.pointInTime(2)).read(0, rig.size);
    const again = await rig.reopen();
    expect(again.sequence).toBe(3);
    expectBytes('content', await again.read(0, rig.size), before);
    expectBytes('pointInTime(2)', await (await again.pointInTime(2)).read(0, rig.size), atTwo);
    await again.close();
  });
});

describe('JournalDevice: bad input and use after close', () => {
  it('rejects a write larger than the journal with ENOSPC and changes nothing', async () => {
    const rig = await JournalRig.create({ ringBytes: 4096 });
    const d = rig.device;
    await d.write(0, fill(512, 7));
    const before = await d.read(0, rig.size);
    // 4096 ring bytes hold a 512-byte header and at most 7 blocks.
    expect(await codeOf(d.write(0, fill(8 * 512, 1)))).toBe('ENOSPC');
    expect(await codeOf(d.write(100, fill(7 * 512, 1)))).toBe('ENOSPC');
    expect(d.sequence).toBe(1);
    expectBytes('unchanged', await d.read(0, rig.size), before);
    // The largest write that fits still goes in, even with the journal in use.
    await d.write(512, fill(7 * 512, 9));
    expectBytes('largest write', await d.read(512, 7 * 512), fill(7 * 512, 9));
    await d.close();
  });

  it('rejects bad pointInTime arguments with the right code', async () => {
    const rig = await JournalRig.create();
    const d = rig.device;
    await d.write(0, fill(512, 1));
    await d.write(0, fill(512, 2));
    const loose = d as unknown as { pointInTime(p: unknown): Promise<unknown> };
    for (const [point, code] of [
      ['1', 'EINVAL'],
      [null, 'EINVAL'],
      [undefined, 'EINVAL'],
      [1n, 'EINVAL'],
      [-1, 'ERANGE'],
      [0.5, 'ERANGE'],
      [Number.NaN, 'ERANGE'],
      [Number.POSITIVE_INFINITY, 'ERANGE'],
      [3, 'ERANGE'],
      [new Date(Number.NaN), 'ERANGE'],
    ] as const) {
      expect(await codeOf(loose.pointInTime(point)), String(point)).toBe(code);
    }
    await d.checkpoint();
    expect(d.oldestSequence).toBe(2);
    expect(await codeOf(d.pointInTime(1))).toBe('ENOENT');
    expect(await codeOf(d.pointInTime(new Date(0)))).toBe('ENOENT');
    expect((await d.pointInTime(2)).sequence).toBe(2);
    await d.close();
  });

  it('fails every operation after close with ECLOSED, views included', async () => {
    const rig = await JournalRig.create();
    const d = rig.device;
    await d.write(0, fill(512, 1));
    const view = await d.pointInTime(1);
    await d.close();
    await d.close();
    expect(await codeOf(d.read(0, 1))).toBe('ECLOSED');
    expect(await codeOf(d.write(0, fill(1, 1)))).toBe('ECLOSED');
    expect(await codeOf(d.flush())).toBe('ECLOSED');
    expect(await codeOf(d.checkpoint())).toBe('ECLOSED');
    expect(await codeOf(d.pointInTime(1))).toBe('ECLOSED');
    expect(await codeOf(view.read(0, 1))).toBe('ECLOSED');
  });
});

describe('JournalDevice: one I/O per write (claim 55)', () => {
  it('an aligned write is exactly one journal write and no production I/O', async () => {
    const rig = await JournalRig.create({ blockSize: 4096, blocks: 16, ringBytes: 256 * 1024 });
    const d = rig.device;
    for (const [offset, length] of [
      [0, 4096],
      [4096 * 5, 3 * 4096],
      [4096 * 5, 4096],
    ] as const) {
      rig.journal.resetStats();
      rig.production.resetStats();
      await d.write(offset, fill(length, 0x42));
      expect(rig.journal.stats).toMatchObject({ writes: 1, reads: 0, flushes: 0 });
      expect(rig.production.stats).toMatchObject({ writes: 0, reads: 0, flushes: 0 });
    }
    await d.close();
  });

  it('concurrent writes share one journal write, concurrent flushes one journal flush', async () => {
    const rig = await JournalRig.create({ blockSize: 4096, blocks: 16, ringBytes: 256 * 1024 });
    const d = rig.device;
    rig.journal.resetStats();
    await Promise.all(Array.from({ length: 10 }, (_, b) => d.write(b * 4096, fill(4096, b))));
    expect(rig.journal.stats).toMatchObject({ writes: 1, flushes: 0 });
    await Promise.all(Array.from({ length: 5 }, () => d.flush()));
    // The second write is the empty frame attesting the flush, which the flushes wait for.
    expect(rig.journal.stats).toMatchObject({ writes: 2, flushes: 1 });
    expect(rig.production.stats.writes).toBe(0);
    for (let b = 0; b < 10; b++)
      expectBytes(`block ${b}`, await d.read(b * 4096, 4096), fill(4096, b));
    await d.close();
  });

  it('on a FileDevice store a frame is one vectored write of its header and the records, uncopied, and replays exactly', async () => {
    const dir = fs.mkdtempSync(join(tmpdir(), 'blocksnap-journal-'));
    try {
      const path = join(dir, 'journal.img');
      const production = await memory(64 * 4096, 4096);
      const store = await FileDevice.open(path, { size: 1 << 20, blockSize: 512, create: true });
      const owned = vi.spyOn(store, WRITE_OWNED);
      const plain = vi.spyOn(store, 'write');
      const d = await JournalDevice.create(production, store);
      owned.mockClear();
      plain.mockClear();
      // Nine aligned writes share a frame; one merged with the block's
      // content comes after its read, in a frame of its own.
      const writes = Array.from({ length: 9 }, (_, b) => d.write(b * 4096, fill(4096, b + 1)));
      writes.push(d.write(20 * 4096 + 100, fill(10, 0x77)));
      await Promise.all(writes);
      const merged = new Uint8Array(4096);
      merged.fill(0x77, 100, 110);
      expect(plain).not.toHaveBeenCalled();
      expect(owned).toHaveBeenCalledTimes(2);
      const [first, second] = owned.mock.calls.map((call) => call[1]);
      expect(first!.length).toBe(10);
      for (let b = 0; b < 9; b++) expectBytes(`record ${b}`, first![b + 1]!, fill(4096, b + 1));
      expect(second!.length).toBe(2);
      expectBytes('merged record', second![1]!, merged);
      await d.close();

      const again = await JournalDevice.open(
        production,
        await FileDevice.open(path, { blockSize: 512 }),
      );
      for (let b = 0; b < 9; b++) {
        expectBytes(`block ${b}`, await again.read(b * 4096, 4096), fill(4096, b + 1));
      }
      expectBytes('merged block', await again.read(20 * 4096, 4096), merged);
      expect(again.sequence).toBe(10);
      await again.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a partial-block write reads the block once and journals it whole', async () => {
    const rig = await JournalRig.create({ blockSize: 4096, blocks: 16 });
    const d = rig.device;
    rig.journal.resetStats();
    rig.production.resetStats();
    await d.write(100, fill(10, 1));
    expect(rig.production.stats.reads + rig.journal.stats.reads).toBe(1);
    expect(rig.journal.stats.writes).toBe(1);
    expect(rig.production.stats.writes).toBe(0);
    const expected = new Uint8Array(4096);
    expected.fill(1, 100, 110);
    expectBytes('merged block', await d.read(0, 4096), expected);
    await d.close();
  });
});

describe('JournalDevice: close waits for reads in flight', () => {
  it('a read of the journal held at its store keeps close() waiting, then returns its data', async () => {
    const store = new GatedDevice(await memory(256 * 1024));
    const d = await JournalDevice.create(await memory(16 * 512), store);
    await d.write(512, fill(512, 0x5a));
    const gate = store.gate('read');
    const reading = d.read(512, 512);
    await gate.reached;
    const closing = watch(d.close());
    for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
    expect(closing.settled).toBe(false);
    gate.open();
    expectBytes('read during close', await reading, fill(512, 0x5a));
    await closing.promise;
    expect(await codeOf(d.read(0, 1))).toBe('ECLOSED');
  });
});

describe('JournalDevice: reads overlay the journal on production', () => {
  it('reads blocks that sit in one run with one I/O, and mixed runs exactly', async () => {
    const rig = await JournalRig.create({ blockSize: 1024, blocks: 64, ringBytes: 256 * 1024 });
    const d = rig.device;
    // Production's own content, put on its disk behind the journal's back
    // (the journal owns the device it writes through).
    await rig.productionDisk.write(0, fill(64 * 1024, 0x11));
    // Blocks 4..7 by one record; 8 and then 9 by two records of one frame
    // (adjacent in the ring); 12 alone; 13 stays on production.
    await d.write(4 * 1024, fill(4 * 1024, 1));
    await Promise.all([d.write(8 * 1024, fill(1024, 2)), d.write(9 * 1024, fill(1024, 3))]);
    await d.write(12 * 1024, fill(1024, 4));
    const expected = fill(64 * 1024, 0x11);
    expected.set(fill(4 * 1024, 1), 4 * 1024);
    expected.set(fill(1024, 2), 8 * 1024);
    expected.set(fill(1024, 3), 9 * 1024);
    expected.set(fill(1024, 4), 12 * 1024);
    for (const [offset, length, ios] of [
      [4 * 1024, 4 * 1024, 1], // one record
      [4 * 1024 + 100, 3 * 1024, 1], // inside it, unaligned
      [8 * 1024, 2 * 1024, 1], // two records, adjacent in the journal
      [32 * 1024, 8 * 1024, 1], // all on production
      [6 * 1024, 8 * 1024, 5], // record, records 8-9, production, block 12, production
      [11 * 1024 + 7, 2 * 1024, 3], // production, block 12, production
    ] as const) {
      rig.journal.resetStats();
      rig.production.resetStats();
      expectBytes(
        `${offset}+${length}`,
        await d.read(offset, length),
        expected.subarray(offset, offset + length),
      );
      expect(rig.journal.stats.reads + rig.production.stats.reads, `${offset}+${length}`).toBe(ios);
    }
    await d.close();
  });

  it('is exact to the byte for unaligned, overlapping writes, before and after a checkpoint', async () => {
    const rig = await JournalRig.create({ ringBytes: 256 * 1024 });
    const d = rig.device;
    const model = new Uint8Array(rig.size);
    let seed = 1;
    const next = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed;
    };
    for (let round = 0; round < 3; round++) {
      const pending: Promise<void>[] = [];
      for (let i = 0; i < 30; i++) {
        const offset = next() % rig.size;
        const length = 1 + (next() % Math.min(1500, rig.size - offset));
        const data = fill(length, next() & 0xff);
        model.set(data, offset);
        pending.push(d.write(offset, data));
        if (i % 7 === 0) await Promise.all(pending);
      }
      await Promise.all(pending);
      expectBytes(`round ${round}`, await d.read(0, rig.size), model);
      for (let i = 0; i < 20; i++) {
        const offset = next() % rig.size;
        const length = 1 + (next() % (rig.size - offset));
        expectBytes(
          `read ${offset}+${length}`,
          await d.read(offset, length),
          model.subarray(offset, offset + length),
        );
      }
      if (round === 1) await d.checkpoint();
    }
    await d.close();
  });
});

describe('JournalDevice: pointInTime', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('shows the device right after a record, by sequence number or by Date', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const rig = await JournalRig.create();
    const d = rig.device;
    const states: Uint8Array[] = [await d.read(0, rig.size)];
    for (let i = 1; i <= 5; i++) {
      vi.setSystemTime(1000 * i);
      await d.write((i - 1) * 300, fill(700, i));
      states.push(await d.read(0, rig.size));
    }
    vi.setSystemTime(500); // a clock going backwards does not reorder records
    await d.write(0, fill(10, 6));
    states.push(await d.read(0, rig.size));
    for (let seq = 0; seq <= 6; seq++) {
      const view = await d.pointInTime(seq);
      expect(view.sequence).toBe(seq);
      expect(view.readOnly).toBe(true);
      expectBytes(`pointInTime(${seq})`, await view.read(0, rig.size), states[seq]!);
    }
    expect((await d.pointInTime(3)).time.getTime()).toBe(3000);
    expect((await d.pointInTime(6)).time.getTime()).toBe(5000);
    for (const [time, seq] of [
      [0, 0],
      [999, 0],
      [1000, 1],
      [2500, 2],
      [5000, 6],
      [9999, 6],
    ] as const) {
      expect((await d.pointInTime(new Date(time))).sequence, `Date ${time}`).toBe(seq);
    }
    const view = await d.pointInTime(2);
    expect(await codeOf(view.write(0, fill(1, 1)))).toBe('EROFS');
    await d.checkpoint();
    // The checkpoint applied records 3..6 to production: the view's point is gone.
    expect(await codeOf(view.read(0, 1))).toBe('ENOENT');
    expect(await codeOf(d.pointInTime(new Date(4000)))).toBe('ENOENT');
    expect((await d.pointInTime(new Date(5000))).sequence).toBe(6);
    await d.close();
  });

  it('a view keeps its content while writes and checkpoints up to its point go on', async () => {
    const rig = await JournalRig.create({ ringBytes: 16 * 1024, checkpointAt: 1 });
    const d = rig.device;
    for (let i = 0; i < 8; i++) await d.write(i * 512, fill(512, i + 1));
    const view = await d.pointInTime(d.sequence);
    const expected = await d.read(0, rig.size);
    await d.checkpoint();
    expectBytes('after a checkpoint through its point', await view.read(0, rig.size), expected);
    await d.write(0, fill(512, 0xee));
    expectBytes('after a later write', await view.read(0, rig.size), expected);
    await view.close();
    await d.close();
  });
});

describe('JournalDevice: memory', () => {
  it('the changes table stays small', async () => {
    const rig = await JournalRig.create({ blocks: 1024, ringBytes: 1 << 20 });
    const d = rig.device;
    await Promise.all(Array.from({ length: 1024 }, (_, b) => d.write(b * 512, fill(512, b))));
    expect(d.changedBlocks).toBe(1024);
    expect(d.changesTableBytes / d.changedBlocks).toBeLessThanOrEqual(32);
    await d.close();
  });
});
