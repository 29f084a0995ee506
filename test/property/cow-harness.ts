import { expect } from 'vitest';
import { ModelDevice } from '../../src/testing/index.js';
import { expectBytes } from '../support/bytes.js';
import type { CowRig } from '../support/cow-rig.js';

export const BS = 512;
export const BLOCKS = 32;
export const SIZE = BS * BLOCKS;
export const MAX_SNAPSHOTS = 4;

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
  async resync(real: CowRig): Promise<void> {
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

/** Compares the whole real device, and every snapshot, with the model. */
export async function expectSame(model: Model, real: CowRig): Promise<void> {
  expect(real.device.listSnapshots().map((s) => s.id)).toEqual(model.live.map((s) => s.real));
  expectBytes('origin', await real.device.read(0, SIZE), model.dev.bytes());
  for (const s of model.live) {
    const handle = await real.handle(s.real);
    expectBytes(`snapshot ${s.real}`, await handle.read(0, SIZE), model.dev.snapshotBytes(s.model));
  }
}
