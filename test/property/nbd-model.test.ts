/**
 * NbdDevice against the reference model (ModelDevice) over real servers:
 * random sequences of writes (some concurrent), reads, flushes and
 * reconnects on qemu-nbd (a raw file), nbdkit memory, and nbdkit with a
 * 4 KiB minimum block and 64 KiB payloads (the read-modify-write path).
 * After every command the device reads back what the model holds.
 */
import fc from 'fast-check';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { NbdDevice } from '../../src/index.js';
import { ModelDevice } from '../../src/testing/index.js';
import { expectSameBytes, pattern } from '../support/bytes.js';
import {
  type NbdPeer,
  rawImage,
  startNbdkit,
  startQemuNbd,
  tempDir,
} from '../support/nbd-peers.js';
import { describeWithPeers } from '../support/peers.js';
import { assertProperty, SOAK_TIMEOUT } from '../support/soak.js';

const SIZE = 128 * 1024;

interface Real {
  url: string;
  device: NbdDevice;
}

type Command = fc.AsyncCommand<ModelDevice, Real>;

class Write implements Command {
  constructor(
    readonly offset: number,
    readonly length: number,
    readonly seed: number,
  ) {}
  check = () => true;
  async run(m: ModelDevice, r: Real): Promise<void> {
    const data = pattern(this.length, this.seed);
    await r.device.write(this.offset, data);
    await m.write(this.offset, data);
  }
  toString = () => `write(${this.offset}, ${this.length}, #${this.seed})`;
}

/** Two writes in flight at once, to disjoint ranges (possibly in the same blocks). */
class TwoWrites implements Command {
  constructor(
    readonly a: [number, number],
    readonly b: [number, number],
  ) {}
  check = () => true;
  async run(m: ModelDevice, r: Real): Promise<void> {
    const [first, second] = this.a[0] <= this.b[0] ? [this.a, this.b] : [this.b, this.a];
    const secondStart = Math.max(second[0], first[0] + first[1]);
    const secondLength = Math.max(0, Math.min(second[1], SIZE - secondStart));
    const one = pattern(first[1], 1 + first[0]);
    const two = pattern(secondLength, 2 + secondStart);
    await Promise.all([r.device.write(first[0], one), r.device.write(secondStart, two)]);
    await m.write(first[0], one);
    await m.write(secondStart, two);
  }
  toString = () => `twoWrites(${this.a}, ${this.b})`;
}

class Read implements Command {
  constructor(
    readonly offset: number,
    readonly length: number,
  ) {}
  check = () => true;
  async run(m: ModelDevice, r: Real): Promise<void> {
    expectSameBytes(
      this.toString(),
      await r.device.read(this.offset, this.length),
      await m.read(this.offset, this.length),
    );
  }
  toString = () => `read(${this.offset}, ${this.length})`;
}

class Flush implements Command {
  check = () => true;
  async run(_: ModelDevice, r: Real): Promise<void> {
    await r.device.flush();
  }
  toString = () => 'flush()';
}

/** Close (flush, NBD_CMD_DISC) and connect again: what was written is still there. */
class Reconnect implements Command {
  check = () => true;
  async run(m: ModelDevice, r: Real): Promise<void> {
    await r.device.close();
    r.device = await NbdDevice.connect(r.url);
    expectSameBytes('after reconnect', await r.device.read(0, SIZE), m.bytes());
  }
  toString = () => 'reconnect()';
}

const range = fc
  .tuple(fc.integer({ min: 0, max: SIZE - 1 }), fc.integer({ min: 1, max: 20_000 }))
  .map(([offset, length]): [number, number] => [offset, Math.min(length, SIZE - offset)]);

const commands = fc.commands(
  [
    fc.tuple(range, fc.nat()).map(([[o, l], s]) => new Write(o, l, s)),
    fc.tuple(range, range).map(([a, b]) => new TwoWrites(a, b)),
    range.map(([o, l]) => new Read(o, l)),
    fc.constant(new Flush()),
    fc.constant(new Reconnect()),
  ],
  { maxCommands: 25 },
);

function modelAgainst(label: string, seed: number, start: () => Promise<NbdPeer>): void {
  let peer: NbdPeer | undefined;
  beforeAll(async () => {
    peer = await start();
  });
  afterAll(async () => {
    await peer?.stop();
  });
  it(
    `${label}: matches the model through writes, reads, flushes and reconnects`,
    async () => {
      await assertProperty(
        `nbd model, ${label}`,
        fc.asyncProperty(commands, async (cmds) => {
          const device = await NbdDevice.connect(peer!.url);
          await device.write(0, new Uint8Array(SIZE));
          const real: Real = { url: peer!.url, device };
          const model = await ModelDevice.create({ size: SIZE, blockSize: 512 });
          try {
            await fc.asyncModelRun(() => ({ model, real }), cmds);
            expectSameBytes('whole device', await real.device.read(0, SIZE), model.bytes());
          } finally {
            await real.device.close().catch(() => {});
          }
        }),
        { numRuns: 25, soakRuns: 1000, seed },
      );
      expect(peer).toBeDefined();
    },
    SOAK_TIMEOUT,
  );
}

describeWithPeers(['qemu-nbd'], 'NbdDevice model, qemu-nbd', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterAll(async () => {
    for (const c of cleanups) await c();
  });
  modelAgainst('qemu-nbd -f raw', 0x4eb001, async () => {
    const { dir, cleanup } = await tempDir();
    cleanups.push(cleanup);
    return startQemuNbd(await rawImage(dir, SIZE), ['-e', '4']);
  });
});

describeWithPeers(['nbdkit'], 'NbdDevice model, nbdkit', () => {
  modelAgainst('nbdkit memory', 0x4eb002, () => startNbdkit(['memory', `size=${SIZE}`]));
  modelAgainst('nbdkit memory, 4 KiB minimum block', 0x4eb003, () =>
    startNbdkit([
      '--filter=blocksize-policy',
      'memory',
      `size=${SIZE}`,
      'blocksize-minimum=4096',
      'blocksize-maximum=65536',
      'blocksize-error-policy=error',
    ]),
  );
});
