import { createHash } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { JournalDevice, MemoryDevice } from '../../src/index.js';
import { RING_START } from '../../src/journal/index.js';
import { parallelReplay } from '../../src/journal/replay-ahead.js';
import { ScanReader } from '../../src/store/index.js';

const BLOCK = 4096;
const WINDOW = ScanReader.WINDOW;

/** Block `i`'s bytes: a marker naming it, then a fill of its own. */
function blockOf(i: number): Uint8Array {
  const b = new Uint8Array(BLOCK).fill((i * 7) & 0xff);
  new DataView(b.buffer).setUint32(0, 0xb10c0000 + i, true);
  return b;
}

/** The journal store's bytes after `flushed` writes that were flushed and `after` more that were not. */
async function journalBytes(flushed: number, after: number, clean: boolean): Promise<Uint8Array> {
  const production = await MemoryDevice.create({ size: 1024 * BLOCK, blockSize: BLOCK });
  const store = await MemoryDevice.create({ size: RING_START + 16 * 1024 * 1024, blockSize: 512 });
  const device = await JournalDevice.create(production, store, { checkpointAt: 1 });
  const write = async (from: number, to: number): Promise<void> => {
    // 32 in flight, so frames hold several records, as under load.
    for (let i = from; i < to; i += 32) {
      const writes: Promise<void>[] = [];
      for (let j = i; j < Math.min(to, i + 32); j++)
        writes.push(device.write((j % 1024) * BLOCK, blockOf(j)));
      await Promise.all(writes);
    }
  };
  await write(0, flushed);
  await device.flush();
  await write(flushed, flushed + after);
  // Every write has landed (each resolved); a copy now is the store as a
  // process exit would leave it, with no clean close.
  const bytes = new Uint8Array(await store.read(0, store.size));
  if (!clean) return bytes;
  await device.close();
  return new Uint8Array(await store.reopen().read(0, store.size));
}

/** Store offset of write `i`'s record, which lies whole inside the replay window `window`. */
function recordIn(bytes: Uint8Array, i: number, window: number): number {
  const marker = Buffer.from(blockOf(i).subarray(0, 8));
  const at = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).indexOf(marker);
  expect(at, `record of write ${i}`).toBeGreaterThan(0);
  expect(Math.floor((at - RING_START) / WINDOW), `window of write ${i}`).toBe(window);
  expect(Math.floor((at + BLOCK - 1 - RING_START) / WINDOW)).toBe(window);
  return at;
}

/** Opens a JournalDevice over a copy of `bytes`: its sequence and a digest of its content, or the error. */
async function openCopy(
  bytes: Uint8Array,
): Promise<{ sequence: number; content: string } | { error: string }> {
  const production = await MemoryDevice.create({ size: 1024 * BLOCK, blockSize: BLOCK });
  const store = await MemoryDevice.create({ size: bytes.length, blockSize: 512 });
  await store.write(0, bytes);
  try {
    const device = await JournalDevice.open(production, store, { checkpointAt: 1 });
    const content = createHash('sha256')
      .update(await device.read(0, 1024 * BLOCK))
      .digest('hex');
    const out = { sequence: device.sequence, content };
    await device.close();
    return out;
  } catch (err) {
    return { error: `${(err as { code?: string }).code}: ${(err as Error).message}` };
  }
}

/** Replays a copy of `bytes` on this thread alone, then with workers checking every record in a window; both outcomes. */
async function bothWays(
  bytes: Uint8Array,
): Promise<[Awaited<ReturnType<typeof openCopy>>, Awaited<ReturnType<typeof openCopy>>]> {
  parallelReplay.minBytes = Number.POSITIVE_INFINITY;
  const alone = await openCopy(bytes);
  parallelReplay.minBytes = 0;
  parallelReplay.minCpus = 0;
  parallelReplay.callerHelps = false;
  const before = parallelReplay.workerVerdicts;
  const parallel = await openCopy(bytes);
  expect(parallelReplay.workerVerdicts - before, 'batches judged by a worker').toBeGreaterThan(0);
  return [alone, parallel];
}

describe('JournalDevice replay with CRC checks on worker threads', () => {
  const saved = { ...parallelReplay };
  beforeEach(() => Object.assign(parallelReplay, saved));
  afterEach(() => Object.assign(parallelReplay, saved));

  it('replays an intact journal of several windows exactly as one thread does', async () => {
    const bytes = await journalBytes(2000, 600, false);
    const [alone, parallel] = await bothWays(bytes);
    expect('sequence' in alone && alone.sequence).toBe(2600);
    expect(parallel).toEqual(alone);
  });

  it('replays two journals at once with workers, each as one thread alone does', async () => {
    const first = await journalBytes(2000, 600, false);
    const second = await journalBytes(1200, 1300, false);
    parallelReplay.minBytes = Number.POSITIVE_INFINITY;
    const alone = [await openCopy(first), await openCopy(second)];
    parallelReplay.minBytes = 0;
    parallelReplay.minCpus = 0;
    parallelReplay.callerHelps = false;
    // Their frames interleave at every await: neither may see the other's.
    expect(await Promise.all([openCopy(first), openCopy(second)])).toEqual(alone);
    expect(alone.map((a) => 'sequence' in a && a.sequence)).toEqual([2600, 2500]);
  });

  it('drops a torn tail from a damaged record a worker checked, as one thread does', async () => {
    const bytes = await journalBytes(1500, 1100, false);
    // Write 2300 (not flushed) sits in the third window.
    bytes[recordIn(bytes, 2300, 2) + 1000]! ^= 0x40;
    const [alone, parallel] = await bothWays(bytes);
    expect('sequence' in alone && alone.sequence).toBeLessThanOrEqual(2300);
    expect('sequence' in alone && alone.sequence).toBeGreaterThan(2200);
    expect(parallel).toEqual(alone);
  });

  it('is ECORRUPT for a damaged durable record a worker checked, naming it as one thread does', async () => {
    const bytes = await journalBytes(2600, 0, true);
    bytes[recordIn(bytes, 1300, 1) + 4095]! ^= 0x01;
    const [alone, parallel] = await bothWays(bytes);
    expect('error' in alone && alone.error).toMatch(
      /^ECORRUPT: .*fails its checksum.*closed cleanly/,
    );
    expect(parallel).toEqual(alone);
  });
});
