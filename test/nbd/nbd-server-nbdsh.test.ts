import path from 'node:path';
import { afterEach, expect, it } from 'vitest';
import {
  CowSnapshotDevice,
  MemoryDevice,
  type NbdServer,
  serveNbd,
  snapshotExports,
} from '../../src/index.js';
import { CountingDevice } from '../support/counting-device.js';
import { describeWithPeers, findProgram, runPeerOk } from '../support/peers.js';

/**
 * The server under libnbd's own scripting shell, `nbdsh`: the handle's view
 * of what was negotiated (structured replies on and off, the export's
 * flags), block status per metadata context, FUA, zeroes and cache — the
 * corners qemu-io and nbdinfo do not reach. Each script prints one JSON
 * line that the test checks.
 */

const MiB = 1024 * 1024;
let server: NbdServer | undefined;
const opened: { close(): Promise<void> }[] = [];

afterEach(async () => {
  await server?.close();
  server = undefined;
  for (const d of opened.splice(0)) await d.close();
});

async function serve(exports: Parameters<typeof serveNbd>[0]['exports']): Promise<string> {
  server = await serveNbd({ exports, port: 0 });
  return `nbd://127.0.0.1:${(server.address as { port: number }).port}`;
}

/**
 * Runs a Python script under nbdsh (`h` is a fresh handle); resolves with
 * its JSON output. nbdsh runs the `python3` on PATH, which must be the one
 * its `nbd` module was built for: the one beside it, not a user's pyenv.
 */
async function nbdsh<T>(script: string): Promise<T> {
  const dir = path.dirname(findProgram('nbdsh') as string);
  const env = { ...process.env, PATH: `${dir}${path.delimiter}${process.env.PATH ?? ''}` };
  const out = await runPeerOk('nbdsh', ['-c', script], 30_000, env);
  return JSON.parse(out.trim().split('\n').pop() as string) as T;
}

describeWithPeers(['nbdsh'], 'NBD server under nbdsh (libnbd)', () => {
  it('negotiates structured replies when asked and simple replies when not; data is the same either way', async () => {
    const device = await MemoryDevice.create({ size: 8 * MiB });
    opened.push(device);
    const base = await serve({ disk: device });
    for (const structured of [true, false]) {
      const r = await nbdsh<{ negotiated: boolean; same: boolean; chunks: number }>(`
import json
h.set_request_structured_replies(${structured ? 'True' : 'False'})
h.connect_uri("${base}/disk")
data = bytes(range(256)) * 256
h.pwrite(data, 12345)
back = h.pread(len(data), 12345)
chunks = []
if h.get_structured_replies_negotiated():
    h.pread_structured(len(data), 12345, lambda buf, off, st, err: chunks.append(off))
print(json.dumps({"negotiated": h.get_structured_replies_negotiated(), "same": back == data, "chunks": len(chunks)}))
`);
      expect(r.negotiated).toBe(structured);
      expect(r.same).toBe(true);
      expect(r.chunks).toBe(structured ? 1 : 0);
    }
  });

  it('announces what the export can do: flush, FUA, trim, zero, fast zero, cache, multi-conn; a snapshot read-only', async () => {
    const cow = await CowSnapshotDevice.create(
      await MemoryDevice.create({ size: 4 * MiB }),
      await MemoryDevice.create({ size: 4 * MiB }),
    );
    opened.push(cow);
    await cow.snapshot({ name: 'base' });
    const base = await serve(snapshotExports('vol', cow));
    const flags = (name: string) =>
      nbdsh<Record<string, boolean>>(`
import json
h.connect_uri("${base}/${name}")
print(json.dumps({k: bool(getattr(h, k)()) for k in ["can_flush", "can_fua", "can_trim", "can_zero", "can_fast_zero", "can_cache", "can_multi_conn", "is_read_only"]}))
`);
    expect(await flags('vol')).toEqual({
      can_flush: true,
      can_fua: true,
      can_trim: true,
      can_zero: true,
      can_fast_zero: true,
      can_cache: true,
      can_multi_conn: true,
      is_read_only: false,
    });
    expect(await flags('vol@base')).toMatchObject({ is_read_only: true });
  });

  it('FUA makes the device flush before the reply; a write without it does not', async () => {
    const counting = new CountingDevice(await MemoryDevice.create({ size: 4 * MiB }));
    opened.push(counting);
    const base = await serve({ disk: counting });
    await nbdsh(`
import json
h.connect_uri("${base}/disk")
h.pwrite(b"a" * 4096, 0)
print(json.dumps(1))
`);
    const plain = counting.flushes;
    await nbdsh(`
import json, nbd
h.connect_uri("${base}/disk")
h.pwrite(b"b" * 4096, 0, nbd.CMD_FLAG_FUA)
print(json.dumps(1))
`);
    expect(plain).toBe(0);
    expect(counting.flushes).toBeGreaterThan(plain);
    expect((await counting.read(0, 1))[0]).toBe(0x62);
  });

  it('WRITE_ZEROES zeroes the range; FAST_ZERO is refused with ENOTSUP and changes nothing; CACHE succeeds', async () => {
    const device = await MemoryDevice.create({ size: 4 * MiB });
    opened.push(device);
    await device.write(0, new Uint8Array(64 * 1024).fill(0x11));
    const base = await serve({ disk: device });
    const r = await nbdsh<{ zeroed: boolean; fast: string; kept: boolean }>(`
import json, nbd
h.connect_uri("${base}/disk")
h.zero(8192, 4096)
zeroed = h.pread(8192, 4096) == bytes(8192)
fast = "ok"
try:
    h.zero(4096, 32768, nbd.CMD_FLAG_FAST_ZERO)
except nbd.Error as e:
    fast = str(e.errnum)
kept = h.pread(4096, 32768) == b"\\x11" * 4096
h.cache(65536, 0)
print(json.dumps({"zeroed": zeroed, "fast": fast, "kept": kept}))
`);
    expect(r).toEqual({ zeroed: true, fast: '95', kept: true });
  });

  it('block status: base:allocation reports data; blocksnap:changed:<snapshot> the ranges written since it', async () => {
    const cow = await CowSnapshotDevice.create(
      await MemoryDevice.create({ size: 4 * MiB }),
      await MemoryDevice.create({ size: 8 * MiB }),
    );
    opened.push(cow);
    await cow.snapshot({ name: 'base' });
    await cow.write(MiB, new Uint8Array(8192).fill(1));
    await cow.write(3 * MiB, new Uint8Array(4096).fill(2));
    const base = await serve(snapshotExports('vol', cow));
    const r = await nbdsh<Record<string, number[]>>(`
import json
h.add_meta_context("base:allocation")
h.add_meta_context("blocksnap:changed:base")
h.connect_uri("${base}/vol")
seen = {}
def cb(context, offset, entries, err):
    seen.setdefault(context, []).extend(entries)
size = h.get_size()
pos = 0
while pos < size:
    h.block_status(size - pos, pos, cb)
    pos = min(sum(v[0::2]) for v in seen.values())
print(json.dumps(seen))
`);
    // base:allocation: all data (flags 0) across the export.
    expect(r['base:allocation']!.filter((_, i) => i % 2 === 1).every((f) => f === 0)).toBe(true);
    // blocksnap:changed:base: walk the (length, flags) pairs into changed ranges.
    const changed: [number, number][] = [];
    const entries = r['blocksnap:changed:base']!;
    let at = 0;
    for (let i = 0; i < entries.length; i += 2) {
      if (entries[i + 1] !== 0) changed.push([at, entries[i]!]);
      at += entries[i]!;
    }
    expect(at).toBe(4 * MiB);
    expect(changed).toEqual([
      [MiB, 8192],
      [3 * MiB, 4096],
    ]);
  });
});
