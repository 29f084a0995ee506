import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { freePort, type PeerProcess, startPeer, waitForPort } from './peers.js';

const run = promisify(execFile);

/** The Debian programs a single-node Ceph cluster with RBD over NBD needs. */
export const CEPH_PROGRAMS = [
  'ceph-mon',
  'ceph-mgr',
  'ceph-osd',
  'ceph',
  'monmaptool',
  'rbd',
  'qemu-nbd',
] as const;

/** An RBD image exported over NBD by `qemu-nbd rbd:pool/image`. */
export interface RbdExport {
  /** `nbd://127.0.0.1:PORT/` */
  readonly url: string;
  readonly port: number;
  /** Stops qemu-nbd by its process id (the image stays in the cluster). */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/**
 * A single-node Ceph cluster on loopback, in a temporary directory: one
 * monitor, one manager, one memstore OSD, auth none, pools of size 1 — the
 * smallest real Ceph, started in seconds here. Every daemon runs in the
 * foreground as our child and is stopped by its process id.
 */
export class CephCluster {
  readonly dir: string;
  readonly conf: string;
  readonly #daemons: PeerProcess[] = [];
  readonly #exports = new Set<RbdExport>();

  private constructor(dir: string) {
    this.dir = dir;
    this.conf = path.join(dir, 'ceph.conf');
  }

  /**
   * Boots a cluster and creates the pool `rbd`. Tries `attempts` times,
   * each from a clean directory, since a daemon that does not come up in
   * time is retried whole rather than nursed.
   */
  static async start(attempts = 3): Promise<CephCluster> {
    let last: unknown;
    for (let i = 0; i < attempts; i++) {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'blocksnap-ceph-'));
      const cluster = new CephCluster(dir);
      try {
        await cluster.#boot();
        return cluster;
      } catch (err) {
        last = err;
        await cluster.stop();
      }
    }
    throw new Error(`Ceph did not start in ${attempts} attempts`, { cause: last });
  }

  /** Runs the `ceph` or `rbd` command against this cluster; resolves with its stdout. */
  async command(program: 'ceph' | 'rbd', args: readonly string[]): Promise<string> {
    const { stdout } = await run(program, ['-c', this.conf, ...args], { timeout: 60_000 });
    return stdout;
  }

  /** Creates an RBD image of `bytes` in pool `rbd`. */
  async createImage(name: string, bytes: number): Promise<void> {
    await this.command('rbd', ['create', `rbd/${name}`, '--size', `${Math.ceil(bytes / 1024)}K`]);
  }

  /** Exports image `name` over NBD on a free loopback port with `qemu-nbd -f raw` (persistent, shared). */
  async exportImage(name: string): Promise<RbdExport> {
    const port = await freePort();
    const peer = startPeer('qemu-nbd', [
      '-f',
      'raw',
      '--persistent',
      '--shared=8',
      '--cache=none',
      '--aio=threads',
      '-b',
      '127.0.0.1',
      '-p',
      String(port),
      `rbd:rbd/${name}:conf=${this.conf}`,
    ]);
    try {
      await waitForPort(port, 30_000);
    } catch (err) {
      await peer.stop();
      throw new Error(`qemu-nbd on rbd/${name} did not listen: ${peer.stderr()}`, { cause: err });
    }
    const exported: RbdExport = {
      url: `nbd://127.0.0.1:${port}/`,
      port,
      stop: async (signal) => {
        this.#exports.delete(exported);
        await peer.stop(signal);
      },
    };
    this.#exports.add(exported);
    return exported;
  }

  /** Stops every export and daemon by process id and removes the directory. */
  async stop(): Promise<void> {
    for (const e of [...this.#exports]) await e.stop();
    for (const d of this.#daemons.reverse()) await d.stop();
    this.#daemons.length = 0;
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  async #boot(): Promise<void> {
    const port = await freePort();
    const fsid = randomUUID();
    const d = this.dir;
    for (const sub of ['run', 'log', 'mon/a', 'osd/0', 'mgr/x']) {
      fs.mkdirSync(path.join(d, sub), { recursive: true });
    }
    fs.writeFileSync(
      this.conf,
      [
        '[global]',
        `fsid = ${fsid}`,
        `mon host = v2:127.0.0.1:${port}`,
        'mon initial members = a',
        'auth cluster required = none',
        'auth service required = none',
        'auth client required = none',
        'osd pool default size = 1',
        'osd pool default min size = 1',
        'mon allow pool size one = true',
        'mon allow pool delete = true',
        'mon warn on pool no redundancy = false',
        'osd objectstore = memstore',
        'memstore device bytes = 1073741824',
        'osd crush chooseleaf type = 0',
        'ms bind ipv6 = false',
        'public addr = 127.0.0.1',
        `run dir = ${d}/run`,
        `log file = ${d}/log/$name.log`,
        `admin socket = ${d}/run/$name.asok`,
        '[mon]',
        `mon data = ${d}/mon/$id`,
        '[osd]',
        `osd data = ${d}/osd/$id`,
        '[mgr]',
        `mgr data = ${d}/mgr/$id`,
        '',
      ].join('\n'),
    );
    const monmap = path.join(d, 'monmap');
    await run('monmaptool', [
      '--create',
      '--addv',
      'a',
      `[v2:127.0.0.1:${port}]`,
      '--fsid',
      fsid,
      monmap,
    ]);
    await run('ceph-mon', ['-c', this.conf, '--mkfs', '-i', 'a', '--monmap', monmap]);
    this.#daemons.push(startPeer('ceph-mon', ['-f', '-c', this.conf, '-i', 'a']));
    await waitForPort(port, 30_000);
    this.#daemons.push(startPeer('ceph-mgr', ['-f', '-c', this.conf, '-i', 'x']));
    const id = (await this.command('ceph', ['osd', 'create'])).trim();
    await run('ceph-osd', ['-c', this.conf, '-i', id, '--mkfs']);
    this.#daemons.push(startPeer('ceph-osd', ['-f', '-c', this.conf, '-i', id]));
    await this.#waitForOsd(60_000);
    await this.command('ceph', ['osd', 'pool', 'create', 'rbd', '8']);
    await this.command('rbd', ['pool', 'init', 'rbd']);
  }

  async #waitForOsd(ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      const stat = await this.command('ceph', ['osd', 'stat', '--format', 'json']).catch(() => '');
      if (stat !== '' && (JSON.parse(stat) as { num_up_osds?: number }).num_up_osds === 1) return;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    throw new Error(`the OSD was not up after ${ms} ms`);
  }
}
