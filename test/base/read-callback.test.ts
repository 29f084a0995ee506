import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { READ_CALLBACK, type ReadDone } from '../../src/base/owned-io.js';
import {
  type BlockDevice,
  BlockDeviceError,
  CowSnapshotDevice,
  FileDevice,
  JournalDevice,
  MemoryDevice,
} from '../../src/index.js';
import { expectSameBytes } from '../support/bytes.js';
import { noise } from '../support/copy-job-rig.js';
import { withHeldFs } from '../support/held-fs.js';
import { PassThroughDevice } from '../support/pass-through-device.js';

/*
 * READ_CALLBACK: `read` with a callback instead of a promise, which a
 * JournalDevice's live reads take on stores that have it (FileDevice,
 * MemoryDevice) so a read makes one promise, not two.
 */

const KiB = 1024;

type CallbackReader = { [READ_CALLBACK](offset: number, length: number, done: ReadDone): void };

/** Calls READ_CALLBACK and records every call of `done`. */
function readWithCallback(
  device: BlockDevice,
  offset: number,
  length: number,
): Promise<{ calls: number; err: Error | null; data: Uint8Array | undefined }> {
  return new Promise((resolve) => {
    const seen = { calls: 0, err: null as Error | null, data: undefined as Uint8Array | undefined };
    (device as unknown as CallbackReader)[READ_CALLBACK](offset, length, (err, data) => {
      seen.calls++;
      seen.err = err;
      seen.data = data;
      // Late enough to see a second call, if there were one.
      setTimeout(() => resolve(seen), 5);
    });
  });
}

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(join(tmpdir(), 'blocksnap-read-callback-'));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

const stores: [string, (content: Uint8Array) => Promise<BlockDevice>][] = [
  [
    'FileDevice',
    async (content) => {
      const device = await FileDevice.open(join(dir, 'a.img'), {
        size: content.length,
        blockSize: 4096,
        create: true,
      });
      await device.write(0, content);
      return device;
    },
  ],
  [
    'MemoryDevice',
    async (content) => {
      const device = await MemoryDevice.create({ size: content.length, blockSize: 4096 });
      await device.write(0, content);
      return device;
    },
  ],
];

describe.each(stores)('%s READ_CALLBACK', (_name, make) => {
  it('reads what read reads, calling back once; checks and errors are read’s', async () => {
    const content = noise(256 * KiB, 11);
    const device = await make(content);
    for (const [offset, length] of [
      [0, 4096],
      [1000, 70_000],
      [256 * KiB - 1, 1],
      [5, 0],
    ] as const) {
      const got = await readWithCallback(device, offset, length);
      expect(got.calls).toBe(1);
      expect(got.err).toBeNull();
      expectSameBytes(
        `[${offset}, +${length})`,
        got.data!,
        content.subarray(offset, offset + length),
      );
    }
    for (const [offset, length] of [
      [-1, 10],
      [256 * KiB - 5, 10],
      [0.5, 10],
    ] as const) {
      const got = await readWithCallback(device, offset, length);
      expect(got.calls).toBe(1);
      expect(got.data).toBeUndefined();
      expect(BlockDeviceError.is(got.err, 'ERANGE')).toBe(true);
    }
    await device.close();
    const closed = await readWithCallback(device, 0, 10);
    expect(closed.calls).toBe(1);
    expect(BlockDeviceError.is(closed.err, 'ECLOSED')).toBe(true);
  });
});

describe('FileDevice READ_CALLBACK', () => {
  it('counts its reads in flight: close waits until every one called back, with its bytes', async () => {
    const content = noise(64 * KiB, 12);
    const device = await stores[0]![1](content);
    await withHeldFs(['read'], async (held) => {
      // By read, not in completion order: the pool's threads finish them in any order.
      const got: { err: Error | null; data: Uint8Array | undefined }[] = [];
      let calls = 0;
      for (let i = 0; i < 4; i++) {
        (device as unknown as CallbackReader)[READ_CALLBACK](i * 4096, 4096, (err, data) => {
          calls++;
          got[i] = { err, data };
        });
      }
      await held.closeWaitsFor(device, 4);
      expect(calls).toBe(4);
      for (const [i, r] of got.entries()) {
        expect(r.err).toBeNull();
        expectSameBytes(`read ${i}`, r.data!, content.subarray(i * 4096, (i + 1) * 4096));
      }
    });
  });
});

/**
 * A store with READ_CALLBACK (512-byte blocks) that fails reads of block 3
 * — by calling back, by throwing, or by calling back and then throwing —
 * and holds reads of block 6 until `held` is called.
 */
class FailingCallbackStore extends PassThroughDevice {
  mode: 'callback' | 'throw' | 'call back, then throw' = 'callback';
  calls = 0;
  /** Reads of block 6 wait for this to be called. */
  held: (() => void) | undefined;

  [READ_CALLBACK](offset: number, length: number, done: ReadDone): void {
    this.calls++;
    if (offset === 6 * 512) {
      this.held = () => this.inner.read(offset, length).then((data) => done(null, data));
      return;
    }
    if (this.mode === 'call back, then throw' && offset === 3 * 512) {
      done(null, new Uint8Array(length).fill(3));
      throw new Error('driver threw after calling back');
    }
    if (offset < 4 * 512 && offset + length > 3 * 512) {
      if (this.mode === 'throw') throw new Error('driver threw');
      setTimeout(() => done(new Error('bad sector 3'), undefined), 1);
      return;
    }
    this.inner.read(offset, length).then(
      (data) => done(null, data),
      (err: unknown) => done(err as Error, undefined),
    );
  }
}

/**
 * The layers that read through a store's READ_CALLBACK on their hot path,
 * each with an operation that takes its read gate exclusively.
 */
const layers: [
  string,
  (store: FailingCallbackStore) => Promise<{ device: BlockDevice; exclusive: () => Promise<void> }>,
][] = [
  [
    'JournalDevice live reads (production store; a checkpoint takes the read gate)',
    async (store) => {
      const journal = await MemoryDevice.create({ size: 256 * KiB, blockSize: 512 });
      const device = await JournalDevice.create(store, journal);
      await device.write(0, new Uint8Array(512).fill(1));
      return { device, exclusive: () => device.checkpoint() };
    },
  ],
  [
    'CowSnapshotDevice origin reads (a restore takes the read gate)',
    async (store) => {
      const device = await CowSnapshotDevice.create(
        store,
        await MemoryDevice.create({ size: 1 << 20, blockSize: 512 }),
      );
      await device.write(0, new Uint8Array(512).fill(1));
      const snap = await device.snapshot();
      return { device, exclusive: () => device.restore(snap.id) };
    },
  ],
];

describe.each(layers)('%s through a store with READ_CALLBACK', (_name, make) => {
  async function rig() {
    const store = new FailingCallbackStore(
      await MemoryDevice.create({ size: 64 * 512, blockSize: 512 }),
    );
    return { store, ...(await make(store)) };
  }

  it('fails a read with EIO carrying the store’s error, and leaves the read gate either way', async () => {
    const { store, device, exclusive } = await rig();
    for (const mode of ['callback', 'throw'] as const) {
      store.mode = mode;
      const before = store.calls;
      const err = await device.read(3 * 512, 512).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(store.calls - before, mode).toBe(1);
      expect(BlockDeviceError.is(err, 'EIO'), mode).toBe(true);
      expect(((err as BlockDeviceError).cause as Error).message).toMatch(
        /bad sector 3|driver threw/,
      );
      // readInto takes the same callback, and fails the same way.
      const intoErr = await device.readInto!(3 * 512, new Uint8Array(512)).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(store.calls - before, mode).toBe(2);
      expect(BlockDeviceError.is(intoErr, 'EIO'), mode).toBe(true);
      // Other reads still work.
      expect((await device.read(0, 512))[0]).toBe(1);
      expect((await device.read(5 * 512, 512))[0]).toBe(0);
    }
    // It would wait forever for a failed read that never left the gate.
    await exclusive();
    expect((await device.read(0, 512))[0]).toBe(1);
    await device.close();
  });

  it('settles a read once for a store that calls back and then throws: the read gate stays counted right', async () => {
    const { store, device, exclusive } = await rig();
    store.mode = 'call back, then throw';
    expect((await device.read(3 * 512, 512))[0]).toBe(3);
    // A read held at the store: the exclusive operation must wait for it; a
    // second release of the read above would have let it in.
    const reading = device.read(6 * 512, 512);
    let done = false;
    const running = exclusive().then(() => {
      done = true;
    });
    for (let i = 0; i < 10; i++) await new Promise((resolve) => setImmediate(resolve));
    expect(done).toBe(false);
    store.held!();
    expect((await reading)[0]).toBe(0);
    await running;
    await device.close();
  });
});
