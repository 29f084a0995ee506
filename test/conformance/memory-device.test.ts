import { describe, it } from 'vitest';
import { MemoryDevice } from '../../src/devices/memory-device.js';
import { runConformanceSuite } from '../../src/testing/index.js';

runConformanceSuite({
  name: 'MemoryDevice (64 KiB, 4 KiB blocks)',
  create: async () => ({ device: await MemoryDevice.create({ size: 64 * 1024, blockSize: 4096 }) }),
  describe,
  it,
});

runConformanceSuite({
  name: 'MemoryDevice (16 KiB, 512-byte blocks)',
  create: async () => ({ device: await MemoryDevice.create({ size: 16 * 1024, blockSize: 512 }) }),
  describe,
  it,
});

runConformanceSuite({
  name: 'MemoryDevice (read-only)',
  create: async () => ({
    device: await MemoryDevice.create({ size: 64 * 1024, blockSize: 4096, readOnly: true }),
  }),
  describe,
  it,
});
