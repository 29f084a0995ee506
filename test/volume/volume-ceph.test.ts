/**
 * A VirtualVolume on a real distributed engine: a single-node Ceph cluster
 * on loopback (test/support/ceph-cluster.ts), one RBD image for the volume
 * store and one for every partition's origin and store, each exported by
 * `qemu-nbd rbd:pool/image` and given to the volume as `{ nbd: url }`.
 *
 * A writer process (test/fixtures/volume-ceph-writer.ts) runs the volume on
 * 2 worker processors through a seeded workload — writes racing group
 * snapshots, deletes, restores — checked against an in-memory model of
 * every block, live and per snapshot; it flushes, saves the model, and is
 * killed with SIGKILL while it goes on writing, together with the qemu-nbd
 * processes serving its disks (the machine is lost; only the cluster keeps
 * data). A fresh process then opens the volume through new exports and
 * finds every flushed block and every snapshot whole; a second fresh
 * process, another "machine" on other exports and one processor, after the
 * first is gone, finds the same. The images are made without RBD's
 * exclusive-lock feature: with it, the first opener after the crash waits
 * ~30 s for the cluster to break the dead client's lock.
 *
 * What fails it: a cut that lets a write called after `snapshot()` into the
 * snapshot (tried: the writer's model check fails on the first racing
 * batch). What does not: dropping the volume's flush — here librbd had the
 * writes on the OSD by the time qemu-nbd was killed, so, as in
 * test/devices/nbd-ceph.test.ts, this proves what the cluster keeps across
 * the crash of every process but Ceph's; the flush's own effect is proven
 * by the FaultyDevice power-cut tests (test/volume/volume-crash.test.ts).
 */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { CEPH_PROGRAMS, CephCluster, type RbdExport } from '../support/ceph-cluster.js';
import { tempDir } from '../support/nbd-peers.js';
import { describeWithPeers } from '../support/peers.js';

const MiB = 1024 * 1024;
const PARTITIONS = 2;
const ORIGIN = 2 * MiB;
const STORE = 8 * MiB;
const VOLUME_STORE = 1 * MiB;
const FIXTURE = path.join(import.meta.dirname, '../fixtures/volume-ceph-writer.ts');

/**
 * Runs the fixture in `mode`; with `until`, calls `crash` once it printed
 * that and then kills it with SIGKILL. Resolves with its output.
 */
function runFixture(
  mode: 'write' | 'check',
  jobFile: string,
  until?: { text: string; crash: () => Promise<void> },
): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', FIXTURE, mode, jobFile], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`the ${mode} process did not finish in 90 s: ${out} ${err}`));
    }, 90_000);
    let crashing = false;
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (until !== undefined && out.includes(until.text) && !crashing) {
        crashing = true;
        until.crash().then(
          () => child.kill('SIGKILL'),
          (e: unknown) => {
            child.kill('SIGKILL');
            reject(e);
          },
        );
      }
    });
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (until === undefined && code === 0) resolve(out);
      else if (until !== undefined && out.includes(until.text) && signal === 'SIGKILL')
        resolve(out);
      else reject(new Error(`the ${mode} process exited ${code ?? signal}: ${out} ${err}`));
    });
  });
}

describeWithPeers(CEPH_PROGRAMS, 'VirtualVolume on Ceph RBD (images over qemu-nbd)', () => {
  let cluster: CephCluster;
  let scratch: Awaited<ReturnType<typeof tempDir>>;
  const images = [
    { name: 'volume-store', size: VOLUME_STORE },
    ...Array.from({ length: PARTITIONS }, (_, i) => [
      { name: `p${i}-origin`, size: ORIGIN },
      { name: `p${i}-store`, size: STORE },
    ]).flat(),
  ];

  beforeAll(async () => {
    scratch = await tempDir();
    cluster = await CephCluster.start();
    for (const image of images) {
      await cluster.command('rbd', [
        'create',
        `rbd/${image.name}`,
        '--size',
        `${image.size / 1024}K`,
        '--image-feature',
        'layering',
      ]);
    }
  }, 180_000);

  afterAll(async () => {
    await cluster?.stop();
    await scratch?.cleanup();
  }, 60_000);

  /** Exports every image afresh and writes the job file a fixture process reads. */
  async function job(processors: number, seed: number) {
    const exported = new Map<string, RbdExport>();
    await Promise.all(
      images.map(async (image) => exported.set(image.name, await cluster.exportImage(image.name))),
    );
    const url = (name: string) => exported.get(name)!.url;
    const file = path.join(scratch.dir, `job-${processors}.json`);
    writeFileSync(
      file,
      JSON.stringify({
        store: url('volume-store'),
        partitions: Array.from({ length: PARTITIONS }, (_, i) => ({
          origin: url(`p${i}-origin`),
          store: url(`p${i}-store`),
        })),
        processors,
        expected: path.join(scratch.dir, 'expected.json'),
        seed,
      }),
    );
    const stop = async (signal?: NodeJS.Signals) => {
      for (const e of exported.values()) await e.stop(signal);
    };
    return { file, stop };
  }

  it('a writer on 2 processors killed after a flush: two fresh processes, one after the other, find every flushed block and every snapshot', async () => {
    const seed = Number(process.env.BLOCKSNAP_SEED ?? Date.now() % 2 ** 31);
    const writer = await job(2, seed);
    const out = await runFixture('write', writer.file, {
      text: 'FLUSHED',
      crash: () => writer.stop('SIGKILL'),
    });
    expect(out, `seed ${seed}`).toMatch(/FLUSHED \d+ snapshots/);

    const first = await job(2, seed);
    try {
      expect(await runFixture('check', first.file), `seed ${seed}`).toContain('CHECKED');
    } finally {
      await first.stop();
    }
    const second = await job(1, seed);
    try {
      expect(await runFixture('check', second.file), `seed ${seed}`).toContain('CHECKED');
    } finally {
      await second.stop();
    }
  }, 240_000);
});
