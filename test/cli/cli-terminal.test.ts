import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { buildCli, runBin, tempDir } from '../support/cli-runner.js';
import { describeWithPeers } from '../support/peers.js';

/*
 * The progress bar under a real pseudo-terminal: the command runs in a
 * tmux pane (its own tmux server, on a socket of this test's), everything
 * the pane receives is recorded (pipe-pane), and the screen is read back
 * (capture-pane). The bar must redraw in place several times and leave one
 * clean final line.
 */

const SOCKET = `blocksnap-cli-test-${process.pid}`;
const ESC = String.fromCharCode(0x1b);

function tmux(args: readonly string[]): string {
  return execFileSync('tmux', ['-L', SOCKET, ...args], { encoding: 'utf8' });
}

let bin: string;

/** Runs `args` in a 120×30 tmux pane; returns what the pane received and its final screen. */
async function inTerminal(
  dir: string,
  args: readonly string[],
): Promise<{ raw: string; screen: string[] }> {
  const session = `s${Math.random().toString(36).slice(2, 8)}`;
  const log = path.join(dir, `${session}.log`);
  const quoted = [process.execPath, bin, ...args].map((a) => `'${a}'`).join(' ');
  // The command waits for `go` so that pipe-pane records it from its first byte.
  const script = `cd '${dir}' && while [ ! -e go-${session} ]; do sleep 0.02; done; BLOCKSNAP_PROGRESS_INTERVAL=0 ${quoted}; echo EXIT=$?; sleep 60`;
  tmux(['new-session', '-d', '-s', session, '-x', '120', '-y', '30', 'sh', '-c', script]);
  try {
    tmux(['pipe-pane', '-t', session, '-o', `cat >> '${log}'`]);
    fs.writeFileSync(path.join(dir, `go-${session}`), '');
    const deadline = Date.now() + 20_000;
    let screen = '';
    while (!/EXIT=\d+/.test(screen)) {
      if (Date.now() > deadline) throw new Error(`no exit in 20 s; screen:\n${screen}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
      screen = tmux(['capture-pane', '-p', '-t', session]);
    }
    return { raw: fs.readFileSync(log, 'latin1'), screen: screen.split('\n') };
  } finally {
    tmux(['kill-session', '-t', session]);
  }
}

/** The bar frames in what the pane received, as percentages, in order. */
function barFrames(raw: string, label: string): number[] {
  return raw
    .split('\r')
    .map((frame) => new RegExp(`^${label} +(\\d+)% \\[`).exec(frame))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]));
}

describeWithPeers(['tmux'], 'blocksnap progress under a terminal (tmux)', () => {
  let dir: string;
  beforeAll(async () => {
    bin = await buildCli();
    dir = tempDir();
    for (const args of [
      ['create', 'src', '--size', '64M', '-q'],
      ['snapshot', 'create', 'src', '--name', 'a', '-q'],
    ]) {
      if (args[0] === 'snapshot') {
        const data = Buffer.alloc(24 << 20);
        for (let i = 0; i < data.length; i += 4096) data.fill(i / 4096 + 1, i, i + 4096);
        const wrote = await runBin(bin, ['write', 'src', '-q'], { cwd: dir, input: data });
        expect(wrote.status).toBe(0);
      }
      expect((await runBin(bin, args, { cwd: dir })).status).toBe(0);
    }
  }, 60_000);

  afterAll(() => {
    try {
      tmux(['kill-server']);
    } catch {
      // no server left: every session ended
    }
  });

  it('export: the bar redraws in place as it goes and leaves one clean final line', async () => {
    const { raw, screen } = await inTerminal(dir, [
      'export',
      'src',
      '--snapshot',
      'a',
      '-o',
      'a.bsnap',
    ]);
    const frames = barFrames(raw, 'export');
    expect(frames.length).toBeGreaterThanOrEqual(4);
    expect(new Set(frames).size).toBeGreaterThanOrEqual(3);
    expect(frames).toEqual([...frames].sort((x, y) => x - y));
    expect(frames.at(-1)).toBe(100);
    // Each frame erases what a longer one before it left.
    expect(raw).toContain(`${ESC}[K`);
    const final = screen.findIndex((l) =>
      /^export 100% \[=+\] 64\.0 MiB \/ 64\.0 MiB in \d+\.\d s, /.test(l),
    );
    expect(final, screen.join('\n')).toBeGreaterThanOrEqual(0);
    expect(screen[final + 1]).toMatch(/^exported a to a\.bsnap: /);
    expect(screen[final + 2]).toBe('EXIT=0');
    expect(screen.filter((l) => /ETA|export +\d+% \[/.test(l) && l !== screen[final])).toEqual([]);
  });

  it('copy: the same bar, and the result printed on the next line', async () => {
    const { raw, screen } = await inTerminal(dir, [
      'copy',
      'src',
      'copy.img',
      '--chunk-size',
      '1M',
    ]);
    const frames = barFrames(raw, 'copy');
    expect(frames.length).toBeGreaterThanOrEqual(4);
    expect(new Set(frames).size).toBeGreaterThanOrEqual(3);
    expect(frames).toEqual([...frames].sort((x, y) => x - y));
    const final = screen.findIndex((l) =>
      /^copy 100% \[=+\] 64\.0 MiB \/ 64\.0 MiB in \d+\.\d s, /.test(l),
    );
    expect(final, screen.join('\n')).toBeGreaterThanOrEqual(0);
    expect(screen[final + 1]).toMatch(/^copied src to copy\.img: 64\.0 MiB in /);
    expect(screen[final + 2]).toBe('EXIT=0');
  });
});
