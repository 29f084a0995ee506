import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import {
  CowSnapshotDevice,
  MemoryDevice,
  type NbdServer,
  type NbdServerOptions,
  serveNbd,
  snapshotExports,
} from '../../src/index.js';
import { seededBytes } from '../support/bytes.js';
import { describeWithPeers, runPeer, runPeerOk } from '../support/peers.js';

const MiB = 1024 * 1024;

let dir: string;
let server: NbdServer | undefined;
const opened: { close(): Promise<void> }[] = [];

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'nbd-peers-'));
});
afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});
afterEach(async () => {
  await server?.close();
  server = undefined;
  for (const d of opened.splice(0)) await d.close();
});

async function serve(
  exports: NbdServerOptions['exports'],
  options: Partial<NbdServerOptions> = {},
): Promise<string> {
  server = await serveNbd({ exports, port: 0, ...options });
  return `127.0.0.1:${(server.address as { port: number }).port}`;
}

async function memory(size: number): Promise<MemoryDevice> {
  const d = await MemoryDevice.create({ size });
  opened.push(d);
  return d;
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

describeWithPeers(['qemu-io', 'qemu-img'], 'NBD server with QEMU clients', () => {
  it('qemu-io writes and reads patterns, aligned and unaligned', async () => {
    const disk = await memory(16 * MiB);
    const at = await serve({ disk });
    const out = await runPeerOk('qemu-io', [
      '-f',
      'raw',
      `nbd://${at}/disk`,
      '-c',
      'write -P 0xab 0 64k',
      '-c',
      'write -P 0xcd 65537 3333',
      '-c',
      'write -P 0x11 8m 1m',
      '-c',
      'read -P 0xab 0 64k',
      '-c',
      'read -P 0xcd 65537 3333',
      '-c',
      'read -P 0 65536 1',
      '-c',
      'read -P 0x11 8m 1m',
      '-c',
      'flush',
    ]);
    expect(out).not.toMatch(/Pattern verification failed|error/i);
    const back = await disk.read(0, 65536 + 1 + 3333 + 1);
    expect(back.subarray(0, 65536).every((b) => b === 0xab)).toBe(true);
    expect(back[65536]).toBe(0);
    expect(back.subarray(65537, 65537 + 3333).every((b) => b === 0xcd)).toBe(true);
    expect(back[65537 + 3333]).toBe(0);
  });

  it('qemu-img convert writes a file into an export, and compare finds them identical', async () => {
    const disk = await memory(8 * MiB);
    const file = path.join(dir, 'source.img');
    const bytes = seededBytes(8 * MiB, 5);
    bytes.fill(0, MiB, 3 * MiB); // a run of zeroes, which qemu-img may send as WRITE_ZEROES
    await fs.writeFile(file, bytes);
    const at = await serve({ disk });
    await runPeerOk('qemu-img', [
      'convert',
      '-n',
      '-f',
      'raw',
      '-O',
      'raw',
      file,
      `nbd://${at}/disk`,
    ]);
    await runPeerOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', file, `nbd://${at}/disk`]);
    expect(sha256(await disk.read(0, 8 * MiB))).toBe(sha256(bytes));
  });

  it('a snapshot export is read-only to QEMU and keeps the old bytes', async () => {
    const origin = await MemoryDevice.create({ size: 4 * MiB });
    const store = await MemoryDevice.create({ size: 8 * MiB });
    const cow = await CowSnapshotDevice.create(origin, store);
    opened.push(cow);
    await cow.write(0, new Uint8Array(65536).fill(0x5a));
    await cow.snapshot({ name: 'monday' });
    await cow.write(0, new Uint8Array(65536).fill(0x77));
    const at = await serve(snapshotExports('vol', cow));
    await runPeerOk('qemu-io', [
      '-f',
      'raw',
      '-r',
      `nbd://${at}/vol%40monday`,
      '-c',
      'read -P 0x5a 0 64k',
    ]);
    await runPeerOk('qemu-io', ['-f', 'raw', `nbd://${at}/vol`, '-c', 'read -P 0x77 0 64k']);
    const refused = await runPeer('qemu-io', [
      '-f',
      'raw',
      `nbd://${at}/vol%40monday`,
      '-c',
      'write -P 1 0 4k',
    ]);
    expect(refused.code).not.toBe(0);
    // QEMU sees the READ_ONLY flag and refuses to open it for writing (EACCES); a client that
    // writes anyway gets EPERM from the server (the raw-socket transmission test).
    expect(refused.stderr).toMatch(/Permission denied|read.only/i);
    expect((await cow.listSnapshots()).length).toBe(1);
  });
});

describeWithPeers(['nbdinfo', 'nbdcopy'], 'NBD server with libnbd clients', () => {
  it('nbdinfo --list, --size and --map', async () => {
    const disk = await memory(8 * MiB);
    const spare = await memory(MiB);
    const at = await serve({
      disk,
      spare: { device: spare, readOnly: true, description: 'spare disk' },
    });
    const list = await runPeerOk('nbdinfo', ['--list', `nbd://${at}`]);
    expect(list).toMatch(/export="disk"/);
    expect(list).toMatch(/export="spare"/);
    expect(list).toMatch(/description: spare disk/);
    expect((await runPeerOk('nbdinfo', ['--size', `nbd://${at}/disk`])).trim()).toBe(
      String(8 * MiB),
    );
    const map = await runPeerOk('nbdinfo', ['--map', `nbd://${at}/disk`]);
    expect(map.trim().split(/\s+/)).toEqual(['0', String(8 * MiB), '0', 'data']);
  });

  it('nbdinfo --map=blocksnap:changed:<snapshot> shows what changed since a snapshot', async () => {
    const origin = await MemoryDevice.create({ size: 4 * MiB });
    const store = await MemoryDevice.create({ size: 8 * MiB });
    const cow = await CowSnapshotDevice.create(origin, store);
    opened.push(cow);
    await cow.write(0, new Uint8Array(MiB).fill(1));
    const snap = await cow.snapshot({ name: 'base' });
    await snap.close();
    await cow.write(MiB, new Uint8Array(8192).fill(2));
    await cow.write(3 * MiB + 100, new Uint8Array(10).fill(3));
    const at = await serve(snapshotExports('vol', cow));
    const map = await runPeerOk('nbdinfo', ['--map=blocksnap:changed:base', `nbd://${at}/vol`]);
    const rows = map
      .trim()
      .split('\n')
      .map((line) => line.trim().split(/\s+/).slice(0, 3).map(Number));
    expect(rows).toEqual([
      [0, MiB, 0],
      [MiB, 8192, 1],
      [MiB + 8192, 2 * MiB - 8192, 0],
      [3 * MiB, 4096, 1],
      [3 * MiB + 4096, MiB - 4096, 0],
    ]);
    const list = await runPeerOk('nbdinfo', ['--list', `nbd://${at}`]);
    expect(list).toMatch(/export="vol@base"/);
    expect(list).toMatch(/blocksnap:changed:base/);
  });

  it('nbdcopy copies a whole export to a file, equal by checksum', async () => {
    const disk = await memory(32 * MiB);
    const bytes = seededBytes(32 * MiB, 9);
    await disk.write(0, bytes);
    const at = await serve({ disk });
    const file = path.join(dir, 'copy.img');
    await runPeerOk('nbdcopy', [`nbd://${at}/disk`, file]);
    expect(sha256(await fs.readFile(file))).toBe(sha256(bytes));
  });
});

describeWithPeers(['fio'], 'NBD server under fio', () => {
  it('fio --ioengine=nbd runs a short mixed random load with verification and no errors', async () => {
    const disk = await memory(64 * MiB);
    const at = await serve({ disk });
    const out = await runPeerOk(
      'fio',
      [
        '--name=smoke',
        '--ioengine=nbd',
        `--uri=nbd://${at}/disk`,
        '--rw=randrw',
        '--bs=4k',
        '--iodepth=32',
        '--size=32m',
        '--runtime=2',
        '--time_based',
        '--verify=crc32c',
        '--verify_state_save=0',
        '--output-format=json',
      ],
      60_000,
    );
    const job = JSON.parse(out.slice(out.indexOf('{'))).jobs[0];
    expect(job.error).toBe(0);
    expect(job.read.io_bytes + job.write.io_bytes).toBeGreaterThan(0);
  });
});

describeWithPeers(['nbdinfo', 'openssl'], 'NBD server over TLS', () => {
  it('X.509: nbdinfo connects with nbds:// and the CA; a plain client is refused under require', async () => {
    const tls = path.join(dir, 'tls');
    await fs.mkdir(tls, { recursive: true });
    const sh = (args: string[]) => runPeerOk('openssl', args);
    const p = (name: string) => path.join(tls, name);
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
    await sh([
      'req',
      '-x509',
      ...ec,
      '-days',
      '1',
      '-subj',
      '/CN=test-ca',
      '-keyout',
      p('ca-key.pem'),
      '-out',
      p('ca-cert.pem'),
    ]);
    await sh([
      'req',
      ...ec,
      '-subj',
      '/CN=localhost',
      '-keyout',
      p('server-key.pem'),
      '-out',
      p('server.csr'),
    ]);
    await fs.writeFile(
      p('ext.cnf'),
      'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n',
    );
    await sh([
      'x509',
      '-req',
      '-in',
      p('server.csr'),
      '-CA',
      p('ca-cert.pem'),
      '-CAkey',
      p('ca-key.pem'),
      '-CAcreateserial',
      '-days',
      '1',
      '-extfile',
      p('ext.cnf'),
      '-out',
      p('server-cert.pem'),
    ]);
    const disk = await memory(4 * MiB);
    const at = await serve(
      { disk },
      {
        tls: {
          key: await fs.readFile(p('server-key.pem')),
          cert: await fs.readFile(p('server-cert.pem')),
        },
      },
    );
    const info = await runPeerOk('nbdinfo', [`nbds://${at}/disk?tls-certificates=${tls}`]);
    expect(info).toMatch(/with TLS/);
    expect(info).toMatch(/export-size: 4194304/);
    const plain = await runPeer('nbdinfo', [`nbd://${at}/disk`]);
    expect(plain.code).not.toBe(0);
  });

  it('PSK: nbdinfo connects with a psktool key file; a wrong key is refused', async () => {
    const keys = path.join(dir, 'keys.psk');
    await fs.writeFile(keys, 'alice:00112233445566778899aabbccddeeff\n');
    const wrong = path.join(dir, 'wrong.psk');
    await fs.writeFile(wrong, 'alice:ffeeddccbbaa99887766554433221100\n');
    const disk = await memory(4 * MiB);
    const at = await serve(
      { disk },
      { tls: { psk: new Map([['alice', '00112233445566778899aabbccddeeff']]) } },
    );
    const info = await runPeerOk('nbdinfo', [`nbds://alice@${at}/disk?tls-psk-file=${keys}`]);
    expect(info).toMatch(/with TLS/);
    const refused = await runPeer('nbdinfo', [`nbds://alice@${at}/disk?tls-psk-file=${wrong}`]);
    expect(refused.code).not.toBe(0);
    // The server is still up for the right key.
    await runPeerOk('nbdinfo', ['--size', `nbds://alice@${at}/disk?tls-psk-file=${keys}`]);
  });
});
