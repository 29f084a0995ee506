import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { EXIT_STATUS, MANIFEST_NAME } from '../../src/cli/index.js';
import { NbdDevice } from '../../src/index.js';
import { expectSameBytes, seededBytes } from '../support/bytes.js';
import {
  buildCli,
  type CliRun,
  type RunningCli,
  runBin,
  startBin,
  tempDir,
} from '../support/cli-runner.js';

/*
 * `blocksnap create --partitions N --processors N [--stripe SIZE]`: a
 * volume directory whose stack is one VirtualVolume, and every other
 * subcommand on it through the public API — spawned as users run it, the
 * partitions in worker threads of the command.
 */

let bin: string;
beforeAll(async () => {
  bin = await buildCli();
}, 60_000);

const running: RunningCli[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((r) => r.stop('SIGKILL')));
});

function blocksnap(cwd: string, args: readonly string[], input?: Uint8Array | string) {
  return runBin(bin, args, { cwd, input });
}

function ok(run: CliRun): CliRun {
  if (run.status !== 0) throw new Error(`exit ${run.status}: ${run.stderr}`);
  return run;
}

function expectFailure(run: CliRun, code: keyof typeof EXIT_STATUS, message?: RegExp): void {
  expect(run.stderr.trim().split('\n').at(-1)).toMatch(new RegExp(`^blocksnap: ${code}: `));
  if (message !== undefined) expect(run.stderr).toMatch(message);
  expect(run.status).toBe(EXIT_STATUS[code]);
}

const MiB = 1024 * 1024;
const pattern = (n: number, seed: number) => Buffer.from(seededBytes(n, seed));

/** Bytes of a volume or snapshot, read by the command. */
async function bytesOf(cwd: string, source: string, offset: number, length: number) {
  const out = `read-${offset}-${length}.raw`;
  const args = ['read', source, '--offset', String(offset), '--length', String(length)];
  ok(await blocksnap(cwd, [...args, '-o', out]));
  return fs.readFileSync(path.join(cwd, out));
}

describe('blocksnap on a VirtualVolume volume', () => {
  it('create makes a directory of partition files named by the manifest; info tells the partitions and processors', async () => {
    const dir = tempDir();
    const created = ok(
      await blocksnap(dir, [
        'create',
        'vol',
        '--size',
        '4M',
        '--partitions',
        '4',
        '--processors',
        '2',
        '--stripe',
        '64k',
        '--json',
      ]),
    ).json<{ stack: string[]; files: string[]; partitions: number; processors: number }>();
    expect(created.stack).toEqual(['virtual']);
    expect(created).toMatchObject({ partitions: 4, processors: 2, stripeUnit: 65536 });
    const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'vol', MANIFEST_NAME), 'utf8'));
    expect(manifest.stack).toEqual([
      {
        layer: 'virtual',
        store: 'volume.store',
        processors: 2,
        stripeUnit: 65536,
        partitions: [0, 1, 2, 3].map((i) => ({
          origin: `partition-${i}.img`,
          store: `partition-${i}.cow`,
        })),
      },
    ]);
    expect(created.files.map((f) => path.basename(f))).toEqual([
      'volume.store',
      ...[0, 1, 2, 3].flatMap((i) => [`partition-${i}.img`, `partition-${i}.cow`]),
    ]);
    for (const f of created.files) expect(fs.existsSync(path.join(dir, f))).toBe(true);
    for (const i of [0, 1, 2, 3]) {
      expect(fs.statSync(path.join(dir, 'vol', `partition-${i}.img`)).size).toBe(MiB);
    }
    const info = ok(await blocksnap(dir, ['info', 'vol', '--json'])).json();
    expect(info).toMatchObject({
      size: 4 * MiB,
      stack: ['virtual'],
      snapshots: 0,
      store: null,
      virtual: { partitions: 4, processors: 2, placement: [0, 1, 0, 1], stripeUnit: 65536 },
    });
    expect(ok(await blocksnap(dir, ['info', 'vol'])).stdout).toMatch(
      /partitions: +4, striped by 64\.0 KiB\nprocessors: +2 \(partition i on processor 0, 1, 0, 1\)/,
    );
  });

  it('write, snapshot create/ls/rm/rollback, read of a snapshot, diff — across partitions — and the directory moved still opens', async () => {
    const dir = tempDir();
    ok(
      await blocksnap(dir, [
        'create',
        'vol',
        '--size',
        '4M',
        '--partitions',
        '4',
        '--processors',
        '2',
        '--stripe',
        '64k',
      ]),
    );
    const v1 = pattern(256 * 1024, 1); // four stripe units: every partition
    ok(await blocksnap(dir, ['write', 'vol'], v1));
    ok(await blocksnap(dir, ['snapshot', 'create', 'vol', '--name', 'before']));
    const v2 = pattern(8192, 2);
    ok(await blocksnap(dir, ['write', 'vol', '--offset', String(65536 - 4096)], v2));
    expectSameBytes('the snapshot', await bytesOf(dir, 'vol@before', 0, v1.length), v1);
    const live = Buffer.from(v1);
    live.set(v2, 65536 - 4096);
    expectSameBytes('live', await bytesOf(dir, 'vol', 0, v1.length), live);

    const ls = ok(await blocksnap(dir, ['snapshot', 'ls', 'vol', '--json'])).json<
      { name: string; extents: unknown[] }[]
    >();
    expect(ls.map((s) => s.name)).toEqual(['before']);
    const diff = ok(await blocksnap(dir, ['diff', 'vol@before', 'vol', '--json'])).json<{
      extents: { offset: number; length: number }[];
    }>();
    // The write crossed from partition 0's stripe unit into partition 1's.
    expect(diff.extents).toEqual([{ offset: 65536 - 4096, length: 8192 }]);

    // The manifest's relative names, not the paths recorded at create, find the files.
    fs.renameSync(path.join(dir, 'vol'), path.join(dir, 'moved'));
    ok(await blocksnap(dir, ['snapshot', 'rollback', 'moved@before']));
    expectSameBytes('rolled back', await bytesOf(dir, 'moved', 0, v1.length), v1);
    ok(await blocksnap(dir, ['snapshot', 'rm', 'moved@before']));
    expect(ok(await blocksnap(dir, ['snapshot', 'ls', 'moved', '--json'])).json()).toEqual([]);
    expectFailure(await blocksnap(dir, ['read', 'moved@before', '--length', '1']), 'ENOENT');
  });

  it('export full and incremental, apply to a file volume and to another VirtualVolume volume', async () => {
    const dir = tempDir();
    ok(
      await blocksnap(dir, [
        'create',
        'vol',
        '--size',
        '4M',
        '--partitions',
        '2',
        '--processors',
        '2',
      ]),
    );
    const a = pattern(3 * MiB, 3);
    ok(await blocksnap(dir, ['write', 'vol'], a));
    ok(await blocksnap(dir, ['snapshot', 'create', 'vol', '--name', 'mon']));
    const b = pattern(MiB, 4); // 1.5 MiB: across the two partitions' boundary at 2 MiB
    ok(await blocksnap(dir, ['write', 'vol', '--offset', String(1.5 * MiB)], b));
    ok(await blocksnap(dir, ['snapshot', 'create', 'vol', '--name', 'tue']));
    ok(await blocksnap(dir, ['export', 'vol', '--snapshot', 'mon', '-o', 'mon.bsnap']));
    ok(
      await blocksnap(dir, [
        'export',
        'vol',
        '--snapshot',
        'tue',
        '--since',
        'mon',
        '-o',
        'tue.bsnap',
      ]),
    );
    expect(fs.statSync(path.join(dir, 'tue.bsnap')).size).toBeLessThan(1.2 * MiB);

    const tue = Buffer.from(a);
    tue.set(b, 1.5 * MiB);
    ok(await blocksnap(dir, ['create', 'plain', '--size', '4M']));
    ok(
      await blocksnap(dir, [
        'create',
        'wide',
        '--size',
        '4M',
        '--partitions',
        '4',
        '--processors',
        '1',
      ]),
    );
    for (const target of ['plain', 'wide']) {
      ok(await blocksnap(dir, ['apply', 'mon.bsnap', target, '--snapshot', 'mon']));
      ok(await blocksnap(dir, ['apply', 'tue.bsnap', target, '--snapshot', 'tue']));
      const applied = await bytesOf(dir, target, 0, 4 * MiB);
      expectSameBytes(target, applied, Buffer.concat([tue, Buffer.alloc(MiB)]));
      expectSameBytes(`${target}@mon`, await bytesOf(dir, `${target}@mon`, 0, 3 * MiB), a);
    }
  });

  it('serve exports the live volume and its snapshots over NBD', async () => {
    const dir = tempDir();
    ok(
      await blocksnap(dir, [
        'create',
        'vol',
        '--size',
        '4M',
        '--partitions',
        '2',
        '--processors',
        '2',
      ]),
    );
    ok(await blocksnap(dir, ['write', 'vol'], Buffer.alloc(65536, 0xab)));
    ok(await blocksnap(dir, ['snapshot', 'create', 'vol', '--name', 'snap']));
    ok(await blocksnap(dir, ['write', 'vol'], Buffer.alloc(65536, 0)));
    const server = await startBin(bin, ['serve', 'vol', '--port', '0', '--json'], { cwd: dir });
    running.push(server);
    const announced = JSON.parse(server.firstLine) as { exports: { name: string; url: string }[] };
    const url = announced.exports.find((e) => e.name === 'vol@snap')!.url;
    const remote = await NbdDevice.connect(url);
    try {
      expect(remote.size).toBe(4 * MiB);
      expectSameBytes('vol@snap over NBD', await remote.read(0, 65536), Buffer.alloc(65536, 0xab));
    } finally {
      await remote.close();
    }
    expect(await server.stop('SIGTERM')).toBe(0);
  });

  it("check walks every partition: 0 on a clean volume, 7 after a byte of a partition's .cow file flips, naming it", async () => {
    const dir = tempDir();
    ok(
      await blocksnap(dir, [
        'create',
        'vol',
        '--size',
        '4M',
        '--partitions',
        '2',
        '--processors',
        '2',
      ]),
    );
    // Partition 1 holds the second 2 MiB: its COW store keeps `kept` once overwritten.
    const kept = pattern(65536, 7);
    ok(await blocksnap(dir, ['write', 'vol', '--offset', String(2 * MiB)], kept));
    ok(await blocksnap(dir, ['snapshot', 'create', 'vol', '--name', 'snap']));
    ok(await blocksnap(dir, ['write', 'vol', '--offset', String(2 * MiB)], Buffer.alloc(65536)));
    // A later frame on every partition, so the damaged chunk's frame is not
    // the last one, whose data open verifies itself: the damage is check's to find.
    ok(await blocksnap(dir, ['snapshot', 'create', 'vol', '--name', 'later']));

    const clean = ok(await blocksnap(dir, ['check', 'vol']));
    expect(clean.stdout).toMatch(/^virtual \(.*volume\.store\): ok; checked /);
    expect(clean.stdout).toContain('partition 0 (partition-0.cow): ok');
    expect(clean.stdout).toContain('partition 1 (partition-1.cow): ok');
    const cleanJson = ok(await blocksnap(dir, ['check', 'vol', '--json'])).json<{
      ok: boolean;
      layers: { layer: string; problems: unknown[]; checked: { chunks: number } }[];
    }>();
    expect(cleanJson.ok).toBe(true);
    expect(cleanJson.layers.map((l) => l.layer)).toEqual(['virtual']);
    expect(cleanJson.layers[0]!.checked.chunks).toBe(65536 / 4096);

    const cow = path.join(dir, 'vol', 'partition-1.cow');
    const bytes = fs.readFileSync(cow);
    const at = bytes.indexOf(kept.subarray(0, 4096));
    expect(at).toBeGreaterThan(0);
    const fd = fs.openSync(cow, 'r+');
    fs.writeSync(fd, Uint8Array.of(bytes[at + 9]! ^ 0x10), 0, 1, at + 9);
    fs.closeSync(fd);

    const damaged = await blocksnap(dir, ['check', 'vol']);
    expectFailure(damaged, 'ECORRUPT', /check found 1 problem/);
    expect(damaged.stdout).toContain('partition 0 (partition-0.cow): ok');
    expect(damaged.stdout).toContain('partition 1 (partition-1.cow): 1 problem(s)');
    expect(damaged.stdout).toMatch(new RegExp(`virtual chunk at ${at}: partition 1: `));
    const damagedJson = await blocksnap(dir, ['check', 'vol', '--json']);
    expect(damagedJson.status).toBe(EXIT_STATUS.ECORRUPT);
    const report = JSON.parse(damagedJson.stdout) as {
      ok: boolean;
      layers: { problems: { structure: string; message: string }[] }[];
    };
    expect(report.ok).toBe(false);
    expect(report.layers[0]!.problems).toEqual([
      { structure: 'chunk', offset: at, message: expect.stringMatching(/^partition 1: /) },
    ]);
  });

  it('a partition store whose last frame names damaged data: open, and so check, exit 7 naming the partition', async () => {
    const dir = tempDir();
    ok(await blocksnap(dir, ['create', 'vol', '--size', '4M', '--partitions', '2']));
    const kept = pattern(65536, 9);
    ok(await blocksnap(dir, ['write', 'vol', '--offset', String(2 * MiB)], kept));
    ok(await blocksnap(dir, ['snapshot', 'create', 'vol', '--name', 'snap']));
    ok(await blocksnap(dir, ['write', 'vol', '--offset', String(2 * MiB)], Buffer.alloc(65536)));
    // The preserved chunks are named by partition 1's last log frame, whose
    // data open verifies: the store was closed cleanly, so that is damage.
    const cow = path.join(dir, 'vol', 'partition-1.cow');
    const bytes = fs.readFileSync(cow);
    const at = bytes.indexOf(kept.subarray(0, 4096));
    expect(at).toBeGreaterThan(0);
    const fd = fs.openSync(cow, 'r+');
    fs.writeSync(fd, Uint8Array.of(bytes[at + 9]! ^ 0x10), 0, 1, at + 9);
    fs.closeSync(fd);
    expectFailure(await blocksnap(dir, ['check', 'vol']), 'ECORRUPT', /: partition 1: log frame/);
  });

  it('refuses shapes that do not make a VirtualVolume, leaving no directory', async () => {
    const dir = tempDir();
    const create = (...args: string[]) => blocksnap(dir, ['create', 'v', '--size', '8M', ...args]);
    expectFailure(await create('--processors', '2'), 'EINVAL', /give --partitions too/);
    expectFailure(await create('--partitions', '3'), 'EINVAL', /does not split into 3/);
    expectFailure(await create('--partitions', '0'), 'EINVAL', /from 1 to 1024/);
    expectFailure(await create('--partitions', 'two'), 'EINVAL', /a whole number/);
    expectFailure(await create('--partitions', '2', '--stripe', '3M'), 'EINVAL', /--stripe/);
    expectFailure(await create('--partitions', '2', '--journal', '1M'), 'EINVAL', /--journal/);
    expectFailure(await create('--partitions', '2', '--selective'), 'EINVAL', /--selective/);
    expect(fs.existsSync(path.join(dir, 'v'))).toBe(false);
  });
});
