import { once } from 'node:events';
import { open, rename, rm } from 'node:fs/promises';
import { BlockDeviceError } from '../index.js';
import type { CommandIO } from './command.js';

/*
 * Where a command's bytes come from and go: a file, or `-` for stdin and
 * stdout. A file is written under `<file>.partial` and renamed into place
 * once complete and synced, so an output file is never a stream cut short
 * (an interrupted export leaves no file that looks finished).
 */

/**
 * `source` that stops when `signal` aborts, even while it waits for bytes
 * that do not come (a stalled pipe): the pending read is given up, the
 * iteration throws the signal's reason, and the source is released.
 */
export async function* abortable<T>(
  source: AsyncIterable<T>,
  signal: AbortSignal,
): AsyncGenerator<T> {
  const iterator = source[Symbol.asyncIterator]();
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal.reason);
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
  });
  aborted.catch(() => {});
  try {
    for (;;) {
      const next = await Promise.race([iterator.next(), aborted]);
      if (next.done === true) return;
      yield next.value;
    }
  } finally {
    if (onAbort !== undefined) signal.removeEventListener('abort', onAbort);
    // Not awaited: a source stuck in a read may settle its return only then.
    void Promise.resolve(iterator.return?.()).catch(() => {});
  }
}

/** An input: the file, or stdin for `-`. Opens the file now, so a missing one is `ENOENT` before anything else. */
export async function openInput(
  path: string,
  io: CommandIO,
  signal: AbortSignal,
): Promise<AsyncIterable<Uint8Array>> {
  if (path === '-') return abortable(io.stdin as AsyncIterable<Uint8Array>, signal);
  const handle = await open(path, 'r');
  return abortable(handle.createReadStream({ highWaterMark: 1 << 20 }), signal);
}

/**
 * Writes `source` into `output` (`-`: stdout), counting bytes; a file is
 * made complete and durable before it gets its name. Stops at the next
 * piece once `signal` is aborted (the source usually stops first).
 * @returns the bytes written.
 */
export async function writeOutput(
  source: AsyncIterable<Uint8Array>,
  output: string,
  io: CommandIO,
  signal: AbortSignal,
): Promise<number> {
  if (output === '-') return writeStdout(source, io.stdout, signal);
  const partial = `${output}.partial`;
  const handle = await open(partial, 'w');
  let bytes = 0;
  try {
    for await (const chunk of source) {
      signal.throwIfAborted();
      for (let at = 0; at < chunk.length; ) {
        const { bytesWritten } = await handle.write(chunk, at, chunk.length - at, bytes + at);
        at += bytesWritten;
      }
      bytes += chunk.length;
    }
    await handle.sync();
  } catch (err) {
    await handle.close().catch(() => {});
    await rm(partial, { force: true });
    throw err;
  }
  await handle.close();
  await rename(partial, output);
  return bytes;
}

/** Writes `source` to stdout, waiting for it to drain; stdout stays open (it is not ours to end). */
async function writeStdout(
  source: AsyncIterable<Uint8Array>,
  stdout: NodeJS.WritableStream,
  signal: AbortSignal,
): Promise<number> {
  let failed: Error | undefined;
  const onError = (err: Error) => {
    failed = err;
  };
  stdout.on('error', onError);
  let bytes = 0;
  try {
    for await (const chunk of source) {
      signal.throwIfAborted();
      if (failed !== undefined) throw failed;
      bytes += chunk.length;
      if (!stdout.write(chunk)) {
        // A reader that stopped reading must not hold Ctrl-C up.
        await Promise.race([once(stdout, 'drain', { signal }), once(stdout, 'close', { signal })]);
      }
    }
    if (failed !== undefined) throw failed;
    return bytes;
  } finally {
    stdout.off('error', onError);
  }
}

/** The output a command writes binary data to: `-o`, else stdout if it is not a terminal. */
export function outputOf(option: string | undefined, io: CommandIO, what: string): string {
  if (option !== undefined) return option;
  if (io.stdout.isTTY === true) {
    throw new BlockDeviceError(
      'EINVAL',
      `${what} writes binary data: give -o FILE (or -o - to mean the terminal)`,
    );
  }
  return '-';
}
