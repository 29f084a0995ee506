import { describe, expect, it } from 'vitest';
import { CowSnapshotDevice, MemoryDevice, type ProgressEvent } from '../../src/index.js';
import { applyStream, exportStream } from '../../src/stream/stream.js';
import { expectSameBytes, seededBytes } from '../support/bytes.js';
import { codeOf, codeThrown } from '../support/error-code.js';
import { chunked, collect, layoutOf, withFrames } from '../support/stream-bytes.js';

const KiB = 1024;
const MiB = 1 << 20;
const BS = 4 * KiB;
const SIZE = 8 * MiB;

/**
 * An 8 MiB device: snapshot A holding 3 MiB of data from 1 MiB, zeros
 * elsewhere; snapshot B with 2.5 MiB of A rewritten and one extent zeroed.
 */
async function scenario() {
  const cow = await CowSnapshotDevice.create(
    await MemoryDevice.create({ size: SIZE, blockSize: BS }),
    await MemoryDevice.create({ size: 16 * MiB, blockSize: BS }),
    { maxSnapshots: 4 },
  );
  await cow.write(MiB, seededBytes(3 * MiB, 1));
  const a = await cow.snapshot({ name: 'A' });
  await cow.write(MiB + 8 * KiB, seededBytes(2.5 * MiB, 2));
  await cow.write(6 * MiB, new Uint8Array(64 * KiB));
  const b = await cow.snapshot({ name: 'B', writable: true });
  return { cow, a, b, aContent: await a.read(0, SIZE), bContent: await b.read(0, SIZE) };
}

/** Checks a run's events: first `done: 0`, `total` fixed, `done` never down, last `done === total`. */
function expectWellFormed(events: ProgressEvent[], operation: string, total: number): void {
  expect(events.length).toBeGreaterThan(1);
  expect(events[0]).toEqual({ operation, done: 0, total });
  for (const [i, e] of events.entries()) {
    expect(e.operation).toBe(operation);
    expect(e.total).toBe(total);
    expect(e.done).toBeLessThanOrEqual(total);
    if (i > 0) expect(e.done).toBeGreaterThan(events[i - 1]!.done);
  }
  expect(events.at(-1)!.done).toBe(total);
}

describe('exportStream and applyStream report progress in bytes', () => {
  it('a full stream: total is the device size from the first event, done climbs to it on both sides', async () => {
    const { cow, a, aContent } = await scenario();
    const exported: ProgressEvent[] = [];
    const bytes = await collect(
      exportStream(cow, { to: a.id, onProgress: (e) => exported.push(e) }),
    );
    expectWellFormed(exported, 'export', SIZE);
    // At least every MiB: a bar moves.
    expect(exported.length).toBeGreaterThanOrEqual(SIZE / MiB + 1);

    const applied: ProgressEvent[] = [];
    const target = await MemoryDevice.create({ size: SIZE, blockSize: BS });
    await applyStream(chunked(bytes, [70_000]), target, { onProgress: (e) => applied.push(e) });
    expectWellFormed(applied, 'apply', SIZE);
    expectSameBytes('target', await target.read(0, SIZE), aContent, BS);
    await cow.close();
  });

  it('an incremental stream: total is what changed, known before the first frame', async () => {
    const { cow, a, b, aContent } = await scenario();
    const changed = cow.changedExtents(a.id, b.id).reduce((sum, e) => sum + e.length, 0);
    const exported: ProgressEvent[] = [];
    const stream = exportStream(cow, { from: a.id, to: b.id, onProgress: (e) => exported.push(e) });
    const bytes = await collect(stream);
    expectWellFormed(exported, 'export', changed);

    const applied: ProgressEvent[] = [];
    const target = await MemoryDevice.create({ size: SIZE, blockSize: BS });
    await target.write(0, aContent);
    await applyStream(chunked(bytes), target, { onProgress: (e) => applied.push(e) });
    expectWellFormed(applied, 'apply', changed);
    // Applied again, every frame is skipped, and still counted.
    const again: ProgressEvent[] = [];
    await applyStream(chunked(bytes), target, { onProgress: (e) => again.push(e) });
    expectWellFormed(again, 'apply', changed);
    await cow.close();
  });

  it('a callback that throws errors the export with what it threw, and lets go of the snapshot', async () => {
    const { cow, b } = await scenario();
    const thrown = new Error('progress bar crashed');
    let calls = 0;
    const stream = exportStream(cow, {
      to: b.id,
      onProgress: () => {
        if (++calls === 3) throw thrown;
      },
    });
    const outcome = await collect(stream).then(
      () => 'ended',
      (err: unknown) => err,
    );
    // The consumer never sees an end: the bytes it got are not a whole stream.
    expect(outcome).toBe(thrown);
    // The writable B, frozen during the export, takes writes again.
    await b.write(0, seededBytes(BS, 9));
    expect(cow.listSnapshots()).toHaveLength(2);
    await cow.close();
  });

  it('a callback that throws stops the apply with what it threw, a prefix of frames applied; applying again finishes', async () => {
    const { cow } = await scenario();
    // Data everywhere: eight frames, more than are in flight at once.
    await cow.write(0, seededBytes(SIZE, 3));
    const c = await cow.snapshot({ name: 'C' });
    const cContent = await c.read(0, SIZE);
    const bytes = await collect(exportStream(cow, { to: c.id }));
    const target = await MemoryDevice.create({ size: SIZE, blockSize: BS });
    const thrown = new Error('progress bar crashed');
    let done = 0;
    const err = await applyStream(chunked(bytes, [50_000]), target, {
      onProgress: (e) => {
        if (e.done >= 2 * MiB) throw thrown;
        done = e.done;
      },
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBe(thrown);
    // What the target holds is the frames before some point, each whole:
    // some of A, not all of it.
    const { frames } = layoutOf(bytes);
    const content = Buffer.from(await target.read(0, SIZE));
    const prefixes = frames.map((_, k) => withFrames(new Uint8Array(SIZE), frames.slice(0, k)));
    expect(prefixes.some((p) => content.equals(p))).toBe(true);
    expect(content.some((x) => x !== 0)).toBe(true);
    expect(content.equals(cContent)).toBe(false);
    expect(done).toBeGreaterThan(0);

    await applyStream(chunked(bytes), target);
    expectSameBytes('target', await target.read(0, SIZE), cContent, BS);
    await cow.close();
  });

  it('onProgress must be a function (EINVAL before anything is read)', async () => {
    const { cow, a } = await scenario();
    const bad = 'every MiB' as unknown as (e: ProgressEvent) => void;
    expect(codeThrown(() => exportStream(cow, { to: a.id, onProgress: bad }))).toBe('EINVAL');
    const target = await MemoryDevice.create({ size: SIZE, blockSize: BS });
    let pulled = 0;
    async function* watched(): AsyncGenerator<Uint8Array> {
      pulled++;
      yield new Uint8Array(1);
    }
    expect(await codeOf(applyStream(watched(), target, { onProgress: bad }))).toBe('EINVAL');
    expect(pulled).toBe(0);
    await cow.close();
  });
});
