import { randomBytes } from 'node:crypto';
import { promises as fs, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { BlockDeviceError, wrapIO } from '../errors.js';

/*
 * The advisory lock that keeps two writers off one file (docs/ARCHITECTURE.md,
 * "Exclusive open"). Node has no flock/fcntl, so the lock is a file next to
 * the device file, `<path>.blocksnap-lock`, naming the process that holds it:
 * created atomically (written under a temporary name, then hard-linked into
 * place, which fails if it exists), removed by `close()`. A process that died
 * without closing leaves it behind; the next opener on the same host sees
 * that process is gone (or that its pid now belongs to a process started
 * later) and takes the lock over. A lock written on another host is never
 * taken over: nothing here can tell whether that process still runs.
 */

/** What a lock file says about its holder. */
interface LockHolder {
  pid: number;
  /** Start time of the process (Linux `/proc/<pid>/stat` field 22), to tell a reused pid apart. */
  start: string | undefined;
  host: string;
}

/** The lock file of the device file `path`. */
export function lockPathOf(path: string): string {
  return `${path}.blocksnap-lock`;
}

/** A lock this process holds on a device file. */
export class FileLock {
  readonly #path: string;
  #released = false;

  constructor(path: string) {
    this.#path = path;
  }

  /** Removes the lock file; idempotent. A lock file already gone is not an error. */
  async release(): Promise<void> {
    if (this.#released) return;
    this.#released = true;
    await fs.unlink(this.#path).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw wrapIO(`remove lock ${this.#path}`, err);
    });
  }
}

/**
 * Locks the device file `path` for this process: a writer takes the lock, a
 * reader only checks that no live writer holds it (readers share).
 * @returns the lock a writer now holds, or undefined for a reader (or where
 *   no lock file can be made: a read-only directory).
 * @throws `EBUSY` naming the process that holds the lock (this one, if the
 *   file is already open here); `EIO` if the lock file cannot be read.
 */
export async function lockDeviceFile(
  path: string,
  readOnly: boolean,
): Promise<FileLock | undefined> {
  const lockPath = lockPathOf(path);
  const me: LockHolder = { pid: process.pid, start: startOf(process.pid), host: hostname() };
  // A few rounds: each either takes the lock, finds a live holder, or clears a dead one.
  for (let round = 0; round < 4; round++) {
    if (!readOnly) {
      const taken = await tryCreate(lockPath, me);
      if (taken === 'taken') return new FileLock(lockPath);
      if (taken === 'cannot') return undefined;
    }
    const holder = await readHolder(lockPath);
    if (holder === undefined) {
      if (readOnly) return undefined;
      continue; // removed meanwhile: try again
    }
    if (isAlive(holder, me)) throw busy(path, lockPath, holder, me);
    if (readOnly) return undefined;
    // The holder died without closing: clear its lock, unless another
    // opener cleared it and took it meanwhile (then the next round sees it).
    await removeIfStill(lockPath, holder);
  }
  throw new BlockDeviceError('EBUSY', `${path}: the lock ${lockPath} kept changing hands`);
}

/** Creates the lock file naming `me`: 'taken', 'exists', or 'cannot' (no lock file can be made here). */
async function tryCreate(lockPath: string, me: LockHolder): Promise<'taken' | 'exists' | 'cannot'> {
  const temp = `${lockPath}.${me.pid}.${randomBytes(4).toString('hex')}`;
  try {
    await fs.writeFile(temp, JSON.stringify(me), { flag: 'wx' });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EACCES' || code === 'EROFS' || code === 'EPERM') return 'cannot';
    throw wrapIO(`create lock ${lockPath}`, err);
  }
  try {
    // link() fails with EEXIST if the lock is there: the atomic step.
    await fs.link(temp, lockPath);
    return 'taken';
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return 'exists';
    throw wrapIO(`create lock ${lockPath}`, err);
  } finally {
    await fs.unlink(temp).catch(() => {});
  }
}

/** The holder a lock file names, or undefined if there is none (or it is unreadable garbage: a torn write of a dead holder). */
async function readHolder(lockPath: string): Promise<LockHolder | undefined> {
  let text: string;
  try {
    text = await fs.readFile(lockPath, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw wrapIO(`read lock ${lockPath}`, err);
  }
  try {
    const parsed = JSON.parse(text) as Partial<LockHolder>;
    if (typeof parsed.pid === 'number' && typeof parsed.host === 'string') {
      return { pid: parsed.pid, start: parsed.start ?? undefined, host: parsed.host };
    }
  } catch {
    // Falls through: not a lock we can read.
  }
  // Written whole before it is linked into place, so never torn: treat an
  // unreadable lock as held by an unknown process on another host.
  return { pid: 0, start: undefined, host: '(unreadable lock file)' };
}

/** Whether `holder` still runs (on another host: assumed so). */
function isAlive(holder: LockHolder, me: LockHolder): boolean {
  if (holder.host !== me.host) return true;
  try {
    process.kill(holder.pid, 0);
  } catch (err) {
    // EPERM: the process exists, under another user.
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  // A pid now used by a process started after the holder is a reused pid.
  const start = startOf(holder.pid);
  return holder.start === undefined || start === undefined || start === holder.start;
}

/** Removes the lock file if it still names `holder`. */
async function removeIfStill(lockPath: string, holder: LockHolder): Promise<void> {
  const now = await readHolder(lockPath);
  if (now === undefined || now.pid !== holder.pid || now.start !== holder.start) return;
  await fs.unlink(lockPath).catch(() => {});
}

/** The start time of process `pid` where the system tells it (Linux), else undefined. */
function startOf(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 22, counted after the command name's closing parenthesis.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

function busy(
  path: string,
  lockPath: string,
  holder: LockHolder,
  me: LockHolder,
): BlockDeviceError {
  const who =
    holder.pid === me.pid && holder.host === me.host
      ? 'this process already has it open for writing (close that FileDevice first)'
      : `process ${holder.pid} on ${holder.host} has it open for writing`;
  return new BlockDeviceError(
    'EBUSY',
    `${path}: ${who}; its lock is ${lockPath} (remove it by hand only if that process is gone)`,
  );
}
