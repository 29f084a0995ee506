import { WRITE_OWNED } from '../../src/base/owned-io.js';
import {
  type BlockDevice,
  CowSnapshotDevice,
  JournalDevice,
  type JournalDeviceOptions,
  MemoryDevice,
  type Snapshot,
} from '../../src/index.js';
import { FaultyDevice, type FaultyDeviceOptions, PowerSwitch } from '../../src/testing/index.js';
import { PassThroughDevice } from './pass-through-device.js';

/** Where the journal's ring starts on its store (after two 4 KiB superblock slots). */
export const RING_START = 8192;

/** Catalog bytes the journal reserves per snapshot (journal-format's CATALOG_ENTRY_MAX). */
const CATALOG_ENTRY_MAX = 600;

/** Bytes of the two snapshot catalog slots a journal for `maxSnapshots` reserves after its ring. */
export function catalogBytes(maxSnapshots: number): number {
  return 2 * Math.ceil((maxSnapshots * CATALOG_ENTRY_MAX) / 512) * 512;
}

export interface JournalRigOptions extends JournalDeviceOptions {
  /** Production block size. @default 512 */
  blockSize?: number;
  /** Production blocks. @default 32 */
  blocks?: number;
  /** Bytes of journal ring. @default 64 KiB */
  ringBytes?: number;
  /** Delays some device operations (FaultyDevice `latency`), so background work interleaves. */
  latency?: FaultyDeviceOptions['latency'];
  /** Fails chosen operations of the journal store (its FaultyDevice `failures`), on every attach. */
  journalFailures?: FaultyDeviceOptions['failures'];
  /**
   * Production is a CowSnapshotDevice over the production disk (its origin)
   * and a COW store disk, both behind FaultyDevices on the journal's power
   * switch: journal snapshots materialize into it. @default false
   */
  cow?: boolean;
  /**
   * The journal store takes frames in pieces (WRITE_OWNED, as a FileDevice
   * does): the journal then writes a frame as its header and the records'
   * own buffers, not gathered into one. Faults and power cuts apply as to
   * any write. @default false
   */
  ownedWrites?: boolean;
  /** Bytes of the COW store disk (with `cow`). @default 1 MiB */
  cowStoreBytes?: number;
  /** The CowSnapshotDevice's own `maxSnapshots` (with `cow`). @default 2 × the journal's */
  cowMaxSnapshots?: number;
}

/**
 * A JournalDevice over memory "disks", each behind a FaultyDevice, all on one
 * power switch: counts every I/O, and can lose power at any point. Production
 * is the production disk itself, or (with `cow`) a CowSnapshotDevice over it
 * and a COW store disk, so journal snapshots can materialize.
 */
export class JournalRig {
  readonly productionDisk: MemoryDevice;
  readonly journalDisk: MemoryDevice;
  /** The COW store disk (with `cow`). */
  readonly storeDisk: MemoryDevice | undefined;
  readonly options: JournalRigOptions;
  power = new PowerSwitch();
  /** The production disk's FaultyDevice (with `cow`: the CowSnapshotDevice's origin). */
  production!: FaultyDevice;
  /** The COW store disk's FaultyDevice (with `cow`). */
  store: FaultyDevice | undefined;
  /** The production CowSnapshotDevice (with `cow`). */
  cow: CowSnapshotDevice | undefined;
  journal!: FaultyDevice;
  device!: JournalDevice;
  /** Snapshot handles by id, for tests that keep them; forgotten when the device reopens. */
  readonly handles = new Map<string, Snapshot>();

  private constructor(
    productionDisk: MemoryDevice,
    journalDisk: MemoryDevice,
    storeDisk: MemoryDevice | undefined,
    options: JournalRigOptions,
  ) {
    this.productionDisk = productionDisk;
    this.journalDisk = journalDisk;
    this.storeDisk = storeDisk;
    this.options = options;
  }

  static async create(options: JournalRigOptions = {}): Promise<JournalRig> {
    const blockSize = options.blockSize ?? 512;
    // The catalog follows the ring; only a snapshot-capable production gets one.
    const catalog = options.cow ? catalogBytes(options.maxSnapshots ?? 64) : 0;
    const rig = new JournalRig(
      await MemoryDevice.create({ size: (options.blocks ?? 32) * blockSize, blockSize }),
      await MemoryDevice.create({
        size: RING_START + (options.ringBytes ?? 64 * 1024) + catalog,
        blockSize: 512,
      }),
      options.cow
        ? await MemoryDevice.create({ size: options.cowStoreBytes ?? 1024 * 1024, blockSize })
        : undefined,
      options,
    );
    rig.attach();
    if (rig.store !== undefined) {
      rig.cow = await CowSnapshotDevice.create(rig.production, rig.store, {
        maxSnapshots: options.cowMaxSnapshots ?? 2 * (options.maxSnapshots ?? 64),
      });
    }
    rig.device = await JournalDevice.create(
      rig.cow ?? rig.production,
      rig.journalStore(),
      rig.deviceOptions(),
    );
    return rig;
  }

  get size(): number {
    return this.productionDisk.size;
  }

  /** What the JournalDevice gets as its store: the journal's FaultyDevice, taking pieces if asked. */
  journalStore(): BlockDevice {
    return this.options.ownedWrites === true ? new OwnedWrites(this.journal) : this.journal;
  }

  deviceOptions(): JournalDeviceOptions {
    const { checkpointAt, onProgress, maxSnapshots } = this.options;
    return { checkpointAt, onProgress, maxSnapshots };
  }

  /** New handles on every disk behind fresh FaultyDevices and a fresh power switch. */
  attach(): void {
    this.power = new PowerSwitch();
    const { latency } = this.options;
    this.production = new FaultyDevice(this.productionDisk.reopen(), {
      power: this.power,
      latency,
    });
    this.store =
      this.storeDisk === undefined
        ? undefined
        : new FaultyDevice(this.storeDisk.reopen(), { power: this.power, latency });
    this.journal = new FaultyDevice(this.journalDisk.reopen(), {
      power: this.power,
      latency,
      failures: this.options.journalFailures,
    });
  }

  /** A handle on snapshot `id`: the one kept for it, or a new one (kept from then on). */
  async handle(id: string): Promise<Snapshot> {
    let handle = this.handles.get(id);
    if (handle === undefined) {
      handle = await this.device.openSnapshot(id);
      this.handles.set(id, handle);
    }
    return handle;
  }

  /** Closes the device and opens it again. */
  async reopen(): Promise<JournalDevice> {
    await this.device.close();
    return this.open();
  }

  /** Opens the device (and the COW device under it) over fresh handles on the disks as they are. */
  async open(): Promise<JournalDevice> {
    this.attach();
    return this.#openAttached();
  }

  async #openAttached(): Promise<JournalDevice> {
    this.handles.clear();
    this.cow = undefined;
    if (this.store !== undefined)
      this.cow = await CowSnapshotDevice.open(this.production, this.store);
    this.device = await JournalDevice.open(
      this.cow ?? this.production,
      this.journalStore(),
      this.deviceOptions(),
    );
    return this.device;
  }

  /**
   * The process dies: the power switch goes off, so the old device can do
   * nothing more, but every write that completed stays on the disks (as if
   * the OS survived). Nothing is reopened.
   */
  abandon(): void {
    this.power.cut();
  }

  /**
   * A power cut: each disk keeps its durable writes and some of the rest (by
   * `seed`); then open. With `openCutAfter`, the power fails again that many
   * device operations into the recovering open (if it gets that far): the
   * disks are crashed once more and opened again.
   */
  async crashAndOpen(seed: number, openCutAfter?: number): Promise<JournalDevice> {
    await this.#crashDisks(seed);
    if (openCutAfter === undefined) return this.open();
    this.attach();
    this.power.cutAfter(openCutAfter);
    try {
      await this.#openAttached();
      // It got through: disarm the switch.
      this.power.cutAfter(Number.MAX_SAFE_INTEGER);
      return this.device;
    } catch (err) {
      if (this.power.isOn) throw err;
    }
    this.recoveryCuts++;
    await this.#crashDisks(seed + 1);
    return this.open();
  }

  /** Power cuts during a recovering open (`crashAndOpen`'s `openCutAfter`). */
  recoveryCuts = 0;

  async #crashDisks(seed: number): Promise<void> {
    this.power.cut();
    await this.production.crash(seed);
    await this.store?.crash(seed ^ 0x2545f491);
    await this.journal.crash(seed ^ 0x5bd1e995);
  }

  /** Store offsets on the journal disk where a 512-byte run of `value` starts. */
  async find(value: number): Promise<number[]> {
    const all = Buffer.from(await this.journalDisk.reopen().read(0, this.journalDisk.size));
    const run = Buffer.alloc(512, value);
    const out: number[] = [];
    for (let at = all.indexOf(run); at >= 0; at = all.indexOf(run, at + 512)) out.push(at);
    return out;
  }

  /** Flips one byte of the journal disk. */
  async corrupt(offset: number): Promise<void> {
    const disk = this.journalDisk.reopen();
    const byte = await disk.read(offset, 1);
    await disk.write(offset, Uint8Array.of(byte[0]! ^ 0xff));
  }
}

/** Lets every setImmediate queued so far run (e.g. the journal's idle marker after a flush). */
export async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** `length` bytes of `value`. */
export function fill(length: number, value: number): Uint8Array {
  return new Uint8Array(length).fill(value);
}

/**
 * Gives a device WRITE_OWNED as a FileDevice has it: the pieces written back
 * to back. Here they go down as one `write` of their concatenation, so a
 * FaultyDevice below tears or drops the whole of it as it would a frame
 * written in one piece; what is exercised is the layer above building its
 * writes from pieces.
 */
class OwnedWrites extends PassThroughDevice {
  [WRITE_OWNED](offset: number, blocks: readonly Uint8Array[]): Promise<void> {
    let length = 0;
    for (const block of blocks) length += block.length;
    const whole = new Uint8Array(length);
    let at = 0;
    for (const block of blocks) {
      whole.set(block, at);
      at += block.length;
    }
    return this.write(offset, whole);
  }
}
