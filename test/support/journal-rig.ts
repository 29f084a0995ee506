import { JournalDevice, type JournalDeviceOptions, MemoryDevice } from '../../src/index.js';
import { FaultyDevice, type FaultyDeviceOptions, PowerSwitch } from '../../src/testing/index.js';

/** Where the journal's ring starts on its store (after two 4 KiB superblock slots). */
export const RING_START = 8192;

export interface JournalRigOptions extends JournalDeviceOptions {
  /** Production block size. @default 512 */
  blockSize?: number;
  /** Production blocks. @default 32 */
  blocks?: number;
  /** Bytes of journal ring. @default 64 KiB */
  ringBytes?: number;
  /** Delays some device operations (FaultyDevice `latency`), so background work interleaves. */
  latency?: FaultyDeviceOptions['latency'];
}

/**
 * A JournalDevice over two memory "disks", each behind a FaultyDevice, both
 * on one power switch: counts every I/O, and can lose power at any point.
 */
export class JournalRig {
  readonly productionDisk: MemoryDevice;
  readonly journalDisk: MemoryDevice;
  readonly options: JournalRigOptions;
  power = new PowerSwitch();
  production!: FaultyDevice;
  journal!: FaultyDevice;
  device!: JournalDevice;

  private constructor(
    productionDisk: MemoryDevice,
    journalDisk: MemoryDevice,
    options: JournalRigOptions,
  ) {
    this.productionDisk = productionDisk;
    this.journalDisk = journalDisk;
    this.options = options;
  }

  static async create(options: JournalRigOptions = {}): Promise<JournalRig> {
    const blockSize = options.blockSize ?? 512;
    const rig = new JournalRig(
      await MemoryDevice.create({ size: (options.blocks ?? 32) * blockSize, blockSize }),
      await MemoryDevice.create({
        size: RING_START + (options.ringBytes ?? 64 * 1024),
        blockSize: 512,
      }),
      options,
    );
    rig.attach();
    rig.device = await JournalDevice.create(rig.production, rig.journal, rig.deviceOptions());
    return rig;
  }

  get size(): number {
    return this.productionDisk.size;
  }

  deviceOptions(): JournalDeviceOptions {
    const { checkpointAt, onProgress } = this.options;
    return { checkpointAt, onProgress };
  }

  /** New handles on both disks behind fresh FaultyDevices and a fresh power switch. */
  attach(): void {
    this.power = new PowerSwitch();
    const { latency } = this.options;
    this.production = new FaultyDevice(this.productionDisk.reopen(), {
      power: this.power,
      latency,
    });
    this.journal = new FaultyDevice(this.journalDisk.reopen(), { power: this.power, latency });
  }

  /** Closes the device and opens it again. */
  async reopen(): Promise<JournalDevice> {
    await this.device.close();
    return this.open();
  }

  /** Opens the device over fresh handles on the disks as they are. */
  async open(): Promise<JournalDevice> {
    this.attach();
    this.device = await JournalDevice.open(this.production, this.journal, this.deviceOptions());
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

  /** A power cut: each disk keeps its durable writes and some of the rest (by `seed`); then open. */
  async crashAndOpen(seed: number): Promise<JournalDevice> {
    this.power.cut();
    await this.production.crash(seed);
    await this.journal.crash(seed ^ 0x5bd1e995);
    return this.open();
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
