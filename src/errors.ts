/**
 * The stable error codes every blocksnap failure carries.
 *
 * - `ERANGE`: an offset or length outside the device, negative, fractional or NaN.
 * - `EINVAL`: an argument of the wrong type, or a bad option.
 * - `EROFS`: a write to a read-only device or snapshot.
 * - `ECLOSED`: use of a device after `close()`.
 * - `ENOENT`: an unknown (or deleted) snapshot.
 * - `EBUSY`: an operation that conflicts with one already running.
 * - `ENOSPC`: the store is full.
 * - `ECORRUPT`: a checksum or format check failed.
 * - `EEXCLUDED`: a read of a range a selective snapshot does not hold.
 * - `EIO`: the device below failed; `cause` holds its error.
 */
export const ERROR_CODES = [
  'ERANGE',
  'EINVAL',
  'EROFS',
  'ECLOSED',
  'ENOENT',
  'EBUSY',
  'ENOSPC',
  'ECORRUPT',
  'EEXCLUDED',
  'EIO',
] as const;

/** One of {@link ERROR_CODES}. */
export type BlockDeviceErrorCode = (typeof ERROR_CODES)[number];

const BRAND = Symbol.for('blocksnap.BlockDeviceError');

/**
 * The one error type blocksnap throws: a stable `code` (see {@link ERROR_CODES})
 * and, for `EIO`, the lower device's error as `cause`.
 */
export class BlockDeviceError extends Error {
  /** The stable machine-readable code. */
  readonly code: BlockDeviceErrorCode;

  /** Branded so {@link BlockDeviceError.is} works across copies of the package. */
  readonly [BRAND] = true;

  /**
   * @param code - one of {@link ERROR_CODES}.
   * @param message - what failed, quoting the offending value.
   * @param options - `cause`: the underlying error, for `EIO`.
   */
  constructor(code: BlockDeviceErrorCode, message: string, options?: { cause?: unknown }) {
    super(`${code}: ${message}`, options);
    this.name = 'BlockDeviceError';
    this.code = code;
  }

  /**
   * Whether `err` is a BlockDeviceError (optionally with the given code). Does
   * not rely on `instanceof`, so it holds across duplicated installs.
   */
  static is(err: unknown, code?: BlockDeviceErrorCode): err is BlockDeviceError {
    if (typeof err !== 'object' || err === null) return false;
    const branded = (err as { [BRAND]?: unknown })[BRAND] === true;
    if (!branded) return false;
    return code === undefined || (err as BlockDeviceError).code === code;
  }
}

/**
 * Codes a lower blocksnap layer's failure keeps through the layers above:
 * they say what is wrong with the stack (full, damaged, read-only), which
 * `EIO` ("the device below failed") would hide from the caller.
 */
const PASSED_THROUGH: ReadonlySet<BlockDeviceErrorCode> = new Set(['ENOSPC', 'ECORRUPT', 'EROFS']);

/**
 * Wraps a lower device's failure with the original as `cause`, naming
 * `what` failed: as `EIO`, except that a lower layer's `ENOSPC`, `ECORRUPT`
 * or `EROFS` keeps its code, so `BlockDeviceError.is(err, 'ENOSPC')` holds
 * at the top of a stack whose bottom store is full.
 */
export function wrapIO(what: string, err: unknown): BlockDeviceError {
  const detail = err instanceof Error ? err.message : String(err);
  const code = BlockDeviceError.is(err) && PASSED_THROUGH.has(err.code) ? err.code : 'EIO';
  return new BlockDeviceError(code, `${what} failed: ${detail}`, { cause: err });
}
