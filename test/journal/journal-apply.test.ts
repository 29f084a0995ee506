import { describe, expect, it } from 'vitest';
import { SECTOR } from '../../src/base/range.js';
import { MemoryDevice } from '../../src/index.js';
import { RING_START } from '../../src/journal/index.js';
import { applyJournal } from '../../src/journal/journal-checkpoint.js';
import { ChangesTable } from '../../src/journal/journal-table.js';
import { expectSameBytes } from '../support/bytes.js';
import { PassThroughDevice } from '../support/pass-through-device.js';

const BS = 4096;
const MiB = 1 << 20;

/** Production whose writes take a few milliseconds, recording the most in flight at once. */
class SlowWrites extends PassThroughDevice {
  inFlight = 0;
  bytesInFlight = 0;
  maxInFlight = 0;
  maxBytesInFlight = 0;

  override async write(offset: number, data: Uint8Array): Promise<void> {
    this.inFlight++;
    this.bytesInFlight += data.length;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    this.maxBytesInFlight = Math.max(this.maxBytesInFlight, this.bytesInFlight);
    const written = super.write(offset, data);
    await new Promise((resolve) => setTimeout(resolve, 2));
    try {
      await written;
    } finally {
      this.inFlight--;
      this.bytesInFlight -= data.length;
    }
  }
}

/**
 * `blocks` (ascending) journalled at consecutive sectors in reverse order, so
 * adjacent blocks are never adjacent in the journal; applied to a slow
 * production. Returns the production and what it must hold.
 */
async function apply(blocks: number[]): Promise<{ production: SlowWrites; expected: Uint8Array }> {
  const size = (blocks.at(-1)! + 1) * BS;
  const journal = await MemoryDevice.create({
    size: RING_START + blocks.length * BS,
    blockSize: 512,
  });
  const production = new SlowWrites(await MemoryDevice.create({ size, blockSize: BS }));
  const table = new ChangesTable();
  const expected = new Uint8Array(size);
  for (let i = 0; i < blocks.length; i++) {
    const block = blocks[i]!;
    const slot = blocks.length - 1 - i;
    const image = new Uint8Array(BS).fill((block % 251) + 1);
    await journal.write(RING_START + slot * BS, image);
    table.set(block, (slot * BS) / SECTOR);
    expected.set(image, block * BS);
  }
  await applyJournal({
    keys: Float64Array.from(blocks),
    table,
    journal,
    production,
    blockSize: BS,
    onProgress: () => {},
  });
  expectSameBytes('production', await production.read(0, size), expected);
  return { production, expected };
}

describe('applyJournal (the copy a checkpoint makes)', () => {
  it('keeps 32 scattered single-block writes in flight, not a handful', async () => {
    const blocks = Array.from({ length: 200 }, (_, i) => 2 * i);
    const { production } = await apply(blocks);
    expect(production.maxInFlight).toBe(32);
  });

  it('holds at most 8 MiB of coalesced run images at once', async () => {
    // 24 MiB of adjacent blocks: 24 runs of 1 MiB.
    const blocks = Array.from({ length: (24 * MiB) / BS }, (_, i) => i);
    const { production } = await apply(blocks);
    expect(production.maxBytesInFlight).toBe(8 * MiB);
    expect(production.maxInFlight).toBe(8);
  });
});
