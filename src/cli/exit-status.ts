import { BlockDeviceError, type BlockDeviceErrorCode } from '../index.js';

/**
 * The command's exit status for each outcome: one per BlockDeviceError code,
 * so a script can tell "no such snapshot" from "the store is damaged"
 * without parsing the message. The README ("From the shell") and `--help`
 * print this table; the tests hold every row to it.
 */
export const EXIT_STATUS: Readonly<Record<BlockDeviceErrorCode, number>> = {
  EINVAL: 2,
  ERANGE: 3,
  ENOENT: 4,
  EBUSY: 5,
  ENOSPC: 6,
  ECORRUPT: 7,
  EROFS: 8,
  EEXCLUDED: 9,
  EIO: 10,
  ECLOSED: 11,
};

/** Exit status after Ctrl-C (SIGINT): 128 + 2, as shells report it. */
export const EXIT_INTERRUPTED = 130;

/** Exit status of a failure that is no BlockDeviceError: a bug in the command. */
export const EXIT_INTERNAL = 70;

/** What each code means to an operator, for the table in `--help`. */
const MEANING: Readonly<Record<BlockDeviceErrorCode, string>> = {
  EINVAL: 'bad argument, option, size or stream for another base',
  ERANGE: 'offset or length outside the volume',
  ENOENT: 'no such volume, file or snapshot',
  EBUSY: 'in use by another process, or the path already holds something',
  ENOSPC: 'snapshot store or journal full',
  ECORRUPT: 'damaged store or stream (check found damage)',
  EROFS: 'read-only target',
  EEXCLUDED: 'range a selective snapshot does not hold',
  EIO: 'the file system or device below failed',
  ECLOSED: 'used after close (a bug)',
};

/** The exit status table as `--help` prints it. */
export function exitStatusTable(): string {
  const rows = [
    '  0    success',
    ...Object.entries(EXIT_STATUS).map(
      ([code, status]) =>
        `  ${String(status).padEnd(4)} ${code.padEnd(9)} ${MEANING[code as BlockDeviceErrorCode]}`,
    ),
    `  ${EXIT_INTERRUPTED}  interrupted (Ctrl-C); the message says how to resume`,
    `  ${EXIT_INTERNAL}   internal error (please report it)`,
  ];
  return rows.join('\n');
}

/** Node's file-system error codes that mean what a BlockDeviceError code means. */
const SYSTEM_CODES: Readonly<Record<string, BlockDeviceErrorCode>> = {
  ENOENT: 'ENOENT',
  ENOTDIR: 'ENOENT',
  EEXIST: 'EBUSY',
  ENOTEMPTY: 'EBUSY',
  EBUSY: 'EBUSY',
  ENOSPC: 'ENOSPC',
  EDQUOT: 'ENOSPC',
  EROFS: 'EROFS',
  EACCES: 'EROFS',
  EPERM: 'EROFS',
  EISDIR: 'EINVAL',
};

/**
 * The failure as a BlockDeviceError: itself, or a Node system error (a file
 * the command opened, a pipe it wrote) under the code that means the same,
 * `EIO` for the rest; undefined for anything else (a bug).
 */
export function asBlockDeviceError(err: unknown): BlockDeviceError | undefined {
  if (BlockDeviceError.is(err)) return err;
  const code = (err as { code?: unknown } | null)?.code;
  if (err instanceof Error && typeof code === 'string' && /^E[A-Z]+$/.test(code)) {
    return new BlockDeviceError(SYSTEM_CODES[code] ?? 'EIO', err.message, { cause: err });
  }
  return undefined;
}
