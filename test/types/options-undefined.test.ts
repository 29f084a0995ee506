import { describe, expect, it } from 'vitest';
import type {
  ApplyStreamOptions,
  CheckOptions,
  CowSnapshotDeviceOptions,
  ExportStreamOptions,
  FileDeviceOptions,
  JournalDeviceOptions,
  MemoryDeviceOptions,
  SelectiveRestoreOptions,
  SelectiveSnapshotDeviceOptions,
  SelectiveSnapshotOptions,
  SnapshotCopyJobOptions,
  SnapshotOptions,
} from '../../src/index.js';
import { CowSnapshotDevice, JournalDevice, MemoryDevice } from '../../src/index.js';
import type { FaultyDeviceOptions, ModelDeviceOptions } from '../../src/testing/index.js';

/*
 * Issue 21: every option the runtime treats as absent when it is
 * `undefined` accepts `undefined` in its type too, so a user compiling with
 * `exactOptionalPropertyTypes` can pass a variable that may be undefined.
 * The project compiles with that setting on (tsconfig.json), so `npm run
 * typecheck` fails here if an option type loses its `| undefined`.
 */

const maybe = <T>(value: T): T | undefined => (Math.random() > 2 ? value : undefined);

describe('option types accept undefined where the runtime does', () => {
  it('every public option object, built from values that may be undefined', async () => {
    const options = {
      snapshot: { name: maybe('x'), writable: maybe(true) } satisfies SnapshotOptions,
      check: { verifyData: maybe(true) } satisfies CheckOptions,
      memory: {
        size: 4096,
        blockSize: maybe(512),
        readOnly: maybe(false),
      } satisfies MemoryDeviceOptions,
      file: {
        size: maybe(4096),
        blockSize: maybe(512),
        create: maybe(true),
        readOnly: maybe(false),
        lock: maybe(true),
      } satisfies FileDeviceOptions,
      cow: { maxSnapshots: maybe(4), force: maybe(false) } satisfies CowSnapshotDeviceOptions,
      selective: {
        maxSnapshots: maybe(4),
        maxRuns: maybe(8),
        excludedReads: maybe('zero' as const),
        force: maybe(false),
      } satisfies SelectiveSnapshotDeviceOptions,
      selectiveSnapshot: {
        include: maybe([{ offset: 0, length: 512 }]),
        exclude: maybe([]),
      } satisfies SelectiveSnapshotOptions,
      selectiveRestore: { ranges: maybe([]) } satisfies SelectiveRestoreOptions,
      journal: {
        checkpointAt: maybe(0.5),
        maxSnapshots: maybe(4),
        onProgress: maybe(() => {}),
        force: maybe(false),
        repair: maybe(false),
      } satisfies JournalDeviceOptions,
      exportStream: {
        to: 'id',
        from: maybe('id'),
        signal: maybe(undefined),
      } satisfies ExportStreamOptions,
      applyStream: {
        signal: maybe(undefined),
        onProgress: maybe(() => {}),
      } satisfies ApplyStreamOptions,
      copy: {
        source: await MemoryDevice.create({ size: 4096 }),
        destination: await MemoryDevice.create({ size: 4096 }),
        offset: maybe(0),
        length: maybe(4096),
        chunkSize: maybe(4096),
        mapStore: maybe(undefined),
        force: maybe(false),
        signal: maybe(undefined),
        rate: maybe(0),
      } satisfies SnapshotCopyJobOptions,
      faulty: { latency: maybe(0), failures: maybe(() => false) } satisfies FaultyDeviceOptions,
      model: {
        size: 4096,
        blockSize: maybe(512),
        readOnly: maybe(false),
      } satisfies ModelDeviceOptions,
    };
    expect(Object.keys(options)).toHaveLength(14);
    // And the runtime takes them: undefined is the default.
    const origin = await MemoryDevice.create(options.memory);
    const cow = await CowSnapshotDevice.create(
      origin,
      await MemoryDevice.create({ size: 1 << 20, blockSize: 512 }),
      options.cow,
    );
    const journal = await JournalDevice.create(
      cow,
      await MemoryDevice.create({ size: 256 * 1024, blockSize: 512 }),
      options.journal,
    );
    await journal.snapshot(options.snapshot);
    await journal.close();
  });
});
