// Writing your own device: XorDevice (examples/devices/xor-device.ts)
// subclasses AbstractBlockDevice and implements four hooks; the base class
// does every check. Here it runs over a MemoryDevice and under a
// CowSnapshotDevice, like any blocksnap device. Its conformance test is in
// the README ("Writing your own device"). Run it with
// `npx tsx examples/own-device.ts`.
import { BlockDeviceError, CowSnapshotDevice, MemoryDevice } from '../src/index.js';
import { XorDevice } from './devices/xor-device.js';

const KiB = 1024;
let failures = 0;

/** Prints a check and counts it if it failed. */
function check(ok: boolean, what: string): void {
  console.log(`   ${ok ? '✓' : '✗ FAILED:'} ${what}`);
  if (!ok) failures++;
}

const text = new TextEncoder().encode('hello, own device');
const memory = await MemoryDevice.create({ size: 256 * KiB });
const xor = new XorDevice(memory, 0x5a);

console.log('1. Write through XorDevice, read back through it and below it');
await xor.write(4096, text);
const back = await xor.read(4096, text.length);
check(
  new TextDecoder().decode(back) === 'hello, own device',
  'XorDevice reads back what was written',
);
const below = await memory.read(4096, text.length);
check(
  below.every((byte, i) => byte === (text[i]! ^ 0x5a)),
  `the MemoryDevice below holds it XORed: ${[...below.subarray(0, 5)].map((b) => b.toString(16)).join(' ')} …`,
);

console.log('2. The base class checks the arguments before any hook runs');
for (const [what, call, code] of [
  ['a read past the end', () => xor.read(256 * KiB, 1), 'ERANGE'],
  ['a fractional offset', () => xor.write(1.5, text), 'ERANGE'],
  ['data that is not bytes', () => xor.write(0, 'text' as unknown as Uint8Array), 'EINVAL'],
] as const) {
  const err = await call().then(
    () => undefined,
    (e: unknown) => e,
  );
  check(BlockDeviceError.is(err, code), `${what}: ${code}`);
}

console.log('3. A CowSnapshotDevice over it: snapshots of an obfuscated volume');
const store = await MemoryDevice.create({ size: 2048 * KiB });
const cow = await CowSnapshotDevice.create(xor, store);
const snap = await cow.snapshot({ name: 'before' });
await cow.write(4096, new Uint8Array(text.length).fill(0x21));
const old = new TextDecoder().decode(await snap.read(4096, text.length));
check(old === 'hello, own device', `the snapshot still reads "${old}"`);
await cow.close(); // closes XorDevice, which closes the MemoryDevice below it
check(xor.closed && memory.closed, 'closing the stack closed XorDevice and the MemoryDevice');

if (failures > 0) {
  console.log(`${failures} check(s) failed`);
  process.exit(1);
}
console.log('done');
