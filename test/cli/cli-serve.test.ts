import { execFile } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterEach, beforeAll, expect, it } from 'vitest';
import { EXIT_STATUS } from '../../src/cli/index.js';
import { NbdDevice } from '../../src/index.js';
import { buildCli, type RunningCli, runBin, startBin, tempDir } from '../support/cli-runner.js';
import { startNbdkit } from '../support/nbd-peers.js';
import { describeWithPeers } from '../support/peers.js';

/*
 * `blocksnap serve`, `pit --serve` and NBD URLs as `apply` targets, driven
 * by the programs users point at them: nbdinfo and qemu-io against the
 * served volume, and the command's `apply` against nbdkit's memory plugin.
 */

const run = promisify(execFile);

let bin: string;
beforeAll(async () => {
  bin = await buildCli();
}, 60_000);

/** Every server a test started, stopped after it even when it failed. */
const running: RunningCli[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((r) => r.stop('SIGKILL')));
});

function blocksnap(cwd: string, args: readonly string[], input?: Uint8Array | string) {
  return runBin(bin, args, { cwd, input });
}

async function ok(pending: ReturnType<typeof blocksnap>) {
  const done = await pending;
  if (done.status !== 0) throw new Error(`exit ${done.status}: ${done.stderr}`);
  return done;
}

interface Announced {
  volume: string;
  address: { host: string; port: number } | { path: string };
  tls: string | null;
  exports: { name: string; url: string; readOnly: boolean; what: string }[];
}

/** Starts `serve` (or `pit --serve`) with `--json` on a port the system picks, and reads its announcement. */
async function serving(cwd: string, args: readonly string[]): Promise<[RunningCli, Announced]> {
  const server = await startBin(bin, [...args, '--port', '0', '--json'], { cwd });
  running.push(server);
  return [server, JSON.parse(server.firstLine) as Announced];
}

/** Bytes of a volume or snapshot, read by the command into a file. */
async function bytesOf(cwd: string, source: string, offset: number, length: number) {
  const out = `read-${offset}-${length}.raw`;
  await ok(
    blocksnap(cwd, [
      'read',
      source,
      '--offset',
      String(offset),
      '--length',
      String(length),
      '-o',
      out,
    ]),
  );
  return fs.readFileSync(path.join(cwd, out));
}

/** A 16 MiB volume whose first 64 KiB are 0xab in snapshot `snap`, then zeroed live. */
async function volumeWithSnapshot(journal: boolean): Promise<string> {
  const dir = tempDir();
  await ok(
    blocksnap(dir, ['create', 'vm1', '--size', '16M', ...(journal ? ['--journal', '2M'] : [])]),
  );
  await ok(blocksnap(dir, ['write', 'vm1'], Buffer.alloc(65536, 0xab)));
  await ok(blocksnap(dir, ['snapshot', 'create', 'vm1', '--name', 'snap']));
  await ok(blocksnap(dir, ['write', 'vm1'], Buffer.alloc(65536, 0)));
  return dir;
}

/** Runs qemu-io on `url`; resolves with its exit status and output (it prints failures on stderr). */
async function qemuIo(url: string, command: string, readOnly: boolean) {
  try {
    const { stdout, stderr } = await run('qemu-io', [
      ...(readOnly ? ['-r'] : []),
      '-f',
      'raw',
      '-c',
      command,
      url,
    ]);
    return { status: 0, output: stdout + stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { status: e.code ?? -1, output: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}

describeWithPeers(['nbdinfo', 'qemu-io'], 'blocksnap serve', () => {
  it('serves the volume and every snapshot as name@snapshot, read-only; nbdinfo lists and sizes them, qemu-io reads the snapshot, and SIGTERM exits 0 leaving the volume sound', async () => {
    const dir = await volumeWithSnapshot(true);
    const [server, announced] = await serving(dir, ['serve', 'vm1']);
    expect(announced).toMatchObject({ volume: 'vm1', tls: null });
    expect(announced.exports.map((e) => [e.name, e.readOnly])).toEqual([
      ['vm1', true],
      ['vm1@snap', true],
    ]);
    const [live, snap] = announced.exports.map((e) => e.url);
    expect(live).toMatch(/^nbd:\/\/127\.0\.0\.1:\d+\/vm1$/);
    expect(snap).toBe(`${live}@snap`);

    const listed = JSON.parse((await run('nbdinfo', ['--list', '--json', live!])).stdout) as {
      exports: { 'export-name': string; is_read_only: boolean }[];
    };
    expect(listed.exports.map((e) => [e['export-name'], e.is_read_only])).toEqual([
      ['vm1', true],
      ['vm1@snap', true],
    ]);
    expect((await run('nbdinfo', ['--size', snap!])).stdout.trim()).toBe(String(16 << 20));

    const fromSnapshot = await qemuIo(snap!, 'read -P 0xab 0 64k', true);
    expect(fromSnapshot.output).toMatch(/read 65536\/65536 bytes at offset 0/);
    expect(fromSnapshot.status).toBe(0);
    // The live volume was zeroed after the snapshot: the same check fails there.
    expect((await qemuIo(live!, 'read -P 0xab 0 64k', true)).status).not.toBe(0);
    for (const url of [snap!, live!]) {
      const write = await qemuIo(url, 'write -P 0x11 0 4k', false);
      expect(write.status).not.toBe(0);
      expect(write.output).toMatch(/Permission denied|read-only/i);
    }

    expect(await server.stop('SIGTERM')).toBe(0);
    // One JSON line, printed once listening: nothing more when it stops.
    expect(server.stdout()).toBe(`${server.firstLine}\n`);
    expect(server.stderr()).toBe('');
    await ok(blocksnap(dir, ['check', 'vm1']));
    expect(await bytesOf(dir, 'vm1@snap', 0, 65536)).toEqual(Buffer.alloc(65536, 0xab));
  }, 30_000);

  it('--writable lets clients write the live volume, never a snapshot; the writes are in the volume after SIGINT', async () => {
    const dir = await volumeWithSnapshot(false);
    const [server, announced] = await serving(dir, [
      'serve',
      'vm1',
      '--writable',
      '--name',
      'disk',
    ]);
    expect(announced.exports.map((e) => [e.name, e.readOnly])).toEqual([
      ['disk', false],
      ['disk@snap', true],
    ]);
    const [live, snap] = announced.exports.map((e) => e.url);
    expect((await qemuIo(live!, 'write -P 0x5c 4k 4k', false)).status).toBe(0);
    expect((await qemuIo(snap!, 'write -P 0x5c 4k 4k', false)).status).not.toBe(0);
    expect(await server.stop('SIGINT')).toBe(0);
    expect(await bytesOf(dir, 'vm1', 4096, 4096)).toEqual(Buffer.alloc(4096, 0x5c));
    expect(await bytesOf(dir, 'vm1@snap', 4096, 4096)).toEqual(Buffer.alloc(4096, 0xab));
  }, 30_000);

  it('an occupied port is one EBUSY line and exit status 5; the volume is closed again', async () => {
    const dir = await volumeWithSnapshot(false);
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const port = (taken.address() as net.AddressInfo).port;
    try {
      const busy = await blocksnap(dir, ['serve', 'vm1', '--port', String(port)]);
      expect(busy.stderr).toBe(
        `blocksnap: EBUSY: serve: 127.0.0.1:${port} is in use (another NBD server?): pick another --port\n`,
      );
      expect(busy.status).toBe(EXIT_STATUS.EBUSY);
      expect(EXIT_STATUS.EBUSY).toBe(5);
      const json = await blocksnap(dir, ['serve', 'vm1', '--port', String(port), '--json']);
      expect(JSON.parse(json.stderr)).toMatchObject({ error: { code: 'EBUSY', exitStatus: 5 } });
      await ok(blocksnap(dir, ['snapshot', 'create', 'vm1', '--name', 'after']));
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  }, 30_000);

  it('pit --serve serves the journal as it was after a record, read-only, as name@pit-SEQ', async () => {
    const dir = tempDir();
    await ok(blocksnap(dir, ['create', 'vm1', '--size', '16M', '--journal', '2M']));
    await ok(blocksnap(dir, ['write', 'vm1'], Buffer.alloc(65536, 0xab)));
    await ok(blocksnap(dir, ['write', 'vm1'], Buffer.alloc(65536, 0xcd)));
    const [server, announced] = await serving(dir, ['pit', 'vm1', '--at', '1', '--serve']);
    expect(announced.exports.map((e) => [e.name, e.readOnly])).toEqual([['vm1@pit-1', true]]);
    const url = announced.exports[0]!.url;
    expect((await qemuIo(url, 'read -P 0xab 0 64k', true)).status).toBe(0);
    expect((await qemuIo(url, 'write -P 0 0 4k', false)).status).not.toBe(0);
    expect(await server.stop('SIGTERM')).toBe(0);
    expect(await bytesOf(dir, 'vm1', 0, 65536)).toEqual(Buffer.alloc(65536, 0xcd));
  }, 30_000);

  it('TLS with a PSK file in the psktool format: nbdinfo connects with the key, and not without TLS', async () => {
    const dir = await volumeWithSnapshot(false);
    const keys = path.join(dir, 'keys.psk');
    fs.writeFileSync(keys, `alice:${'0123456789abcdef'.repeat(4)}\n`);
    const [server, announced] = await serving(dir, ['serve', 'vm1', '--tls-psk', keys]);
    expect(announced.tls).toBe('require');
    const url = announced.exports[1]!.url;
    expect(url).toMatch(/^nbds:\/\/127\.0\.0\.1:\d+\/vm1@snap$/);
    const withKey = `${url.replace('nbds://', 'nbds://alice@')}?tls-psk-file=${keys}`;
    expect((await run('nbdinfo', ['--size', withKey])).stdout.trim()).toBe(String(16 << 20));
    await expect(run('nbdinfo', ['--size', url.replace('nbds://', 'nbd://')])).rejects.toThrow();
    expect(await server.stop('SIGTERM')).toBe(0);
  }, 30_000);
});

describeWithPeers(['nbdkit'], 'blocksnap apply and copy to an NBD URL', () => {
  it('applies a stream to an nbdkit memory export, which then reads back as the snapshot; applying again succeeds; copy writes there too; a read-only export is EROFS', async () => {
    const dir = await volumeWithSnapshot(false);
    await ok(blocksnap(dir, ['export', 'vm1', '--snapshot', 'snap', '-o', 'full.bsnap']));
    const peer = await startNbdkit(['memory', '16M']);
    const readOnly = await startNbdkit(['-r', 'memory', '16M']);
    try {
      const applied = await ok(blocksnap(dir, ['apply', 'full.bsnap', peer.url, '--json']));
      expect(applied.json()).toMatchObject({ target: peer.url, incremental: false });
      // Applying it again (as after a cut) is accepted: the export holds the stream's data already.
      await ok(blocksnap(dir, ['apply', 'full.bsnap', peer.url]));

      const expected = await bytesOf(dir, 'vm1@snap', 0, 16 << 20);
      const device = await NbdDevice.connect(peer.url);
      try {
        const served = Buffer.from(await device.read(0, device.size));
        expect(served.subarray(0, 65536)).toEqual(Buffer.alloc(65536, 0xab));
        expect(served.equals(expected)).toBe(true);
      } finally {
        await device.close();
      }

      // copy takes the same targets: the live volume (zeroed since the snapshot) over it.
      await ok(blocksnap(dir, ['copy', 'vm1', peer.url]));
      const copied = await NbdDevice.connect(peer.url);
      try {
        const served = Buffer.from(await copied.read(0, copied.size));
        expect(served.equals(await bytesOf(dir, 'vm1', 0, 16 << 20))).toBe(true);
        expect(served.subarray(0, 65536)).toEqual(Buffer.alloc(65536, 0));
      } finally {
        await copied.close();
      }

      const refused = await blocksnap(dir, ['apply', 'full.bsnap', readOnly.url]);
      expect(refused.stderr).toMatch(/^blocksnap: EROFS: apply: .* is a read-only export\n$/);
      expect(refused.status).toBe(EXIT_STATUS.EROFS);
      const snapshot = await blocksnap(dir, ['apply', 'full.bsnap', peer.url, '--snapshot', 'x']);
      expect(snapshot.stderr).toMatch(/--snapshot needs a volume target; .* is an NBD export/);
      expect(snapshot.status).toBe(EXIT_STATUS.EINVAL);
    } finally {
      await Promise.all([peer.stop(), readOnly.stop()]);
    }
  }, 30_000);
});
