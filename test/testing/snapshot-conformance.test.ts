import { describe, expect, it } from 'vitest';
import type { Snapshot } from '../../src/index.js';
import {
  ModelDevice,
  runSnapshotConformanceSuite,
  type SnapshotDevice,
  type SnapshotSupport,
} from '../../src/testing/index.js';

// The suite must fail a device that breaks the contract: each fault below
// breaks one rule of a correct device (ModelDevice, which passes the whole
// suite in test/conformance/model-device.test.ts), and the test checks that
// the case for that rule fails.

const size = 64 * 1024;
const blockSize = 4096;

const supports: SnapshotSupport = {
  writable: true,
  restore: true,
  pointInTime: true,
  reopen: false,
  selective: false,
  preserveEvents: false,
};

/** What a fault replaces: device methods, and how snapshot handles behave. */
interface Fault {
  device?: (model: ModelDevice) => Partial<SnapshotDevice>;
  handle?: (model: ModelDevice, handle: Snapshot) => Partial<Snapshot>;
}

const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

/** A ModelDevice with `fault` applied: a device that breaks one rule. */
async function faulty(fault: Fault): Promise<SnapshotDevice> {
  const model = await ModelDevice.create({ size, blockSize });
  const wrapHandle = (handle: Snapshot): Snapshot => {
    const overrides = fault.handle?.(model, handle) ?? {};
    return new Proxy(handle, {
      get(target, key) {
        if (key in overrides) return overrides[key as keyof Snapshot];
        const value = Reflect.get(target, key, target);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
  };
  const device: SnapshotDevice = {
    size,
    blockSize,
    readOnly: false,
    read: (offset, length) => model.read(offset, length),
    write: (offset, data) => model.write(offset, data),
    flush: () => model.flush(),
    close: () => model.close(),
    [Symbol.asyncDispose]: () => model.close(),
    snapshot: async (options) => wrapHandle(await model.snapshot(options)),
    listSnapshots: () => model.listSnapshots(),
    openSnapshot: async (id) => wrapHandle(await model.openSnapshot(id)),
    deleteSnapshot: (id) => model.deleteSnapshot(id),
    restore: (id) => model.restore(id),
  };
  return Object.assign(device, fault.device?.(model) ?? {});
}

/** Runs the whole suite on a device with `fault`; returns the titles of the cases that failed. */
async function failingCases(fault: Fault): Promise<string[]> {
  const cases: [string, () => Promise<void>][] = [];
  const path: string[] = [];
  runSnapshotConformanceSuite({
    name: 'faulty',
    create: async () => ({ device: await faulty(fault) }),
    supports,
    describe: (name, fn) => {
      path.push(name);
      fn();
      path.pop();
    },
    it: (name, fn) => {
      cases.push([[...path.slice(1), name].join(' > '), fn]);
    },
  });
  const failed: string[] = [];
  for (const [title, run] of cases) {
    await run().catch(() => failed.push(title));
  }
  return failed;
}

describe('runSnapshotConformanceSuite fails a device that breaks the contract', () => {
  it('passes the correct model: no case fails', async () => {
    expect(await failingCases({})).toEqual([]);
  });

  it('a snapshot taken a moment after snapshot() was called (takes in writes called after)', async () => {
    const failed = await failingCases({
      device: (model) => ({
        snapshot: async (options) => {
          await tick();
          return model.snapshot(options);
        },
      }),
    });
    expect(failed).toContain(
      'point in time (rule 1) > a snapshot holds every write called before snapshot(), in flight ones included, and none called after',
    );
    expect(failed).toContain(
      'point in time (rule 1) > snapshots taken back to back with writes in flight between them each hold their own point',
    );
  });

  it('a snapshot that does not wait for writes in flight', async () => {
    const failed = await failingCases({
      device: (model) => ({
        write: async (offset, data) => {
          const copy = data.slice();
          await tick();
          return model.write(offset, copy);
        },
      }),
    });
    expect(failed).toContain(
      'point in time (rule 1) > a snapshot holds every write called before snapshot(), in flight ones included, and none called after',
    );
  });

  it('a snapshot that reads the live device', async () => {
    const failed = await failingCases({
      handle: (model) => ({ read: (offset, length) => model.read(offset, length) }),
    });
    expect(failed).toContain(
      'independence (rule 2) > writes to the origin never change a snapshot',
    );
  });

  it('a writable snapshot whose writes reach the origin too', async () => {
    const failed = await failingCases({
      handle: (model, handle) => ({
        write: async (offset, data) => {
          await handle.write(offset, data);
          if (!handle.readOnly) await model.write(offset, data);
        },
      }),
    });
    expect(failed).toContain(
      'independence (rule 2) > writes to a writable snapshot never change the origin or another snapshot',
    );
  });

  it('a read-only snapshot that accepts writes', async () => {
    const failed = await failingCases({
      handle: (_, handle) => ({
        write: async (offset, data) => {
          if (!handle.readOnly) await handle.write(offset, data);
        },
      }),
    });
    expect(failed).toContain(
      'snapshot handles > a write to a read-only snapshot fails with EROFS and changes nothing',
    );
  });

  it('closing a handle closes the device', async () => {
    const failed = await failingCases({
      handle: (model, handle) => ({
        close: async () => {
          await handle.close();
          await model.close();
        },
      }),
    });
    expect(failed).toContain('snapshot handles > closing a handle closes only that handle');
  });

  it('an unknown id that opens some other snapshot', async () => {
    const failed = await failingCases({
      device: (model) => ({
        openSnapshot: (id) =>
          model.openSnapshot(id).catch(() => model.openSnapshot(model.listSnapshots()[0]!.id)),
      }),
    });
    expect(failed).toContain('snapshot handles > unknown ids fail with ENOENT, changing nothing');
  });

  it('a delete that keeps the snapshot', async () => {
    const failed = await failingCases({ device: () => ({ deleteSnapshot: async () => {} }) });
    expect(failed).toContain(
      'delete > deleting a snapshot keeps what the others need: the middle, the oldest, the newest',
    );
    expect(failed).toContain(
      'delete > a handle of a deleted snapshot fails reads and writes with ENOENT; its id is gone',
    );
  });

  it('a restore that changes nothing, or takes the wrong snapshot', async () => {
    const restoreCase =
      "restore > restore makes the live content the snapshot's, and every snapshot stays as it was";
    expect(await failingCases({ device: () => ({ restore: async () => {} }) })).toContain(
      restoreCase,
    );
    const wrong = await failingCases({
      device: (model) => ({
        restore: (id) => {
          const ids = model.listSnapshots().map((i) => i.id);
          return model.restore(ids[Math.max(0, ids.indexOf(id) - 1)]!);
        },
      }),
    });
    expect(wrong).toContain(restoreCase);
  });
});
