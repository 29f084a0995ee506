import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import { dirname } from 'node:path';
import {
  AbstractBlockDevice,
  checkGeometry,
  checkOptions,
  checkRange,
  type InFlightCounter,
  inFlightCounter,
  isBytes,
  READ_CALLBACK,
  type ReadDone,
  readResultBuffer,
  WRITE_NOW,
  WRITE_OWNED,
} from '../base/index.js';
import { BlockDeviceError, wrapIO } from '../errors.js';
import { type FileLock, lockDeviceFile } from './file-lock.js';

/** Options for {@link FileDevice.open}. */
export interface FileDeviceOptions {
  /**
   * Size in bytes. Required when the file is created; for an existing file it
   * must match the file's size if given. @default the file's size
   */
  size?: number | undefined;
  /** Block size in bytes: a power of two from 512 to 1 MiB. @default 4096 */
  blockSize?: number | undefined;
  /** Create the file (sized to `size`, all zeros) if it does not exist. @default false */
  create?: boolean | undefined;
  /** Open the file read-only; writes fail with `EROFS`. @default false */
  readOnly?: boolean | undefined;
  /**
   * Keep other openers off the file while this device is open, through
   * the lock file `<path>.blocksnap-lock`: a writable open takes it, and
   * fails `EBUSY` if another live process — or this one — holds it; a
   * read-only open fails `EBUSY` only while a writer holds it. A lock left
   * by a process that died is taken over (on the same host; one written
   * on another host must be removed by hand). Advisory: it keeps out
   * blocksnap openers, not other programs. @default true
   */
  lock?: boolean | undefined;
}

/**
 * A block device over a regular file, doing
 * positional reads and writes on a raw file descriptor through Node's callback
 * `fs.read`/`fs.write` — the fastest asynchronous path Node offers
 * (measured: see bench/results.md). `flush()` is `fdatasync`:
 * when it resolves, every write acknowledged before it is on stable storage.
 *
 * Every read returns a buffer of its own (the caller may transfer it).
 * Creating a file is atomic: it is sized under a temporary name and linked into place.
 * `readInto` reads straight into the caller's buffer. Layers that move bulk
 * data through buffers of their own (a copy job's runs, `applyStream`'s
 * frames) read into them that way and write them uncopied, as one vectored
 * write, through the internal methods of owned-io.ts.
 */
export class FileDevice extends AbstractBlockDevice {
  /** The path the device was opened from. */
  readonly path: string;
  readonly #fd: number;
  /** The lock file this device holds (see `lock`), removed at close. */
  readonly #lock: FileLock | undefined;
  /** Reads and writes count themselves in flight, in their fs callback: no reaction per I/O. */
  readonly #inFlight: InFlightCounter = inFlightCounter(this);

  private constructor(
    path: string,
    fd: number,
    size: number,
    blockSize: number,
    readOnly: boolean,
    lock: FileLock | undefined,
  ) {
    super('FileDevice', size, blockSize, readOnly);
    this.path = path;
    this.#fd = fd;
    this.#lock = lock;
    this.#inFlight.ownReads = true;
    this.#inFlight.ownWrites = true;
  }

  /**
   * Opens (and with `create`, creates) a file as a block device. A created
   * file is sized and made durable (file and directory entry) before this resolves.
   * @throws `EINVAL` for bad options or a file whose size is not a multiple
   *   of the block size, `ENOENT` if the file is missing and `create` is not
   *   set, `EIO` for other failures of the file system.
   */
  static async open(path: string, options: FileDeviceOptions = {}): Promise<FileDevice> {
    if (typeof path !== 'string' || path.length === 0) {
      throw new BlockDeviceError('EINVAL', `path must be a non-empty string, got ${String(path)}`);
    }
    const types = {
      size: 'number',
      blockSize: 'number',
      create: 'boolean',
      lock: 'boolean',
    } as const;
    checkOptions(options, { ...types, readOnly: 'boolean' }, 'FileDevice.open');
    const blockSize = options.blockSize ?? 4096;
    const readOnly = options.readOnly ?? false;
    if (options.size !== undefined) checkGeometry('FileDevice', options.size, blockSize);
    else checkGeometry('FileDevice', 0, blockSize);
    if (options.create && readOnly) {
      throw new BlockDeviceError('EINVAL', 'FileDevice: create and readOnly exclude each other');
    }

    // Locked before the file is opened or created: a second opener never
    // sees a half-made file, nor makes one.
    const lock = options.lock === false ? undefined : await lockDeviceFile(path, readOnly);
    try {
      return await FileDevice.#openLocked(path, options, blockSize, readOnly, lock);
    } catch (err) {
      await lock?.release().catch(() => {});
      throw err;
    }
  }

  static async #openLocked(
    path: string,
    options: FileDeviceOptions,
    blockSize: number,
    readOnly: boolean,
    lock: FileLock | undefined,
  ): Promise<FileDevice> {
    let fd: number;
    try {
      fd = await fdOpen(path, readOnly ? 'r' : 'r+');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw wrapIO(`open ${path}`, err);
      if (!options.create) {
        throw new BlockDeviceError('ENOENT', `FileDevice: no file at ${path}`, { cause: err });
      }
      if (options.size === undefined) {
        throw new BlockDeviceError('EINVAL', `FileDevice: size is required to create ${path}`);
      }
      fd = await createSized(path, options.size);
    }

    try {
      const size = (await fdStat(fd)).size;
      if (options.size !== undefined && options.size !== size) {
        throw new BlockDeviceError(
          'EINVAL',
          `FileDevice: ${path} is ${size} bytes, not the requested ${options.size}`,
        );
      }
      if (size % blockSize !== 0) {
        throw new BlockDeviceError(
          'EINVAL',
          `FileDevice: ${path} is ${size} bytes, not a multiple of blockSize ${blockSize}`,
        );
      }
      return new FileDevice(path, fd, size, blockSize, readOnly, lock);
    } catch (err) {
      await fdClose(fd).catch(() => {});
      throw BlockDeviceError.is(err) ? err : wrapIO(`open ${path}`, err);
    }
  }

  protected _read(offset: number, length: number): Promise<Uint8Array> {
    // Not zero-filled: #fill overwrites every byte or the read fails and
    // hands it to no one. (Zeroing, and faulting in, a fresh megabyte per
    // read cost as much as the read itself.)
    const buffer = readResultBuffer(length);
    this.#inFlight.started();
    return new Promise((resolve, reject) => this.#fill(offset, buffer, resolve, reject));
  }

  /**
   * Reads into the caller's buffer: `read` without the fresh buffer, the
   * one cost `read` adds to a bare `fs.read` besides its promise.
   */
  protected override _readInto(offset: number, target: Uint8Array): Promise<Uint8Array> {
    this.#inFlight.started();
    return new Promise((resolve, reject) => this.#fill(offset, target, resolve, reject));
  }

  /**
   * See {@link READ_CALLBACK}: `read` with a callback. In the in-flight count
   * like `read` (close waits for it), without a promise reaction for it.
   * @internal A fast path for the library's own layers.
   */
  [READ_CALLBACK](offset: number, length: number, done: ReadDone, into?: Uint8Array): void {
    try {
      this.checkOpen();
      checkRange(this.size, offset, length);
    } catch (err) {
      done(err as Error, undefined);
      return;
    }
    if (length === 0) {
      done(null, into ?? new Uint8Array(0));
      return;
    }
    const buffer = into ?? readResultBuffer(length);
    this.#inFlight.started();
    this.#fill(offset, buffer, done, undefined);
  }

  /**
   * Reads `buffer.length` bytes at `offset` into `buffer`, resuming after short
   * reads; leaves the in-flight count the caller entered, once, as it settles.
   * It settles through `resolve` and `reject` (a promise's), or with no
   * `reject` through `resolve` as a {@link ReadDone} (READ_CALLBACK's caller's
   * callback, called directly: no closure per read to adapt it).
   */
  #fill(
    offset: number,
    buffer: Uint8Array,
    resolve: ReadDone | ((buffer: Uint8Array) => void),
    reject: ((err: unknown) => void) | undefined,
  ): void {
    const fd = this.#fd;
    const length = buffer.length;
    let done = 0;
    const onRead = (err: NodeJS.ErrnoException | null, n: number): void => {
      if (err || n === 0) {
        this.#inFlight.settled();
        // A zero-byte read means the file shrank under us: say so, never return zeros.
        const cause = err ?? new Error('unexpected end of file');
        settleRead(resolve, reject, wrapIO(`read at ${offset + done}`, cause), buffer);
      } else {
        done += n;
        if (done === length) {
          this.#inFlight.settled();
          settleRead(resolve, reject, null, buffer);
        } else fs.read(fd, buffer, done, length - done, offset + done, onRead);
      }
    };
    try {
      fs.read(fd, buffer, 0, length, offset, onRead);
    } catch (err) {
      // fs.read refusing its arguments at the call: the read still settles once.
      this.#inFlight.settled();
      settleRead(resolve, reject, wrapIO(`read at ${offset}`, err), buffer);
    }
  }

  protected _write(offset: number, data: Uint8Array): Promise<void> {
    this.#inFlight.started();
    return new Promise((resolve, reject) => {
      const fd = this.#fd;
      const length = data.length;
      let done = 0;
      const onWrite = (err: NodeJS.ErrnoException | null, n: number): void => {
        if (err) {
          this.#inFlight.settled();
          reject(wrapIO(`write at ${offset + done}`, err));
        } else if (n === 0) {
          // Retrying a write that wrote nothing would loop forever.
          this.#inFlight.settled();
          reject(wrapIO(`write at ${offset + done}`, new Error('the file system wrote nothing')));
        } else {
          done += n;
          if (done === length) {
            this.#inFlight.settled();
            resolve();
          } else fs.write(fd, data, done, length - done, offset + done, onWrite);
        }
      };
      try {
        fs.write(fd, data, 0, length, offset, onWrite);
      } catch (err) {
        this.#inFlight.settled();
        reject(wrapIO(`write at ${offset}`, err));
      }
    });
  }

  /**
   * See {@link WRITE_OWNED}: `blocks` written back to back from `offset` in
   * one vectored write (`pwritev`), uncopied. The caller must leave them
   * unchanged until the promise settles. Checks and errors are `write`'s.
   * @internal A fast path for the library's own layers.
   */
  [WRITE_OWNED](offset: number, blocks: readonly Uint8Array[]): Promise<void> {
    let length = 0;
    try {
      this.checkOpen();
      for (const block of blocks) {
        if (!isBytes(block)) {
          throw new BlockDeviceError('EINVAL', 'every block to write must be a Uint8Array');
        }
        length += block.length;
      }
      checkRange(this.size, offset, length);
      this.checkWritable();
    } catch (err) {
      return Promise.reject(err);
    }
    if (length === 0) return Promise.resolve();
    if (blocks.length === 1) return this._write(offset, blocks[0]!);
    return this.#inFlight.track(this.#writev(offset, blocks));
  }

  /** @internal See {@link WRITE_NOW}: one `pwrite` on this thread (a journal's mark, a COW commit's chunks and frame). */
  [WRITE_NOW](offset: number, data: Uint8Array): void {
    this.checkOpen();
    checkRange(this.size, offset, data.length);
    this.checkWritable();
    try {
      for (let done = 0; done < data.length; ) {
        done += fs.writeSync(this.#fd, data, done, data.length - done, offset + done);
      }
    } catch (err) {
      throw wrapIO(`write at ${offset}`, err);
    }
  }

  /** Writes `blocks` back to back from `offset`, resuming after short writes. */
  #writev(offset: number, blocks: readonly Uint8Array[]): Promise<void> {
    return new Promise((resolve, reject) => {
      const fd = this.#fd;
      let rest = blocks;
      let at = offset;
      const onWrite = (err: NodeJS.ErrnoException | null, n: number): void => {
        if (err) {
          reject(wrapIO(`write at ${at}`, err));
          return;
        }
        if (n === 0) {
          reject(wrapIO(`write at ${at}`, new Error('the file system wrote nothing')));
          return;
        }
        at += n;
        let i = 0;
        while (i < rest.length && n >= rest[i]!.length) n -= rest[i++]!.length;
        if (i === rest.length) {
          resolve();
          return;
        }
        // A short write: go on from the first byte not written.
        const next = rest.slice(i);
        next[0] = next[0]!.subarray(n);
        rest = next;
        fs.writev(fd, rest, at, onWrite);
      };
      fs.writev(fd, rest, at, onWrite);
    });
  }

  protected async _flush(): Promise<void> {
    if (this.readOnly) return;
    try {
      await fdDatasync(this.#fd);
    } catch (err) {
      throw wrapIO('fdatasync', err);
    }
  }

  protected async _close(): Promise<void> {
    try {
      await fdClose(this.#fd);
    } catch (err) {
      throw wrapIO('close', err);
    } finally {
      // After the descriptor: the next opener must find every write here.
      await this.#lock?.release();
    }
  }
}

/** Settles a {@link FileDevice} read as `#fill` was asked to: a promise's pair, or a ReadDone. */
function settleRead(
  resolve: ReadDone | ((buffer: Uint8Array) => void),
  reject: ((err: unknown) => void) | undefined,
  err: Error | null,
  buffer: Uint8Array,
): void {
  if (reject === undefined) (resolve as ReadDone)(err, err === null ? buffer : undefined);
  else if (err === null) (resolve as (buffer: Uint8Array) => void)(buffer);
  else reject(err);
}

function fdOpen(path: string, flags: string): Promise<number> {
  return new Promise((resolve, reject) =>
    fs.open(path, flags, 0o644, (err, fd) => (err ? reject(err) : resolve(fd))),
  );
}
function fdStat(fd: number): Promise<fs.Stats> {
  return new Promise((resolve, reject) =>
    fs.fstat(fd, (err, st) => (err ? reject(err) : resolve(st))),
  );
}
function fdTruncate(fd: number, size: number): Promise<void> {
  return new Promise((resolve, reject) =>
    fs.ftruncate(fd, size, (err) => (err ? reject(err) : resolve())),
  );
}
function fdSync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.fsync(fd, (err) => (err ? reject(err) : resolve())));
}
function fdDatasync(fd: number): Promise<void> {
  return new Promise((resolve, reject) =>
    fs.fdatasync(fd, (err) => (err ? reject(err) : resolve())),
  );
}
function fdClose(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.close(fd, (err) => (err ? reject(err) : resolve())));
}

/**
 * Creates `path` at `size` bytes, atomically: the file is made and sized
 * under a temporary name, then linked into place, so nobody ever opens it
 * half made. If another creator won the race, its file is opened instead.
 * The file and its directory entry are durable when this resolves.
 */
async function createSized(path: string, size: number): Promise<number> {
  const temporary = `${path}.${randomUUID()}.creating`;
  /** The descriptor this function owns; undefined while it owns none. */
  let fd: number | undefined;
  try {
    fd = await fdOpen(temporary, 'wx+');
  } catch (err) {
    throw wrapIO(`create ${path}`, err);
  }
  try {
    await fdTruncate(fd, size);
    await fdSync(fd);
    try {
      await fs.promises.link(temporary, path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      // Forgotten before the reopen can fail: a closed number may be reused
      // by any file this process opens, and closing it again would close that.
      const temporaryFd = fd;
      fd = undefined;
      await fdClose(temporaryFd);
      fd = await fdOpen(path, 'r+');
    }
    await fs.promises.unlink(temporary);
    await syncDirectoryOf(path);
    return fd;
  } catch (err) {
    if (fd !== undefined) await fdClose(fd).catch(() => {});
    await fs.promises.unlink(temporary).catch(() => {});
    throw wrapIO(`create ${path}`, err);
  }
}

/** A created file survives a power cut only once its directory entry is durable too. */
async function syncDirectoryOf(path: string): Promise<void> {
  const fd = await fdOpen(dirname(path), 'r');
  try {
    await fdSync(fd);
  } finally {
    await fdClose(fd);
  }
}
