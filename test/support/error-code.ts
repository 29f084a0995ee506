import { BlockDeviceError } from '../../src/index.js';

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
