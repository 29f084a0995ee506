/**
 * Launches the bench's external programs (fio, nbdcopy, qemu-img, and the
 * peer servers nbdkit and qemu-nbd) from a small child process instead of
 * this one. Forking a process copies its page tables and turns every page
 * of its heap copy-on-write until the child execs: with our NBD server and
 * its 1 GiB MemoryDevice in this process, each fio started from here made
 * the server pay a page fault per page it then wrote, a cost no peer server
 * pays (they run in processes of their own). Every side of every row is
 * launched the same way, so each comparison keeps the same command.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** A request to the launcher's child (bench/launcher-child.ts). */
export type LauncherRequest =
  | { type: 'run'; id: number; program: string; args: string[]; timeoutMs: number }
  | { type: 'start'; id: number; program: string; args: string[] }
  | { type: 'signal'; id: number; target: number; signal: NodeJS.Signals };

/** The child's answer to a request with the same id. */
export type LauncherReply =
  | { type: 'ran'; id: number; stdout: string }
  | { type: 'failed'; id: number; code: string; message: string }
  | { type: 'spawned'; id: number }
  | { type: 'exited'; id: number };

/** A program that did not run to success: `code` is `ENOENT` when it is not installed. */
export class LaunchError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'LaunchError';
    this.code = code;
  }
}

/** A server started by {@link startProgram}. */
export interface Started {
  /** Resolves once the program has exited. */
  readonly exited: Promise<void>;
  /** Sends it a signal. */
  kill(signal: NodeJS.Signals): void;
}

let child: ChildProcess | undefined;
let nextId = 1;
/** Replies awaited, by request id. While any is awaited, the channel keeps this process alive. */
const waiting = new Map<number, (reply: LauncherReply) => void>();

function launcher(): ChildProcess {
  if (child !== undefined) return child;
  // The child is forked once, here, while nothing is served yet when the
  // first row calls; with stdio inherited its warnings reach the terminal.
  const started = fork(fileURLToPath(new URL('./launcher-child.ts', import.meta.url)), [], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  started.on('message', (reply: LauncherReply) => {
    const wake = waiting.get(reply.id);
    if (reply.type !== 'spawned') waiting.delete(reply.id);
    hold();
    wake?.(reply);
  });
  child = started;
  hold();
  return started;
}

/** Keeps the process alive exactly while a reply is awaited: the launcher never holds it open by itself. */
function hold(): void {
  const channel = child?.channel as { ref(): void; unref(): void } | undefined;
  if (waiting.size > 0) {
    child?.ref();
    channel?.ref();
  } else {
    child?.unref();
    channel?.unref();
  }
}

function ask(request: LauncherRequest, onReply: (reply: LauncherReply) => void): void {
  const target = launcher();
  waiting.set(request.id, onReply);
  hold();
  target.send(request);
}

/** Runs `program` to completion and resolves with its standard output. @throws {@link LaunchError} */
export function runProgram(program: string, args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    ask({ type: 'run', id: nextId++, program, args, timeoutMs }, (reply) => {
      if (reply.type === 'ran') resolve(reply.stdout);
      else if (reply.type === 'failed') reject(new LaunchError(reply.code, reply.message));
    });
  });
}

/** Starts a long-running `program` (a peer server) and resolves once it has spawned. @throws {@link LaunchError} */
export function startProgram(program: string, args: string[]): Promise<Started> {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    let exit: () => void = () => {};
    const exited = new Promise<void>((r) => {
      exit = r;
    });
    ask({ type: 'start', id, program, args }, (reply) => {
      if (reply.type === 'spawned') {
        // The server's exit is awaited from now on (the rows always stop what they start).
        waiting.set(id, (last) => {
          if (last.type === 'exited') exit();
        });
        resolve({
          exited,
          kill: (signal) => child?.send({ type: 'signal', id: nextId++, target: id, signal }),
        });
      } else if (reply.type === 'failed') {
        reject(new LaunchError(reply.code, reply.message));
      } else if (reply.type === 'exited') {
        exit();
      }
    });
  });
}
