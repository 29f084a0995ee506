import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  applyStream,
  CowSnapshotDevice,
  exportStream,
  FileDevice,
  MemoryDevice,
} from '../../src/index.js';
import { expectSameBytes, seededBytes } from '../support/bytes.js';

/*
 * Every chunk exportStream hands its consumer is a buffer of the consumer's
 * own, like a read result (src/device.ts, BlockDevice.read): a consumer that
 * transfers each chunk to a worker as it arrives detaches nothing the export
 * still uses, and the stream it passes on applies cleanly.
 */

const KiB = 1024;
const BS = 4 * KiB;
const SIZE = 2 << 20;

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'blocksnap-stream-transfer-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Takes every chunk of `stream` by transferring its buffer, as a hand-off to a worker does. */
async function transferEach(stream: ReadableStream<Uint8Array>): Promise<Uint8Array[]> {
  const taken: Uint8Array[] = [];
  for await (const chunk of stream) {
    expect(chunk.byteOffset, 'a chunk starts its buffer').toBe(0);
    expect(chunk.buffer.byteLength, 'a chunk is its whole buffer').toBe(chunk.length);
    taken.push(structuredClone(chunk, { transfer: [chunk.buffer as ArrayBuffer] }));
  }
  return taken;
}

/** `chunks` again, as the stream a worker would pass on. */
async function* replay(chunks: readonly Uint8Array[]): AsyncIterable<Uint8Array> {
  yield* chunks;
}

describe('exportStream chunks own their buffers', () => {
  it('a consumer that transfers every chunk gets a full and an incremental stream that apply', async () => {
    const origin = await FileDevice.open(join(dir, 'origin.img'), { size: SIZE, create: true });
    const store = await FileDevice.open(join(dir, 'store.img'), { size: 8 << 20, create: true });
    const cow = await CowSnapshotDevice.create(origin, store, { maxSnapshots: 4 });
    try {
      await cow.write(0, seededBytes(SIZE, 1));
      const a = await cow.snapshot();
      const aContent = await a.read(0, SIZE);
      await cow.write(3 * BS + 5, seededBytes(5 * BS, 2));
      await cow.write(300 * BS, seededBytes(100 * BS, 3));
      const b = await cow.snapshot();
      const bContent = await b.read(0, SIZE);
      const target = await MemoryDevice.create({ size: SIZE, blockSize: BS });

      await applyStream(replay(await transferEach(exportStream(cow, { to: a.id }))), target);
      expectSameBytes('target after the full stream', await target.read(0, SIZE), aContent);
      // Incremental from a read-only snapshot: its frames' checksums come
      // from the manifest, which the consumer has been handed too.
      const incremental = await transferEach(exportStream(cow, { from: a.id, to: b.id }));
      await applyStream(replay(incremental), target);
      expectSameBytes('target after the incremental', await target.read(0, SIZE), bContent);
    } finally {
      await cow.close();
    }
  });
});
