import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, type PeerProcess, startPeer, waitForPort } from './peers.js';

/** A real NBD server started for a test, stopped by its process id. */
export interface NbdPeer {
  /** `nbd://127.0.0.1:<port>/<export>` */
  readonly url: string;
  readonly port: number;
  readonly process: PeerProcess;
  /** Stops the server (SIGTERM, then SIGKILL after 5 s) and waits for it to exit. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** A temporary directory, removed by `cleanup`. */
export async function tempDir(): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'blocksnap-nbd-'));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** A raw image file of `size` bytes (zeros, or `content`). */
export async function rawImage(dir: string, size: number, content?: Uint8Array): Promise<string> {
  const path = join(dir, 'disk.img');
  await writeFile(path, content ?? new Uint8Array(size));
  return path;
}

async function started(
  program: string,
  args: (port: number) => string[],
  exportName: string,
  port?: number,
): Promise<NbdPeer> {
  port ??= await freePort();
  const process = startPeer(program, args(port));
  try {
    await waitForPort(port);
  } catch (err) {
    await process.stop('SIGKILL');
    throw new Error(`${program} did not start: ${process.stderr()}`, { cause: err });
  }
  return {
    url: `nbd://127.0.0.1:${port}/${exportName}`,
    port,
    process,
    stop: (signal) => process.stop(signal),
  };
}

/**
 * `qemu-nbd -f raw --persistent` on `file`, export `disk`, on a loopback
 * port; `extra` adds flags (`-r` read-only, `-e 4` for four clients, which
 * makes it advertise multi-conn); `port` brings a server back where a
 * killed one listened (a free port otherwise).
 */
export function startQemuNbd(
  file: string,
  extra: readonly string[] = [],
  port?: number,
): Promise<NbdPeer> {
  return started(
    'qemu-nbd',
    (port) => [
      '-f',
      'raw',
      '--persistent',
      '-b',
      '127.0.0.1',
      '-p',
      String(port),
      '-x',
      'disk',
      ...extra,
      file,
    ],
    'disk',
    port,
  );
}

/**
 * `nbdkit -f` on a loopback port with `args` (a plugin and its parameters,
 * filters first), serving the default export.
 */
export function startNbdkit(args: readonly string[]): Promise<NbdPeer> {
  return started('nbdkit', (port) => ['-f', '-i', '127.0.0.1', '-p', String(port), ...args], '');
}
