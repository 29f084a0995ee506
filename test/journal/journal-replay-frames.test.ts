import { describe, expect, it } from 'vitest';
import { JournalDevice, MemoryDevice } from '../../src/index.js';
import { RING_START } from '../../src/journal/index.js';
import { decodeFrameHeader, peekFrame } from '../../src/journal/journal-frame.js';
import { ScanReader } from '../../src/store/index.js';

/*
 * Replay checks a frame the reader's current window holds whole without a
 * promise (replay-frame.ts readCachedFrame), and a frame running from one
 * window into the next through reads (readFrame). Both must judge a damaged
 * record the same way: these damage one record in a frame of each kind, in
 * a journal of several windows, and check where replay stops.
 */

const BLOCK = 4096;
const WINDOW = ScanReader.WINDOW;
const RING = 16 * 1024 * 1024;
const PRODUCTION = 1024 * BLOCK;

/** The journal store's bytes after `flushed` writes that were flushed and `after` more that were not; closed cleanly or not. */
async function journalBytes(flushed: number, after: number, clean: boolean): Promise<Uint8Array> {
  const production = await MemoryDevice.create({ size: PRODUCTION, blockSize: BLOCK });
  const store = await MemoryDevice.create({ size: RING_START + RING, blockSize: 512 });
  const device = await JournalDevice.create(production, store, { checkpointAt: 1 });
  const write = async (from: number, to: number): Promise<void> => {
    // 32 in flight, so frames hold several records, as under load.
    for (let i = from; i < to; i += 32) {
      const writes: Promise<void>[] = [];
      for (let j = i; j < Math.min(to, i + 32); j++) {
        writes.push(device.write((j % 1024) * BLOCK, new Uint8Array(BLOCK).fill(j & 0xff)));
      }
      await Promise.all(writes);
    }
  };
  await write(0, flushed);
  await device.flush();
  await write(flushed, flushed + after);
  const bytes = new Uint8Array(await store.read(0, store.size));
  if (!clean) return bytes;
  await device.close();
  return new Uint8Array(await store.reopen().read(0, store.size));
}

interface FrameAt {
  /** Store offset of its header. */
  at: number;
  firstSeq: number;
  count: number;
  /** Store offset of each record's data. */
  records: number[];
  end: number;
}

/** The chain of frames from the ring's start (a fresh journal's head), as the store holds them. */
function framesOf(bytes: Uint8Array): FrameAt[] {
  const epoch = new DataView(bytes.buffer, bytes.byteOffset).getUint32(RING_START + 4, true);
  const frames: FrameAt[] = [];
  let at = RING_START;
  for (;;) {
    const count = peekFrame(bytes.subarray(at, at + 512), epoch);
    if (count < 0) return frames;
    const header = decodeFrameHeader(bytes.subarray(at, at + RING_START + RING - at), {
      productionSize: PRODUCTION,
      blockSize: BLOCK,
    });
    if (typeof header === 'string') return frames;
    const records: number[] = [];
    let p = at + header.bytes - header.records.reduce((n, r) => n + r.length, 0);
    for (const r of header.records) {
      records.push(p);
      p += r.length;
    }
    frames.push({ at, firstSeq: header.firstSeq, count: header.records.length, records, end: p });
    at = p;
  }
}

const windowOf = (at: number): number => Math.floor((at - RING_START) / WINDOW);

/** The first frame with records past `afterSeq` that runs from window `w` into the next (`across`), or lies whole in `w`. */
function frameIn(frames: FrameAt[], w: number, across: boolean, afterSeq: number): FrameAt {
  const frame = frames.find(
    (f) =>
      f.firstSeq > afterSeq &&
      f.count >= 4 &&
      windowOf(f.at) === w &&
      windowOf(f.end - 1) === (across ? w + 1 : w),
  );
  expect(frame, `a frame ${across ? 'across the end of' : 'inside'} window ${w}`).toBeDefined();
  return frame!;
}

/** Opens a JournalDevice over a copy of `bytes`: its sequence, or the error. */
async function open(bytes: Uint8Array): Promise<{ sequence: number } | { error: string }> {
  const production = await MemoryDevice.create({ size: PRODUCTION, blockSize: BLOCK });
  const store = await MemoryDevice.create({ size: bytes.length, blockSize: 512 });
  await store.write(0, bytes);
  try {
    const device = await JournalDevice.open(production, store, { checkpointAt: 1 });
    const out = { sequence: device.sequence };
    await device.close();
    return out;
  } catch (err) {
    return { error: `${(err as { code?: string }).code}: ${(err as Error).message}` };
  }
}

describe('JournalDevice replay of frames inside a window and across windows', () => {
  it('drops a torn tail from a damaged record, wherever its frame lies', async () => {
    const bytes = await journalBytes(1000, 1500, false);
    const frames = framesOf(bytes);
    expect(frames.at(-1)!.end - RING_START).toBeGreaterThan(2 * WINDOW);
    const intact = await open(bytes);
    expect(intact).toEqual({ sequence: 2500 });
    for (const across of [true, false]) {
      const frame = frameIn(frames, 1, across, 1000);
      // The last record: across a window's end, it is in the next window.
      const damaged = frame.records[frame.count - 1]!;
      if (across) expect(windowOf(damaged)).toBe(2);
      const copy = bytes.slice();
      copy[damaged + 100]! ^= 0x08;
      // Not flushed, so not attested: the frame and all after it are a torn tail.
      expect(await open(copy), across ? 'across' : 'inside').toEqual({
        sequence: frame.firstSeq - 1,
      });
    }
  });

  it('is ECORRUPT for a damaged record after a clean close, naming it, wherever its frame lies', async () => {
    const bytes = await journalBytes(2500, 0, true);
    const frames = framesOf(bytes);
    for (const across of [true, false]) {
      const frame = frameIn(frames, 1, across, 0);
      const copy = bytes.slice();
      copy[frame.records[frame.count - 1]! + 4095]! ^= 0x80;
      const outcome = await open(copy);
      expect('error' in outcome && outcome.error, across ? 'across' : 'inside').toMatch(
        new RegExp(
          `^ECORRUPT: .*journal record ${frame.firstSeq} at store offset ${frame.at} is damaged \\(record ${frame.firstSeq + frame.count - 1} fails its checksum\\), but the journal was closed cleanly`,
        ),
      );
    }
  });
});
