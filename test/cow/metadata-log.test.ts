import { describe, expect, it } from 'vitest';
import type { EntryCodec, LogLayout } from '../../src/cow/log-format.js';
import { MetadataLog } from '../../src/cow/metadata-log.js';
import { BlockDeviceError } from '../../src/errors.js';
import { MemoryDevice } from '../../src/index.js';
import { FaultyDevice, PowerSwitch } from '../../src/testing/index.js';
import { codeOf } from '../support/error-code.js';

const KIND = 0x54534554; // "TEST"
const SUPERBLOCK_SLOT = 4096;
const SECTOR = 512;
const FRAME_HEADER = 32;

/** Entries are strings: a 2-byte length, then their UTF-8 bytes. */
const strings: EntryCodec<string> = {
  size: (entry) => 2 + Buffer.byteLength(entry),
  encode(entries, out, pos) {
    for (const entry of entries) {
      const bytes = Buffer.from(entry);
      out[pos] = bytes.length & 0xff;
      out[pos + 1] = bytes.length >>> 8;
      out.set(bytes, pos + 2);
      pos += 2 + bytes.length;
    }
    return pos;
  },
  decode(bytes, count, where) {
    const out: string[] = [];
    let pos = 0;
    for (let i = 0; i < count; i++) {
      const length = (bytes[pos] ?? 0) | ((bytes[pos + 1] ?? 0) << 8);
      if (pos + 2 + length > bytes.length) {
        throw new BlockDeviceError('ECORRUPT', `${where}: entry ${i} runs past the end`);
      }
      out.push(Buffer.from(bytes.subarray(pos + 2, pos + 2 + length)).toString());
      pos += 2 + length;
    }
    if (pos !== bytes.length) throw new BlockDeviceError('ECORRUPT', `${where}: bytes left over`);
    return out;
  },
};

/**
 * A MetadataLog over a memory "disk" behind a FaultyDevice. Its state is the
 * list of every durable entry, so a checkpoint table holds that whole list
 * and a reopen must give it back exactly: lost, repeated or reordered
 * entries all show.
 */
class LogRig {
  readonly disk: MemoryDevice;
  readonly layout: LogLayout;
  power = new PowerSwitch();
  store!: FaultyDevice;
  log!: MetadataLog<string>;
  /** Every durable entry, in order: what was recovered, then what onDurable handed over. */
  durable: string[] = [];
  /** The batches onDurable was called with since the last open. */
  handed: string[][] = [];
  /** The entries `verifyLast` was asked about at the last open. */
  lastAsked: string[] | undefined;
  params: Uint8Array = new Uint8Array();

  private constructor(disk: MemoryDevice, layout: LogLayout) {
    this.disk = disk;
    this.layout = layout;
  }

  static async create(
    layout: LogLayout = { tableCapacity: 4096, logCapacity: 8 * SECTOR },
    initial: string[] = [],
    params = new Uint8Array(),
  ): Promise<LogRig> {
    const disk = await MemoryDevice.create({
      size: MetadataLog.reservedBytes(layout),
      blockSize: SECTOR,
    });
    await MetadataLog.format(disk, KIND, layout, params, strings, initial);
    const rig = new LogRig(disk, layout);
    await rig.open();
    return rig;
  }

  /** Store offset of the log's first frame. */
  get logStart(): number {
    return 2 * SUPERBLOCK_SLOT + 2 * this.layout.tableCapacity;
  }

  /** Opens the log again over a fresh handle on the disk as it is. */
  async open(verifyLast: (entries: string[]) => boolean = () => true): Promise<string[]> {
    this.power = new PowerSwitch();
    this.store = new FaultyDevice(this.disk.reopen(), { power: this.power });
    this.handed = [];
    const recovered = await MetadataLog.open(
      this.store,
      KIND,
      strings,
      async (entries) => {
        this.lastAsked = entries;
        return verifyLast(entries) ? undefined : 'refused by the test';
      },
      () => [...this.durable],
      (entries) => {
        this.handed.push(entries);
        this.durable.push(...entries);
      },
    );
    this.log = recovered.log;
    this.params = recovered.params;
    this.durable = [...recovered.entries];
    return recovered.entries;
  }

  /** A power cut: the disk keeps its durable writes and, by `seed`, some of the rest. */
  async crashAndOpen(seed: number): Promise<string[]> {
    await this.store.crash(seed);
    return this.open();
  }

  /** Flips one byte of the disk. */
  async corrupt(offset: number): Promise<void> {
    const disk = this.disk.reopen();
    const [byte] = await disk.read(offset, 1);
    await disk.write(offset, Uint8Array.of(byte! ^ 0xff));
  }
}

const letters = (from: number, n: number) =>
  Array.from({ length: n }, (_, i) => String.fromCharCode(97 + ((from + i) % 26)));

describe('MetadataLog', () => {
  it('reserves two superblock slots, two tables and the log', () => {
    expect(MetadataLog.reservedBytes({ tableCapacity: 4096, logCapacity: 8192 })).toBe(
      2 * SUPERBLOCK_SLOT + 2 * 4096 + 8192,
    );
  });

  it('format then open gives back the initial table and the params', async () => {
    const rig = await LogRig.create(undefined, ['x', 'yy', ''], Uint8Array.of(9, 8, 7));
    expect(rig.durable).toEqual(['x', 'yy', '']);
    expect([...rig.params]).toEqual([9, 8, 7]);
  });

  it('an append is durable and handed to onDurable when it resolves, and comes back in order', async () => {
    const rig = await LogRig.create(undefined, ['init']);
    await rig.log.append(['a', 'b']);
    expect(rig.handed).toEqual([['a', 'b']]);
    await rig.log.append(['c']);
    expect(rig.handed).toEqual([['a', 'b'], ['c']]);
    expect(await rig.open()).toEqual(['init', 'a', 'b', 'c']);
    await rig.log.append(['d']);
    expect(await rig.open()).toEqual(['init', 'a', 'b', 'c', 'd']);
  });

  it('appends made in one turn share a frame; those made while it commits share the next', async () => {
    const rig = await LogRig.create();
    rig.store.resetStats();
    const turn = letters(0, 3).map((e) => rig.log.append([e]));
    // The idle log starts its commit one microtask after the first append:
    // this await resumes after that, with the commit of the turn in flight.
    await Promise.resolve();
    const behind = letters(3, 7).map((e) => rig.log.append([e]));
    await Promise.all([...turn, ...behind]);
    expect(rig.handed).toEqual([letters(0, 3), letters(3, 7)]);
    expect(rig.store.stats).toMatchObject({ writes: 2, flushes: 2 });
    expect(await rig.open()).toEqual(letters(0, 10));
  });

  it('a checkpoint moves the state to the other table and starts the log over', async () => {
    const rig = await LogRig.create(undefined, ['init']);
    for (const e of letters(0, 3)) await rig.log.append([e]);
    await rig.log.checkpoint();
    await rig.log.append(['after']);
    // The old log is not replayed on top of the table that holds it.
    expect(await rig.open()).toEqual(['init', 'a', 'b', 'c', 'after']);
    await rig.log.checkpoint();
    await rig.log.checkpoint();
    expect(await rig.open()).toEqual(['init', 'a', 'b', 'c', 'after']);
  });

  it('a full log checkpoints by itself, and nothing is lost or repeated', async () => {
    // Four one-sector frames fill the log.
    const rig = await LogRig.create({ tableCapacity: 4096, logCapacity: 4 * SECTOR });
    const all = letters(0, 23);
    for (const e of all) await rig.log.append([e]);
    expect(await rig.open()).toEqual(all);
  });

  it('a commit larger than the log allows in one frame is split, each frame durable before the next', async () => {
    // A frame may take the whole log (8192 bytes): 80 of these entries.
    const rig = await LogRig.create({ tableCapacity: 16384, logCapacity: 16 * SECTOR });
    const big = Array.from({ length: 100 }, (_, i) => `${i}`.padStart(100, '.'));
    await rig.log.append(big);
    expect(rig.handed.map((frame) => frame.length)).toEqual([80, 20]);
    expect(rig.handed.flat()).toEqual(big);
    expect(await rig.open()).toEqual(big);
  });

  it('an entry larger than the log is ENOSPC and nothing of it is kept', async () => {
    const rig = await LogRig.create({ tableCapacity: 4096, logCapacity: 4 * SECTOR });
    await rig.log.append(['kept']);
    expect(await codeOf(rig.log.append(['x'.repeat(4 * SECTOR)]))).toBe('ENOSPC');
    expect(await rig.open()).toEqual(['kept']);
  });

  it('a checkpoint table that cannot hold the state is ENOSPC', async () => {
    const rig = await LogRig.create({ tableCapacity: 512, logCapacity: 8 * SECTOR });
    const entries = Array.from({ length: 6 }, (_, i) => `${i}`.padStart(100, '-'));
    for (const e of entries) await rig.log.append([e]);
    expect(await codeOf(rig.log.checkpoint())).toBe('ENOSPC');
    expect(await rig.open()).toEqual(entries);
  });

  it('a store failure fails the commit, whatever was queued behind it, and every later append (EIO)', async () => {
    const rig = await LogRig.create();
    await rig.log.append(['a']);
    rig.store.failNext('flush');
    const failing = rig.log.append(['b']);
    const queued = rig.log.append(['c']);
    expect([await codeOf(failing), await codeOf(queued)]).toEqual(['EIO', 'EIO']);
    expect(BlockDeviceError.is(rig.log.failed, 'EIO')).toBe(true);
    rig.store.resetStats();
    expect(await codeOf(rig.log.append(['d']))).toBe('EIO');
    expect(rig.store.stats.writes).toBe(0);
    expect(rig.handed).toEqual([['a']]);
  });

  it('verifyLast answering false drops the last frame for good; the next append takes its place', async () => {
    const rig = await LogRig.create();
    for (const e of ['a', 'b', 'c']) await rig.log.append([e]);
    expect(await rig.open(() => false)).toEqual(['a', 'b']);
    expect(rig.lastAsked).toEqual(['c']);
    // Its header was erased: it is not found again, even if it would now be verified.
    expect(await rig.open()).toEqual(['a', 'b']);
    await rig.log.append(['d']);
    expect(await rig.open()).toEqual(['a', 'b', 'd']);
  });

  it('a power cut keeps every acknowledged append and drops an unacknowledged frame whole, never part of it', async () => {
    // The frame on its way spans three sectors, so the crash image can tear it.
    const pending = Array.from({ length: 12 }, (_, i) => `${i}`.padStart(100, '#'));
    const outcomes = new Set<string>();
    for (let seed = 0; seed < 24; seed++) {
      const rig = await LogRig.create({ tableCapacity: 8192, logCapacity: 32 * SECTOR });
      for (const e of letters(0, 4)) await rig.log.append([e]);
      // The frame's write reaches the disk; the power fails before its flush.
      rig.power.cutAfter(1);
      expect(await codeOf(rig.log.append(pending))).toBe('EIO');
      expect(rig.store.pendingWrites).toBe(1);
      const recovered = await rig.crashAndOpen(seed);
      expect([letters(0, 4), [...letters(0, 4), ...pending]]).toContainEqual(recovered);
      outcomes.add(recovered.length === 4 ? 'dropped' : 'kept');
      // The log goes on after the cut.
      await rig.log.append(['next']);
      expect(await rig.open()).toEqual([...recovered, 'next']);
    }
    expect([...outcomes].sort()).toEqual(['dropped', 'kept']);
  });

  it('a power cut at any point of a checkpoint leaves the old table and log or the new table, never a mix', async () => {
    const history = letters(0, 5);
    // A checkpoint is four store operations: table, flush, superblock, flush.
    for (let ops = 0; ops <= 4; ops++) {
      for (const seed of [1, 2, 3]) {
        const rig = await LogRig.create(undefined, ['init']);
        for (const e of history) await rig.log.append([e]);
        rig.power.cutAfter(ops);
        const checkpoint = codeOf(rig.log.checkpoint());
        expect(await checkpoint).toBe(ops < 4 ? 'EIO' : undefined);
        expect(await rig.crashAndOpen(seed)).toEqual(['init', ...history]);
        await rig.log.append(['z']);
        expect(await rig.open()).toEqual(['init', ...history, 'z']);
      }
    }
  });

  describe('damage', () => {
    async function threeFrames(): Promise<LogRig> {
      const rig = await LogRig.create(undefined, ['init']);
      for (const e of ['a', 'b', 'c']) await rig.log.append([e]);
      return rig;
    }

    it('a damaged frame followed by an intact one is ECORRUPT, naming the frame and its offset', async () => {
      const rig = await threeFrames();
      await rig.corrupt(rig.logStart + FRAME_HEADER);
      const err = await rig.open().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(BlockDeviceError.is(err, 'ECORRUPT'), String(err)).toBe(true);
      expect((err as Error).message).toContain(`log frame 0 at store offset ${rig.logStart}`);
    });

    it('a damaged header of a durable frame followed by an intact one is ECORRUPT too', async () => {
      const rig = await threeFrames();
      await rig.corrupt(rig.logStart + SECTOR + 4);
      expect(await codeOf(rig.open())).toBe('ECORRUPT');
    });

    it('damage in the last frame alone is a torn tail: that frame is dropped', async () => {
      const rig = await threeFrames();
      await rig.corrupt(rig.logStart + 2 * SECTOR + FRAME_HEADER);
      expect(await rig.open()).toEqual(['init', 'a', 'b']);
    });

    it('a damaged checkpoint table is ECORRUPT', async () => {
      const rig = await threeFrames();
      // The formatted table is table 0, right after the superblock slots.
      await rig.corrupt(2 * SUPERBLOCK_SLOT + 1);
      expect(await codeOf(rig.open())).toBe('ECORRUPT');
    });
  });
});
