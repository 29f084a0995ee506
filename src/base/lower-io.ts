import { wrapIO } from '../errors.js';

/**
 * Awaits an operation on a lower device, turning its failure into `EIO` that
 * names `what` and keeps the original as `cause` — the one place a layer
 * wraps what the device below it throws.
 */
export async function io<T>(what: string, op: Promise<T>): Promise<T> {
  try {
    return await op;
  } catch (err) {
    throw wrapIO(what, err);
  }
}
