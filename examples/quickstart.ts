// A file-backed volume with copy-on-write snapshots, from creation to reopening
// it from disk. Run it with `npm run demo`.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type BlockDevice, CowSnapshotDevice, FileDevice } from '../src/index.js';

const MiB = 1024 * 1024;
const dir = await mkdtemp(join(tmpdir(), 'blocksnap-quickstart-'));
const volumePath = join(dir, 'volume.img');
const storePath = join(dir, 'snapshots.img');
let failures = 0;

/** Prints a check and counts it if it failed. */
function check(ok: boolean, what: string): void {
  console.log(`   ${ok ? '✓' : '✗ FAILED:'} ${what}`);
  if (!ok) failures++;
}

/** One 4 KiB block holding `text`, zero-padded. */
function block(text: string): Uint8Array {
  const out = new Uint8Array(4096);
  out.set(new TextEncoder().encode(text));
  return out;
}

/** The text at the start of the first block of `device`. */
async function readText(device: BlockDevice): Promise<string> {
  const bytes = await device.read(0, 4096);
  const end = bytes.indexOf(0);
  return new TextDecoder().decode(end < 0 ? bytes : bytes.subarray(0, end));
}

try {
  console.log(`1. Create a 64 MiB volume and a 16 MiB snapshot store in ${dir}`);
  {
    await using volume = await CowSnapshotDevice.create(
      await FileDevice.open(volumePath, { size: 64 * MiB, create: true }),
      await FileDevice.open(storePath, { size: 16 * MiB, create: true }),
      { maxSnapshots: 16 },
    );
    await volume.write(0, block('config v1'));
    console.log(`   wrote "config v1" at offset 0; reads back "${await readText(volume)}"`);

    console.log('2. Snapshot it as "before-upgrade", then overwrite the block');
    const before = await volume.snapshot({ name: 'before-upgrade' });
    await volume.write(0, block('config v2'));
    const now = await readText(volume);
    const then = await readText(before);
    console.log(`   volume reads "${now}", snapshot reads "${then}"`);
    check(now === 'config v2', 'the volume has the new bytes');
    check(then === 'config v1', 'the snapshot still has the old bytes');
    console.log(`   the store holds ${volume.preservedBlocks} preserved block(s)`);

    console.log('3. Take a writable clone "experiment" and write to it');
    const clone = await volume.snapshot({ name: 'experiment', writable: true });
    await clone.write(0, block('config v3 (trial)'));
    const inClone = await readText(clone);
    const inVolume = await readText(volume);
    console.log(`   clone reads "${inClone}", volume reads "${inVolume}"`);
    check(inClone === 'config v3 (trial)', 'the clone has its own write');
    check(inVolume === 'config v2', 'the volume is unaffected by the clone');
    check((await readText(before)) === 'config v1', '"before-upgrade" is unaffected too');

    console.log('4. Roll the volume back to "before-upgrade"');
    await volume.restore(before.id);
    const restored = await readText(volume);
    console.log(`   volume reads "${restored}"`);
    check(restored === 'config v1', 'the volume has the snapshot content again');
    check((await readText(clone)) === 'config v3 (trial)', 'the clone kept its write');

    console.log('5. Close everything (end of the `await using` scope)');
  }

  console.log('6. Reopen the volume and its store from disk');
  await using volume = await CowSnapshotDevice.open(
    await FileDevice.open(volumePath),
    await FileDevice.open(storePath),
  );
  const infos = volume.listSnapshots();
  for (const info of infos) {
    await using snap = await volume.openSnapshot(info.id);
    const kind = info.writable ? 'writable' : 'read-only';
    console.log(`   snapshot "${info.name}" (${kind}) reads "${await readText(snap)}"`);
  }
  const byName = (name: string) => infos.find((info) => info.name === name);
  const before = byName('before-upgrade');
  const clone = byName('experiment');
  check(
    infos.length === 2 && before !== undefined && clone !== undefined,
    'both snapshots are back',
  );
  if (before && clone) {
    await using b = await volume.openSnapshot(before.id);
    await using c = await volume.openSnapshot(clone.id);
    check((await readText(b)) === 'config v1', '"before-upgrade" still reads "config v1"');
    check((await readText(c)) === 'config v3 (trial)', '"experiment" still has its own write');
    check(!before.writable && clone.writable, 'their read-only / writable kinds survived');
  }
  check((await readText(volume)) === 'config v1', 'the volume still reads the restored content');
} finally {
  await rm(dir, { recursive: true, force: true });
}

if (failures > 0) {
  console.error(`${failures} check(s) failed`);
  process.exitCode = 1;
} else {
  console.log('All checks passed; the temporary directory was removed.');
}
