import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BlockDevice, MemoryDevice, type NbdServer, serveNbd } from '../../src/index.js';
import {
  NBD_CMD_READ,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_OPT_EXTENDED_HEADERS,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_OPTS_MAGIC,
  NBD_REQUEST_MAGIC,
} from '../../src/nbd/index.js';
import { pattern } from '../support/bytes.js';
import { RawNbdClient } from '../support/nbd-raw-client.js';
import { PassThroughDevice } from '../support/pass-through-device.js';
import { assertProperty, SOAK_TIMEOUT } from '../support/soak.js';

/**
 * The server against misbehaving clients: fast-check writes byte streams and
 * request sequences no well-behaved client sends — garbage before or after
 * the handshake, options with lying lengths, unknown commands and flags,
 * ranges past the end, payloads cut short, clients that vanish or never read
 * their replies — over loopback, bounded in count and time. After every
 * session: the server still serves a fresh client, a second client working
 * during the session was never disturbed, and every write the device saw is
 * exactly one a request in the session asked for, in range, with its bytes.
 */

const SIZE = 1024 * 1024;
const BLOCK = 4096;
const MAX_PAYLOAD = 1024 * 1024;

/** A write the device under the server saw. */
interface SeenWrite {
  offset: number;
  data: Uint8Array;
}

/** Records every write that reaches the device. */
class WatchedDevice extends PassThroughDevice {
  readonly seen: SeenWrite[] = [];
  override write(offset: number, data: Uint8Array): Promise<void> {
    this.seen.push({ offset, data: data.slice() });
    return super.write(offset, data);
  }
}

/** One step of a fuzz session after the handshake. */
type Step =
  | {
      kind: 'request';
      type: number;
      flags: number;
      offset: bigint;
      length: number;
      /** For a WRITE: the payload's fill byte. */
      fill: number;
    }
  | { kind: 'pause' };

/** How the session ends: cleanly, abruptly, or with bytes no request starts with. */
type Ending =
  | { kind: 'destroy' }
  | { kind: 'garbage'; bytes: Uint8Array }
  | { kind: 'cut-payload'; offset: number; declared: number; sent: number }
  | { kind: 'huge-write' };

interface Session {
  /** A handshake that goes wrong, or one that reaches transmission (with these options first). */
  handshake:
    | { kind: 'garbage'; bytes: Uint8Array }
    | { kind: 'bad-option'; option: number; declared: number; sent: Uint8Array }
    | { kind: 'go'; export: 'fuzz' | 'ro'; structured: boolean; extended: boolean };
  steps: Step[];
  ending: Ending;
}

const offsetArb = fc.oneof(
  fc.integer({ min: 0, max: SIZE / BLOCK - 1 }).map((b) => BigInt(b * BLOCK)),
  fc.integer({ min: 0, max: SIZE - 1 }).map(BigInt),
  fc.constantFrom(BigInt(SIZE), BigInt(SIZE - 1), 2n ** 32n, 2n ** 63n, 2n ** 64n - 1n),
);
const lengthArb = fc.oneof(
  fc.constantFrom(0, 1, 512, BLOCK, 2 * BLOCK),
  fc.integer({ min: 1, max: 3 * BLOCK }),
  fc.constantFrom(SIZE, MAX_PAYLOAD + 1),
);
const stepArb: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 12,
    arbitrary: fc.record({
      kind: fc.constant('request' as const),
      type: fc.oneof(fc.integer({ min: 0, max: 9 }), fc.integer({ min: 0, max: 0xffff })),
      flags: fc.oneof(
        fc.constant(0),
        fc.integer({ min: 0, max: 0x3f }),
        fc.integer({ min: 0, max: 0xffff }),
      ),
      offset: offsetArb,
      length: lengthArb,
      fill: fc.integer({ min: 1, max: 255 }),
    }),
  },
  { weight: 1, arbitrary: fc.constant({ kind: 'pause' as const }) },
);
const sessionArb: fc.Arbitrary<Session> = fc.record({
  handshake: fc.oneof(
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant('garbage' as const),
        bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant('bad-option' as const),
        option: fc.oneof(fc.integer({ min: 0, max: 12 }), fc.integer({ min: 0, max: 0xffffffff })),
        declared: fc.oneof(
          fc.integer({ min: 0, max: 64 }),
          fc.constantFrom(0xffffffff, 70_000, 4097),
        ),
        sent: fc.uint8Array({ maxLength: 64 }),
      }),
    },
    {
      weight: 6,
      arbitrary: fc.record({
        kind: fc.constant('go' as const),
        export: fc.constantFrom('fuzz' as const, 'ro' as const),
        structured: fc.boolean(),
        extended: fc.boolean(),
      }),
    },
  ),
  steps: fc.array(stepArb, { maxLength: 12 }),
  ending: fc.oneof(
    fc.constant({ kind: 'destroy' as const }),
    fc.record({
      kind: fc.constant('garbage' as const),
      bytes: fc.uint8Array({ minLength: 1, maxLength: 40 }),
    }),
    fc.record({
      kind: fc.constant('cut-payload' as const),
      offset: fc.integer({ min: 0, max: SIZE / BLOCK - 2 }).map((b) => b * BLOCK),
      declared: fc.constant(2 * BLOCK),
      sent: fc.integer({ min: 0, max: 2 * BLOCK - 1 }),
    }),
    fc.constant({ kind: 'huge-write' as const }),
  ),
});

/** What a session's requests allow the device to see: exact WRITEs and zeroed ranges. */
interface Allowed {
  writes: SeenWrite[];
  zeroes: { offset: number; length: number }[];
}

function header(
  type: number,
  flags: number,
  cookie: number,
  offset: bigint,
  length: number,
): Buffer {
  const h = Buffer.alloc(28);
  h.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
  h.writeUInt16BE(flags, 4);
  h.writeUInt16BE(type, 6);
  h.writeBigUInt64BE(BigInt(cookie), 8);
  h.writeBigUInt64BE(offset, 16);
  h.writeUInt32BE(length >>> 0, 24);
  return h;
}

function extendedHeader(
  type: number,
  flags: number,
  cookie: number,
  offset: bigint,
  length: number,
  payload: boolean,
): Buffer {
  const h = Buffer.alloc(32);
  h.writeUInt32BE(0x21e41c71, 0);
  // PAYLOAD_LEN (bit 5) follows whether a payload is sent, so the stream stays well framed.
  h.writeUInt16BE(payload ? flags | 0x20 : flags & ~0x20, 4);
  h.writeUInt16BE(type, 6);
  h.writeBigUInt64BE(BigInt(cookie), 8);
  h.writeBigUInt64BE(offset, 16);
  h.writeBigUInt64BE(BigInt(length), 24);
  return h;
}

/** Runs one session on a fresh connection; returns what it allowed the device to see. */
async function runSession(port: number, session: Session): Promise<Allowed> {
  const allowed: Allowed = { writes: [], zeroes: [] };
  const client = await RawNbdClient.connect(port);
  try {
    const { handshake } = session;
    if (handshake.kind === 'garbage') {
      client.write(handshake.bytes);
      await settleOrClose(client);
      return allowed;
    }
    if (handshake.kind === 'bad-option') {
      await client.greet();
      const h = Buffer.alloc(16);
      h.writeBigUInt64BE(NBD_OPTS_MAGIC, 0);
      h.writeUInt32BE(handshake.option >>> 0, 8);
      h.writeUInt32BE(handshake.declared >>> 0, 12);
      client.write(Buffer.concat([h, handshake.sent]));
      await settleOrClose(client);
      return allowed;
    }
    const before = [
      ...(handshake.structured ? [NBD_OPT_STRUCTURED_REPLY] : []),
      ...(handshake.extended ? [NBD_OPT_EXTENDED_HEADERS] : []),
    ];
    await client.go(handshake.export, before);
    const writable = handshake.export === 'fuzz';
    let cookie = 1;
    for (const step of session.steps) {
      if (step.kind === 'pause') {
        client.socket.pause();
        continue;
      }
      const { type, flags, offset, length, fill } = step;
      // Only WRITE carries a payload in compact headers; extended headers say so by flag,
      // set here exactly when a payload follows (the server must still check the rest).
      const sendsPayload = type === NBD_CMD_WRITE && length <= MAX_PAYLOAD;
      if (!handshake.extended && type === NBD_CMD_WRITE && !sendsPayload) {
        // An over-limit compact WRITE whose payload is not sent would desynchronize
        // the stream on purpose: that is the `huge-write` ending's job.
        continue;
      }
      const payload = sendsPayload ? new Uint8Array(length).fill(fill) : undefined;
      const h = handshake.extended
        ? extendedHeader(type, flags, cookie++, offset, length, payload !== undefined)
        : header(type, flags, cookie++, offset, length);
      client.write(payload === undefined ? h : Buffer.concat([h, payload]));
      const inRange = offset + BigInt(length) <= BigInt(SIZE);
      if (writable && inRange && type === NBD_CMD_WRITE && payload !== undefined) {
        allowed.writes.push({ offset: Number(offset), data: payload });
      }
      if (writable && inRange && type === NBD_CMD_WRITE_ZEROES) {
        allowed.zeroes.push({ offset: Number(offset), length });
      }
    }
    const { ending } = session;
    if (ending.kind === 'garbage') client.write(ending.bytes);
    if (ending.kind === 'cut-payload') {
      client.write(header(NBD_CMD_WRITE, 0, cookie++, BigInt(ending.offset), ending.declared));
      client.write(new Uint8Array(ending.sent).fill(0xee));
    }
    if (ending.kind === 'huge-write')
      client.write(header(NBD_CMD_WRITE, 0, cookie++, 0n, 0xffffffff));
    await settleOrClose(client, 50);
    return allowed;
  } finally {
    client.destroy();
  }
}

/** Gives the server a moment with what was sent, or until it hangs up. */
async function settleOrClose(client: RawNbdClient, ms = 20): Promise<void> {
  await client.waitClosed(ms).catch(() => undefined);
}

/** Every write the device saw must be one the session asked for: same place, same bytes. */
function checkWrites(seen: readonly SeenWrite[], allowed: Allowed): void {
  for (const w of seen) {
    expect(w.offset + w.data.length, 'a write past the end').toBeLessThanOrEqual(SIZE);
    const exact = allowed.writes.some(
      (a) => a.offset === w.offset && Buffer.from(a.data).equals(Buffer.from(w.data)),
    );
    const zeroed =
      w.data.every((b) => b === 0) &&
      allowed.zeroes.some(
        (z) => w.offset >= z.offset && w.offset + w.data.length <= z.offset + z.length,
      );
    expect(
      exact || zeroed,
      `a write of ${w.data.length} bytes at ${w.offset} no request asked for`,
    ).toBe(true);
  }
}

describe('serveNbd against misbehaving clients (fuzz)', () => {
  let server: NbdServer;
  let port: number;
  let fuzzed: WatchedDevice;
  let canaryDevice: BlockDevice;

  beforeAll(async () => {
    fuzzed = new WatchedDevice(await MemoryDevice.create({ size: SIZE, blockSize: BLOCK }));
    canaryDevice = await MemoryDevice.create({ size: SIZE, blockSize: BLOCK });
    server = await serveNbd({
      exports: { fuzz: fuzzed, ro: { device: fuzzed, readOnly: true }, canary: canaryDevice },
      port: 0,
      maxPayload: MAX_PAYLOAD,
    });
    const address = server.address;
    if (!('port' in address)) throw new Error('expected TCP');
    port = address.port;
  });

  afterAll(async () => {
    await server.close();
    await fuzzed.close();
    await canaryDevice.close();
  });

  it(
    'survives every session: no crash, no hang, no write outside a request, other clients unaffected',
    async () => {
      // A well-behaved client working through every session, on its own export.
      const canary = await RawNbdClient.connect(port);
      await canary.go('canary');
      let canaryRounds = 0;
      let stopCanary = false;
      const canaryLoop = (async () => {
        for (let i = 0; !stopCanary; i++) {
          const data = pattern(BLOCK, i);
          const offset = (i % (SIZE / BLOCK)) * BLOCK;
          canary.write(
            Buffer.concat([header(NBD_CMD_WRITE, 0, 2 * i + 1, BigInt(offset), BLOCK), data]),
          );
          const w = await canary.reply();
          expect(RawNbdClient.errorOf(w)).toBe(0);
          canary.write(header(NBD_CMD_READ, 0, 2 * i + 2, BigInt(offset), BLOCK));
          const r = await canary.reply(BLOCK);
          expect(r.payload).toEqual(Buffer.from(data));
          canaryRounds++;
        }
      })();

      const heapBefore = process.memoryUsage();
      await assertProperty(
        'nbd server fuzz',
        fc.asyncProperty(sessionArb, async (session) => {
          fuzzed.seen.length = 0;
          const allowed = await runSession(port, session);
          checkWrites(fuzzed.seen, allowed);
          // The server still answers a new client.
          const fresh = await RawNbdClient.connect(port);
          try {
            await fresh.go('ro');
            fresh.write(header(NBD_CMD_READ, 0, 7, 0n, BLOCK));
            const reply = await fresh.reply(BLOCK);
            expect(RawNbdClient.errorOf(reply)).toBe(0);
          } finally {
            fresh.destroy();
          }
        }),
        { numRuns: 120, soakRuns: 3000, seed: 0x4e8d },
      );
      stopCanary = true;
      await canaryLoop;
      canary.destroy();
      expect(canaryRounds).toBeGreaterThan(0);
      // Bounded memory: sessions that announced 4 GiB writes and megabyte reads
      // nobody read left nothing behind that grows with them.
      const heapAfter = process.memoryUsage();
      const grown =
        heapAfter.heapUsed +
        heapAfter.arrayBuffers -
        (heapBefore.heapUsed + heapBefore.arrayBuffers);
      expect(grown).toBeLessThan(256 * 1024 * 1024);
    },
    SOAK_TIMEOUT,
  );
});
