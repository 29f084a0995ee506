import fc from 'fast-check';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { SECTOR } from '../../src/base/index.js';
import type { BlockDevice } from '../../src/device.js';
import { MemoryDevice } from '../../src/devices/memory-device.js';
import {
  FaultyDevice,
  type FaultyDeviceOptions,
  type FaultyOperation,
  PowerSwitch,
} from '../../src/testing/faulty-device.js';
import { fill } from '../support/bytes.js';
import { expectCode } from '../support/error-code.js';
import {
  assertProperty,
  countPowerCuts,
  SOAK_TIMEOUT,
  seedFor,
  writeSoakReport,
} from '../support/soak.js';

const SIZE = 16 * 1024;
/** Crash seeds: fixed in CI, from a fresh base in a soak. */
const SEED_BASE = seedFor('FaultyDevice crash seeds', 1);
const SEEDS = Array.from({ length: 48 }, (_, i) => i * 7919 + SEED_BASE);
/** Every crash image taken in this file, for the soak report. */
const crashes = vi.spyOn(FaultyDevice.prototype, 'crash');

async function setup(
  options?: FaultyDeviceOptions,
): Promise<{ inner: MemoryDevice; dev: FaultyDevice }> {
  const inner = await MemoryDevice.create({ size: SIZE, blockSize: 4096 });
  return { inner, dev: new FaultyDevice(inner, options) };
}

async function image(device: BlockDevice): Promise<Uint8Array> {
  return device.read(0, device.size);
}

/** Replays `history` on a fresh device, crashes it with `seed` and returns the image. */
async function crashImage(
  history: (dev: FaultyDevice) => Promise<void>,
  seed: number,
): Promise<Uint8Array> {
  const { dev } = await setup();
  await history(dev);
  return image(await dev.crash(seed));
}

/** 'new' if every byte of `bytes[from, to)` is `value`, 'old' if every byte is `old`, else 'mixed'. */
function classify(
  bytes: Uint8Array,
  from: number,
  to: number,
  value: number,
  old = 0,
): 'new' | 'old' | 'mixed' {
  const part = bytes.subarray(from, to);
  if (part.every((b) => b === value)) return 'new';
  if (part.every((b) => b === old)) return 'old';
  return 'mixed';
}

describe('FaultyDevice', () => {
  describe('construction', () => {
    it('takes geometry and read-only flag from inner', async () => {
      const inner = await MemoryDevice.create({ size: SIZE, blockSize: 1024, readOnly: true });
      const dev = new FaultyDevice(inner);
      expect([dev.size, dev.blockSize, dev.readOnly]).toEqual([SIZE, 1024, true]);
      await expectCode(dev.write(0, fill(10, 1)), 'EROFS');
      expect(dev.power.isOn).toBe(true);
    });

    it('refuses a non-device and bad options with EINVAL', async () => {
      const inner = await MemoryDevice.create({ size: SIZE });
      const bad: unknown[] = [
        () => new FaultyDevice({} as BlockDevice),
        () => new FaultyDevice(null as unknown as BlockDevice),
        () => new FaultyDevice(inner, { latency: -1 }),
        () => new FaultyDevice(inner, { latency: Number.NaN }),
        () => new FaultyDevice(inner, { power: {} as PowerSwitch }),
        () => new FaultyDevice(inner, { failures: 3 as unknown as () => boolean }),
        () => new PowerSwitch({ cutAfterOps: -1 }),
        () => new PowerSwitch({ cutAfterOps: 1.5 }),
      ];
      for (const make of bad) {
        expect(make).toThrow(expect.objectContaining({ code: 'EINVAL' }));
      }
    });
  });

  describe('pass-through', () => {
    it('reads back what it wrote, unaligned included, and so does inner', async () => {
      const { inner, dev } = await setup();
      await dev.write(300, fill(1500, 9));
      expect(await dev.read(300, 1500)).toEqual(fill(1500, 9));
      expect(await inner.read(299, 1502)).toEqual(Uint8Array.from([0, ...fill(1500, 9), 0]));
      expect(dev.pendingWrites).toBe(1);
      await dev.flush();
      expect(dev.pendingWrites).toBe(0);
    });
  });

  describe('crash', () => {
    it('keeps every write a completed flush covered, whatever the seed', async () => {
      const history = async (dev: FaultyDevice): Promise<void> => {
        await dev.write(0, fill(4096, 1));
        await dev.write(5000, fill(3000, 2));
        await dev.flush();
        await dev.write(100, fill(50, 3));
        await dev.flush();
      };
      const { dev } = await setup();
      await history(dev);
      const expected = await image(dev);
      for (const seed of SEEDS) expect(await crashImage(history, seed)).toEqual(expected);
    });

    it('leaves each unflushed write present, absent or torn, all three across seeds', async () => {
      const outcomes = new Set<string>();
      for (const seed of SEEDS) {
        const bytes = await crashImage(async (dev) => {
          await dev.write(0, fill(4 * SECTOR, 7));
        }, seed);
        const sectors = [0, 1, 2, 3].map((s) => classify(bytes, s * SECTOR, (s + 1) * SECTOR, 7));
        expect(sectors).not.toContain('mixed');
        expect(bytes.subarray(4 * SECTOR).every((b) => b === 0)).toBe(true);
        if (sectors.every((c) => c === 'new')) outcomes.add('present');
        else if (sectors.every((c) => c === 'old')) outcomes.add('absent');
        else outcomes.add('torn');
      }
      expect(outcomes).toEqual(new Set(['present', 'absent', 'torn']));
    });

    it('tears an unaligned write only where it meets 512-byte sector boundaries', async () => {
      // [300, 1800) meets sectors 0..3 in the pieces below; each lands whole or not at all.
      const pieces: [number, number][] = [
        [300, 512],
        [512, 1024],
        [1024, 1536],
        [1536, 1800],
      ];
      const seen = pieces.map(() => new Set<string>());
      for (const seed of SEEDS) {
        const bytes = await crashImage(async (dev) => {
          await dev.write(0, fill(2048, 1));
          await dev.flush();
          await dev.write(300, fill(1500, 2));
        }, seed);
        pieces.forEach(([from, to], i) => {
          const outcome = classify(bytes, from, to, 2, 1);
          expect(outcome).not.toBe('mixed');
          seen[i]!.add(outcome);
        });
        // Bytes of a sector outside the write keep their durable value.
        expect(classify(bytes, 0, 300, 1)).toBe('new');
        expect(classify(bytes, 1800, 2048, 1)).toBe('new');
      }
      for (const outcomes of seen) expect(outcomes).toEqual(new Set(['new', 'old']));
    });

    it('gives the same image for the same seed and history, different ones across seeds', async () => {
      const history = async (dev: FaultyDevice): Promise<void> => {
        for (let i = 0; i < 12; i++) {
          await dev.write((i * 1237) % (SIZE - 2000), fill(1500 + i, i + 1));
          if (i % 5 === 4) await dev.flush();
        }
      };
      const distinct = new Set<string>();
      for (const seed of SEEDS.slice(0, 10)) {
        const first = await crashImage(history, seed);
        expect(await crashImage(history, seed)).toEqual(first);
        distinct.add(Buffer.from(first).toString('base64'));
      }
      expect(distinct.size).toBeGreaterThan(1);
    });

    it('lets the later-issued write win where landing pending writes overlap', async () => {
      /** The byte value every byte of `[from, to)` holds, or -1 if they differ. */
      const uniform = (bytes: Uint8Array, from: number, to: number): number => {
        const part = bytes.subarray(from, to);
        return part.every((b) => b === part[0]) ? part[0]! : -1;
      };
      // W1 = 0xA1 on [0, 512), then W2 = 0xB2 on [256, 512): one sector each,
      // so each lands whole or not at all. Both landing shows as A1|B2.
      const patterns = new Set<string>();
      for (const seed of SEEDS) {
        const bytes = await crashImage(async (dev) => {
          await dev.write(0, fill(512, 0xa1));
          await dev.write(256, fill(256, 0xb2));
        }, seed);
        patterns.add(
          `${uniform(bytes, 0, 256).toString(16)}|${uniform(bytes, 256, 512).toString(16)}`,
        );
      }
      // both: A1|B2; only W1: A1|A1; only W2: 0|B2; neither: 0|0.
      expect(patterns).toEqual(new Set(['a1|b2', 'a1|a1', '0|b2', '0|0']));

      // Reversed: W1 = 0xA1 on [256, 512), then W2 = 0xB2 on [0, 512). If the
      // earlier write won, both landing would show as B2|A1; that never happens.
      for (const seed of SEEDS) {
        const bytes = await crashImage(async (dev) => {
          await dev.write(256, fill(256, 0xa1));
          await dev.write(0, fill(512, 0xb2));
        }, seed);
        const pattern = `${uniform(bytes, 0, 256).toString(16)}|${uniform(bytes, 256, 512).toString(16)}`;
        expect(['b2|b2', '0|a1', '0|0']).toContain(pattern);
      }
    });

    it('does not cover writes in flight when a flush is called', async () => {
      // Delayed before it is passed down: still in flight when flush() is called.
      const outcomes = new Set<string>();
      for (const seed of SEEDS.slice(0, 24)) {
        const { dev } = await setup({ latency: (op) => (op.kind === 'write' ? 15 : 0) });
        const write = dev.write(0, fill(2 * SECTOR, 5));
        await dev.flush();
        await write;
        expect(dev.pendingWrites).toBe(1);
        outcomes.add(classify(await image(await dev.crash(seed)), 0, 2 * SECTOR, 5));
      }
      expect(outcomes.has('old')).toBe(true);

      // Passed down but not yet completed below: the flush below finishes first.
      const lower = await setup({ latency: (op) => (op.kind === 'write' ? 15 : 0) });
      const dev = new FaultyDevice(lower.dev);
      const write = dev.write(0, fill(SECTOR, 6));
      await new Promise((resolve) => setImmediate(resolve));
      expect(dev.stats.writes).toBe(1);
      await dev.flush();
      expect(dev.pendingWrites).toBe(1);
      await write;
      expect(dev.pendingWrites).toBe(1);
      await dev.flush();
      expect(dev.pendingWrites).toBe(0);
      for (const seed of SEEDS.slice(0, 8)) {
        expect(classify(await image(await dev.crash(seed)), 0, SECTOR, 6)).toBe('new');
      }
    });

    it('counts a flush still running below at the cut as not completed', async () => {
      const outcomes = new Set<string>();
      for (const seed of SEEDS.slice(0, 16)) {
        const lower = await setup({ latency: (op) => (op.kind === 'flush' ? 10 : 0) });
        const dev = new FaultyDevice(lower.dev);
        await dev.write(0, fill(SECTOR, 8));
        const flushed = dev.flush();
        await new Promise((resolve) => setImmediate(resolve));
        expect(dev.stats.flushes).toBe(1);
        const crashed = dev.crash(seed);
        await expectCode(flushed, 'EIO');
        outcomes.add(classify(await image(await crashed), 0, SECTOR, 8));
      }
      expect(outcomes).toEqual(new Set(['new', 'old']));
    });

    it('captures durable content before a concurrent write to the same sector reaches inner', async () => {
      // The capture read of the first write is slow; the second write to the
      // same sector must not reach inner before it, or the capture would take
      // the second write's data for durable.
      const seen = new Set<string>();
      for (const seed of SEEDS) {
        const lower = await setup({ latency: (op) => (op.kind === 'read' ? 5 : 0) });
        const dev = new FaultyDevice(lower.dev);
        await dev.write(0, fill(2 * SECTOR, 0x11));
        await dev.flush();
        await Promise.all([dev.write(0, fill(2 * SECTOR, 0xaa)), dev.write(0, fill(SECTOR, 0xbb))]);
        const bytes = await image(await dev.crash(seed));
        const first = bytes.subarray(0, SECTOR);
        const value = [0x11, 0xaa, 0xbb].find((v) => first.every((b) => b === v));
        expect(value).toBeDefined();
        expect(classify(bytes, SECTOR, 2 * SECTOR, 0xaa, 0x11)).not.toBe('mixed');
        seen.add(String(value));
      }
      expect(seen).toEqual(new Set(['17', '170', '187']));
    });

    it('makes the device unusable (EIO) and is idempotent', async () => {
      const { inner, dev } = await setup();
      await dev.write(0, fill(SECTOR, 1));
      await dev.flush();
      const crashed = dev.crash(3);
      expect(dev.crash(4)).toBe(crashed);
      expect(await crashed).toBe(inner);
      expect(dev.power.isOn).toBe(false);
      expect(dev.pendingWrites).toBe(0);
      await expectCode(dev.read(0, 10), 'EIO');
      await expectCode(dev.write(0, fill(10, 2)), 'EIO');
      await expectCode(dev.flush(), 'EIO');
      expect(await inner.read(0, SECTOR)).toEqual(fill(SECTOR, 1));
      expect(dev.stats.writes).toBe(1);
      await expectCode((await setup()).dev.crash(1.5), 'EINVAL');
    });

    it('fails operations in flight at the cut with EIO; one not yet passed down cannot land', async () => {
      for (const seed of SEEDS.slice(0, 12)) {
        const { dev } = await setup({ latency: 10 });
        const write = dev.write(0, fill(SECTOR, 4));
        const read = dev.read(0, SECTOR);
        const crashed = dev.crash(seed);
        await expectCode(write, 'EIO');
        await expectCode(read, 'EIO');
        expect((await image(await crashed)).every((b) => b === 0)).toBe(true);
        expect(dev.stats).toEqual({
          reads: 0,
          writes: 0,
          flushes: 0,
          bytesRead: 0,
          bytesWritten: 0,
        });
      }
    });
  });

  describe('close and crash', () => {
    it('closes inner on close() with the power on; crash() afterwards is ECLOSED', async () => {
      const { inner, dev } = await setup();
      await dev.write(0, fill(SECTOR, 1));
      await dev.close();
      expect(inner.closed).toBe(true);
      expect(dev.stats.flushes).toBe(1);
      await expectCode(dev.crash(1), 'ECLOSED');
      expect(dev.power.isOn).toBe(true);
      await expectCode(dev.read(0, 1), 'ECLOSED');
    });

    it('resolves close() after a crash without touching inner', async () => {
      const { inner, dev } = await setup();
      await dev.write(0, fill(SECTOR, 1));
      await dev.crash(1);
      await dev.close();
      await dev.close();
      expect(inner.closed).toBe(false);
      expect(dev.stats.flushes).toBe(0);
      await expectCode(dev.read(0, 1), 'ECLOSED');
    });

    it('leaves inner to crash() when closed after the power failed', async () => {
      const outcomes = new Set<string>();
      for (const seed of SEEDS.slice(0, 16)) {
        const { inner, dev } = await setup();
        await dev.write(0, fill(SECTOR, 1));
        await dev.flush();
        await dev.write(SECTOR, fill(SECTOR, 2));
        dev.power.cut();
        await dev.close();
        expect(inner.closed).toBe(false);
        const bytes = await image(await dev.crash(seed));
        expect(classify(bytes, 0, SECTOR, 1)).toBe('new');
        outcomes.add(classify(bytes, SECTOR, 2 * SECTOR, 2));
      }
      expect(outcomes).toEqual(new Set(['new', 'old']));
    });

    it('resolves close() when its own flush is the operation that trips the switch', async () => {
      const power = new PowerSwitch({ cutAfterOps: 1 });
      const { inner, dev } = await setup({ power });
      await dev.write(0, fill(SECTOR, 1));
      await dev.close();
      expect(power.isOn).toBe(false);
      expect(inner.closed).toBe(false);
      expect(dev.pendingWrites).toBe(1);
    });
  });

  describe('PowerSwitch', () => {
    it('cuts every attached device at op N; later ops fail EIO and are not performed', async () => {
      const power = new PowerSwitch({ cutAfterOps: 4 });
      const a = await setup({ power });
      const b = await setup({ power });
      await a.dev.write(0, fill(SECTOR, 1));
      await b.dev.write(0, fill(SECTOR, 2));
      await a.dev.flush();
      expect(await b.dev.read(0, 4)).toEqual(fill(4, 2));
      expect([power.isOn, power.opsIssued]).toEqual([true, 4]);
      await expectCode(b.dev.flush(), 'EIO');
      expect(power.isOn).toBe(false);
      await expectCode(a.dev.write(SECTOR, fill(SECTOR, 3)), 'EIO');
      await expectCode(a.dev.read(0, 4), 'EIO');
      expect(power.opsIssued).toBe(4);
      expect(await a.inner.read(SECTOR, SECTOR)).toEqual(fill(SECTOR, 0));
      expect(a.dev.stats).toMatchObject({ reads: 0, writes: 1, flushes: 1 });
      expect(b.dev.stats).toMatchObject({ reads: 1, writes: 1, flushes: 0 });

      // Each device still produces its own image: a's write was flushed, b's was not.
      const outcomes = new Set<string>();
      for (const seed of SEEDS.slice(0, 16)) {
        const again = new PowerSwitch({ cutAfterOps: 4 });
        const a2 = await setup({ power: again });
        const b2 = await setup({ power: again });
        await a2.dev.write(0, fill(SECTOR, 1));
        await b2.dev.write(0, fill(SECTOR, 2));
        await a2.dev.flush();
        await b2.dev.read(0, 4);
        await expectCode(b2.dev.flush(), 'EIO');
        expect(classify(await image(await a2.dev.crash(seed)), 0, SECTOR, 1)).toBe('new');
        outcomes.add(classify(await image(await b2.dev.crash(seed)), 0, SECTOR, 2));
      }
      expect(outcomes).toEqual(new Set(['new', 'old']));
    });

    it('cuts at once with cut(), with cutAfterOps 0, and when one attached device crashes', async () => {
      const zero = new PowerSwitch({ cutAfterOps: 0 });
      const first = await setup({ power: zero });
      await expectCode(first.dev.read(0, 1), 'EIO');
      expect([zero.isOn, zero.opsIssued]).toEqual([false, 0]);

      const manual = new PowerSwitch();
      const m = await setup({ power: manual });
      await m.dev.write(0, fill(8, 1));
      manual.cut();
      manual.cut();
      await expectCode(m.dev.write(0, fill(8, 2)), 'EIO');
      expect(await m.inner.read(0, 8)).toEqual(fill(8, 1));

      const shared = new PowerSwitch();
      const a = await setup({ power: shared });
      const b = await setup({ power: shared });
      await a.dev.crash();
      expect(shared.isOn).toBe(false);
      await expectCode(b.dev.flush(), 'EIO');
    });
  });

  describe('fault injection', () => {
    it('fails the operations `failures` picks with EIO without performing them', async () => {
      const seen: FaultyOperation[] = [];
      const { inner, dev } = await setup({
        failures: (op) => {
          seen.push(op);
          return op.index === 1 || op.kind === 'flush';
        },
      });
      await dev.write(0, fill(SECTOR, 1));
      await expectCode(dev.write(SECTOR, fill(100, 2)), 'EIO');
      expect(await dev.read(SECTOR, 100)).toEqual(fill(100, 0));
      await expectCode(dev.flush(), 'EIO');
      expect(seen).toEqual([
        { kind: 'write', offset: 0, length: SECTOR, index: 0 },
        { kind: 'write', offset: SECTOR, length: 100, index: 1 },
        { kind: 'read', offset: SECTOR, length: 100, index: 2 },
        { kind: 'flush', offset: 0, length: 0, index: 3 },
      ]);
      expect(await inner.read(SECTOR, 100)).toEqual(fill(100, 0));
      expect(dev.stats).toMatchObject({ reads: 1, writes: 1, flushes: 0 });
      // The failed flush made nothing durable.
      expect(dev.pendingWrites).toBe(1);
    });

    it('fails the next operations of a kind with failNext(), and a failed flush makes nothing durable', async () => {
      const { dev } = await setup();
      dev.failNext('read', 2);
      await expectCode(dev.read(0, 1), 'EIO');
      await expectCode(dev.read(0, 1), 'EIO');
      expect(await dev.read(0, 1)).toEqual(fill(1, 0));
      dev.failNext('write');
      await expectCode(dev.write(0, fill(4, 1)), 'EIO');
      expect(dev.stats.writes).toBe(0);
      expect(() => dev.failNext('trim' as 'read')).toThrow(
        expect.objectContaining({ code: 'EINVAL' }),
      );
      expect(() => dev.failNext('read', -1)).toThrow(expect.objectContaining({ code: 'EINVAL' }));

      const outcomes = new Set<string>();
      for (const seed of SEEDS.slice(0, 16)) {
        const bytes = await crashImage(async (d) => {
          await d.write(0, fill(SECTOR, 3));
          d.failNext('flush');
          await expectCode(d.flush(), 'EIO');
        }, seed);
        outcomes.add(classify(bytes, 0, SECTOR, 3));
      }
      expect(outcomes).toEqual(new Set(['new', 'old']));
    });

    it('delays operations by `latency` before passing them down', async () => {
      const kinds: string[] = [];
      const { dev } = await setup({
        latency: (op) => {
          kinds.push(op.kind);
          return op.kind === 'write' ? 30 : 0;
        },
      });
      const start = performance.now();
      const order: string[] = [];
      const write = dev.write(0, fill(8, 1)).then(() => order.push('write'));
      const read = dev.read(0, 8).then(() => order.push('read'));
      await Promise.all([write, read]);
      expect(performance.now() - start).toBeGreaterThanOrEqual(25);
      expect(order).toEqual(['read', 'write']);
      await dev.flush();
      expect(kinds).toEqual(['write', 'read', 'flush']);

      const fixed = await setup({ latency: 20 });
      const flushStart = performance.now();
      await fixed.dev.flush();
      expect(performance.now() - flushStart).toBeGreaterThanOrEqual(15);
    });
  });

  describe('stats', () => {
    it('counts operations passed down, excluding the reads that capture durable content', async () => {
      // A FaultyDevice below shows the capture reads that the one above does not count.
      const lower = await setup();
      const dev = new FaultyDevice(lower.dev);
      await dev.write(0, fill(4096, 1));
      expect(dev.stats).toEqual({
        reads: 0,
        writes: 1,
        flushes: 0,
        bytesRead: 0,
        bytesWritten: 4096,
      });
      expect(lower.dev.stats).toMatchObject({ reads: 1, bytesRead: 4096, writes: 1 });

      // Sectors already captured in this epoch need no read.
      await dev.write(100, fill(200, 2));
      expect(lower.dev.stats.reads).toBe(1);
      await dev.write(4000, fill(200, 2));
      expect(lower.dev.stats).toMatchObject({ reads: 2, bytesRead: 4096 + SECTOR });

      // A completed flush drops the captures; the next write captures afresh.
      await dev.flush();
      await dev.write(0, fill(10, 3));
      expect(lower.dev.stats).toMatchObject({ reads: 3, bytesRead: 4096 + 2 * SECTOR });

      await dev.read(10, 300);
      expect(dev.stats).toEqual({
        reads: 1,
        writes: 4,
        flushes: 1,
        bytesRead: 300,
        bytesWritten: 4096 + 200 + 200 + 10,
      });
      dev.resetStats();
      expect(dev.stats).toEqual({ reads: 0, writes: 0, flushes: 0, bytesRead: 0, bytesWritten: 0 });
      // Zero-length operations never reach the device.
      await dev.read(0, 0);
      await dev.write(0, new Uint8Array(0));
      expect(dev.stats.reads + dev.stats.writes).toBe(0);
    });
  });

  describe('property', () => {
    type Command = { kind: 'write'; offset: number; length: number } | { kind: 'flush' };
    const PROP_SIZE = 8192;
    const command: fc.Arbitrary<Command> = fc.oneof(
      {
        weight: 4,
        arbitrary: fc
          .tuple(fc.integer({ min: 0, max: PROP_SIZE - 1 }), fc.integer({ min: 1, max: 2048 }))
          .map(
            ([offset, length]): Command => ({
              kind: 'write',
              offset,
              length: Math.min(length, PROP_SIZE - offset),
            }),
          ),
      },
      { weight: 1, arbitrary: fc.constant<Command>({ kind: 'flush' }) },
    );

    /**
     * For a sequential history of writes (write i fills its range with the
     * byte i + 1) and flushes, and any seed, the crashed image is explained by
     * some choice of which sector pieces of the pending writes landed:
     *  1. every byte holds its durable value (the last write before the last
     *     flush covering it, or 0) or the value of a pending write covering it;
     *  2. a byte showing pending write w means w's whole piece in that sector
     *     landed: every byte of that piece shows w or a later pending write;
     *  3. a byte showing w (or its durable value) means no pending write issued
     *     after w (after every durable one) covering it landed in that sector:
     *     no byte of that write's piece there shows it.
     */
    it(
      'every crashed image is explained by durable content plus landing sector pieces',
      async () => {
        await assertProperty(
          'FaultyDevice crash images',
          fc.asyncProperty(
            fc.array(command, { minLength: 1, maxLength: 40 }),
            fc.integer(),
            async (commands, seed) => {
              const history = async (dev: FaultyDevice): Promise<void> => {
                let id = 0;
                for (const c of commands) {
                  if (c.kind === 'flush') await dev.flush();
                  else await dev.write(c.offset, fill(c.length, ++id));
                }
              };
              const inner = await MemoryDevice.create({ size: PROP_SIZE, blockSize: 4096 });
              const dev = new FaultyDevice(inner);
              await history(dev);
              const bytes = await image(await dev.crash(seed));

              const durable = new Uint8Array(PROP_SIZE);
              let pending: { id: number; offset: number; end: number }[] = [];
              let id = 0;
              for (const c of commands) {
                if (c.kind === 'write') {
                  pending.push({ id: ++id, offset: c.offset, end: c.offset + c.length });
                } else {
                  for (const w of pending) durable.fill(w.id, w.offset, w.end);
                  pending = [];
                }
              }
              const byId = new Map(pending.map((w, order) => [w.id, { ...w, order }]));
              const piece = (
                w: { offset: number; end: number },
                sector: number,
              ): [number, number] => [
                Math.max(w.offset, sector * SECTOR),
                Math.min(w.end, (sector + 1) * SECTOR),
              ];
              const sectorsOf = (w: { offset: number; end: number }): number[] => {
                const out: number[] = [];
                for (let s = Math.floor(w.offset / SECTOR); s * SECTOR < w.end; s++) out.push(s);
                return out;
              };
              // Pieces (write, sector) whose value shows in the image: they landed.
              const landed = new Set<string>();
              for (const w of pending) {
                for (const s of sectorsOf(w)) {
                  const [from, to] = piece(w, s);
                  if (bytes.subarray(from, to).includes(w.id)) landed.add(`${w.id}:${s}`);
                }
              }
              // 2.
              for (const key of landed) {
                const [wid, s] = key.split(':').map(Number) as [number, number];
                const w = byId.get(wid)!;
                const [from, to] = piece(w, s);
                for (let x = from; x < to; x++) {
                  const other = byId.get(bytes[x]!);
                  const ok =
                    other !== undefined &&
                    other.order >= w.order &&
                    other.offset <= x &&
                    x < other.end;
                  expect(ok, `byte ${x} of landed piece ${key}`).toBe(true);
                }
              }
              for (let b = 0; b < PROP_SIZE; b++) {
                const value = bytes[b]!;
                const source = byId.get(value);
                // 1.
                if (value !== durable[b]) {
                  const ok = source !== undefined && source.offset <= b && b < source.end;
                  expect(ok, `byte ${b} = ${value}`).toBe(true);
                }
                // 3.
                const after = source === undefined ? -1 : source.order;
                const sector = Math.floor(b / SECTOR);
                for (const w of pending) {
                  if (w.offset > b || b >= w.end || byId.get(w.id)!.order <= after) continue;
                  expect(landed.has(`${w.id}:${sector}`), `byte ${b} under write ${w.id}`).toBe(
                    false,
                  );
                }
              }

              // Reproducible: the same history and seed give the same image.
              const again = new FaultyDevice(
                await MemoryDevice.create({ size: PROP_SIZE, blockSize: 4096 }),
              );
              await history(again);
              expect(await image(await again.crash(seed))).toEqual(bytes);
            },
          ),
          { numRuns: 100, soakRuns: 2000, seed: 0x5eed },
        );
      },
      SOAK_TIMEOUT,
    );
  });

  afterAll(() => {
    countPowerCuts('FaultyDevice', crashes.mock.calls.length);
    writeSoakReport('faulty-device');
  });
});
