import { describe, expect, it } from 'vitest';
import {
  applyStream,
  BlockDeviceError,
  type ChangeTracking,
  CowSnapshotDevice,
  type Extent,
  exportStream,
  MemoryDevice,
  SelectiveSnapshotDevice,
  type Snapshot,
  type SnapshotInfo,
  type SnapshotOptions,
} from '../../src/index.js';
import { expectSameBytes, seededBytes } from '../support/bytes.js';
import { PassThroughDevice } from '../support/pass-through-device.js';
import { collect } from '../support/stream-bytes.js';

const KiB = 1024;
const MiB = 1 << 20;
const BS = 4 * KiB;
const SIZE = 8 * MiB;

type Kind = 'cow' | 'selective';

/** A change-tracking device as one outside the library would be: the public methods, forwarded. */
class PublicMethodsOnly extends PassThroughDevice implements ChangeTracking {
  constructor(readonly device: CowSnapshotDevice) {
    super(device);
  }
  snapshot(options?: SnapshotOptions): Promise<Snapshot> {
    return this.device.snapshot(options);
  }
  listSnapshots(): SnapshotInfo[] {
    return this.device.listSnapshots();
  }
  openSnapshot(id: string): Promise<Snapshot> {
    return this.device.openSnapshot(id);
  }
  deleteSnapshot(id: string): Promise<void> {
    return this.device.deleteSnapshot(id);
  }
  restore(id: string): Promise<void> {
    return this.device.restore(id);
  }
  changedExtents(fromId: string, toId: string): Extent[] {
    return this.device.changedExtents(fromId, toId);
  }
  snapshotExtents(id: string): Extent[] {
    return this.device.snapshotExtents(id);
  }
}

async function device(kind: Kind): Promise<CowSnapshotDevice | SelectiveSnapshotDevice> {
  const origin = await MemoryDevice.create({ size: SIZE, blockSize: BS });
  const store = await MemoryDevice.create({ size: 32 * MiB, blockSize: BS });
  return kind === 'cow'
    ? CowSnapshotDevice.create(origin, store, { maxSnapshots: 8 })
    : SelectiveSnapshotDevice.create(origin, store, { maxSnapshots: 8 });
}

/** When, during the export, the writes to the snapshot are called. */
type When = 'at the call' | 'after the header' | 'mid-frames';

/** Reads `stream` to its end, calling `during` after `after` chunks. */
async function readAll(
  stream: ReadableStream<Uint8Array>,
  after: number,
  during: () => void,
): Promise<Uint8Array[]> {
  const reader = stream.getReader();
  const chunks: Uint8Array[] = [];
  for (let n = 0; ; n++) {
    if (n === after) during();
    const { done, value } = await reader.read();
    if (done) return chunks;
    chunks.push(value);
  }
}

async function* replay(chunks: Uint8Array[]): AsyncGenerator<Uint8Array> {
  yield* chunks;
}

describe('exporting a writable snapshot', () => {
  for (const kind of ['cow', 'selective'] as const) {
    for (const incremental of [true, false]) {
      for (const when of ['at the call', 'after the header', 'mid-frames'] as When[]) {
        it(`${kind}, ${incremental ? 'incremental' : 'full'}: writes called ${when} reject EBUSY, and the stream is the snapshot as it was`, async () => {
          const d = await device(kind);
          await d.write(0, seededBytes(SIZE, 1));
          const a = await d.snapshot();
          const base = await d.read(0, SIZE);
          // Three 1 MiB frames of change, so the export is mid-stream for a while.
          await d.write(0, seededBytes(3 * MiB, 2));
          const b = await d.snapshot({ writable: true });
          await b.write(5 * MiB, seededBytes(BS, 3));
          const wanted = await b.read(0, SIZE);

          const stream = exportStream(d, incremental ? { from: a.id, to: b.id } : { to: b.id });
          const writes: Promise<unknown>[] = [];
          const writeMeanwhile = () => {
            // One block the stream carries, one it does not (an incremental
            // carries only what changed since `a`).
            writes.push(
              b.write(0, seededBytes(BS, 4)).then(
                () => 'written',
                (e: unknown) => e,
              ),
              b.write(7 * MiB, seededBytes(BS, 5)).then(
                () => 'written',
                (e: unknown) => e,
              ),
            );
          };
          const after = when === 'at the call' ? 0 : when === 'after the header' ? 1 : 5;
          if (when === 'at the call') writeMeanwhile();
          const chunks = await readAll(stream, when === 'at the call' ? -1 : after, writeMeanwhile);
          for (const result of await Promise.all(writes)) {
            expect(BlockDeviceError.is(result, 'EBUSY'), String(result)).toBe(true);
          }
          expectSameBytes(
            'the snapshot, unchanged by the refused writes',
            await b.read(0, SIZE),
            wanted,
          );

          const target = await MemoryDevice.create({ size: SIZE, blockSize: BS });
          if (incremental) await target.write(0, base);
          await applyStream(replay(chunks), target);
          expectSameBytes('the applied target', await target.read(0, SIZE), wanted);

          // The export is over: the snapshot takes writes again.
          await b.write(7 * MiB, seededBytes(BS, 6));
          await d.close();
        });
      }
    }
  }

  it('a write called before exportStream() and still in flight is in the stream, even on a block the change tables did not name yet', async () => {
    const d = await device('cow');
    const a = await d.snapshot();
    const b = await d.snapshot({ writable: true });
    const inFlight = b.write(6 * MiB, seededBytes(BS, 7));
    const stream = exportStream(d, { from: a.id, to: b.id });
    await inFlight;
    const wanted = await b.read(0, SIZE);
    const target = await MemoryDevice.create({ size: SIZE, blockSize: BS });
    await applyStream(replay(await collect(stream).then((x) => [x])), target);
    expectSameBytes('the applied target', await target.read(0, SIZE), wanted);
    await d.close();
  });

  it('a cancelled export, one that failed and two at once each release the snapshot when they end', async () => {
    const d = await device('cow');
    const a = await d.snapshot();
    const b: Snapshot = await d.snapshot({ writable: true });
    await b.write(0, seededBytes(2 * MiB, 8));

    const cancelled = exportStream(d, { from: a.id, to: b.id }).getReader();
    await cancelled.read();
    await expect(b.write(0, seededBytes(BS, 9))).rejects.toMatchObject({ code: 'EBUSY' });
    await cancelled.cancel();
    await b.write(0, seededBytes(BS, 9));

    const aborting = new AbortController();
    const aborted = exportStream(d, { to: b.id, signal: aborting.signal }).getReader();
    await aborted.read();
    aborting.abort(new Error('stop'));
    await expect(aborted.read()).rejects.toThrow('stop');
    await b.write(0, seededBytes(BS, 10));

    const first = exportStream(d, { to: b.id });
    const second = exportStream(d, { to: b.id }).getReader();
    await collect(first);
    // One export still holds it.
    await expect(b.write(0, seededBytes(BS, 11))).rejects.toMatchObject({ code: 'EBUSY' });
    await second.cancel();
    await b.write(0, seededBytes(BS, 11));
    await d.close();
  });

  it('a read-only snapshot exports with writes to the device going on, and the writable snapshot next to it is not frozen', async () => {
    const d = await device('cow');
    const a = await d.snapshot();
    const w = await d.snapshot({ writable: true });
    const reader = exportStream(d, { to: a.id }).getReader();
    await reader.read();
    await d.write(0, seededBytes(BS, 12));
    await w.write(0, seededBytes(BS, 13));
    await reader.cancel();
    await d.close();
  });

  it('a device that cannot freeze a snapshot cannot export a writable one (EINVAL), and can export a read-only one', async () => {
    const d = await device('cow');
    const a = await d.snapshot();
    const w = await d.snapshot({ writable: true });
    const wrapped = new PublicMethodsOnly(d);
    expect(() => exportStream(wrapped, { to: w.id })).toThrow(
      expect.objectContaining({ code: 'EINVAL' }),
    );
    // Nothing was frozen by the refused call.
    await w.write(0, seededBytes(BS, 14));
    await collect(exportStream(wrapped, { to: a.id }));
    await d.close();
  });
});
