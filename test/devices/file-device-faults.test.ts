import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type OwnedIO, WRITE_OWNED } from '../../src/base/owned-io.js';
import { FileDevice } from '../../src/devices/file-device.js';
import { BlockDeviceError } from '../../src/errors.js';
import { codeOf } from '../support/error-code.js';
import { type FsFunction, withReplacedFs } from '../support/replaced-fs.js';

let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'blocksnap-file-faults-'));
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

type OpenCallback = (err: NodeJS.ErrnoException | null, fd: number) => void;

/** `fs.open` that reports each (path, flags, fd) it opened to `seen`. */
function recordingOpen(seen: { path: string; flags: string; fd: number }[]) {
  return (real: FsFunction): FsFunction =>
    (...args) => {
      const [path, flags] = args as [string, string];
      const callback = args.pop() as OpenCallback;
      return real(...args, (err: NodeJS.ErrnoException | null, fd: number) => {
        if (!err) seen.push({ path, flags, fd });
        callback(err, fd);
      });
    };
}

describe('FileDevice.open: creating a file when the file system misbehaves', () => {
  it('closes its temporary file once when it loses the race and the winner cannot be opened', async () => {
    const path = join(dir, 'disk.img');
    const opened: { path: string; flags: string; fd: number }[] = [];
    const closed: number[] = [];
    await withReplacedFs(
      {
        fs: {
          open: recordingOpen(opened),
          close: (real) => (fd, callback) => {
            closed.push(fd as number);
            return real(fd, callback);
          },
        },
        // Another creator linked its file first, then it was gone before
        // this one could open it: the reopen fails with ENOENT.
        promises: {
          link: () => () =>
            Promise.reject(
              Object.assign(new Error('EEXIST: file already exists'), { code: 'EEXIST' }),
            ),
        },
      },
      async () => {
        // No lock file: its creation links too, and this fake fails every link.
        const failure = FileDevice.open(path, { size: 8192, create: true, lock: false });
        expect(await codeOf(failure)).toBe('EIO');
      },
    );
    const temporary = opened.find((o) => o.path.endsWith('.creating'));
    expect(temporary).toBeDefined();
    // A second close of the number could close whatever file reused it.
    expect(closed.filter((fd) => fd === temporary!.fd)).toHaveLength(1);
    expect(await readdir(dir)).toEqual([]);
  });
});

describe('FileDevice: a write the file system reports as 0 bytes written', () => {
  // fs.write reporting 0 bytes again and again would be retried forever;
  // the fake gives up after a hundred calls so a missing guard fails here
  // instead of hanging.
  const zeroBytes =
    (counter: { calls: number }) =>
    (): FsFunction =>
    (...args) => {
      const callback = args.at(-1) as (err: Error | null, n: number) => void;
      counter.calls++;
      const giveUp = counter.calls > 100;
      setImmediate(() => (giveUp ? callback(new Error('still retrying'), 0) : callback(null, 0)));
    };

  it.each([
    ['write', 'write', (d: FileDevice) => d.write(4096, new Uint8Array(4096).fill(1))],
    [
      'WRITE_OWNED, one block',
      'write',
      (d: FileDevice) => (d as unknown as OwnedIO)[WRITE_OWNED](0, [new Uint8Array(4096)]),
    ],
    [
      'WRITE_OWNED, several blocks',
      'writev',
      (d: FileDevice) =>
        (d as unknown as OwnedIO)[WRITE_OWNED](0, [new Uint8Array(4096), new Uint8Array(4096)]),
    ],
  ] as const)(
    '%s fails EIO at once, and close does not wait for it',
    { timeout: 10_000 },
    async (_kind, call, issue) => {
      await using device = await FileDevice.open(join(dir, 'disk.img'), {
        size: 16384,
        create: true,
      });
      const counter = { calls: 0 };
      const err = await withReplacedFs({ fs: { [call]: zeroBytes(counter) } }, () =>
        issue(device).then(
          () => undefined,
          (e: unknown) => e,
        ),
      );
      expect(BlockDeviceError.is(err, 'EIO'), String(err)).toBe(true);
      expect((err as Error).message).toMatch(/wrote nothing/);
      expect(counter.calls).toBe(1);
      // The failed write left the in-flight count: close does not wait for it forever.
      await device.close();
    },
  );
});

describe('FileDevice.open: the directory a created file is made durable in', () => {
  /** The directories opened (read-only, to fsync them) while `path` is created. */
  async function directoriesSynced(path: string): Promise<string[]> {
    const opened: { path: string; flags: string; fd: number }[] = [];
    await withReplacedFs({ fs: { open: recordingOpen(opened) } }, async () => {
      const device = await FileDevice.open(path, { size: 4096, create: true });
      await device.close();
    });
    return opened.filter((o) => o.flags === 'r').map((o) => o.path);
  }

  it('is the parent directory of a nested path', async () => {
    await mkdir(join(dir, 'a', 'b'), { recursive: true });
    expect(await directoriesSynced(join(dir, 'a', 'b', 'disk.img'))).toEqual([join(dir, 'a', 'b')]);
  });

  it("is '.' for a relative path with no directory part, and the folder for a relative nested one", async () => {
    const cwd = process.cwd();
    process.chdir(dir);
    try {
      await mkdir('sub');
      expect(await directoriesSynced('file.img')).toEqual(['.']);
      expect(await directoriesSynced('./dot.img')).toEqual(['.']);
      expect(await directoriesSynced(join('sub', 'nested.img'))).toEqual(['sub']);
    } finally {
      process.chdir(cwd);
    }
    expect((await readdir(dir)).sort()).toEqual(['dot.img', 'file.img', 'sub']);
  });
});
