/**
 * The snapshot suite's per-test state: the device under test, the bytes its
 * live content must hold, what each snapshot taken must hold, and the checks
 * that compare them. It reopens the device over the same stores for the
 * reopen rule (docs/ARCHITECTURE.md, Snapshot rules 5).
 */
import assert from 'node:assert/strict';
import type {
  BlockDevice,
  Extent,
  PreserveEvent,
  Snapshot,
  SnapshotCapable,
  SnapshotOptions,
} from '../device.js';
import { assertBytes } from './conformance-support.js';

/** A block device that takes snapshots: what the snapshot suite tests. */
export type SnapshotDevice = BlockDevice & SnapshotCapable;

/** The byte ranges a selective snapshot holds, as `SelectiveSnapshotDevice.snapshot` takes them. */
export interface SnapshotDesignation {
  /** Ranges held, widened to whole blocks. */
  include?: readonly Extent[];
  /** Ranges taken back out of `include`, narrowed to the blocks they cover. */
  exclude?: readonly Extent[];
}

/** A device whose `snapshot()` also takes a designation (the `selective` capability). */
interface SelectiveDevice {
  snapshot(options?: SnapshotOptions & SnapshotDesignation): Promise<Snapshot>;
}

/** A device that emits `preserve` (the `preserveEvents` capability). */
interface PreserveSource {
  on(event: 'preserve', listener: (event: PreserveEvent) => void): unknown;
  off(event: 'preserve', listener: (event: PreserveEvent) => void): unknown;
}

/** A snapshot taken by a test, with the bytes it must hold. */
export interface TakenSnapshot {
  /** The handle to read it through (replaced by a fresh one after a reopen). */
  handle: Snapshot;
  /** The whole device as the snapshot must read (for a selective one, in `held`). */
  content: Uint8Array;
  /** A selective snapshot's held blocks, as extents; the whole device when absent. */
  held?: readonly Extent[];
}

/**
 * One test's device and what it must hold. Writes to the live device go
 * through {@link SnapshotHarness.write}, which keeps `live` in step.
 */
export class SnapshotHarness {
  device: SnapshotDevice;
  readonly live: Uint8Array;
  readonly size: number;
  readonly bs: number;
  readonly blocks: number;
  readonly #reopen: (() => Promise<SnapshotDevice>) | undefined;
  readonly #settle: ((device: SnapshotDevice) => Promise<void>) | undefined;

  constructor(
    device: SnapshotDevice,
    live: Uint8Array,
    reopen: (() => Promise<SnapshotDevice>) | undefined,
    settle?: (device: SnapshotDevice) => Promise<void>,
  ) {
    this.device = device;
    this.#settle = settle;
    this.live = live;
    this.size = device.size;
    this.bs = device.blockSize;
    this.blocks = device.size / device.blockSize;
    this.#reopen = reopen;
  }

  /** Blocks `first..last` as one byte extent. */
  extent(first: number, last = first): Extent {
    return { offset: first * this.bs, length: (last - first + 1) * this.bs };
  }

  /** Calls `write` on the live device now; the promise resolves once `live` holds the bytes too. */
  write(offset: number, data: Uint8Array): Promise<void> {
    const copy = new Uint8Array(data); // a copy even of a Buffer, whose slice is a view
    return this.device.write(offset, data).then(() => this.live.set(copy, offset));
  }

  /** Takes a snapshot with no writes in flight; its content is the live content now. */
  async snapshot(options?: SnapshotOptions): Promise<TakenSnapshot> {
    const handle = await this.device.snapshot(options);
    return { handle, content: this.live.slice() };
  }

  /**
   * Takes a selective snapshot (the device declared `selective`); `held` is
   * what the designation holds, as the test works it out.
   */
  async selectiveSnapshot(
    designation: SnapshotDesignation,
    held: readonly Extent[],
    options?: SnapshotOptions,
  ): Promise<TakenSnapshot> {
    const device = this.device as unknown as SelectiveDevice;
    const handle = await device.snapshot({ ...options, ...designation });
    return { handle, content: this.live.slice(), held };
  }

  /** Reads the whole live device and compares it with `live`. */
  async checkLive(when: string): Promise<void> {
    assertBytes(await this.device.read(0, this.size), this.live, `live device ${when}`);
  }

  /**
   * Reads all `snapshot` holds (through `handle`, if given) and compares it
   * with its content.
   */
  async checkSnapshot(snapshot: TakenSnapshot, when: string, handle?: Snapshot): Promise<void> {
    const reader = handle ?? snapshot.handle;
    const what = `snapshot ${snapshot.handle.id} ${when}`;
    if (snapshot.held === undefined) {
      assertBytes(await reader.read(0, this.size), snapshot.content, what);
      return;
    }
    for (const { offset, length } of snapshot.held) {
      const expected = snapshot.content.subarray(offset, offset + length);
      assertBytes(
        await reader.read(offset, length),
        expected,
        `${what}, read(${offset}, ${length})`,
      );
    }
  }

  /** Reads `[offset, offset + length)` of a snapshot and compares it with its content. */
  async checkSnapshotRange(
    snapshot: TakenSnapshot,
    offset: number,
    length: number,
    when: string,
  ): Promise<void> {
    const got = await snapshot.handle.read(offset, length);
    const what = `snapshot ${snapshot.handle.id} read(${offset}, ${length}) ${when}`;
    assertBytes(got, snapshot.content.subarray(offset, offset + length), what);
  }

  /**
   * Records the blocks the device preserves while `body` runs (the device
   * declared `preserveEvents`), in the order it preserves them.
   */
  async preserves(body: () => Promise<void>): Promise<number[]> {
    const source = this.device as unknown as PreserveSource;
    assert.equal(typeof source.on, 'function', 'a device with preserveEvents has on()');
    const seen: number[] = [];
    const listener = (event: PreserveEvent): void => {
      seen.push(event.block);
    };
    source.on('preserve', listener);
    try {
      await body();
    } finally {
      source.off('preserve', listener);
    }
    return seen;
  }

  /** Whether the subject's snapshots have a settled form ({@link settle} does something). */
  get settles(): boolean {
    return this.#settle !== undefined;
  }

  /** Brings every snapshot to its settled form (the subject's `settle`), if it has one. */
  async settle(): Promise<void> {
    await this.#settle?.(this.device);
  }

  /**
   * Closes the device and opens it again over the same stores; every
   * handle taken before is closed with it, so tests reopen theirs.
   */
  async reopen(): Promise<void> {
    assert.ok(this.#reopen, 'a subject of a device with supports.reopen has reopen()');
    await this.device.close();
    const device = await this.#reopen();
    assert.equal(device.size, this.size, 'the reopened device has the same size');
    assert.equal(device.blockSize, this.bs, 'the reopened device has the same blockSize');
    this.device = device;
  }
}
