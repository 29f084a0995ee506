/**
 * The launcher's child process (see bench/launcher.ts): runs the programs
 * the parent asks for, so the parent, which serves NBD from a heap of a
 * gigabyte or more, never forks. Speaks one message each way per request
 * over the IPC channel, and exits when the parent goes away.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import type { LauncherReply, LauncherRequest } from './launcher.js';

const children = new Map<number, ChildProcess>();

function reply(message: LauncherReply): void {
  process.send?.(message);
}

process.on('message', (request: LauncherRequest) => {
  const { id } = request;
  switch (request.type) {
    case 'run':
      execFile(
        request.program,
        request.args,
        { timeout: request.timeoutMs, maxBuffer: 64 * 1024 * 1024 },
        (err, stdout) => {
          const error = err as NodeJS.ErrnoException | null;
          reply(
            error === null
              ? { type: 'ran', id, stdout }
              : { type: 'failed', id, code: String(error.code ?? ''), message: error.message },
          );
        },
      );
      return;
    case 'start': {
      const child = spawn(request.program, request.args, {
        stdio: ['ignore', 'ignore', 'inherit'],
      });
      children.set(id, child);
      child.once('spawn', () => reply({ type: 'spawned', id }));
      child.once('error', (err: NodeJS.ErrnoException) => {
        children.delete(id);
        reply({ type: 'failed', id, code: String(err.code ?? ''), message: err.message });
      });
      child.once('exit', () => {
        children.delete(id);
        reply({ type: 'exited', id });
      });
      return;
    }
    case 'signal':
      children.get(request.target)?.kill(request.signal);
      return;
  }
});

// The parent is gone (or done): take every server it started along.
process.on('disconnect', () => {
  for (const child of children.values()) child.kill('SIGKILL');
  process.exit(0);
});
