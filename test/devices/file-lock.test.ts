import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CowSnapshotDevice, FileDevice } from '../../src/index.js';
import { fill } from '../support/bytes.js';
import { expectCode } from '../support/error-code.js';

/*
 * Issue 21: two openers of one file — the same process or two — used to
 * succeed, and a reader saw zeros where the writer had flushed; two
 * openers of one COW store corrupted a snapshot. A writable FileDevice now
 * holds `<path>.blocksnap-lock` while it is open.
 */

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'blocksnap-lock-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

const lockOf = (path: string) => `${path}.blocksnap-lock`;

describe('FileDevice: one writer at a time', () => {
  it('a second open of a file open for writing is EBUSY, read-only or not, until the first closes', async () => {
    const path = join(dir, 'disk.img');
    const first = await FileDevice.open(path, { size: 8192, create: true });
    expect(existsSync(lockOf(path))).toBe(true);
    const err = await expectCode(FileDevice.open(path), 'EBUSY');
    expect(err.message).toMatch(/this process already has it open/);
    await expectCode(FileDevice.open(path, { readOnly: true }), 'EBUSY');
    await first.write(0, fill(512, 5));
    await first.close();
    expect(existsSync(lockOf(path))).toBe(false);
    const second = await FileDevice.open(path);
    expect((await second.read(0, 512))[0]).toBe(5);
    await second.close();
  });

  it('read-only opens share the file and take no lock', async () => {
    const path = join(dir, 'disk.img');
    writeFileSync(path, new Uint8Array(8192));
    const a = await FileDevice.open(path, { readOnly: true });
    const b = await FileDevice.open(path, { readOnly: true });
    expect(existsSync(lockOf(path))).toBe(false);
    await a.close();
    await b.close();
  });

  it('a lock left by a process that died is taken over', async () => {
    const path = join(dir, 'disk.img');
    writeFileSync(path, new Uint8Array(8192));
    // A real process that is gone by now.
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']);
    const pid = Number(dead.stdout.toString());
    writeFileSync(lockOf(path), JSON.stringify({ pid, start: undefined, host: hostname() }));
    const device = await FileDevice.open(path);
    expect(JSON.parse(readFileSync(lockOf(path), 'utf8')).pid).toBe(process.pid);
    await device.close();
  });

  it('a lock from another host is never taken over', async () => {
    const path = join(dir, 'disk.img');
    writeFileSync(path, new Uint8Array(8192));
    writeFileSync(lockOf(path), JSON.stringify({ pid: 1, host: 'elsewhere.example' }));
    const err = await expectCode(FileDevice.open(path), 'EBUSY');
    expect(err.message).toMatch(/process 1 on elsewhere\.example/);
  });

  it('a failed open lets go of the lock', async () => {
    const path = join(dir, 'disk.img');
    writeFileSync(path, new Uint8Array(8192));
    await expectCode(FileDevice.open(path, { size: 4096 }), 'EINVAL');
    expect(existsSync(lockOf(path))).toBe(false);
    await (await FileDevice.open(path)).close();
  });

  it('lock: false takes no lock', async () => {
    const path = join(dir, 'disk.img');
    const a = await FileDevice.open(path, { size: 8192, create: true, lock: false });
    expect(existsSync(lockOf(path))).toBe(false);
    const b = await FileDevice.open(path, { lock: false });
    await a.close();
    await b.close();
  });

  it('another process cannot open a COW stack this process has open, and can once it is closed', async () => {
    const origin = join(dir, 'origin.img');
    const store = join(dir, 'store.img');
    const cow = await CowSnapshotDevice.create(
      await FileDevice.open(origin, { size: 64 * 1024, create: true }),
      await FileDevice.open(store, { size: 1 << 20, create: true }),
      { maxSnapshots: 4 },
    );
    await cow.write(0, fill(4096, 7));
    await cow.snapshot({ name: 'a' });
    await cow.flush();
    expect(await openInChild(origin, store)).toMatch(/^EBUSY: .*process \d+ on .* has it open/);
    await cow.close();
    expect(await openInChild(origin, store)).toBe('opened: a');
  });
});

/** Opens the COW stack over `origin` and `store` in a child process; what it printed. */
function openInChild(origin: string, store: string): Promise<string> {
  const index = new URL('../../src/index.ts', import.meta.url).pathname;
  const script = `
    import { CowSnapshotDevice, FileDevice } from ${JSON.stringify(index)};
    try {
      const o = await FileDevice.open(${JSON.stringify(origin)});
      const s = await FileDevice.open(${JSON.stringify(store)});
      const cow = await CowSnapshotDevice.open(o, s);
      console.log('opened: ' + cow.listSnapshots().map((x) => x.name).join(','));
      await cow.close();
    } catch (err) {
      console.log(err.message);
    }
  `;
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', '--input-type=module', '-e', script],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
    });
    child.on('error', reject);
    child.on('close', () => resolve(out.trim()));
  });
}
