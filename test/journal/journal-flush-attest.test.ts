import fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { WRITE_OWNED } from '../../src/base/index.js';
import { FileDevice, JournalDevice, MemoryDevice } from '../../src/index.js';
import { DURABLE_MARK_AT } from '../../src/journal/durable-mark.js';
import { expectBytes, fill } from '../support/bytes.js';
import { expectCode } from '../support/error-code.js';
import { JournalRig } from '../support/journal-rig.js';

/*
 * After flush() resolves, a damaged record it covered is ECORRUPT at open,
 * not a torn tail — even when the process dies right after the flush,
 * before anything else is written: flush waits for a landed frame header
 * whose durableSeq covers it (the attestation). The same holds for the
 * note of a snapshot() that resolved. The remaining window (a power cut
 * before that header is durable, plus damage in the same group) is in
 * docs/ARCHITECTURE.md "Crash ordering".
 */

const BS = 512;

/** The one journal offset holding a 512-byte run of `value`. */
async function onlyAt(rig: JournalRig, value: number): Promise<number> {
  const at = await rig.find(value);
  expect(at, `runs of ${value} in the journal`).toHaveLength(1);
  return at[0]!;
}

describe('JournalDevice after flush() and no close', () => {
  it.each([
    ['the second-to-last record of the last flushed group', 0xa3],
    ['the last record of the last flushed group', 0xa4],
  ])('is ECORRUPT at open for a bit flipped in %s', async (_what, value) => {
    const rig = await JournalRig.create();
    const d = rig.device;
    await d.write(0, fill(BS, 0xa0));
    await d.flush();
    await Promise.all([1, 2, 3, 4].map((b) => d.write(b * BS, fill(BS, 0xa0 + b))));
    await d.flush();
    // The process dies now: nothing after the flush gets a turn.
    rig.abandon();
    await rig.corrupt((await onlyAt(rig, value)) + 7);
    const err = await expectCode(rig.open(), 'ECORRUPT');
    expect(err.message).toMatch(/store offset \d+/);
  });

  it('keeps dropping an unflushed torn tail, and loses nothing flushed', async () => {
    const rig = await JournalRig.create();
    const d = rig.device;
    await d.write(0, fill(BS, 0xa0));
    await d.flush();
    await d.write(BS, fill(BS, 0xa1));
    rig.abandon();
    await rig.corrupt((await onlyAt(rig, 0xa1)) + 7);
    const again = await rig.open();
    expect(again.sequence).toBe(1);
    expectBytes('flushed', await again.read(0, BS), fill(BS, 0xa0));
    expectBytes('torn', await again.read(BS, BS), fill(BS, 0));
    await again.close();
  });

  it('a snapshot whose snapshot() resolved does not vanish when its note is damaged', async () => {
    const rig = await JournalRig.create({ cow: true });
    const d = rig.device;
    await d.write(0, fill(BS, 0xa0));
    await d.flush();
    await d.snapshot({ name: 'nightly-0xc5c5c5c5' });
    rig.abandon();
    // The note record holds the name; flip a bit inside it.
    const name = new TextEncoder().encode('nightly-0xc5c5c5c5');
    const disk = rig.journalDisk.reopen();
    const all = Buffer.from(await disk.read(0, disk.size));
    const at = all.indexOf(name);
    expect(at).toBeGreaterThan(0);
    expect(all.indexOf(name, at + 1), 'the name is written once').toBe(-1);
    await rig.corrupt(at + 3);
    await expectCode(rig.open(), 'ECORRUPT');
  });
});

describe('JournalDevice on a FileDevice journal store', () => {
  /** Runs `body` with a fresh FileDevice journal store in a temporary directory, removed after. */
  async function withFileStore(
    body: (production: MemoryDevice, store: FileDevice, path: string) => Promise<void>,
  ): Promise<void> {
    const dir = fs.mkdtempSync(join(tmpdir(), 'blocksnap-mark-'));
    try {
      const production = await MemoryDevice.create({ size: 64 * BS, blockSize: BS });
      const path = join(dir, 'journal.img');
      const store = await FileDevice.open(path, { size: 256 * 1024, blockSize: BS, create: true });
      await body(production, store, path);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }

  it('leaves the durable mark in the file when flush() resolves (written on the calling thread)', async () => {
    await withFileStore(async (production, store, path) => {
      const d = await JournalDevice.create(production, store);
      await Promise.all([1, 2, 3].map((b) => d.write(b * BS, fill(BS, b))));
      await d.flush();
      // Read straight from the file, before anything else gets a turn.
      const mark = fs.readFileSync(path).subarray(DURABLE_MARK_AT, DURABLE_MARK_AT + BS);
      const view = new DataView(mark.buffer, mark.byteOffset, mark.byteLength);
      expect(view.getFloat64(8, true)).toBe(d.sequence);
      await d.close();
    });
  });

  it('puts the next writes of every caller a flush woke in one frame, the one that wrote the mark too', async () => {
    await withFileStore(async (production, store) => {
      const owned = vi.spyOn(store, WRITE_OWNED);
      const d = await JournalDevice.create(production, store);
      owned.mockClear();
      const writers = 8;
      const rounds = 3;
      // The bench's durable loop: each caller writes, awaits its flush, and writes again.
      await Promise.all(
        Array.from({ length: writers }, async (_, w) => {
          for (let r = 0; r < rounds; r++) {
            await d.write((w * rounds + r) * BS, fill(BS, 1 + w * rounds + r));
            await d.flush();
          }
        }),
      );
      // Records per frame (a frame's pieces: its header, then one per record);
      // an empty frame attesting the last flush may follow.
      const records = owned.mock.calls.map((call) => call[1].length - 1).filter((n) => n > 0);
      expect(records).toEqual(Array.from({ length: rounds }, () => writers));
      for (let b = 0; b < writers * rounds; b++) {
        expectBytes(`block ${b}`, await d.read(b * BS, BS), fill(BS, 1 + b));
      }
      await d.close();
    });
  });
});

describe('JournalDevice: close leaves nothing scheduled', () => {
  it('a flush’s pending attestation is cancelled by close, so a closed journal is not kept alive', async () => {
    // The attestation waits for an event-loop turn; a caller whose I/O never
    // yields one (memory devices in a tight loop, as the soak's model tests)
    // kept every closed journal alive until it came: the soak ran out of heap.
    const immediates = () =>
      process.getActiveResourcesInfo().filter((r) => r === 'Immediate').length;
    const before = immediates();
    const production = await MemoryDevice.create({ size: 16 * 512, blockSize: 512 });
    const journal = await JournalDevice.create(
      production,
      await MemoryDevice.create({ size: 64 * 1024, blockSize: 512 }),
    );
    await journal.write(0, new Uint8Array(512).fill(1));
    await journal.flush();
    expect(immediates()).toBeGreaterThan(before);
    await journal.close();
    expect(immediates()).toBe(before);
  });
});
