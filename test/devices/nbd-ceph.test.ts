/**
 * blocksnap on a real distributed engine: a single-node Ceph cluster on
 * loopback (test/support/ceph-cluster.ts), RBD images exported by
 * `qemu-nbd rbd:pool/image`, and NbdDevices over them. The conformance suite
 * runs on an NbdDevice over an RBD image; a CowSnapshotDevice keeps origin
 * and store on two RBD images, and a writer process that is killed with
 * SIGKILL after a flush, together with the qemu-nbd processes serving its
 * disks, loses nothing the flush covered: a fresh process — another
 * "machine" — opens the same images through new exports and finds every
 * flushed write and the snapshot, with a clean `check()`. (Here librbd
 * acknowledged each write once the OSD held it, so dropping the flush
 * still passed when tried: the test proves what the cluster keeps across
 * the crash of every process but Ceph's, not the flush's own effect, which
 * the FaultyDevice power-cut tests prove.)
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CowSnapshotDevice, NbdDevice } from '../../src/index.js';
import { runConformanceSuite } from '../../src/testing/index.js';
import { CEPH_PROGRAMS, CephCluster, type RbdExport } from '../support/ceph-cluster.js';
import { describeWithPeers } from '../support/peers.js';

const MiB = 1024 * 1024;
const ORIGIN = 16 * MiB;
const STORE = 24 * MiB;
const WRITER = path.join(import.meta.dirname, '../fixtures/ceph-writer.ts');

/**
 * Runs the writer fixture until it prints `until`; then runs `crash` (which
 * kills what serves its disks) and kills the writer with SIGKILL. Resolves
 * with what it printed.
 */
function runWriterUntil(
  args: readonly string[],
  until: string,
  crash: () => Promise<void>,
): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', WRITER, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`the writer did not print ${until} in 60 s: ${out} ${err}`));
    }, 60_000);
    let crashing = false;
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes(until) && !crashing) {
        crashing = true;
        // Everything dies with no chance to close, flush or say goodbye:
        // first the servers of its disks, while it is still writing.
        crash().then(
          () => child.kill('SIGKILL'),
          (err: unknown) => {
            child.kill('SIGKILL');
            reject(err);
          },
        );
      }
    });
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (out.includes(until) && signal === 'SIGKILL') resolve(out);
      else reject(new Error(`the writer exited ${code ?? signal} before ${until}: ${out} ${err}`));
    });
  });
}

describeWithPeers(
  CEPH_PROGRAMS,
  'blocksnap on Ceph RBD (single-node cluster, images over qemu-nbd)',
  () => {
    let cluster: CephCluster;

    beforeAll(async () => {
      cluster = await CephCluster.start();
    }, 180_000);

    afterAll(async () => {
      await cluster?.stop();
    }, 60_000);

    describe('NbdDevice over an RBD image', () => {
      let exported: RbdExport;
      beforeAll(async () => {
        await cluster.createImage('conformance', 1 * MiB);
        exported = await cluster.exportImage('conformance');
      }, 60_000);
      afterAll(async () => {
        await exported?.stop();
      });
      runConformanceSuite({
        name: 'NbdDevice over Ceph RBD (qemu-nbd rbd:)',
        create: async () => {
          const device = await NbdDevice.connect(exported.url, { timeoutMs: 20_000 });
          await device.write(0, new Uint8Array(device.size));
          await device.flush();
          return { device };
        },
        describe,
        it,
      });
    });

    it('a CowSnapshotDevice on two RBD images: a writer killed after flush loses nothing, and a fresh process sees every flushed write and the snapshot', async () => {
      await cluster.createImage('origin', ORIGIN);
      await cluster.createImage('store', STORE);
      let origin = await cluster.exportImage('origin');
      let store = await cluster.exportImage('store');
      // The machine running the writer and qemu-nbd is lost right after the
      // flush: qemu-nbd's librbd cache goes with it, only the OSD keeps data.
      const out = await runWriterUntil(['write', origin.url, store.url], 'FLUSHED', async () => {
        await origin.stop('SIGKILL');
        await store.stop('SIGKILL');
      });
      expect(out).toContain('SNAPSHOT base');
      origin = await cluster.exportImage('origin');
      store = await cluster.exportImage('store');
      try {
        const cow = await CowSnapshotDevice.open(
          await NbdDevice.connect(origin.url),
          await NbdDevice.connect(store.url),
        );
        try {
          // The writer's pattern: block i of the first 64 blocks holds byte i + 1
          // before the snapshot, i + 101 after it (flushed before FLUSHED).
          const live = await cow.read(0, 64 * 4096);
          const snapInfo = cow.listSnapshots().find((s) => s.name === 'base');
          expect(snapInfo).toBeDefined();
          const snap = await cow.openSnapshot(snapInfo!.id);
          const old = await snap.read(0, 64 * 4096);
          await snap.close();
          for (let i = 0; i < 64; i++) {
            expect(live[i * 4096], `live block ${i}`).toBe(i + 101);
            expect(old[i * 4096], `snapshot block ${i}`).toBe(i + 1);
          }
          expect((await cow.check()).problems).toEqual([]);
        } finally {
          await cow.close();
        }
      } finally {
        await origin.stop();
        await store.stop();
      }
    }, 180_000);
  },
);
