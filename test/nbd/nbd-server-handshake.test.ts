import { afterEach, describe, expect, it } from 'vitest';
import {
  type BlockDevice,
  MemoryDevice,
  type NbdExport,
  type NbdServer,
  serveNbd,
} from '../../src/index.js';
import {
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_NO_ZEROES,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_DF,
  NBD_FLAG_SEND_FLUSH,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_NAME,
  NBD_MAGIC,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_EXTENDED_HEADERS,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_LIST_META_CONTEXT,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STARTTLS,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_OPTS_MAGIC,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_POLICY,
  NBD_REP_ERR_TLS_REQD,
  NBD_REP_ERR_TOO_BIG,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_META_CONTEXT,
  NBD_REP_SERVER,
} from '../../src/nbd/index.js';
import { RawNbdClient } from '../support/nbd-raw-client.js';

const MiB = 1024 * 1024;
let server: NbdServer | undefined;
const clients: RawNbdClient[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.destroy();
  await server?.close();
  server = undefined;
});

async function start(options: Partial<Parameters<typeof serveNbd>[0]> = {}): Promise<number> {
  const disk = await MemoryDevice.create({ size: 8 * MiB });
  const ro = await MemoryDevice.create({ size: 4 * MiB, blockSize: 512 });
  server = await serveNbd({
    exports: new Map<string, BlockDevice | NbdExport>([
      ['disk', disk],
      ['ro', { device: ro, readOnly: true, description: 'a read-only disk' }],
    ]),
    port: 0,
    ...options,
  });
  return (server.address as { port: number }).port;
}

async function client(port: number): Promise<RawNbdClient> {
  const c = await RawNbdClient.connect(port);
  clients.push(c);
  return c;
}

describe('NBD server handshake', () => {
  it('greets with NBDMAGIC, IHAVEOPT and the fixed-newstyle and no-zeroes flags', async () => {
    const c = await client(await start());
    const g = await c.greet();
    expect(g.magic).toBe(NBD_MAGIC);
    expect(g.optsMagic).toBe(NBD_OPTS_MAGIC);
    expect(g.flags).toBe(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
  });

  it('closes the connection on unknown client flags, and keeps serving others', async () => {
    const port = await start();
    const bad = await client(port);
    await bad.greet(0x80);
    await bad.waitClosed();
    const good = await client(port);
    expect((await good.go('disk')).size).toBe(BigInt(8 * MiB));
  });

  it('answers an unknown option with ERR_UNSUP and goes on', async () => {
    const c = await client(await start());
    await c.greet();
    const [r] = await c.option(99, Buffer.from('ignored'));
    expect(r?.type).toBe(NBD_REP_ERR_UNSUP);
    expect(r?.option).toBe(99);
    const [list] = await c.option(NBD_OPT_LIST, Buffer.from('x'));
    expect(list?.type).toBe(NBD_REP_ERR_INVALID);
    const [go] = (await c.option(NBD_OPT_GO, RawNbdClient.goData('disk'))).slice(-1);
    expect(go?.type).toBe(NBD_REP_ACK);
  });

  it('lists the exports with their descriptions', async () => {
    const c = await client(await start());
    await c.greet();
    const replies = await c.option(NBD_OPT_LIST);
    expect(replies.map((r) => r.type)).toEqual([NBD_REP_SERVER, NBD_REP_SERVER, NBD_REP_ACK]);
    const entries = replies.slice(0, 2).map((r) => {
      const n = r.data.readUInt32BE(0);
      return [r.data.subarray(4, 4 + n).toString(), r.data.subarray(4 + n).toString()];
    });
    expect(entries).toEqual([
      ['disk', ''],
      ['ro', 'a read-only disk'],
    ]);
  });

  it('INFO tells size, flags, name and block sizes (1, the block size, the max payload)', async () => {
    const c = await client(await start({ defaultExport: 'ro' }));
    await c.greet();
    const replies = await c.option(
      NBD_OPT_INFO,
      RawNbdClient.goData('', [NBD_INFO_NAME, NBD_INFO_BLOCK_SIZE]),
    );
    expect(replies[replies.length - 1]?.type).toBe(NBD_REP_ACK);
    const infos = new Map(
      replies.filter((r) => r.type === NBD_REP_INFO).map((r) => [r.data.readUInt16BE(0), r.data]),
    );
    const exportInfo = infos.get(0) as Buffer;
    expect(exportInfo.length).toBe(12);
    expect(exportInfo.readBigUInt64BE(2)).toBe(BigInt(4 * MiB));
    const flags = exportInfo.readUInt16BE(10);
    expect(flags & NBD_FLAG_READ_ONLY).toBe(NBD_FLAG_READ_ONLY);
    expect(flags & NBD_FLAG_SEND_FLUSH).toBe(NBD_FLAG_SEND_FLUSH);
    expect(flags & NBD_FLAG_CAN_MULTI_CONN).toBe(NBD_FLAG_CAN_MULTI_CONN);
    expect(flags & NBD_FLAG_SEND_DF).toBe(0); // no structured replies negotiated
    expect(infos.get(NBD_INFO_NAME)?.subarray(2).toString()).toBe('ro');
    const sizes = infos.get(NBD_INFO_BLOCK_SIZE) as Buffer;
    expect([sizes.readUInt32BE(2), sizes.readUInt32BE(6), sizes.readUInt32BE(10)]).toEqual([
      1,
      512,
      32 * MiB,
    ]);
    // INFO does not end the handshake.
    const [abort] = await c.option(NBD_OPT_ABORT);
    expect(abort?.type).toBe(NBD_REP_ACK);
    await c.waitClosed();
  });

  it('refuses malformed GO data with ERR_INVALID and an unknown export with ERR_UNKNOWN', async () => {
    const c = await client(await start());
    await c.greet();
    const good = RawNbdClient.goData('disk');
    expect((await c.option(NBD_OPT_GO, good.subarray(0, 5)))[0]?.type).toBe(NBD_REP_ERR_INVALID);
    const longName = Buffer.from(good);
    longName.writeUInt32BE(1000, 0);
    expect((await c.option(NBD_OPT_GO, longName))[0]?.type).toBe(NBD_REP_ERR_INVALID);
    const extra = Buffer.concat([good, Buffer.from([0])]);
    expect((await c.option(NBD_OPT_GO, extra))[0]?.type).toBe(NBD_REP_ERR_INVALID);
    const nul = RawNbdClient.goData('di\0sk');
    expect((await c.option(NBD_OPT_GO, nul))[0]?.type).toBe(NBD_REP_ERR_INVALID);
    expect((await c.option(NBD_OPT_GO, RawNbdClient.goData('nope')))[0]?.type).toBe(
      NBD_REP_ERR_UNKNOWN,
    );
    expect((await c.option(NBD_OPT_GO, RawNbdClient.goData('')))[0]?.type).toBe(
      NBD_REP_ERR_UNKNOWN,
    );
    expect((await c.option(NBD_OPT_GO, good)).slice(-1)[0]?.type).toBe(NBD_REP_ACK);
  });

  it('answers an option longer than the bound with ERR_TOO_BIG and closes, without waiting for its data', async () => {
    const port = await start();
    const errors: string[] = [];
    server?.on('error', (err) => errors.push(err.message));
    const c = await client(port);
    await c.greet();
    c.sendOption(NBD_OPT_GO, Buffer.alloc(0), 0xffffffff);
    const r = await c.optionReply();
    expect(r.type).toBe(NBD_REP_ERR_TOO_BIG);
    await c.waitClosed();
    expect(errors.join()).toMatch(/4294967295 bytes/);
    expect((await (await client(port)).go('disk')).size).toBe(BigInt(8 * MiB));
  });

  it('closes on an option without the IHAVEOPT magic', async () => {
    const c = await client(await start());
    await c.greet();
    c.write(Buffer.alloc(16, 0x41));
    await c.waitClosed();
  });

  it('EXPORT_NAME replies size and flags, with the 124 zero bytes unless NO_ZEROES', async () => {
    const port = await start();
    const plain = await client(port);
    await plain.greet(NBD_FLAG_C_FIXED_NEWSTYLE);
    plain.sendOption(NBD_OPT_EXPORT_NAME, Buffer.from('disk'));
    const reply = await plain.read(134);
    expect(reply.readBigUInt64BE(0)).toBe(BigInt(8 * MiB));
    expect(reply.subarray(10).every((b) => b === 0)).toBe(true);
    const short = await client(port);
    await short.greet();
    short.sendOption(NBD_OPT_EXPORT_NAME, Buffer.from('disk'));
    expect((await short.read(10)).readBigUInt64BE(0)).toBe(BigInt(8 * MiB));
    // Nothing more: the next bytes the client sees are replies to its requests.
    await expect(short.read(1, 200)).rejects.toThrow(/no 1 bytes/);
    const unknown = await client(port);
    await unknown.greet();
    unknown.sendOption(NBD_OPT_EXPORT_NAME, Buffer.from('nope'));
    await unknown.waitClosed();
  });

  it('meta contexts need structured replies; SET selects base:allocation, LIST shows it', async () => {
    const c = await client(await start());
    await c.greet();
    const meta = RawNbdClient.metaData('disk', ['base:allocation']);
    expect((await c.option(NBD_OPT_SET_META_CONTEXT, meta))[0]?.type).toBe(NBD_REP_ERR_INVALID);
    expect((await c.option(NBD_OPT_STRUCTURED_REPLY))[0]?.type).toBe(NBD_REP_ACK);
    const listed = await c.option(NBD_OPT_LIST_META_CONTEXT, RawNbdClient.metaData('disk', []));
    expect(listed.map((r) => r.type)).toEqual([NBD_REP_META_CONTEXT, NBD_REP_ACK]);
    expect(listed[0]?.data.subarray(4).toString()).toBe('base:allocation');
    const set = await c.option(
      NBD_OPT_SET_META_CONTEXT,
      RawNbdClient.metaData('disk', [
        'base:allocation',
        'other:thing',
        'base:',
        'blocksnap:changed:nope',
      ]),
    );
    expect(set.map((r) => r.type)).toEqual([NBD_REP_META_CONTEXT, NBD_REP_ACK]);
    expect(set[0]?.data.readUInt32BE(0)).not.toBe(0);
    const noColon = RawNbdClient.metaData('disk', ['nocolon']);
    expect((await c.option(NBD_OPT_SET_META_CONTEXT, noColon))[0]?.type).toBe(NBD_REP_ERR_INVALID);
    const truncated = RawNbdClient.metaData('disk', ['base:allocation']).subarray(0, 20);
    expect((await c.option(NBD_OPT_LIST_META_CONTEXT, truncated))[0]?.type).toBe(
      NBD_REP_ERR_INVALID,
    );
  });

  it('EXTENDED_HEADERS is acknowledged; EXPORT_NAME after it is a hard disconnect', async () => {
    const c = await client(await start());
    await c.greet();
    expect((await c.option(NBD_OPT_EXTENDED_HEADERS))[0]?.type).toBe(NBD_REP_ACK);
    expect((await c.option(NBD_OPT_EXTENDED_HEADERS, Buffer.from('x')))[0]?.type).toBe(
      NBD_REP_ERR_INVALID,
    );
    c.sendOption(NBD_OPT_EXPORT_NAME, Buffer.from('disk'));
    await c.waitClosed();
  });

  it('STARTTLS on a server without TLS is ERR_POLICY; with tls required, other options get ERR_TLS_REQD', async () => {
    const plain = await client(await start());
    await plain.greet();
    expect((await plain.option(NBD_OPT_STARTTLS))[0]?.type).toBe(NBD_REP_ERR_POLICY);
    await server?.close();
    const port = await start({ tls: { psk: { alice: '0123456789abcdef' } } });
    const c = await client(port);
    await c.greet();
    expect((await c.option(NBD_OPT_GO, RawNbdClient.goData('disk')))[0]?.type).toBe(
      NBD_REP_ERR_TLS_REQD,
    );
    expect((await c.option(NBD_OPT_LIST))[0]?.type).toBe(NBD_REP_ERR_TLS_REQD);
    expect((await c.option(NBD_OPT_STRUCTURED_REPLY))[0]?.type).toBe(NBD_REP_ERR_TLS_REQD);
    c.sendOption(NBD_OPT_EXPORT_NAME, Buffer.from('disk'));
    await c.waitClosed();
  });

  it('closes a connection that sends more options than the bound', async () => {
    const c = await client(await start());
    await c.greet();
    for (let i = 0; i < 256; i++) c.sendOption(99);
    for (let i = 0; i < 256; i++) expect((await c.optionReply()).type).toBe(NBD_REP_ERR_UNSUP);
    c.sendOption(99);
    await c.waitClosed();
  });

  it('a client vanishing mid-handshake costs only its connection', async () => {
    const port = await start();
    const disconnects: (string | undefined)[] = [];
    server?.on('disconnect', (_info, reason) => disconnects.push(reason));
    const c = await client(port);
    await c.greet();
    c.sendOption(NBD_OPT_GO, RawNbdClient.goData('disk').subarray(0, 3), 20);
    c.destroy();
    const other = await client(port);
    expect((await other.go('disk')).size).toBe(BigInt(8 * MiB));
    await expect.poll(() => disconnects.length).toBe(1);
    expect(server?.connections).toBe(1);
  });
});
