import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  type BlockDevice,
  CowSnapshotDevice,
  FileDevice,
  JournalDevice,
  MemoryDevice,
  SnapshotCopyJob,
} from '../../src/index.js';
import { expectSameBytes, seededBytes } from '../support/bytes.js';

/*
 * What `read` returns belongs to the caller whole (src/device.ts,
 * BlockDevice.read): a Uint8Array over an ArrayBuffer of its own, exactly
 * its length. A caller may transfer that buffer to a worker — which detaches
 * it here — without breaking any other read or any write, and a kept 4 KiB
 * result keeps 4 KiB alive, not a shared slab. Checked through every device
 * and layer that hands read data out, over files (where reads used to be
 * views into a slab shared with other reads and with writes' private copies).
 */

const KiB = 1024;
const size = 256 * KiB;
const bs = 4 * KiB;

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'blocksnap-ownership-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function file(name: string, bytes: number, blockSize = bs): Promise<FileDevice> {
  return FileDevice.open(join(dir, name), { size: bytes, blockSize, create: true });
}

/** A device under test, filled with `content` by `make`, and what else to close after. */
interface Subject {
  device: BlockDevice;
  /** Whether `device` takes writes (a read-only view is checked on reads alone). */
  writable: boolean;
  close: () => Promise<void>;
}

const subjects: { name: string; make: (content: Uint8Array) => Promise<Subject> }[] = [
  {
    name: 'MemoryDevice',
    make: async (content) => {
      const device = await MemoryDevice.create({ size, blockSize: bs });
      await device.write(0, content);
      return { device, writable: true, close: () => device.close() };
    },
  },
  {
    name: 'FileDevice',
    make: async (content) => {
      const device = await file('disk.img', size);
      await device.write(0, content);
      return { device, writable: true, close: () => device.close() };
    },
  },
  {
    // A live snapshot: every write preserves first, so its private copy
    // waits on the store before it reaches the origin.
    name: 'CowSnapshotDevice over files, with a live snapshot',
    make: async (content) => {
      const origin = await file('origin.img', size);
      await origin.write(0, content);
      const device = await CowSnapshotDevice.create(origin, await file('store.img', 4 << 20), {
        maxSnapshots: 4,
      });
      await device.snapshot();
      return { device, writable: true, close: () => device.close() };
    },
  },
  {
    // Preserved chunks, read by sub-block ranges too.
    name: 'CowSnapshotDevice snapshot handle over files',
    make: async (content) => {
      const origin = await file('origin.img', size);
      await origin.write(0, content);
      const cow = await CowSnapshotDevice.create(origin, await file('store.img', 4 << 20), {
        maxSnapshots: 4,
      });
      const snap = await cow.snapshot();
      await cow.write(0, new Uint8Array(size).fill(0x33));
      return {
        device: snap,
        writable: false,
        close: async () => {
          await snap.close();
          await cow.close();
        },
      };
    },
  },
  {
    // 1 KiB blocks journaled one at a time: a 4 KiB read spans several runs.
    name: 'JournalDevice over files',
    make: async (content) => {
      const production = await file('production.img', size, KiB);
      const journal = await file('journal.img', 8 * KiB + 8 * size, 512);
      const device = await JournalDevice.create(production, journal);
      for (let at = 0; at < size; at += 3 * KiB) {
        await device.write(at, content.subarray(at, Math.min(size, at + KiB)));
      }
      await device.write(0, content);
      for (let at = 0; at < size; at += 5 * KiB) {
        await device.write(at, content.subarray(at, Math.min(size, at + KiB)));
      }
      return { device, writable: true, close: () => device.close() };
    },
  },
  {
    name: 'JournalDevice pointInTime view over files',
    make: async (content) => {
      const production = await file('production.img', size, KiB);
      const journal = await file('journal.img', 8 * KiB + 8 * size, 512);
      const device = await JournalDevice.create(production, journal);
      await device.write(0, content);
      for (let at = 0; at < size; at += 5 * KiB) {
        await device.write(at, content.subarray(at, Math.min(size, at + KiB)));
      }
      const view = await device.pointInTime(device.sequence);
      await device.write(0, new Uint8Array(size).fill(0x44));
      return {
        device: view,
        writable: false,
        close: async () => {
          await view.close();
          await device.close();
        },
      };
    },
  },
  {
    name: 'SnapshotCopyJob.device over files',
    make: async (content) => {
      const source = await file('source.img', size);
      await source.write(0, content);
      const destination = await file('destination.img', size);
      const job = await SnapshotCopyJob.start({ source, destination, conflictPolicy: 'queue' });
      return {
        device: job.device,
        writable: true,
        close: async () => {
          await job.done.catch(() => {});
          await job.device.close();
          await destination.close();
        },
      };
    },
  },
];

/** Ranges that exercise every read path: sub-block, unaligned, one block, several, large. */
const RANGES: readonly [offset: number, length: number][] = [
  [0, 1],
  [7, 100],
  [bs - 10, 20],
  [bs, bs],
  [3 * bs + 512, bs],
  [5 * bs, 3 * bs],
  [16 * bs, 100 * KiB],
];

/**
 * The writes in flight meanwhile: disjoint (concurrent overlapping writes
 * may land in any order) and past every range read, so no read races them.
 */
const WRITES: readonly [offset: number, length: number][] = [
  [192 * KiB, 1],
  [192 * KiB + 7, 100],
  [192 * KiB + 2 * bs - 10, 20],
  [192 * KiB + 3 * bs, bs],
  [192 * KiB + 5 * bs + 512, bs],
  [192 * KiB + 7 * bs, 3 * bs],
];

/**
 * Sends `data`'s buffer through a MessageChannel, as a hand-off to a worker
 * does, and resolves with what arrives. A detached buffer is posted without
 * an error and never arrives: that fails here after a second, not as a hang.
 */
function postTransfer(data: Uint8Array): Promise<Uint8Array> {
  const { port1, port2 } = new MessageChannel();
  return new Promise<Uint8Array>((resolve, reject) => {
    const timer = setTimeout(() => {
      port1.close();
      port2.close();
      reject(new Error(`the posted ${data.length}-byte read result never arrived`));
    }, 1000);
    (port2 as MessagePort).once('message', (message: Uint8Array) => {
      clearTimeout(timer);
      port1.close();
      port2.close();
      resolve(message);
    });
    port1.postMessage(data, [data.buffer as ArrayBuffer]);
  });
}

describe.each(subjects)('read results own their buffer: $name', ({ make }) => {
  it('every read result is a whole ArrayBuffer of its own: offset 0, exactly its length', async () => {
    const content = seededBytes(size, 1);
    const { device, close } = await make(content);
    try {
      for (const [offset, length] of RANGES) {
        const got = await device.read(offset, length);
        expectSameBytes(
          `read(${offset}, ${length})`,
          got,
          content.subarray(offset, offset + length),
        );
        expect(got.byteOffset, `read(${offset}, ${length}).byteOffset`).toBe(0);
        expect(got.buffer.byteLength, `read(${offset}, ${length}).buffer.byteLength`).toBe(length);
      }
    } finally {
      await close();
    }
  });

  it('transferring one result detaches nothing else: kept and in-flight reads and in-flight writes stay right', async () => {
    const content = seededBytes(size, 2);
    const { device, writable, close } = await make(content);
    try {
      const expected = content.slice();
      // Results the caller keeps, then reads and writes still in flight
      // when the first result's buffer is transferred away.
      const kept = await Promise.all(RANGES.map(([o, n]) => device.read(o, n)));
      const reads = RANGES.map(([o, n]) => device.read(o + bs, n));
      const writes: Promise<void>[] = [];
      if (writable) {
        for (const [o, n] of WRITES) {
          const data = seededBytes(n, o + 3);
          expected.set(data, o);
          writes.push(device.write(o, data));
          data.fill(0); // the caller may reuse it at once
        }
      }
      const moved = structuredClone(kept[0]!, { transfer: [kept[0]!.buffer as ArrayBuffer] });
      expectSameBytes('the transferred copy', moved, content.subarray(0, 1));
      const posted = await postTransfer(kept[1]!);
      expectSameBytes('the posted copy', posted, content.subarray(7, 107));

      for (let i = 2; i < RANGES.length; i++) {
        const [o, n] = RANGES[i]!;
        expectSameBytes(`kept read(${o}, ${n})`, kept[i]!, content.subarray(o, o + n));
      }
      const done = await Promise.all(reads);
      done.forEach((got, i) => {
        const [o, n] = RANGES[i]!;
        expectSameBytes(
          `in-flight read(${o + bs}, ${n})`,
          got,
          content.subarray(o + bs, o + bs + n),
        );
      });
      await Promise.all(writes);
      expectSameBytes('the whole device after', await device.read(0, size), expected);
    } finally {
      await close();
    }
  }, 15_000);
});
