import { BlockDeviceError } from '../errors.js';
import {
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_COMMAND_NAMES,
  NBD_ENOSPC,
  NBD_EPERM,
  NBD_ERROR_NAMES,
} from './protocol.js';

/**
 * An error an NBD server replied with, as the `cause` of the
 * `BlockDeviceError` a device call rejects with: the NBD error value, its
 * name, and the server's message when it sent one (structured replies).
 */
export class NbdServerError extends Error {
  /** The NBD error value from the reply (a Linux errno number: 5 is `EIO`). */
  readonly errno: number;
  /** The error's name (`EIO`, `EPERM`, …), or `NBD error <n>` for a value the spec does not define. */
  readonly errorName: string;
  /** The command that failed (`READ`, `WRITE`, `FLUSH`, …). */
  readonly command: string;
  /** The server's message, empty when it sent none. */
  readonly serverMessage: string;

  constructor(errno: number, command: number, serverMessage: string) {
    const errorName = NBD_ERROR_NAMES[errno] ?? `NBD error ${errno}`;
    const commandName = NBD_COMMAND_NAMES[command] ?? `command ${command}`;
    super(
      `the NBD server failed ${commandName} with ${errorName}${serverMessage === '' ? '' : `: ${serverMessage}`}`,
    );
    this.name = 'NbdServerError';
    this.errno = errno;
    this.errorName = errorName;
    this.command = commandName;
    this.serverMessage = serverMessage;
  }
}

/**
 * The BlockDeviceError a server's error reply becomes: a write refused with
 * `EPERM` is `EROFS` (a read-only export that did not say so in its flags),
 * `ENOSPC` stays `ENOSPC` (the contract's "the store is full"); every other
 * error is `EIO`, the server's error as `cause`.
 */
export function serverErrorToDeviceError(
  errno: number,
  command: number,
  serverMessage: string,
): BlockDeviceError {
  const cause = new NbdServerError(errno, command, serverMessage);
  const writes =
    command === NBD_CMD_WRITE || command === NBD_CMD_WRITE_ZEROES || command === NBD_CMD_TRIM;
  const code = writes && errno === NBD_EPERM ? 'EROFS' : errno === NBD_ENOSPC ? 'ENOSPC' : 'EIO';
  return new BlockDeviceError(code, cause.message, { cause });
}
