import fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  CowSnapshotDevice,
  FileDevice,
  JournalDevice,
  MemoryDevice,
  SelectiveSnapshotDevice,
  SnapshotCopyJob,
} from '../../src/index.js';
import { expectCode } from '../support/error-code.js';

/*
 * Option objects: null, a non-object, or an option of the wrong type (a
 * string 'false' for a boolean) is EINVAL before anything changes — never a
 * raw TypeError, never a silently different device.
 */

type Bad = unknown;

describe('options are checked before anything changes', () => {
  it.each<[string, Bad]>([
    ['null', null],
    ['a string', 'big'],
    ["readOnly: 'false'", { size: 4096, readOnly: 'false' }],
    ["size: '4096'", { size: '4096' }],
    ['blockSize: null', { size: 4096, blockSize: null }],
  ])('MemoryDevice.create(%s) is EINVAL', async (_what, options) => {
    await expectCode(MemoryDevice.create(options as never), 'EINVAL');
  });

  it.each<[string, Bad]>([
    ['null', null],
    ["create: 'yes'", { create: 'yes', size: 4096 }],
    ["readOnly: 'false'", { readOnly: 'false' }],
    ["size: '8192'", { create: true, size: '8192' }],
  ])('FileDevice.open(path, %s) is EINVAL and creates no file', async (_what, options) => {
    const dir = fs.mkdtempSync(join(tmpdir(), 'blocksnap-options-'));
    try {
      const path = join(dir, 'disk.img');
      await expectCode(FileDevice.open(path, options as never), 'EINVAL');
      expect(fs.existsSync(path)).toBe(false);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  for (const [name, create] of [
    ['CowSnapshotDevice', CowSnapshotDevice.create.bind(CowSnapshotDevice)],
    ['SelectiveSnapshotDevice', SelectiveSnapshotDevice.create.bind(SelectiveSnapshotDevice)],
  ] as const) {
    it.each<[string, Bad]>([
      ['null', null],
      ['a number', 5],
      ["maxSnapshots: '5'", { maxSnapshots: '5' }],
    ])(
      `${name}.create(origin, store, %s) is EINVAL and leaves the store unformatted`,
      async (_w, options) => {
        const origin = await MemoryDevice.create({ size: 64 * 1024, blockSize: 512 });
        const store = await MemoryDevice.create({ size: 256 * 1024, blockSize: 512 });
        await expectCode(create(origin, store, options as never), 'EINVAL');
        expect(store.allocatedBytes).toBe(0);
      },
    );
  }

  it.each<[string, Bad]>([
    ['null', null],
    ["checkpointAt: '0.5'", { checkpointAt: '0.5' }],
    ['onProgress: 5', { onProgress: 5 }],
    ["maxSnapshots: '8'", { maxSnapshots: '8' }],
  ])(
    'JournalDevice.create(production, journal, %s) is EINVAL and writes nothing',
    async (_w, options) => {
      const production = await MemoryDevice.create({ size: 64 * 1024, blockSize: 512 });
      const journal = await MemoryDevice.create({ size: 256 * 1024, blockSize: 512 });
      await expectCode(JournalDevice.create(production, journal, options as never), 'EINVAL');
      expect(journal.allocatedBytes + production.allocatedBytes).toBe(0);
    },
  );

  it.each<[string, (source: MemoryDevice, destination: MemoryDevice) => Bad]>([
    ['null', () => null],
    ['signal: 5', (source, destination) => ({ source, destination, signal: 5 })],
    ["chunkSize: '65536'", (source, destination) => ({ source, destination, chunkSize: '65536' })],
    ['conflictPolicy: 1', (source, destination) => ({ source, destination, conflictPolicy: 1 })],
  ])('SnapshotCopyJob.start(%s) is EINVAL and copies nothing', async (_w, options) => {
    const source = await MemoryDevice.create({ size: 64 * 1024, blockSize: 512 });
    await source.write(0, new Uint8Array(512).fill(1));
    const destination = await MemoryDevice.create({ size: 64 * 1024, blockSize: 512 });
    await expectCode(SnapshotCopyJob.start(options(source, destination) as never), 'EINVAL');
    expect(destination.allocatedBytes).toBe(0);
  });
});
