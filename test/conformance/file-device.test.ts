import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'vitest';
import { FileDevice } from '../../src/devices/file-device.js';
import { runConformanceSuite } from '../../src/testing/index.js';

const size = 64 * 1024;

async function tempDir(): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'blocksnap-conformance-'));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

runConformanceSuite({
  name: 'FileDevice (created, 4 KiB blocks)',
  create: async () => {
    const { dir, cleanup } = await tempDir();
    const device = await FileDevice.open(join(dir, 'disk.img'), {
      size,
      blockSize: 4096,
      create: true,
    });
    return { device, cleanup };
  },
  describe,
  it,
});

runConformanceSuite({
  name: 'FileDevice (existing file with content, 512-byte blocks)',
  create: async () => {
    const { dir, cleanup } = await tempDir();
    const path = join(dir, 'disk.img');
    const expected = new Uint8Array(randomBytes(size));
    await writeFile(path, expected);
    const device = await FileDevice.open(path, { blockSize: 512 });
    return { device, expected, cleanup };
  },
  describe,
  it,
});

runConformanceSuite({
  name: 'FileDevice (read-only)',
  create: async () => {
    const { dir, cleanup } = await tempDir();
    const path = join(dir, 'disk.img');
    const expected = new Uint8Array(randomBytes(size));
    await writeFile(path, expected);
    const device = await FileDevice.open(path, { readOnly: true });
    return { device, expected, cleanup };
  },
  describe,
  it,
});
