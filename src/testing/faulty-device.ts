import { AbstractBlockDevice, LockTable, SECTOR } from '../base/index.js';
import type { BlockDevice } from '../device.js';
import { BlockDeviceError, wrapIO } from '../errors.js';

/** Longest run of sectors `crash()` rewrites with one write (bounds its buffer). */
const MAX_REWRITE_SECTORS = 2048;

/** The kinds of operation a {@link FaultyDevice} passes down. */
export type FaultyOperationKind = 'read' | 'write' | 'flush';

const KINDS: readonly FaultyOperationKind[] = ['read', 'write', 'flush'];

/** One read, write or flush as {@link FaultyDeviceOptions.failures} and `latency` see it. */
export interface FaultyOperation {
  /** What the operation does. */
  readonly kind: FaultyOperationKind;
  /** Byte offset of a read or write; 0 for a flush. */
  readonly offset: number;
  /** Byte length of a read or write; 0 for a flush. */
  readonly length: number;
  /**
   * 0-based position of this operation among all reads, writes and flushes
   * that reached this device (zero-length reads and writes never reach it).
   */
  readonly index: number;
}

/** Counters of the operations a {@link FaultyDevice} passed to its inner device. */
export interface FaultyDeviceStats {
  /** Reads passed down. */
  readonly reads: number;
  /** Writes passed down. */
  readonly writes: number;
  /** Flushes passed down (the one `close()` makes included). */
  readonly flushes: number;
  /** Bytes of the reads passed down. */
  readonly bytesRead: number;
  /** Bytes of the writes passed down. */
  readonly bytesWritten: number;
}

/**
 * Counts one operation on `power`; false means the power is (now) off. Set by
 * PowerSwitch's static block, so only this module can admit operations.
 */
let admitOperation: (power: PowerSwitch) => boolean;

/** Options for a {@link PowerSwitch}. */
export interface PowerSwitchOptions {
  /**
   * Cut the power when this many operations have been admitted: operation
   * number `cutAfterOps + 1` is the first to fail. A non-negative integer.
   * @default undefined (only {@link PowerSwitch.cut} or a crash cuts it)
   */
  cutAfterOps?: number | undefined;
}

/**
 * The power supply one or more {@link FaultyDevice}s share, so that a layer's
 * origin and its store lose power at the same instant. Once cut it stays cut:
 * every later read, write or flush on an attached device fails with `EIO` and
 * is not performed.
 */
export class PowerSwitch {
  #cutAfterOps: number | undefined;
  #on = true;
  #ops = 0;

  /**
   * Creates a switch that is on.
   * @throws `EINVAL` if `cutAfterOps` is not a non-negative integer.
   */
  constructor(options: PowerSwitchOptions = {}) {
    const limit = options?.cutAfterOps;
    if (limit !== undefined && (!Number.isSafeInteger(limit) || limit < 0)) {
      throw new BlockDeviceError(
        'EINVAL',
        `PowerSwitch: cutAfterOps must be a non-negative integer, got ${String(limit)}`,
      );
    }
    this.#cutAfterOps = limit;
  }

  /** Whether the power is still on. */
  get isOn(): boolean {
    return this.#on;
  }

  /**
   * Operations admitted while the power was on, over every attached device;
   * an operation refused because the power is off is not counted.
   */
  get opsIssued(): number {
    return this.#ops;
  }

  /**
   * Arms the switch to cut the power after `ops` more operations (counted
   * from now over every attached device), so a test can pull the plug in
   * the middle of whatever the layer above does next.
   * @throws `EINVAL` if `ops` is not a non-negative integer.
   */
  cutAfter(ops: number): void {
    if (!Number.isSafeInteger(ops) || ops < 0) {
      throw new BlockDeviceError(
        'EINVAL',
        `PowerSwitch: ops must be a non-negative integer, got ${String(ops)}`,
      );
    }
    this.#cutAfterOps = this.#ops + ops;
  }

  /** Cuts the power now; idempotent. Operations already admitted may still land or not. */
  cut(): void {
    this.#on = false;
  }

  static {
    admitOperation = (power) => {
      if (!power.#on) return false;
      if (power.#cutAfterOps !== undefined && power.#ops >= power.#cutAfterOps) {
        power.#on = false;
        return false;
      }
      power.#ops++;
      return true;
    };
  }
}

/** Options for a {@link FaultyDevice}. */
export interface FaultyDeviceOptions {
  /**
   * The power supply, shared with other devices that must lose power with
   * this one. @default a switch of this device's own
   */
  power?: PowerSwitch | undefined;
  /**
   * Decides, for each operation the power admitted, whether it fails: `true`
   * rejects it with `EIO` without passing it down (a failed flush makes
   * nothing durable). Consulted after {@link FaultyDevice.failNext}.
   * @default no injected failures
   */
  failures?: ((op: FaultyOperation) => boolean) | undefined;
  /**
   * Delay in milliseconds before an operation is passed down, or a function
   * choosing it per operation; a result that is not a positive finite number
   * means no delay (and no timer). @default 0
   */
  latency?: (number | ((op: FaultyOperation) => number)) | undefined;
}

/** A write passed down (or about to be) and not yet made durable by a completed flush. */
interface PendingWrite {
  /** Order in which writes reached the inner device; overlapping writes apply in this order. */
  readonly seq: number;
  readonly offset: number;
  readonly data: Uint8Array;
  readonly firstSector: number;
  readonly lastSector: number;
  /** The inner write resolved: a flush called from now on covers it. */
  completed: boolean;
}

/** The content of one sector as of the last completed flush that covered it. */
interface DurableSector {
  readonly bytes: Uint8Array;
  /** Pending writes touching the sector; the entry is dropped at zero. */
  writers: number;
}

/**
 * Wraps any block device and passes its I/O through while simulating what a
 * disk does on a power cut, for crash tests.
 *
 * Durability model: a write is *pending* from the moment it reaches the inner
 * device until a flush *called after the write completed* has itself
 * completed; then it is durable. {@link FaultyDevice.crash} turns the inner
 * device into one image a disk could show after the cut: every durable write
 * present, each pending write present, absent or torn at 512-byte sectors,
 * chosen by a seed. Operations can also be made to fail with `EIO` and be
 * delayed.
 *
 * Guarantees: a read returns what the inner device returns; an operation that
 * fails (injected failure or power off) is never performed on the inner
 * device; the same seed over the same history gives the same image. The
 * device owns `inner` and closes it on `close()` — unless the power is off, in
 * which case `close()` leaves `inner` alone for whoever calls `crash()`. A
 * write the inner device itself rejects is assumed to have changed nothing.
 * Zero-length reads and writes do no I/O, never reach this device's counters
 * or power switch, and so succeed even with the power off.
 */
export class FaultyDevice extends AbstractBlockDevice {
  /** The device every operation is passed to. */
  readonly inner: BlockDevice;

  readonly #power: PowerSwitch;
  readonly #failures: ((op: FaultyOperation) => boolean) | undefined;
  readonly #latency: number | ((op: FaultyOperation) => number);
  readonly #failNext: Record<FaultyOperationKind, number> = { read: 0, write: 0, flush: 0 };
  #index = 0;
  #stats = zeroStats();

  /** Pending writes in `seq` order (a Map keeps insertion order). */
  readonly #pending = new Map<number, PendingWrite>();
  /** Durable content of every sector some pending write touches, by sector index. */
  readonly #durable = new Map<number, DurableSector>();
  /** Serializes capture and pass-down of writes that share a sector. */
  readonly #sectorLocks = new LockTable();
  #seq = 0;

  /** Every admitted operation until it settles, so a crash can wait for them. */
  readonly #inFlight = new Set<Promise<unknown>>();
  #crash: Promise<BlockDevice> | undefined;
  #innerClosed = false;

  /**
   * Wraps `inner`, taking its size, block size and read-only flag.
   * @throws `EINVAL` if `inner` is not a block device or an option is bad.
   */
  constructor(inner: BlockDevice, options: FaultyDeviceOptions = {}) {
    if (!looksLikeBlockDevice(inner)) {
      throw new BlockDeviceError('EINVAL', 'FaultyDevice: inner must be a BlockDevice');
    }
    super('FaultyDevice', inner.size, inner.blockSize, inner.readOnly === true);
    const { power, failures, latency } = options ?? {};
    if (power !== undefined && !(power instanceof PowerSwitch)) {
      throw new BlockDeviceError('EINVAL', 'FaultyDevice: power must be a PowerSwitch');
    }
    if (failures !== undefined && typeof failures !== 'function') {
      throw new BlockDeviceError('EINVAL', 'FaultyDevice: failures must be a function');
    }
    if (
      latency !== undefined &&
      typeof latency !== 'function' &&
      !(typeof latency === 'number' && Number.isFinite(latency) && latency >= 0)
    ) {
      throw new BlockDeviceError(
        'EINVAL',
        `FaultyDevice: latency must be a non-negative number of milliseconds or a function, got ${String(latency)}`,
      );
    }
    this.inner = inner;
    this.#power = power ?? new PowerSwitch();
    this.#failures = failures;
    this.#latency = latency ?? 0;
  }

  /** The power supply this device is attached to. */
  get power(): PowerSwitch {
    return this.#power;
  }

  /**
   * Operations passed to the inner device since creation or the last
   * {@link resetStats}; a snapshot of the counters. The reads a write makes
   * to capture durable content, and the I/O of `crash()`, are not counted.
   */
  get stats(): FaultyDeviceStats {
    return { ...this.#stats };
  }

  /** Sets every counter of {@link stats} to zero. */
  resetStats(): void {
    this.#stats = zeroStats();
  }

  /** Number of writes that reached the inner device and are not yet durable. */
  get pendingWrites(): number {
    return this.#pending.size;
  }

  /**
   * Makes the next `count` operations of `kind` fail with `EIO` without being
   * passed down; calls add up.
   * @throws `EINVAL` for an unknown kind or a count that is not a non-negative integer.
   */
  failNext(kind: FaultyOperationKind, count = 1): void {
    if (!KINDS.includes(kind)) {
      throw new BlockDeviceError('EINVAL', `FaultyDevice: unknown operation kind ${String(kind)}`);
    }
    if (!Number.isSafeInteger(count) || count < 0) {
      throw new BlockDeviceError(
        'EINVAL',
        `FaultyDevice: count must be a non-negative integer, got ${String(count)}`,
      );
    }
    this.#failNext[kind] += count;
  }

  /**
   * Cuts the power (if it is not cut already), waits for the operations in
   * flight to settle (a delayed one fails with `EIO` when its delay ends, and
   * never reaches `inner`), then rewrites `inner` to one image a disk could show
   * after the cut, flushes it and returns it, open, for the caller to reopen
   * a layer on.
   *
   * The image: every durable write present; each pending write, by a PRNG
   * seeded with `seed`, present, absent or torn (each of its pieces within
   * one 512-byte sector present or absent on its own); where landing pending
   * writes overlap, the later one wins. The same seed over the same history
   * gives the same image. Afterwards every operation on this device fails
   * with `EIO`; later calls return the first call's result.
   *
   * @param seed - an integer choosing the image. @default 0
   * @throws `EINVAL` for a seed that is not an integer, `ECLOSED` if `close()`
   *   already closed `inner` (the power was on, so it was shut down cleanly),
   *   `EIO` if `inner` fails while being rewritten.
   */
  crash(seed = 0): Promise<BlockDevice> {
    if (this.#crash !== undefined) return this.#crash;
    if (!Number.isSafeInteger(seed)) {
      return Promise.reject(
        new BlockDeviceError(
          'EINVAL',
          `FaultyDevice: seed must be an integer, got ${String(seed)}`,
        ),
      );
    }
    if (this.#innerClosed) {
      return Promise.reject(
        new BlockDeviceError('ECLOSED', 'FaultyDevice: closed with the power on; nothing to crash'),
      );
    }
    this.#power.cut();
    this.#crash = this.#settleAndRewrite(seed);
    return this.#crash;
  }

  protected _read(offset: number, length: number): Promise<Uint8Array> {
    return this.#track(this.#readOp(offset, length));
  }

  protected _write(offset: number, data: Uint8Array): Promise<void> {
    return this.#track(this.#writeOp(offset, data));
  }

  protected _flush(): Promise<void> {
    // Only close() reaches here after close() was called: with the power off
    // there is nothing left to flush, and `inner` now belongs to crash().
    if (this.closed) return this.#track(this.#closingFlush());
    return this.#track(this.#flushOp());
  }

  protected async _close(): Promise<void> {
    if (!this.#power.isOn) return;
    this.#innerClosed = true;
    try {
      await this.inner.close();
    } catch (err) {
      throw BlockDeviceError.is(err) ? err : wrapIO('inner close', err);
    }
  }

  async #readOp(offset: number, length: number): Promise<Uint8Array> {
    const op = this.#admit('read', offset, length);
    await this.#delay(op);
    this.#checkPower();
    this.#stats.reads++;
    this.#stats.bytesRead += length;
    let data: Uint8Array;
    try {
      data = await this.inner.read(offset, length);
    } catch (err) {
      this.#checkPower();
      throw wrapIO(`read at ${offset}`, err);
    }
    this.#checkPower();
    return data;
  }

  async #writeOp(offset: number, data: Uint8Array): Promise<void> {
    const op = this.#admit('write', offset, data.length);
    await this.#delay(op);
    this.#checkPower();
    const firstSector = Math.floor(offset / SECTOR);
    const lastSector = Math.floor((offset + data.length - 1) / SECTOR);
    const release = await this.#sectorLocks.acquire(firstSector, lastSector);
    let write: PendingWrite;
    let passedDown: Promise<void>;
    try {
      this.#checkPower();
      // Registered before the capture read is awaited, so a flush completing
      // meanwhile cannot drop a sector this write relies on being captured.
      write = { seq: ++this.#seq, offset, data, firstSector, lastSector, completed: false };
      const toCapture = this.#register(write);
      try {
        await this.#capture(toCapture);
      } catch (err) {
        this.#unregister(write);
        throw wrapIO(`capture read before write at ${offset}`, err);
      }
      // The power died before the write reached the disk: it cannot land.
      if (!this.#power.isOn) {
        this.#unregister(write);
        throw powerCut();
      }
      this.#stats.writes++;
      this.#stats.bytesWritten += data.length;
      // Passed down under the sector locks, so the inner device receives
      // overlapping writes in `seq` order, the order crash() replays them.
      passedDown = this.inner.write(offset, data);
    } finally {
      release();
    }
    try {
      await passedDown;
    } catch (err) {
      // After the cut the write stays pending: it was in flight and may land.
      this.#checkPower();
      this.#unregister(write);
      throw wrapIO(`write at ${offset}`, err);
    }
    write.completed = true;
    this.#checkPower();
  }

  async #flushOp(): Promise<void> {
    const op = this.#admit('flush', 0, 0);
    // A flush covers only writes complete when it is called, never those still in flight.
    const covered = [...this.#pending.values()].filter((w) => w.completed);
    await this.#delay(op);
    this.#checkPower();
    this.#stats.flushes++;
    try {
      await this.inner.flush();
    } catch (err) {
      this.#checkPower();
      throw wrapIO('flush', err);
    }
    // A flush the power cut overtook made nothing durable.
    this.#checkPower();
    this.#makeDurable(covered);
  }

  async #closingFlush(): Promise<void> {
    if (!this.#power.isOn) return;
    try {
      await this.#flushOp();
    } catch (err) {
      if (!this.#power.isOn) return;
      throw err;
    }
  }

  /** Assigns the operation its index and refuses it if the power is off or a failure is injected. */
  #admit(kind: FaultyOperationKind, offset: number, length: number): FaultyOperation {
    const op: FaultyOperation = { kind, offset, length, index: this.#index++ };
    if (!admitOperation(this.#power)) throw powerCut();
    if (this.#failNext[kind] > 0) {
      this.#failNext[kind]--;
      throw injected(op);
    }
    if (this.#failures?.(op) === true) throw injected(op);
    return op;
  }

  #checkPower(): void {
    if (!this.#power.isOn) throw powerCut();
  }

  async #delay(op: FaultyOperation): Promise<void> {
    const ms = typeof this.#latency === 'function' ? this.#latency(op) : this.#latency;
    if (!(ms > 0 && Number.isFinite(ms))) return;
    await new Promise((resolve) => setTimeout(resolve, ms));
  }

  #track<T>(op: Promise<T>): Promise<T> {
    this.#inFlight.add(op);
    const settled = (): void => {
      this.#inFlight.delete(op);
    };
    op.then(settled, settled);
    return op;
  }

  /** Adds `write` to the pending list; returns the sectors whose durable content must be read. */
  #register(write: PendingWrite): number[] {
    this.#pending.set(write.seq, write);
    const missing: number[] = [];
    for (let s = write.firstSector; s <= write.lastSector; s++) {
      const entry = this.#durable.get(s);
      if (entry === undefined) {
        this.#durable.set(s, { bytes: new Uint8Array(SECTOR), writers: 1 });
        missing.push(s);
      } else {
        entry.writers++;
      }
    }
    return missing;
  }

  #unregister(write: PendingWrite): void {
    if (!this.#pending.delete(write.seq)) return;
    for (let s = write.firstSector; s <= write.lastSector; s++) {
      const entry = this.#durable.get(s);
      if (entry !== undefined && --entry.writers === 0) this.#durable.delete(s);
    }
  }

  /** Reads the durable content of `sectors` (ascending) from inner, one read per contiguous run. */
  async #capture(sectors: number[]): Promise<void> {
    for (const [first, last] of runs(sectors, Number.POSITIVE_INFINITY)) {
      const bytes = await this.inner.read(first * SECTOR, (last - first + 1) * SECTOR);
      for (let s = first; s <= last; s++) {
        const at = (s - first) * SECTOR;
        this.#durable.get(s)?.bytes.set(bytes.subarray(at, at + SECTOR));
      }
    }
  }

  /** Folds the writes a completed flush covered into the durable content, in `seq` order. */
  #makeDurable(covered: PendingWrite[]): void {
    for (const write of covered) {
      // A later-called flush that completed first has already folded it.
      if (!this.#pending.has(write.seq)) continue;
      for (let s = write.firstSector; s <= write.lastSector; s++) {
        const entry = this.#durable.get(s);
        if (entry !== undefined) overlay(entry.bytes, s * SECTOR, write);
      }
      this.#unregister(write);
    }
  }

  async #settleAndRewrite(seed: number): Promise<BlockDevice> {
    while (this.#inFlight.size > 0) await Promise.allSettled([...this.#inFlight]);
    const image = new Map<number, Uint8Array>();
    for (const [s, entry] of this.#durable) image.set(s, entry.bytes.slice());
    const random = mulberry32(seed);
    // Decisions are drawn in `seq` order, so the same seed over the same
    // history picks the same outcome for every write.
    for (const write of this.#pending.values()) {
      for (const s of landingSectors(write, random)) {
        const bytes = image.get(s);
        if (bytes !== undefined) overlay(bytes, s * SECTOR, write);
      }
    }
    this.#pending.clear();
    this.#durable.clear();
    try {
      const sectors = [...image.keys()].sort((a, b) => a - b);
      for (const [first, last] of runs(sectors, MAX_REWRITE_SECTORS)) {
        const buffer = new Uint8Array((last - first + 1) * SECTOR);
        for (let s = first; s <= last; s++) buffer.set(image.get(s)!, (s - first) * SECTOR);
        await this.inner.write(first * SECTOR, buffer);
      }
      await this.inner.flush();
    } catch (err) {
      throw wrapIO('crash image rewrite', err);
    }
    return this.inner;
  }
}

/**
 * Which sectors of `write` land: present (all), absent (none), or torn (each
 * on its own, never all or none, so a torn write is visibly torn). A write
 * within one sector cannot tear.
 */
function landingSectors(write: PendingWrite, random: () => number): number[] {
  const all: number[] = [];
  for (let s = write.firstSector; s <= write.lastSector; s++) all.push(s);
  const r = random();
  if (all.length === 1) return r < 0.5 ? all : [];
  if (r < 1 / 3) return all;
  if (r < 2 / 3) return [];
  const lands = all.map(() => random() < 0.5);
  if (lands.every((x) => x === lands[0])) {
    const flip = Math.floor(random() * lands.length);
    lands[flip] = !lands[flip];
  }
  return all.filter((_, i) => lands[i]);
}

/** Copies the part of `write` inside `[base, base + target.length)` into `target`. */
function overlay(target: Uint8Array, base: number, write: PendingWrite): void {
  const start = Math.max(write.offset, base);
  const end = Math.min(write.offset + write.data.length, base + target.length);
  if (start >= end) return;
  target.set(write.data.subarray(start - write.offset, end - write.offset), start - base);
}

/** Groups ascending sector indexes into contiguous `[first, last]` runs of at most `max` sectors. */
function runs(sectors: number[], max: number): [number, number][] {
  const out: [number, number][] = [];
  for (const s of sectors) {
    const run = out[out.length - 1];
    if (run !== undefined && run[1] === s - 1 && s - run[0] < max) run[1] = s;
    else out.push([s, s]);
  }
  return out;
}

/** mulberry32: a tiny, well-mixed 32-bit PRNG; plenty for choosing crash outcomes reproducibly. */
function mulberry32(seed: number): () => number {
  let a = (seed ^ Math.floor(seed / 0x1_0000_0000)) >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 0x1_0000_0000;
  };
}

function zeroStats(): { -readonly [K in keyof FaultyDeviceStats]: number } {
  return { reads: 0, writes: 0, flushes: 0, bytesRead: 0, bytesWritten: 0 };
}

function powerCut(): BlockDeviceError {
  return new BlockDeviceError('EIO', 'FaultyDevice: power cut');
}

function injected(op: FaultyOperation): BlockDeviceError {
  return new BlockDeviceError(
    'EIO',
    `FaultyDevice: injected failure of ${op.kind} #${op.index} (offset ${op.offset}, length ${op.length})`,
  );
}

function looksLikeBlockDevice(value: unknown): value is BlockDevice {
  if (typeof value !== 'object' || value === null) return false;
  const d = value as Record<string, unknown>;
  return (
    typeof d.size === 'number' &&
    typeof d.blockSize === 'number' &&
    typeof d.read === 'function' &&
    typeof d.write === 'function' &&
    typeof d.flush === 'function' &&
    typeof d.close === 'function'
  );
}
