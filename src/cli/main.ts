#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { EXIT_INTERNAL, EXIT_INTERRUPTED } from './exit-status.js';
import { runCli } from './run.js';

/*
 * The `blocksnap` command (package.json "bin"). Ctrl-C (SIGINT) or SIGTERM
 * aborts the signal every long API call was given, so the work stops
 * between I/Os, the volume closes cleanly and the command says how to
 * resume; a second Ctrl-C exits at once.
 */

function packageVersion(): string {
  // dist/cli/main.js and src/cli/main.ts both sit two folders below package.json.
  try {
    const text = readFileSync(new URL('../../package.json', import.meta.url), 'utf8');
    return (JSON.parse(text) as { version?: string }).version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

const controller = new AbortController();
let signals = 0;
const stop = () => {
  signals++;
  if (signals > 1) process.exit(EXIT_INTERRUPTED);
  controller.abort(new Error('interrupted'));
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);

let finished = false;
// A command whose work waits on nothing the event loop holds (a stream
// nobody ends) would let the process exit 0 with no result: that is a bug
// to report, never a success.
process.on('exit', (status) => {
  if (!finished && status === 0) {
    process.stderr.write('blocksnap: internal: the command stopped before it finished\n');
    process.exitCode = EXIT_INTERNAL;
  }
});

runCli(process.argv.slice(2), process, {
  version: packageVersion(),
  signal: controller.signal,
}).then((status) => {
  finished = true;
  process.exitCode = status;
});
