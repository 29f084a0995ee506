import { type ChildProcess, execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { describe } from 'vitest';

/**
 * Real peers: the programs users run (qemu-io, qemu-nbd, nbdkit, nbdinfo,
 * nbdcopy, nbdsh, fio). A test that needs one skips with a printed reason
 * where it is missing; with `BLOCKSNAP_REQUIRE_PEERS=1` (set by `.ci/run`,
 * which installs them) a missing program fails instead, so CI always runs
 * these tests.
 */
export const REQUIRE_PEERS = process.env.BLOCKSNAP_REQUIRE_PEERS === '1';

/** The absolute path of `program` on PATH, or undefined. */
export function findProgram(program: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (dir === '') continue;
    const candidate = path.join(dir, program);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}

/**
 * `describe` when every program is on PATH; otherwise a skipped `describe`
 * with the reason printed, or — under `BLOCKSNAP_REQUIRE_PEERS=1` — a
 * `describe` whose collection fails naming what is missing.
 */
export function describeWithPeers(
  programs: readonly string[],
  name: string,
  body: () => void,
): void {
  const missing = programs.filter((p) => findProgram(p) === undefined);
  if (missing.length === 0) {
    describe(name, body);
    return;
  }
  const reason = `${name}: skipped, ${missing.join(', ')} not installed (Debian: qemu-utils, nbdkit, libnbd-bin, fio)`;
  if (REQUIRE_PEERS) {
    throw new Error(`${reason}; BLOCKSNAP_REQUIRE_PEERS=1 makes this a failure`);
  }
  console.log(reason);
  describe.skip(name, body);
}

/** A TCP port on 127.0.0.1 nobody listens on right now (the kernel picks it). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address();
      probe.close(() => {
        if (address === null || typeof address === 'string') reject(new Error('no port'));
        else resolve(address.port);
      });
    });
  });
}

/** Resolves once something accepts TCP connections on `port` at 127.0.0.1 (bounded). */
export async function waitForPort(port: number, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (open) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on port ${port} after ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** A long-running peer (a server such as qemu-nbd or nbdkit), stopped by its process id. */
export interface PeerProcess {
  readonly child: ChildProcess;
  /** What it printed on stderr so far (for failure messages). */
  stderr(): string;
  /** Sends `signal` to the process id and waits for it to exit (bounded). */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** Starts `program` with `args`, collecting its stderr; the caller waits for readiness. */
export function startPeer(program: string, args: readonly string[]): PeerProcess {
  const child = spawn(program, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr?.on('data', (d: Buffer) => {
    if (err.length < 64 * 1024) err += d.toString();
  });
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
  return {
    child,
    stderr: () => err,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
        process.kill(child.pid, signal);
      }
      const late = setTimeout(() => {
        if (child.pid !== undefined && child.exitCode === null) process.kill(child.pid, 'SIGKILL');
      }, 5_000);
      await exited;
      clearTimeout(late);
    },
  };
}

/** What a finished peer program did. */
export interface PeerRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a peer program to completion, bounded in time (killed by its pid after `ms`). */
export function runPeer(
  program: string,
  args: readonly string[],
  ms = 30_000,
  env: NodeJS.ProcessEnv = process.env,
): Promise<PeerRun> {
  return new Promise((resolve) => {
    execFile(
      program,
      args,
      { timeout: ms, killSignal: 'SIGKILL', maxBuffer: 16 * 1024 * 1024, env },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** {@link runPeer}, failing unless the program exits 0; resolves with its stdout. */
export async function runPeerOk(
  program: string,
  args: readonly string[],
  ms?: number,
  env?: NodeJS.ProcessEnv,
): Promise<string> {
  const r = await runPeer(program, args, ms, env);
  if (r.code !== 0) throw new Error(`${program} ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}
