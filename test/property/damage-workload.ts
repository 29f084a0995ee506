import type { BlockDevice, Snapshot, SnapshotCapable, SnapshotOptions } from '../../src/index.js';
import type { Rng, Verdict } from './damage-harness.js';

/** Geometry every damage workload uses: 32 blocks of 512 bytes. */
export const BS = 512;
export const BLOCKS = 32;
export const SIZE = BS * BLOCKS;
/** Snapshots alive at once, per snapshot-capable layer. */
export const MAX_SNAPSHOTS = 4;

/** A snapshot-capable device as the workloads drive it. */
export type SnapshotDevice = BlockDevice & SnapshotCapable;

/** What the model keeps of one snapshot: its bytes, and which blocks it holds. */
interface ModelSnapshot {
  id: string;
  layer: string;
  writable: boolean;
  bytes: Uint8Array;
  /** First and end block held (a selective snapshot's include); every block otherwise. */
  held: [number, number];
  handle: Snapshot;
}

/** One snapshot-capable layer of a stack the workload takes snapshots on. */
export interface SnapshotLayer {
  /** Names the layer in messages (`cow`, `inner`, `journal`). */
  name: string;
  device: SnapshotDevice;
  /** Whether snapshots hold only a block range (a SelectiveSnapshotDevice). */
  selective: boolean;
}

/**
 * The model of a stack's content: the live device and every snapshot, kept
 * in step by running each operation on the real stack and the model
 * together, one at a time.
 */
export class SnapshotWorkload {
  readonly live = new Uint8Array(SIZE);
  readonly snapshots = new Map<string, ModelSnapshot>();
  readonly steps: string[] = [];

  constructor(
    readonly rng: Rng,
    readonly top: BlockDevice,
    readonly layers: readonly SnapshotLayer[],
  ) {}

  /**
   * The same model carried on over `top`, a device just stacked on this
   * workload's top: snapshots are taken and deleted on `layers` from now on
   * (the layers below are owned), and those already taken stay in the model.
   */
  stackedOn(top: BlockDevice, layers: readonly SnapshotLayer[]): SnapshotWorkload {
    const next = new SnapshotWorkload(this.rng, top, layers);
    next.live.set(this.live);
    for (const [id, snap] of this.snapshots) next.snapshots.set(id, snap);
    next.steps.push(...this.steps, 'stack a device on it');
    return next;
  }

  /** A write to the top of the stack: whole blocks or an unaligned piece. */
  async write(): Promise<void> {
    const { offset, data } = this.#randomWrite(0, BLOCKS);
    this.steps.push(`write(${offset}, ${data.length})`);
    await this.top.write(offset, data);
    // A layer below the top holds the same bytes, so its snapshots cut the same content.
    this.live.set(data, offset);
  }

  #randomWrite(firstBlock: number, endBlock: number): { offset: number; data: Uint8Array } {
    const blocks = endBlock - firstBlock;
    if (this.rng.chance(0.5)) {
      const first = firstBlock + this.rng.int(blocks);
      const count = 1 + this.rng.int(Math.min(3, endBlock - first));
      return { offset: first * BS, data: this.rng.bytes(count * BS) };
    }
    const start = firstBlock * BS + this.rng.int(blocks * BS);
    const length = 1 + this.rng.int(Math.min(2 * BS, endBlock * BS - start));
    return { offset: start, data: this.rng.bytes(length) };
  }

  /** A snapshot on one of the layers, writable or not, of a block range on a selective one. */
  async snapshot(): Promise<void> {
    if (this.layers.length === 0) return this.write();
    const layer = this.rng.pick(this.layers);
    const mine = [...this.snapshots.values()].filter((s) => s.layer === layer.name);
    if (mine.length >= MAX_SNAPSHOTS) return this.delete();
    const writable = this.rng.chance(0.4);
    let held: [number, number] = [0, BLOCKS];
    const options: SnapshotOptions & { include?: { offset: number; length: number }[] } = {
      writable,
    };
    if (layer.selective) {
      const first = this.rng.int(BLOCKS);
      const end = first + 1 + this.rng.int(Math.min(12, BLOCKS - first));
      held = [first, end];
      options.include = [{ offset: first * BS, length: (end - first) * BS }];
    }
    const handle = await layer.device.snapshot(options);
    const bytes = new Uint8Array(SIZE);
    bytes.set(this.live.subarray(held[0] * BS, held[1] * BS), held[0] * BS);
    this.snapshots.set(handle.id, {
      id: handle.id,
      layer: layer.name,
      writable,
      bytes,
      held,
      handle,
    });
    this.steps.push(
      `${layer.name}.snapshot(${writable ? 'writable' : 'read-only'}, blocks ${held[0]}..${held[1]}) = ${handle.id}`,
    );
  }

  /** A write to a writable snapshot, inside the blocks it holds. */
  async writeSnapshot(): Promise<void> {
    const writable = [...this.snapshots.values()].filter((s) => s.writable);
    if (writable.length === 0) return this.write();
    const snap = this.rng.pick(writable);
    const { offset, data } = this.#randomWrite(snap.held[0], snap.held[1]);
    this.steps.push(`${snap.layer} snapshot ${snap.id}.write(${offset}, ${data.length})`);
    await snap.handle.write(offset, data);
    snap.bytes.set(data, offset);
  }

  /** Deletes a snapshot of one of `layers` (a layer below the stack is owned: it refuses). */
  async delete(): Promise<void> {
    const all = [...this.snapshots.values()].filter((s) =>
      this.layers.some((l) => l.name === s.layer),
    );
    if (all.length === 0) return this.write();
    const snap = this.rng.pick(all);
    const layer = this.layers.find((l) => l.name === snap.layer) as SnapshotLayer;
    this.steps.push(`${snap.layer}.deleteSnapshot(${snap.id})`);
    await snap.handle.close();
    await layer.device.deleteSnapshot(snap.id);
    this.snapshots.delete(snap.id);
  }

  async flush(): Promise<void> {
    this.steps.push('flush');
    await this.top.flush();
  }

  /**
   * Reads the reopened stack through `verdict`: the top device whole, each
   * layer's snapshot list against the model, and every listed snapshot the
   * model has, whole (bytes a selective snapshot does not hold read as zeros).
   */
  async verify(
    verdict: Verdict,
    top: BlockDevice,
    layers: readonly { name: string; device: SnapshotDevice }[],
  ): Promise<void> {
    await verdict.read('device', () => top.read(0, SIZE), this.live);
    for (const layer of layers) {
      const listed = layer.device.listSnapshots().map((s) => s.id);
      const expected = [...this.snapshots.values()].filter((s) => s.layer === layer.name);
      verdict.listed(
        `${layer.name} snapshot`,
        listed,
        expected.map((s) => s.id),
      );
      for (const snap of expected) {
        if (!listed.includes(snap.id)) continue;
        await verdict.read(
          `${layer.name} snapshot ${snap.id}`,
          async () => {
            const handle = await layer.device.openSnapshot(snap.id);
            return handle.read(0, SIZE);
          },
          snap.bytes,
        );
      }
    }
  }
}
