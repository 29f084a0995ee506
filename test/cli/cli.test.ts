import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { EXIT_INTERRUPTED, EXIT_STATUS, MANIFEST_NAME } from '../../src/cli/index.js';
import { buildCli, type CliRun, REPO, runBin, tempDir } from '../support/cli-runner.js';

/*
 * The `blocksnap` command, spawned as users run it (built from the bin
 * entry once) in a temp directory per test: every subcommand's output, JSON
 * shape and exit status, success and failure.
 */

let bin: string;
beforeAll(async () => {
  bin = await buildCli();
}, 60_000);

/** Runs the command in `cwd`. */
function blocksnap(
  cwd: string,
  args: readonly string[],
  input?: Uint8Array | string,
  env?: Record<string, string>,
) {
  return runBin(bin, args, { cwd, input, env });
}

/** Asserts a run failed with `code`: its exit status and one stderr line naming the code. */
function expectFailure(run: CliRun, code: keyof typeof EXIT_STATUS, message?: RegExp): void {
  expect(run.stderr.trim().split('\n').at(-1)).toMatch(new RegExp(`^blocksnap: ${code}: `));
  if (message !== undefined) expect(run.stderr).toMatch(message);
  expect(run.status).toBe(EXIT_STATUS[code]);
}

/** Asserts a run succeeded. */
function ok(run: CliRun): CliRun {
  if (run.status !== 0) throw new Error(`exit ${run.status}: ${run.stderr}`);
  return run;
}

const bytes = (n: number, seed: number) =>
  Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed * 7 + 1) & 0xff);

describe('blocksnap create and info', () => {
  it('creates a volume directory with a versioned manifest, and info reports it (text and JSON)', async () => {
    const dir = tempDir();
    const created = ok(
      await blocksnap(dir, ['create', 'vm1', '--size', '16M', '--journal', '2M', '--json']),
    );
    expect(created.json()).toEqual({
      volume: 'vm1',
      size: 16 << 20,
      blockSize: 4096,
      stack: ['journal', 'cow', 'file'],
      files: ['vm1/journal.img', 'vm1/snapshots.img', 'vm1/data.img'],
    });
    const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'vm1', MANIFEST_NAME), 'utf8'));
    expect(manifest).toMatchObject({ format: 'blocksnap-volume', version: 1, size: 16 << 20 });
    const info = ok(await blocksnap(dir, ['info', 'vm1', '--json'])).json<
      Record<string, unknown>
    >();
    expect(info).toMatchObject({ size: 16 << 20, blockSize: 4096, snapshots: 0 });
    expect(info.journal).toMatchObject({
      sequence: 0,
      oldestSequence: 0,
      fill: expect.any(Number),
    });
    expect(info.store).toMatchObject({ usedBytes: 0, chunks: expect.any(Number) });
    const text = ok(await blocksnap(dir, ['info', 'vm1'])).stdout;
    expect(text).toMatch(/^size: +16\.0 MiB/m);
    expect(text).toMatch(/^stack: +journal > cow > file$/m);
  });

  it('refuses bad sizes, an occupied directory and a missing volume, each with its exit status', async () => {
    const dir = tempDir();
    expectFailure(
      await blocksnap(dir, ['create', 'a', '--size', '20Q']),
      'EINVAL',
      /'20Q' is not a size/,
    );
    expectFailure(await blocksnap(dir, ['create', 'a', '--size', '-5M']), 'EINVAL');
    expectFailure(
      await blocksnap(dir, ['create', 'a', '--size', '1000']),
      'EINVAL',
      /multiple of the block size/,
    );
    expectFailure(await blocksnap(dir, ['create', 'a']), 'EINVAL', /needs --size/);
    expectFailure(
      await blocksnap(dir, ['create', 'a', '--size', '8M', '--selective', '--journal', '1M']),
      'EINVAL',
    );
    expectFailure(
      await blocksnap(dir, ['create', 'a', '--size', '8M', '--bogus']),
      'EINVAL',
      /--bogus/,
    );
    expect(fs.existsSync(path.join(dir, 'a'))).toBe(false);
    ok(await blocksnap(dir, ['create', 'a', '--size', '8M']));
    expectFailure(
      await blocksnap(dir, ['create', 'a', '--size', '8M']),
      'EBUSY',
      /already holds a volume/,
    );
    expectFailure(await blocksnap(dir, ['info', 'nowhere']), 'ENOENT', /no volume at nowhere/);
    const json = await blocksnap(dir, ['info', 'nowhere', '--json']);
    expect(JSON.parse(json.stderr)).toEqual({
      error: {
        code: 'ENOENT',
        message: expect.stringMatching(/no volume/),
        exitStatus: EXIT_STATUS.ENOENT,
      },
    });
    expectFailure(await blocksnap(dir, ['frobnicate']), 'EINVAL', /unknown command/);
    expectFailure(await blocksnap(dir, ['snapshot', 'frob', 'a']), 'EINVAL', /snapshot create/);
  });

  it('a manifest of another version or damaged is refused before any file is opened', async () => {
    const dir = tempDir();
    ok(await blocksnap(dir, ['create', 'v', '--size', '8M']));
    const file = path.join(dir, 'v', MANIFEST_NAME);
    const manifest = JSON.parse(fs.readFileSync(file, 'utf8'));
    fs.writeFileSync(file, JSON.stringify({ ...manifest, version: 2 }));
    expectFailure(await blocksnap(dir, ['info', 'v']), 'EINVAL', /version 2/);
    fs.writeFileSync(file, '{"format": "blocksnap-vol');
    expectFailure(await blocksnap(dir, ['info', 'v']), 'ECORRUPT', /not valid JSON/);
  });
});

describe('blocksnap snapshot, read, write, diff', () => {
  it('takes, lists, reads, rolls back to and deletes snapshots by name', async () => {
    const dir = tempDir();
    ok(await blocksnap(dir, ['create', 'vm', '--size', '8M']));
    ok(await blocksnap(dir, ['write', 'vm', '--offset', '1M'], 'v1'));
    const a = ok(
      await blocksnap(dir, ['snapshot', 'create', 'vm', '--name', 'a', '--json']),
    ).json();
    expect(a).toMatchObject({
      id: expect.any(String),
      name: 'a',
      writable: false,
      extents: [{ offset: 0, length: 8 << 20 }],
    });
    ok(await blocksnap(dir, ['write', 'vm', '--offset', '1M'], 'v2'));
    expect(
      ok(await blocksnap(dir, ['read', 'vm', '--offset', '1M', '--length', '2', '-o', '-'])).stdout,
    ).toBe('v2');
    expect(
      ok(await blocksnap(dir, ['read', 'vm@a', '--offset', '1M', '--length', '2', '-o', '-']))
        .stdout,
    ).toBe('v1');
    const ls = ok(await blocksnap(dir, ['snapshot', 'ls', 'vm'])).stdout.split('\n');
    expect(ls[0]).toMatch(/^ID +NAME +CREATED +KIND +HOLDS$/);
    expect(ls[1]).toMatch(new RegExp(`^${a.id} +a +\\S+ +read-only +all$`));
    const diff = ok(await blocksnap(dir, ['diff', 'vm@a', 'vm', '--json'])).json();
    expect(diff).toEqual({
      from: a.id,
      to: 'live',
      extents: [{ offset: 1 << 20, length: 4096 }],
      bytes: 4096,
    });
    ok(await blocksnap(dir, ['snapshot', 'rollback', 'vm@a']));
    expect(
      ok(await blocksnap(dir, ['read', 'vm', '--offset', '1M', '--length', '2', '-o', '-'])).stdout,
    ).toBe('v1');
    // By id prefix, and the `<volume> <snapshot>` form.
    ok(await blocksnap(dir, ['snapshot', 'rm', 'vm', String(a.id).slice(0, 8)]));
    expect(ok(await blocksnap(dir, ['snapshot', 'ls', 'vm', '--json'])).json()).toEqual([]);
    expectFailure(
      await blocksnap(dir, ['snapshot', 'rm', 'vm@a']),
      'ENOENT',
      /no snapshot 'a' in vm \(it has none\)/,
    );
    expectFailure(await blocksnap(dir, ['read', 'vm@gone']), 'ENOENT');
    expectFailure(await blocksnap(dir, ['read', 'vm', '--offset', '9M', '-o', '-']), 'ERANGE');
  });

  it('selective volumes take --include/--exclude ranges; other volumes refuse them', async () => {
    const dir = tempDir();
    ok(await blocksnap(dir, ['create', 'sel', '--size', '8M', '--selective']));
    ok(await blocksnap(dir, ['write', 'sel', '--offset', '0'], 'keep'));
    const s = ok(
      await blocksnap(dir, [
        'snapshot',
        'create',
        'sel',
        '--name',
        'part',
        '--include',
        '0:1M',
        '--exclude',
        '512k:512k',
        '--json',
      ]),
    ).json();
    expect(s.extents).toEqual([{ offset: 0, length: 512 << 10 }]);
    expect(ok(await blocksnap(dir, ['snapshot', 'ls', 'sel'])).stdout).toMatch(
      /part .* 512\.0 KiB$/m,
    );
    expectFailure(
      await blocksnap(dir, ['read', 'sel@part', '--offset', '2M', '--length', '4k', '-o', '-']),
      'EEXCLUDED',
    );
    ok(await blocksnap(dir, ['write', 'sel', '--offset', '0'], 'LOST'));
    ok(await blocksnap(dir, ['snapshot', 'rollback', 'sel@part', '--include', '0:2']));
    expect(ok(await blocksnap(dir, ['read', 'sel', '--length', '4', '-o', '-'])).stdout).toBe(
      'keST',
    );
    expectFailure(
      await blocksnap(dir, ['snapshot', 'create', 'sel', '--include', '0-1M']),
      'EINVAL',
      /OFFSET:LENGTH/,
    );
    ok(await blocksnap(dir, ['create', 'full', '--size', '8M']));
    expectFailure(
      await blocksnap(dir, ['snapshot', 'create', 'full', '--include', '0:1M']),
      'EINVAL',
      /selective volume/,
    );
  });
});

describe('blocksnap export and apply', () => {
  it('a full and an incremental stream bring a file and a volume to the snapshots, and apply again changes nothing', async () => {
    const dir = tempDir();
    ok(await blocksnap(dir, ['create', 'src', '--size', '8M']));
    ok(await blocksnap(dir, ['write', 'src', '--offset', '64k'], bytes(300_000, 1)));
    ok(await blocksnap(dir, ['snapshot', 'create', 'src', '--name', 'mon']));
    ok(await blocksnap(dir, ['write', 'src', '--offset', '2M'], bytes(10_000, 2)));
    ok(await blocksnap(dir, ['snapshot', 'create', 'src', '--name', 'tue']));
    const full = ok(
      await blocksnap(dir, ['export', 'src', '--snapshot', 'mon', '-o', 'mon.bsnap', '--json']),
    ).json();
    expect(full).toMatchObject({ incremental: false, output: 'mon.bsnap', coveredBytes: 8 << 20 });
    expect(fs.statSync(path.join(dir, 'mon.bsnap')).size).toBe(full.streamBytes);
    const inc = ok(
      await blocksnap(dir, [
        'export',
        'src',
        '--snapshot',
        'tue',
        '--since',
        'mon',
        '-o',
        'tue.bsnap',
        '--json',
      ]),
    ).json();
    expect(inc).toMatchObject({ incremental: true, coveredBytes: 12 << 10 });

    // To a new image file (sized from the stream), then incremental.
    const first = ok(await blocksnap(dir, ['apply', 'mon.bsnap', 'copy.img', '--json'])).json();
    expect(first).toMatchObject({ incremental: false, target: 'copy.img' });
    ok(await blocksnap(dir, ['apply', 'tue.bsnap', 'copy.img']));
    const again = ok(await blocksnap(dir, ['apply', 'tue.bsnap', 'copy.img', '--json'])).json();
    expect(again).toMatchObject({ bytesWritten: 0, framesSkipped: again.frames });
    const expected = ok(await blocksnap(dir, ['read', 'src@tue', '-o', 'tue.raw']));
    expect(expected.status).toBe(0);
    expect(
      Buffer.compare(
        fs.readFileSync(path.join(dir, 'copy.img')),
        fs.readFileSync(path.join(dir, 'tue.raw')),
      ),
    ).toBe(0);

    // To a volume through stdin, taking the base snapshot for the next incremental.
    ok(await blocksnap(dir, ['create', 'replica', '--size', '8M']));
    ok(
      await blocksnap(
        dir,
        ['apply', '-', 'replica', '--snapshot', 'mon'],
        fs.readFileSync(path.join(dir, 'mon.bsnap')),
      ),
    );
    ok(await blocksnap(dir, ['apply', 'tue.bsnap', 'replica', '--snapshot', 'tue']));
    expect(
      ok(await blocksnap(dir, ['snapshot', 'ls', 'replica', '--json']))
        .json<{ name: string }[]>()
        .map((s) => s.name),
    ).toEqual(['mon', 'tue']);
    ok(await blocksnap(dir, ['read', 'replica', '-o', 'replica.raw']));
    expect(
      Buffer.compare(
        fs.readFileSync(path.join(dir, 'replica.raw')),
        fs.readFileSync(path.join(dir, 'tue.raw')),
      ),
    ).toBe(0);
  });

  it('refuses a stream for another base, a damaged or cut stream (resumable: the whole stream finishes it), an unknown snapshot', async () => {
    const dir = tempDir();
    ok(await blocksnap(dir, ['create', 'src', '--size', '8M']));
    ok(await blocksnap(dir, ['write', 'src'], bytes(3 << 20, 3)));
    ok(await blocksnap(dir, ['snapshot', 'create', 'src', '--name', 'a']));
    ok(await blocksnap(dir, ['write', 'src', '--offset', '1M'], bytes(8192, 4)));
    ok(await blocksnap(dir, ['snapshot', 'create', 'src', '--name', 'b']));
    ok(await blocksnap(dir, ['export', 'src', '--snapshot', 'a', '-o', 'a.bsnap']));
    ok(
      await blocksnap(dir, ['export', 'src', '--snapshot', 'b', '--since', 'a', '-o', 'ab.bsnap']),
    );
    expectFailure(
      await blocksnap(dir, ['export', 'src', '--snapshot', 'zzz', '-o', 'x.bsnap']),
      'ENOENT',
      /no snapshot 'zzz' in src; it has: a \(/,
    );
    expect(fs.existsSync(path.join(dir, 'x.bsnap'))).toBe(false);

    // An empty target does not hold base a.
    ok(await blocksnap(dir, ['create', 'other', '--size', '8M']));
    expectFailure(await blocksnap(dir, ['apply', 'ab.bsnap', 'other']), 'EINVAL', /base/);
    expectFailure(await blocksnap(dir, ['apply', 'data.txt', 'other']), 'ENOENT');
    fs.writeFileSync(path.join(dir, 'junk.bsnap'), 'not a stream at all, just text');
    expectFailure(
      await blocksnap(dir, ['apply', 'junk.bsnap', 'new.img']),
      'ECORRUPT',
      /not a blocksnap stream/,
    );
    expect(fs.existsSync(path.join(dir, 'new.img'))).toBe(false);

    const stream = fs.readFileSync(path.join(dir, 'a.bsnap'));
    const damaged = Buffer.from(stream);
    damaged[damaged.length - 5000]! ^= 0x40;
    fs.writeFileSync(path.join(dir, 'damaged.bsnap'), damaged);
    expectFailure(
      await blocksnap(dir, ['apply', 'damaged.bsnap', 'copy.img']),
      'ECORRUPT',
      /frames, .* applied; apply the whole stream again/,
    );
    fs.writeFileSync(
      path.join(dir, 'cut.bsnap'),
      stream.subarray(0, Math.floor(stream.length / 2)),
    );
    expectFailure(await blocksnap(dir, ['apply', 'cut.bsnap', 'copy.img']), 'ECORRUPT');
    ok(await blocksnap(dir, ['apply', 'a.bsnap', 'copy.img']));
    ok(await blocksnap(dir, ['read', 'src@a', '-o', 'a.raw']));
    expect(
      Buffer.compare(
        fs.readFileSync(path.join(dir, 'copy.img')),
        fs.readFileSync(path.join(dir, 'a.raw')),
      ),
    ).toBe(0);
  });

  it('progress: plain lines when stderr is not a terminal, nothing with --quiet', async () => {
    const dir = tempDir();
    ok(await blocksnap(dir, ['create', 'src', '--size', '8M', '-q']));
    ok(await blocksnap(dir, ['write', 'src', '-q'], bytes(4 << 20, 5)));
    ok(await blocksnap(dir, ['snapshot', 'create', 'src', '--name', 'a', '-q']));
    const env = { BLOCKSNAP_PROGRESS_INTERVAL: '0' };
    const run = ok(
      await blocksnap(dir, ['export', 'src', '--snapshot', 'a', '-o', 'a.bsnap'], undefined, env),
    );
    const lines = run.stderr.trim().split('\n');
    expect(lines.length).toBeGreaterThan(3);
    for (const line of lines) expect(line).toMatch(/^export: +\d+% {2}/);
    expect(lines.at(-1)).toMatch(/^export: 100% {2}8\.0 MiB \/ 8\.0 MiB in \d+\.\d s, /);
    expect(run.stderr.includes('\r') || run.stderr.includes(String.fromCharCode(0x1b))).toBe(false);
    const quiet = ok(
      await blocksnap(
        dir,
        ['export', 'src', '--snapshot', 'a', '-o', 'b.bsnap', '-q'],
        undefined,
        env,
      ),
    );
    expect(quiet.stderr).toBe('');
    expect(quiet.stdout).toBe('');
  });
});

describe('blocksnap check', () => {
  it('exit 0 on a sound volume; a damaged preserved block is reported and exits ECORRUPT; damage the open meets fails it', async () => {
    const dir = tempDir();
    ok(await blocksnap(dir, ['create', 'vm', '--size', '8M']));
    const marker = Buffer.alloc(4096, 0xa7);
    const later = Buffer.alloc(4096, 0x5c);
    ok(await blocksnap(dir, ['write', 'vm', '--offset', '1M'], marker));
    ok(await blocksnap(dir, ['write', 'vm', '--offset', '2M'], later));
    ok(await blocksnap(dir, ['snapshot', 'create', 'vm', '--name', 'a']));
    ok(await blocksnap(dir, ['write', 'vm', '--offset', '1M'], Buffer.alloc(4096, 1)));
    // A later metadata frame: the marker's preserve is no longer the last one.
    ok(await blocksnap(dir, ['write', 'vm', '--offset', '2M'], Buffer.alloc(4096, 2)));
    const sound = ok(await blocksnap(dir, ['check', 'vm', '--json'])).json<{
      ok: boolean;
      layers: unknown[];
    }>();
    expect(sound).toMatchObject({
      ok: true,
      layers: [expect.objectContaining({ layer: 'cow', problems: [] })],
    });

    // The preserved copy of the first block is the one 4 KiB of the store full of 0xa7.
    const storePath = path.join(dir, 'vm', 'snapshots.img');
    const store = fs.readFileSync(storePath);
    const at = store.indexOf(marker);
    expect(at).toBeGreaterThan(0);
    store[at + 100]! ^= 0xff;
    fs.writeFileSync(storePath, store);
    const damaged = await blocksnap(dir, ['check', 'vm', '--json']);
    expect(damaged.status).toBe(EXIT_STATUS.ECORRUPT);
    // Progress lines come first on stderr (it is no terminal); the error is the last line.
    expect(JSON.parse(damaged.stderr.trim().split('\n').at(-1)!).error).toMatchObject({
      code: 'ECORRUPT',
      message: expect.stringMatching(/check found 1 problem/),
    });
    const report = JSON.parse(damaged.stdout);
    expect(report.ok).toBe(false);
    expect(report.layers[0].problems).toEqual([expect.objectContaining({ structure: 'chunk' })]);
    const text = await blocksnap(dir, ['check', 'vm']);
    expectFailure(text, 'ECORRUPT', /check found 1 problem/);
    expect(text.stdout).toMatch(/^ {2}cow chunk at \d+: /m);

    // The last frame's data, verified at open after a clean close: the open fails, naming it.
    const last = store.indexOf(later);
    store[last + 100]! ^= 0xff;
    fs.writeFileSync(storePath, store);
    expectFailure(await blocksnap(dir, ['check', 'vm']), 'ECORRUPT', /fails its checksum/);
    expectFailure(await blocksnap(dir, ['info', 'vm']), 'ECORRUPT');
  });
});

describe('blocksnap check progress', () => {
  it('a line per layer walked when stderr is not a terminal, ending at 100 %; nothing with --quiet', async () => {
    const dir = tempDir();
    ok(await blocksnap(dir, ['create', 'vm', '--size', '8M', '--journal', '4M', '-q']));
    ok(await blocksnap(dir, ['write', 'vm', '-q'], bytes(2 << 20, 3)));
    ok(await blocksnap(dir, ['snapshot', 'create', 'vm', '--name', 'a', '-q']));
    ok(await blocksnap(dir, ['write', 'vm', '-q'], bytes(2 << 20, 4)));
    const env = { BLOCKSNAP_PROGRESS_INTERVAL: '0' };
    const run = ok(await blocksnap(dir, ['check', 'vm'], undefined, env));
    const lines = run.stderr.trim().split('\n');
    for (const line of lines) expect(line).toMatch(/^check (journal|cow): +\d+% {2}/);
    // Each layer's bar ends complete, the journal's (over the COW layer) first.
    const finals = lines.filter((line) => / in \d+\.\d s, /.test(line));
    expect(finals).toHaveLength(2);
    expect(finals[0]).toMatch(/^check journal: 100% {2}(\S+ \S+) \/ \1 in /);
    expect(finals[1]).toMatch(/^check cow: 100% {2}(\S+ \S+) \/ \1 in /);
    // The journal holds MiBs of records: its bar moved before it ended.
    expect(lines.filter((line) => line.startsWith('check journal:')).length).toBeGreaterThan(2);
    expect(run.stderr.includes('\r') || run.stderr.includes(String.fromCharCode(0x1b))).toBe(false);
    expect(run.stdout).toMatch(/^journal \(.*\): ok;/m);
    const quiet = ok(await blocksnap(dir, ['check', 'vm', '-q'], undefined, env));
    expect(quiet.stderr).toBe('');
  });
});

describe('blocksnap pit and copy', () => {
  it('pit exports a journaled volume as it was after a record or at a time; other volumes refuse it', async () => {
    const dir = tempDir();
    ok(await blocksnap(dir, ['create', 'j', '--size', '8M', '--journal', '4M']));
    ok(await blocksnap(dir, ['write', 'j'], 'before'));
    const seq = ok(await blocksnap(dir, ['info', 'j', '--json'])).json<{
      journal: { sequence: number };
    }>().journal.sequence;
    await new Promise((resolve) => setTimeout(resolve, 20));
    const between = new Date().toISOString();
    await new Promise((resolve) => setTimeout(resolve, 20));
    ok(await blocksnap(dir, ['write', 'j'], 'AFTER!'));
    const pit = ok(
      await blocksnap(dir, ['pit', 'j', '--at', String(seq), '-o', 'then.bsnap', '--json']),
    ).json();
    expect(pit).toMatchObject({ sequence: seq, format: 'stream', output: 'then.bsnap' });
    ok(await blocksnap(dir, ['apply', 'then.bsnap', 'then.img']));
    expect(fs.readFileSync(path.join(dir, 'then.img')).subarray(0, 6).toString()).toBe('before');
    ok(await blocksnap(dir, ['pit', 'j', '--at', between, '--raw', '-o', 'then.raw']));
    expect(fs.readFileSync(path.join(dir, 'then.raw')).subarray(0, 6).toString()).toBe('before');
    expectFailure(
      await blocksnap(dir, ['pit', 'j', '--at', 'yesterday', '-o', 'x']),
      'EINVAL',
      /ISO 8601/,
    );
    expectFailure(await blocksnap(dir, ['pit', 'j', '--at', '999', '-o', 'x']), 'ERANGE');
    ok(await blocksnap(dir, ['create', 'plain', '--size', '8M']));
    expectFailure(
      await blocksnap(dir, ['pit', 'plain', '--at', '1', '-o', 'x']),
      'EINVAL',
      /no journal/,
    );
  });

  it('copy makes an exact image of a volume or a snapshot; with --map the map is gone once done', async () => {
    const dir = tempDir();
    ok(await blocksnap(dir, ['create', 'vm', '--size', '8M', '--journal', '2M']));
    ok(await blocksnap(dir, ['write', 'vm', '--offset', '100k'], bytes(500_000, 6)));
    ok(await blocksnap(dir, ['snapshot', 'create', 'vm', '--name', 'a']));
    ok(await blocksnap(dir, ['write', 'vm', '--offset', '100k'], 'changed'));
    const report = ok(
      await blocksnap(dir, ['copy', 'vm', 'live.img', '--map', 'live.map', '--json']),
    ).json();
    expect(report).toMatchObject({ totalBytes: 8 << 20, resumed: false, map: 'live.map' });
    expect(fs.existsSync(path.join(dir, 'live.map'))).toBe(false);
    ok(await blocksnap(dir, ['read', 'vm', '-o', 'live.raw']));
    expect(
      Buffer.compare(
        fs.readFileSync(path.join(dir, 'live.img')),
        fs.readFileSync(path.join(dir, 'live.raw')),
      ),
    ).toBe(0);
    ok(await blocksnap(dir, ['copy', 'vm@a', 'a.img']));
    ok(await blocksnap(dir, ['read', 'vm@a', '-o', 'a.raw']));
    expect(
      Buffer.compare(
        fs.readFileSync(path.join(dir, 'a.img')),
        fs.readFileSync(path.join(dir, 'a.raw')),
      ),
    ).toBe(0);
    expectFailure(await blocksnap(dir, ['copy', 'vm@nope', 'n.img']), 'ENOENT');
    expectFailure(
      await blocksnap(dir, ['copy', 'vm', 'c.img', '--chunk-size', '3k']),
      'EINVAL',
      /power of two/,
    );
  });
});

/** Spawns the command, sends SIGINT once stderr shows `ready`, and collects the run. */
function interruptWhen(
  cwd: string,
  args: readonly string[],
  ready: RegExp,
  stdin?: (child: ReturnType<typeof spawn>) => void,
): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, ...args], {
      cwd,
      env: { ...process.env, BLOCKSNAP_PROGRESS_INTERVAL: '0' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let sent = false;
    child.stdout!.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (!sent && ready.test(stderr)) {
        sent = true;
        child.kill('SIGINT');
      }
    });
    child.stdin!.on('error', () => {});
    if (stdin === undefined) child.stdin!.end();
    else stdin(child);
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ status: code ?? -1, stdout, stderr, json: () => JSON.parse(stdout) });
    });
  });
}

describe('blocksnap and Ctrl-C', () => {
  it('apply stops on SIGINT, says how to resume, and the same command with the whole stream finishes it', async () => {
    const dir = tempDir();
    ok(await blocksnap(dir, ['create', 'src', '--size', '16M', '-q']));
    ok(await blocksnap(dir, ['write', 'src', '-q'], bytes(8 << 20, 7)));
    ok(await blocksnap(dir, ['snapshot', 'create', 'src', '--name', 'a', '-q']));
    ok(await blocksnap(dir, ['export', 'src', '--snapshot', 'a', '-o', 'a.bsnap', '-q']));
    const stream = fs.readFileSync(path.join(dir, 'a.bsnap'));
    // Half the stream, then stdin stays open: the apply waits for more until Ctrl-C.
    const run = await interruptWhen(dir, ['apply', '-', 'copy.img'], /apply: +0%/, (child) => {
      child.stdin!.write(stream.subarray(0, stream.length >> 1));
    });
    expect(run.status, run.stderr).toBe(EXIT_INTERRUPTED);
    expect(run.stderr.trim().split('\n').at(-1)).toMatch(
      /^blocksnap: interrupted: apply stopped at .*; run the same command again with the whole stream/,
    );
    ok(await blocksnap(dir, ['apply', '-', 'copy.img'], stream));
    ok(await blocksnap(dir, ['read', 'src@a', '-o', 'a.raw']));
    expect(
      Buffer.compare(
        fs.readFileSync(path.join(dir, 'copy.img')),
        fs.readFileSync(path.join(dir, 'a.raw')),
      ),
    ).toBe(0);
  });

  it('copy --map stops on SIGINT keeping its map, and the same command resumes it to an exact copy', async () => {
    const dir = tempDir();
    ok(await blocksnap(dir, ['create', 'vm', '--size', '128M', '-q']));
    ok(await blocksnap(dir, ['write', 'vm', '--offset', '1M', '-q'], bytes(1 << 20, 8)));
    const args = ['copy', 'vm', 'vm.img', '--map', 'vm.map', '--chunk-size', '1M'];
    const run = await interruptWhen(dir, args, /copy: +\d+% {2}[1-9]/);
    expect(run.status).toBe(EXIT_INTERRUPTED);
    expect(run.stderr).toMatch(
      /interrupted: copy stopped; vm\.map records what is copied: run the same command again to resume/,
    );
    expect(fs.existsSync(path.join(dir, 'vm.map'))).toBe(true);
    const resumed = ok(await blocksnap(dir, [...args, '--json'])).json();
    expect(resumed).toMatchObject({ resumed: true, resumedBytes: expect.any(Number) });
    expect(resumed.resumedBytes).toBeGreaterThan(0);
    expect(fs.existsSync(path.join(dir, 'vm.map'))).toBe(false);
    ok(await blocksnap(dir, ['read', 'vm', '-o', 'vm.raw']));
    expect(
      Buffer.compare(
        fs.readFileSync(path.join(dir, 'vm.img')),
        fs.readFileSync(path.join(dir, 'vm.raw')),
      ),
    ).toBe(0);
  });
});

describe('blocksnap --help and the exit status table', () => {
  it('every command has --help with its usage and an example; the main help lists every exit status', async () => {
    const dir = tempDir();
    const main = ok(await blocksnap(dir, ['--help'])).stdout;
    const names = [...main.matchAll(/^ {2}([a-z]+(?: [a-z]+)?) {2,}\S/gm)].map((m) => m[1]!);
    expect(names).toEqual(
      expect.arrayContaining([
        'create',
        'info',
        'check',
        'snapshot create',
        'snapshot ls',
        'snapshot rm',
        'snapshot rollback',
        'diff',
        'export',
        'apply',
        'copy',
        'serve',
        'pit',
      ]),
    );
    for (const [code, status] of Object.entries(EXIT_STATUS)) {
      expect(main).toMatch(new RegExp(`^ {2}${status} +${code} `, 'm'));
    }
    for (const name of names) {
      const help = ok(await blocksnap(dir, [...name.split(' '), '--help'])).stdout;
      expect(help).toMatch(new RegExp(`^usage: blocksnap ${name} `));
      expect(help).toMatch(new RegExp(`^example:\\n {2}.*blocksnap ${name} `, 'm'));
    }
  });

  it("the README's exit status table is the command's", () => {
    const readme = fs.readFileSync(path.join(REPO, 'README.md'), 'utf8');
    const section = readme.split('## From the shell')[1]?.split(/\n## /)[0] ?? '';
    const rows = [...section.matchAll(/^\| (\d+) +\| `(E[A-Z]+)`/gm)].map((m) => [
      m[2],
      Number(m[1]),
    ]);
    expect(Object.fromEntries(rows)).toEqual(EXIT_STATUS);
    expect(section).toMatch(new RegExp(`^\\| ${EXIT_INTERRUPTED} `, 'm'));
  });

  it('package.json bin is the built cli/main, the entry these tests build', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8'));
    expect(pkg.bin).toEqual({ blocksnap: './dist/cli/main.js' });
    const tsup = fs.readFileSync(path.join(REPO, 'tsup.config.ts'), 'utf8');
    expect(tsup).toMatch(/'cli\/main': 'src\/cli\/main\.ts'/);
    expect(
      fs
        .readFileSync(path.join(REPO, 'src/cli/main.ts'), 'utf8')
        .startsWith('#!/usr/bin/env node\n'),
    ).toBe(true);
  });
});
