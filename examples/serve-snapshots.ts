// Serve a copy-on-write volume and its snapshots over NBD, so that any NBD
// client — QEMU, qemu-io, nbdcopy, the kernel's nbd-client — can use them:
// the live volume read-write as "vm1", every snapshot read-only as
// "vm1@<name>". Writes go through qemu-io when QEMU is installed, else
// through blocksnap's own NBD client. Run it with `npx tsx examples/serve-snapshots.ts`.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import {
  BlockDeviceError,
  CowSnapshotDevice,
  MemoryDevice,
  NbdDevice,
  serveNbd,
  snapshotExports,
} from '../src/index.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;
let failures = 0;

/** Prints a check and counts it if it failed. */
function check(ok: boolean, what: string): void {
  console.log(`   ${ok ? '✓' : '✗ FAILED:'} ${what}`);
  if (!ok) failures++;
}

/** Whether qemu-io runs here. */
async function haveQemuIo(): Promise<boolean> {
  try {
    await run('qemu-io', ['--version']);
    return true;
  } catch {
    return false;
  }
}

/** Writes 64 KiB of `byte` at offset 0 of the export `url`: with qemu-io, or with our client. */
async function writePattern(url: string, byte: number, qemu: boolean): Promise<void> {
  if (qemu) {
    const hex = `0x${byte.toString(16)}`;
    await run('qemu-io', ['-f', 'raw', '-c', `write -P ${hex} 0 64k`, '-c', 'flush', url]);
    return;
  }
  await using client = await NbdDevice.connect(url);
  await client.write(0, new Uint8Array(64 * 1024).fill(byte));
  await client.flush();
}

/** The first byte at offset 0 of the export `url`, read with our client. */
async function firstByte(url: string): Promise<number> {
  await using client = await NbdDevice.connect(url);
  return (await client.read(0, 4096))[0]!;
}

const qemu = await haveQemuIo();
console.log('1. A 64 MiB CowSnapshotDevice in memory, served over NBD on 127.0.0.1');
await using volume = await CowSnapshotDevice.create(
  await MemoryDevice.create({ size: 64 * MiB }),
  await MemoryDevice.create({ size: 32 * MiB }),
);
await using server = await serveNbd({ exports: snapshotExports('vm1', volume), port: 0 });
const address = server.address;
if (!('port' in address)) throw new Error('expected a TCP address');
const base = `nbd://127.0.0.1:${address.port}`;
console.log(`   serving ${base}/vm1 (and ${base}/vm1@<snapshot>)`);

console.log(
  `2. Write 0xaa over the first 64 KiB through NBD, with ${qemu ? 'qemu-io' : "blocksnap's NbdDevice (qemu-io is not installed)"}`,
);
await writePattern(`${base}/vm1`, 0xaa, qemu);
check((await volume.read(0, 1))[0] === 0xaa, 'the volume holds the bytes the NBD client wrote');

console.log('3. Take a snapshot named "before-upgrade", then write 0xbb over the same range');
await volume.snapshot({ name: 'before-upgrade' });
await writePattern(`${base}/vm1`, 0xbb, qemu);
const live = await firstByte(`${base}/vm1`);
const snap = await firstByte(`${base}/vm1@before-upgrade`);
console.log(`   vm1 reads 0x${live.toString(16)}, vm1@before-upgrade reads 0x${snap.toString(16)}`);
check(live === 0xbb, 'the live export has the new bytes');
check(snap === 0xaa, "the snapshot's export still has the old bytes");

console.log('4. The snapshot export is read-only: a write through NBD is refused');
{
  await using client = await NbdDevice.connect(`${base}/vm1@before-upgrade`);
  check(client.readOnly, 'the client sees a read-only export');
  const refused = await client.write(0, new Uint8Array(4096)).then(
    () => undefined,
    (err: unknown) => err,
  );
  check(
    refused instanceof BlockDeviceError && refused.code === 'EROFS',
    'writing to it fails with EROFS',
  );
}

console.log('5. Close the server: the volume stays open and usable');
await server.close();
check(
  (await volume.read(0, 1))[0] === 0xbb,
  'the volume still reads its bytes after the server closed',
);

if (failures > 0) {
  console.log(`${failures} check(s) FAILED`);
  process.exitCode = 1;
} else {
  console.log('All checks passed.');
}
