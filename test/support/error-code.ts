import { expect } from 'vitest';
import { BlockDeviceError } from '../../src/index.js';

/** Whether `err` is a BlockDeviceError with `code`. */
export function isCode(err: unknown, code: string): boolean {
  return BlockDeviceError.is(err) && err.code === code;
}

/** The BlockDeviceError code `p` rejects with, undefined if it resolves, or a description of anything else. */
export async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
    return undefined;
  } catch (err) {
    return BlockDeviceError.is(err) ? err.code : `not a BlockDeviceError: ${String(err)}`;
  }
}

/** The BlockDeviceError code `run` throws, undefined if it returns, or a description of anything else. */
export function codeThrown(run: () => unknown): string | undefined {
  try {
    run();
    return undefined;
  } catch (err) {
    return BlockDeviceError.is(err) ? err.code : `not a BlockDeviceError: ${String(err)}`;
  }
}

/**
 * The BlockDeviceError `p` rejects with, for a test to look further at;
 * fails the test unless `p` rejects with one of `code`. `what` names the
 * case in the failure message.
 */
export async function expectCode(
  p: Promise<unknown>,
  code: string,
  what = '',
): Promise<BlockDeviceError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  const prefix = what === '' ? '' : `${what}: `;
  expect(isCode(err, code), `${prefix}expected ${code}, got ${String(err)}`).toBe(true);
  return err as BlockDeviceError;
}
