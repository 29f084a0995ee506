import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { build } from 'tsup';
import { afterAll } from 'vitest';

/**
 * The `blocksnap` command as the tests run it: built once from the
 * package's bin entry (src/cli/main.ts, tsup's `cli/main`) into a temporary
 * directory, then spawned with plain node — a tenth of a second a run,
 * against half a second through tsx from source.
 */

export const REPO = path.resolve(import.meta.dirname, '../..');

/**
 * Every directory this module made for the test file that imported it,
 * removed once the file's tests are done: a full run of the CLI tests
 * otherwise leaves some 4 GB of volumes and builds in the system's
 * temporary directory.
 */
const madeDirs: string[] = [];
afterAll(() => {
  for (const dir of madeDirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

function madeDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  madeDirs.push(dir);
  return dir;
}

/** Builds the command and its VirtualVolume worker (ESM, no declarations); returns the path of its main.js. */
export async function buildCli(): Promise<string> {
  const outDir = madeDir('blocksnap-cli-build-');
  await build({
    config: false,
    entry: {
      'cli/main': path.join(REPO, 'src/cli/main.ts'),
      // VirtualVolume's workers start on the file beside the module that starts
      // them: here, with no chunks, main.js itself.
      'cli/volume-worker': path.join(REPO, 'src/volume/volume-worker.ts'),
    },
    format: ['esm'],
    platform: 'node',
    target: 'node20',
    outDir,
    dts: false,
    silent: true,
    splitting: false,
    // Outside the repository node_modules is not found: bundle the one dependency.
    noExternal: [/.*/],
  });
  return path.join(outDir, 'cli/main.js');
}

/** What one run printed and how it ended. */
export interface CliRun {
  readonly status: number;
  readonly stdout: string;
  readonly stderr: string;
  /** stdout parsed as one JSON document. */
  json<T = Record<string, unknown>>(): T;
}

/** Options of one run. */
export interface CliRunOptions {
  /** Working directory (the test's temp dir). */
  readonly cwd: string;
  /** Bytes for stdin (none: stdin is empty). */
  readonly input?: Uint8Array | string | undefined;
  /** Extra environment. */
  readonly env?: Readonly<Record<string, string>> | undefined;
}

/** Runs `node <bin> ...args` to the end (bounded at 30 s). */
export function runBin(
  bin: string,
  args: readonly string[],
  options: CliRunOptions,
): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, ...args], {
      cwd: options.cwd,
      env: { ...process.env, ...options.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.once('error', reject);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      const stdout = Buffer.concat(out).toString('utf8');
      const stderr = Buffer.concat(err).toString('utf8');
      resolve({
        status: code ?? (signal === null ? -1 : 128),
        stdout,
        stderr,
        json: <T>() => JSON.parse(stdout) as T,
      });
    });
    child.stdin.on('error', () => {});
    child.stdin.end(options.input ?? '');
  });
}

/** A fresh temporary directory for one test, removed after the test file's last test. */
export function tempDir(): string {
  return madeDir('blocksnap-cli-');
}

/** A command left running (`serve`): its first stdout line, and a stop by its process id. */
export interface RunningCli {
  /** The first line it printed on stdout (`serve --json`: where it listens). */
  readonly firstLine: string;
  /** What it printed on stdout so far. */
  stdout(): string;
  /** What it printed on stderr so far. */
  stderr(): string;
  /** Sends `signal` to its process id and resolves with its exit status (SIGKILL after 10 s). */
  stop(signal?: NodeJS.Signals): Promise<number>;
}

/**
 * Spawns `node <bin> ...args` and resolves once it printed a first line on
 * stdout; rejects (after killing it) if it exits or stays silent for 20 s first.
 */
export function startBin(
  bin: string,
  args: readonly string[],
  options: CliRunOptions,
): Promise<RunningCli> {
  const child = spawn(process.execPath, [bin, ...args], {
    cwd: options.cwd,
    env: { ...process.env, ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stderr.on('data', (d: Buffer) => {
    err += d.toString('utf8');
  });
  const exited = new Promise<number>((resolve) => {
    child.once('close', (code, signal) => resolve(code ?? (signal === null ? -1 : 128)));
  });
  const stop = async (signal: NodeJS.Signals = 'SIGTERM'): Promise<number> => {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      process.kill(child.pid, signal);
    }
    const late = setTimeout(() => {
      if (child.pid !== undefined && child.exitCode === null) process.kill(child.pid, 'SIGKILL');
    }, 10_000);
    const status = await exited;
    clearTimeout(late);
    return status;
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      void stop('SIGKILL');
      reject(new Error(`no output from ${args.join(' ')} in 20 s: ${err}`));
    }, 20_000);
    child.stdout.on('data', (d: Buffer) => {
      const before = out.length;
      out += d.toString('utf8');
      const newline = out.indexOf('\n');
      if (newline >= 0 && before <= newline) {
        clearTimeout(timer);
        resolve({ firstLine: out.slice(0, newline), stdout: () => out, stderr: () => err, stop });
      }
    });
    void exited.then((status) => {
      clearTimeout(timer);
      reject(new Error(`${args.join(' ')} exited ${status} before printing: ${err}`));
    });
  });
}
