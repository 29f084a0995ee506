/**
 * nbds:// against nbdkit --tls=require: a pre-shared key and X.509
 * certificates (made with openssl for the test), and the refusals: no TLS
 * asked for, a wrong key, a CA that did not sign the server.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { NbdDevice } from '../../src/index.js';
import { fill } from '../support/bytes.js';
import { expectCode } from '../support/error-code.js';
import { type NbdPeer, startNbdkit, tempDir } from '../support/nbd-peers.js';
import { describeWithPeers } from '../support/peers.js';

const running: NbdPeer[] = [];
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const peer of running.splice(0)) await peer.stop();
  for (const cleanup of cleanups.splice(0)) await cleanup();
});

async function roundTrip(device: NbdDevice): Promise<void> {
  await device.write(4096, fill(4096, 0x33));
  expect(await device.read(4096, 4096)).toEqual(fill(4096, 0x33));
  await device.close();
}

describeWithPeers(['nbdkit'], 'NbdDevice over TLS with a pre-shared key', () => {
  it('connects with the key, and is refused without TLS or with a wrong key', async () => {
    const { dir, cleanup } = await tempDir();
    cleanups.push(cleanup);
    const key = randomBytes(32).toString('hex');
    const keys = join(dir, 'keys.psk');
    await writeFile(keys, `alice:${key}\n`, { mode: 0o600 });
    const peer = await startNbdkit(['--tls=require', `--tls-psk=${keys}`, 'memory', 'size=1M']);
    running.push(peer);
    const tlsUrl = `nbds://127.0.0.1:${peer.port}/`;

    await roundTrip(await NbdDevice.connect(tlsUrl, { tls: { psk: { identity: 'alice', key } } }));
    const clear = await expectCode(NbdDevice.connect(`nbd://127.0.0.1:${peer.port}/`), 'EIO');
    expect(clear.message).toMatch(/requires TLS/);
    const wrongKey = randomBytes(32);
    await expectCode(
      NbdDevice.connect(tlsUrl, {
        tls: { psk: { identity: 'alice', key: wrongKey } },
        timeoutMs: 5_000,
      }),
      'EIO',
    );
  });
});

describeWithPeers(['nbdkit', 'openssl'], 'NbdDevice over TLS with X.509 certificates', () => {
  it('verifies the server against the CA given, and refuses one another CA signed', async () => {
    const { dir, cleanup } = await tempDir();
    cleanups.push(cleanup);
    makeCertificates(dir, 'ca', 'server');
    makeCertificates(dir, 'other-ca', undefined);
    const peer = await startNbdkit([
      '--tls=require',
      `--tls-certificates=${dir}`,
      'memory',
      'size=1M',
    ]);
    running.push(peer);
    const url = `nbds://127.0.0.1:${peer.port}/`;
    const ca = await readFile(join(dir, 'ca-cert.pem'));
    await roundTrip(await NbdDevice.connect(url, { tls: { ca } }));
    const otherCa = await readFile(join(dir, 'other-ca-cert.pem'));
    const err = await expectCode(NbdDevice.connect(url, { tls: { ca: otherCa } }), 'EIO');
    expect(err.message).toMatch(/TLS failed/);
  });
});

/** A CA `<name>-cert.pem`, and with `server`, server-cert.pem and server-key.pem for 127.0.0.1, as nbdkit reads them. */
function makeCertificates(dir: string, name: string, server: string | undefined): void {
  const run = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  run(
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-days',
    '2',
    '-subj',
    `/CN=${name}`,
    '-keyout',
    `${name}-key.pem`,
    '-out',
    `${name}-cert.pem`,
  );
  if (server === undefined) return;
  run(
    'req',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-subj',
    '/CN=127.0.0.1',
    '-keyout',
    `${server}-key.pem`,
    '-out',
    `${server}.csr`,
  );
  execFileSync(
    'sh',
    ['-c', 'printf "subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n" > ext.cnf'],
    { cwd: dir },
  );
  run(
    'x509',
    '-req',
    '-in',
    `${server}.csr`,
    '-CA',
    `${name}-cert.pem`,
    '-CAkey',
    `${name}-key.pem`,
    '-CAcreateserial',
    '-days',
    '2',
    '-extfile',
    'ext.cnf',
    '-out',
    `${server}-cert.pem`,
  );
}
