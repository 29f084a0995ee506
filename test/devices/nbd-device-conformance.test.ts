/**
 * The shipped conformance suite on NbdDevice against real servers: qemu-nbd
 * on a raw file (over TCP and over a Unix socket, writable and read-only),
 * nbdkit's memory plugin, and nbdkit with a 4 KiB minimum block and a 64 KiB
 * payload limit (the client's read-modify-write and request splitting), and
 * blocksnap's own server (`serveNbd`: a MemoryDevice over TCP and a Unix
 * socket, a CowSnapshotDevice's snapshot read-only, TLS with a PSK). One
 * server per group; each test gets a device over an export reset to its
 * expected content first.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CowSnapshotDevice,
  MemoryDevice,
  NbdDevice,
  type NbdDeviceOptions,
  type NbdServer,
  serveNbd,
  snapshotExports,
} from '../../src/index.js';
import { runConformanceSuite } from '../../src/testing/index.js';
import {
  type NbdPeer,
  rawImage,
  startNbdkit,
  startQemuNbd,
  tempDir,
} from '../support/nbd-peers.js';
import { describeWithPeers, startPeer } from '../support/peers.js';

const SIZE = 64 * 1024;

/** Runs the suite against the server `start` gives, resetting the export to `content` per test. */
function suiteAgainst(
  name: string,
  start: () => Promise<{
    peer: NbdPeer | undefined;
    url: string;
    cleanup: () => Promise<void>;
    /** Options the device connects with besides the URL (TLS keys). */
    connect?: NbdDeviceOptions;
  }>,
  content: Uint8Array | undefined,
  readOnly = false,
): void {
  let server: Awaited<ReturnType<typeof start>> | undefined;
  beforeAll(async () => {
    server = await start();
  });
  afterAll(async () => {
    await server?.peer?.stop();
    await server?.cleanup();
  });
  runConformanceSuite({
    name,
    create: async () => {
      const device = await NbdDevice.connect(server!.url, {
        timeoutMs: 10_000,
        ...server!.connect,
      });
      if (!readOnly) {
        await device.write(0, content ?? new Uint8Array(SIZE));
        await device.flush();
      }
      return content === undefined ? { device } : { device, expected: content };
    },
    describe,
    it,
  });
}

describeWithPeers(['qemu-nbd'], 'NbdDevice against qemu-nbd', () => {
  suiteAgainst(
    'NbdDevice over qemu-nbd -f raw (TCP)',
    async () => {
      const { dir, cleanup } = await tempDir();
      const peer = await startQemuNbd(await rawImage(dir, SIZE), ['-e', '4']);
      return { peer, url: peer.url, cleanup };
    },
    undefined,
  );

  suiteAgainst(
    'NbdDevice over qemu-nbd -f raw, existing content (Unix socket)',
    async () => {
      const { dir, cleanup } = await tempDir();
      const socket = join(dir, 'nbd.sock');
      const file = await rawImage(dir, SIZE);
      const process = startPeer('qemu-nbd', [
        '-f',
        'raw',
        '--persistent',
        '-e',
        '4',
        '-k',
        socket,
        '-x',
        'disk',
        file,
      ]);
      await waitForSocket(socket, process.stderr);
      const peer: NbdPeer = { url: '', port: 0, process, stop: (s) => process.stop(s) };
      return { peer, url: `nbd+unix:///disk?socket=${encodeURIComponent(socket)}`, cleanup };
    },
    new Uint8Array(randomBytes(SIZE)),
  );

  const readOnlyContent = new Uint8Array(randomBytes(SIZE));
  suiteAgainst(
    'NbdDevice over qemu-nbd -r (read-only export)',
    async () => {
      const { dir, cleanup } = await tempDir();
      const peer = await startQemuNbd(await rawImage(dir, SIZE, readOnlyContent), [
        '-r',
        '-e',
        '4',
      ]);
      return { peer, url: peer.url, cleanup };
    },
    readOnlyContent,
    true,
  );
});

describeWithPeers(['nbdkit'], 'NbdDevice against nbdkit', () => {
  suiteAgainst(
    'NbdDevice over nbdkit memory',
    async () => {
      const peer = await startNbdkit(['memory', `size=${SIZE}`]);
      return { peer, url: peer.url, cleanup: async () => {} };
    },
    undefined,
  );

  suiteAgainst(
    'NbdDevice over nbdkit memory with a 4 KiB minimum block and 64 KiB payloads',
    async () => {
      const peer = await startNbdkit(blocksizePolicy(SIZE));
      return { peer, url: peer.url, cleanup: async () => {} };
    },
    new Uint8Array(randomBytes(SIZE)),
  );

  describe('what the handshake agreed with nbdkit', () => {
    let peer: NbdPeer | undefined;
    afterAll(async () => {
      await peer?.stop();
    });
    it('honours NBD_INFO_BLOCK_SIZE: minimum, preferred and payload limit', async () => {
      peer = await startNbdkit(blocksizePolicy(4 * SIZE));
      const device = await NbdDevice.connect(peer.url);
      try {
        expect(device.negotiated).toMatchObject({
          minimumBlock: 4096,
          preferredBlock: 8192,
          maxPayload: 65536,
          structuredReplies: true,
        });
        expect(device.blockSize).toBe(8192);
        // A write of 3 payloads, unaligned at both ends, reads back whole.
        const data = new Uint8Array(randomBytes(3 * 65536 - 1000));
        await device.write(777, data);
        expect(Buffer.from(await device.read(777, data.length)).equals(data)).toBe(true);
      } finally {
        await device.close();
      }
    });
  });
});

describe("NbdDevice against blocksnap's own server (serveNbd)", () => {
  /** Serves what `exports` gives on a fresh server; the cleanup closes server and devices. */
  const ours = async (
    exportsOf: () => Promise<{
      exports: Parameters<typeof serveNbd>[0]['exports'];
      close: () => Promise<void>;
    }>,
    url: (server: NbdServer) => string,
    options: Partial<Parameters<typeof serveNbd>[0]> = {},
  ) => {
    const { exports, close } = await exportsOf();
    const server = await serveNbd({ exports, port: 0, ...options });
    return {
      peer: undefined,
      url: url(server),
      cleanup: async () => {
        await server.close();
        await close();
      },
    };
  };
  const tcp = (name: string) => (server: NbdServer) =>
    `nbd://127.0.0.1:${(server.address as { port: number }).port}/${name}`;
  const memoryExport = async () => {
    const device = await MemoryDevice.create({ size: SIZE, blockSize: 4096 });
    return { exports: { disk: device }, close: () => device.close() };
  };

  suiteAgainst(
    'NbdDevice over serveNbd, a MemoryDevice (TCP)',
    () => ours(memoryExport, tcp('disk')),
    undefined,
  );

  suiteAgainst(
    'NbdDevice over serveNbd, a MemoryDevice (Unix socket)',
    async () => {
      const { dir, cleanup } = await tempDir();
      const socket = join(dir, 'nbd.sock');
      const served = await ours(
        memoryExport,
        () => `nbd+unix:///disk?socket=${encodeURIComponent(socket)}`,
        {
          port: undefined,
          path: socket,
        },
      );
      return {
        ...served,
        cleanup: async () => {
          await served.cleanup();
          await cleanup();
        },
      };
    },
    undefined,
  );

  const key = randomBytes(32).toString('hex');
  suiteAgainst(
    'NbdDevice over serveNbd with TLS (PSK, required)',
    () =>
      ours(
        memoryExport,
        (server) => `nbds://127.0.0.1:${(server.address as { port: number }).port}/disk`,
        {
          tls: { mode: 'require', psk: { alice: Buffer.from(key, 'hex') } },
        },
      ).then((served) => ({ ...served, connect: { tls: { psk: { identity: 'alice', key } } } })),
    undefined,
  );

  const snapshotContent = new Uint8Array(randomBytes(SIZE));
  suiteAgainst(
    'NbdDevice over serveNbd, a CowSnapshotDevice snapshot (read-only export)',
    () =>
      ours(async () => {
        const cow = await CowSnapshotDevice.create(
          await MemoryDevice.create({ size: SIZE, blockSize: 4096 }),
          await MemoryDevice.create({ size: 2 * 1024 * 1024, blockSize: 4096 }),
        );
        await cow.write(0, snapshotContent);
        await cow.snapshot({ name: 'base' });
        await cow.write(0, new Uint8Array(SIZE).fill(0x5a));
        return { exports: snapshotExports('vol', cow), close: () => cow.close() };
      }, tcp('vol@base')),
    snapshotContent,
    true,
  );
});

/** nbdkit refusing (EINVAL) any request not aligned to 4 KiB or over 64 KiB, and saying so. */
const blocksizePolicy = (size: number) => [
  '--filter=blocksize-policy',
  'memory',
  `size=${size}`,
  'blocksize-minimum=4096',
  'blocksize-preferred=8192',
  'blocksize-maximum=65536',
  'blocksize-error-policy=error',
];

async function waitForSocket(path: string, stderr: () => string): Promise<void> {
  const { access } = await import('node:fs/promises');
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      await access(path);
      return;
    } catch {
      if (Date.now() > deadline) throw new Error(`no socket at ${path}: ${stderr()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
