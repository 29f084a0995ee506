import { expect } from 'vitest';
import {
  BlockDeviceError,
  CowSnapshotDevice,
  MemoryDevice,
  type Snapshot,
} from '../../src/index.js';
import { FaultyDevice, ModelDevice, PowerSwitch } from '../../src/testing/index.js';
import { expectSameBytes } from '../support/bytes.js';

export const BS = 512;
export const BLOCKS = 32;
export const SIZE = BS * BLOCKS;
export const MAX_SNAPSHOTS = 4;
const STORE_SIZE = 256 * 1024;

/** Deterministic bytes for a write, so a shrunk counterexample prints short. */
export function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (seed * 7 + i * 31 + (i >>> 8)) & 0xff || 1;
  return out;
}

/** The system under test: a CowSnapshotDevice over two memory "disks" behind FaultyDevices sharing one power switch. */
export class Real {
  readonly originDisk: MemoryDevice;
  readonly storeDisk: MemoryDevice;
  power = new PowerSwitch();
  origin!: FaultyDevice;
  store!: FaultyDevice;
  device!: CowSnapshotDevice;
  readonly #handles = new Map<string, Snapshot>();

  private constructor(originDisk: MemoryDevice, storeDisk: MemoryDevice) {
    this.originDisk = originDisk;
    this.storeDisk = storeDisk;
  }

  static async create(): Promise<Real> {
    const real = new Real(
      await MemoryDevice.create({ size: SIZE, blockSize: BS }),
      await MemoryDevice.create({ size: STORE_SIZE, blockSize: BS }),
    );
    real.#attach();
    real.device = await CowSnapshotDevice.create(real.origin, real.store, {
      maxSnapshots: MAX_SNAPSHOTS,
    });
    return real;
  }

  #attach(): void {
    this.power = new PowerSwitch();
    this.origin = new FaultyDevice(this.originDisk.reopen(), { power: this.power });
    this.store = new FaultyDevice(this.storeDisk.reopen(), { power: this.power });
    this.#handles.clear();
  }

  async handle(id: string): Promise<Snapshot> {
    let handle = this.#handles.get(id);
    if (handle === undefined) {
      handle = await this.device.openSnapshot(id);
      this.#handles.set(id, handle);
    }
    return handle;
  }

  async reopen(): Promise<void> {
    await this.device.close();
    this.#attach();
    this.device = await CowSnapshotDevice.open(this.origin, this.store);
  }

  /** Pulls the plug on both disks at once and opens what a power cut left behind. */
  async crashAndReopen(seed: number): Promise<void> {
    this.power.cut();
    await this.origin.crash(seed);
    await this.store.crash(seed ^ 0x5bd1e995);
    this.#attach();
    this.device = await CowSnapshotDevice.open(this.origin, this.store);
  }

  async dispose(): Promise<void> {
    if (this.power.isOn) await this.device.close();
  }
}

interface LiveSnapshot {
  real: string;
  model: string;
  writable: boolean;
}

interface PendingWrite {
  /** `'origin'` or a real snapshot id. */
  target: string;
  offset: number;
  data: Uint8Array;
}

/**
 * The reference: a ModelDevice (content and snapshots as plain copies), plus
 * what a power cut may leave — the content at the last durability point and
 * the writes acknowledged since.
 */
export class Model {
  dev!: ModelDevice;
  live: LiveSnapshot[] = [];
  durable = new Map<string, Uint8Array>();
  pending: PendingWrite[] = [];

  static async create(): Promise<Model> {
    const model = new Model();
    model.dev = await ModelDevice.create({ size: SIZE, blockSize: BS });
    model.makeDurable();
    return model;
  }

  /** A flush or a durability point: everything so far survives a power cut. */
  makeDurable(): void {
    this.durable = new Map([['origin', this.dev.bytes()]]);
    for (const s of this.live) this.durable.set(s.real, this.dev.snapshotBytes(s.model));
    this.pending = [];
  }

  content(target: string): Uint8Array {
    if (target === 'origin') return this.dev.bytes();
    return this.dev.snapshotBytes(this.byReal(target).model);
  }

  byReal(id: string): LiveSnapshot {
    const s = this.live.find((x) => x.real === id);
    if (s === undefined) throw new Error(`model has no snapshot ${id}`);
    return s;
  }

  /** Rebuilds the model from what the real device holds after a crash (already checked to be allowed). */
  async resync(real: Real): Promise<void> {
    const infos = real.device.listSnapshots();
    const dev = await ModelDevice.create({ size: SIZE, blockSize: BS });
    const live: LiveSnapshot[] = [];
    for (const info of infos) {
      await dev.write(0, await (await real.handle(info.id)).read(0, SIZE));
      const snap = await dev.snapshot({ writable: info.writable });
      live.push({ real: info.id, model: snap.id, writable: info.writable });
    }
    await dev.write(0, await real.device.read(0, SIZE));
    this.dev = dev;
    this.live = live;
    this.makeDurable();
  }
}

/** Checks every byte of `actual` is the durable value or one a candidate write could have left. */
export function expectAllowed(
  what: string,
  actual: Uint8Array,
  durable: Uint8Array,
  candidates: { offset: number; data: Uint8Array }[],
): void {
  for (let i = 0; i < actual.length; i++) {
    const v = actual[i];
    if (v === durable[i]) continue;
    const ok = candidates.some(
      (w) => i >= w.offset && i < w.offset + w.data.length && w.data[i - w.offset] === v,
    );
    if (!ok) {
      throw new Error(
        `${what}: byte ${i} is ${v}, but neither durable (${durable[i]}) nor any unflushed write put it there`,
      );
    }
  }
}

/**
 * Byte-exact comparison that names the first differing byte. (vitest's deep
 * equality walks typed arrays element by element: far too slow to run after
 * every command.)
 */
export function expectBytes(what: string, actual: Uint8Array, expected: Uint8Array): void {
  expectSameBytes(what, actual, expected, BS);
}

/** Compares the whole real device, and every snapshot, with the model. */
export async function expectSame(model: Model, real: Real): Promise<void> {
  expect(real.device.listSnapshots().map((s) => s.id)).toEqual(model.live.map((s) => s.real));
  expectBytes('origin', await real.device.read(0, SIZE), model.dev.bytes());
  for (const s of model.live) {
    const handle = await real.handle(s.real);
    expectBytes(`snapshot ${s.real}`, await handle.read(0, SIZE), model.dev.snapshotBytes(s.model));
  }
}

export function isCode(err: unknown, code: string): boolean {
  return BlockDeviceError.is(err) && err.code === code;
}
