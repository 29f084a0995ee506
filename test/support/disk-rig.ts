import type { MemoryDevice, Snapshot } from '../../src/index.js';
import {
  FaultyDevice,
  type FaultyDeviceOptions,
  type FaultyOperation,
  PowerSwitch,
} from '../../src/testing/index.js';

/**
 * The salt of a layer's store disk (COW, selective, journal): with salted
 * crash seeds, the disk a layer keeps its own data on tears otherwise than
 * the device it sits over.
 */
export const STORE_SALT = 0x5bd1e995;
/** The salt of the COW store under a journal (journal over COW has two stores). */
export const LOWER_STORE_SALT = 0x2545f491;

/** One memory "disk" of a rig, by the name its tests use for it. */
export interface RigDisk<Name extends string> {
  name: Name;
  disk: MemoryDevice;
  /** With salted crash seeds (see {@link DiskRigOptions.crashSeeds}), xored into this disk's. @default 0 */
  crashSalt?: number;
  /** Operations of this disk to fail (FaultyDevice `failures`), on every attach. */
  failures?: FaultyDeviceOptions['failures'];
}

export interface DiskRigOptions {
  /**
   * How each disk's crash seed is made from the seed a crash is given:
   * `'salted'` is `seed ^ crashSalt`; `'consecutive'` is `seed + i` for the
   * i-th disk. Seeded tests (and the regression cases taken from their
   * failing seeds) were written against one or the other; switching would
   * change the crash images they reproduce. @default 'salted'
   */
  crashSeeds?: 'salted' | 'consecutive';
  /** Delays some operations of every disk (FaultyDevice `latency`), so background work interleaves. */
  latency?: FaultyDeviceOptions['latency'];
  /**
   * Fails chosen operations of any disk (FaultyDevice `failures`, told which
   * disk), on every attach; consulted after a disk's own `failures`.
   * @default no injected failures
   */
  failures?: (disk: string, op: FaultyOperation) => boolean;
}

/**
 * Memory disks behind FaultyDevices on one power switch, and the device under
 * test over them: the lifecycle every property and crash test shares. A
 * subclass says how to create, open and close its device; this class
 * attaches the disks, reopens, and crashes: one power cut for all the disks
 * at once, each keeping what a disk may keep (its durable writes, and by seed
 * some of the rest), then fresh handles on what they hold.
 *
 * A disk is a MemoryDevice that outlives every FaultyDevice put over it
 * (`reopen()` hands out a new handle on the same memory), so a test can read
 * or damage it directly between two lives of the device.
 */
export abstract class DiskRig<Name extends string, D> {
  /** The switch the current handles share; a new one (on) with every {@link attach}. */
  power = new PowerSwitch();
  readonly #disks: readonly RigDisk<Name>[];
  readonly #options: DiskRigOptions;
  #faulty = new Map<Name, FaultyDevice>();
  #device: D | undefined;

  /** Does not attach: a subclass's fields are set only after this returns, and its {@link attached} may use them. */
  protected constructor(disks: readonly RigDisk<Name>[], options: DiskRigOptions = {}) {
    this.#disks = disks;
    this.#options = options;
  }

  /** Formats the disks for a new device under test (over the attached handles). */
  protected abstract createDevice(): Promise<D>;
  /** Opens the device under test from what the attached handles hold. */
  protected abstract openDevice(): Promise<D>;
  /** Closes the device under test (and, as a layer does, the handles under it). */
  protected abstract closeDevice(device: D): Promise<void>;
  /** Called after every {@link attach}, to build what sits over the new handles. */
  protected attached(): void {}
  /** Called with each device created or opened, to watch it or forget what belonged to the last one. */
  protected opened(_device: D): void {}

  /** The device under test; throws before one was created or opened. */
  get device(): D {
    if (this.#device === undefined) throw new Error('rig: no device was created or opened yet');
    return this.#device;
  }

  /** Whether this rig has disk `name` (the journal rig has a COW store only over COW). */
  hasDisk(name: Name): boolean {
    return this.#disks.some((d) => d.name === name);
  }

  /** The memory disk `name` (outside every FaultyDevice). */
  disk(name: Name): MemoryDevice {
    const found = this.#disks.find((d) => d.name === name);
    if (found === undefined) throw new Error(`rig: no disk ${name}`);
    return found.disk;
  }

  /** The current FaultyDevice over disk `name`. */
  faulty(name: Name): FaultyDevice {
    const found = this.#faulty.get(name);
    if (found === undefined) throw new Error(`rig: disk ${name} is not attached`);
    return found;
  }

  /** New handles on every disk, behind fresh FaultyDevices on a fresh power switch (on). */
  attach(): void {
    this.power = new PowerSwitch();
    const { latency, failures: rigFailures } = this.#options;
    this.#faulty = new Map(
      this.#disks.map((d) => {
        const own = d.failures;
        const failures =
          rigFailures === undefined
            ? own
            : (op: FaultyOperation) => own?.(op) === true || rigFailures(d.name, op);
        return [
          d.name,
          new FaultyDevice(d.disk.reopen(), { power: this.power, latency, failures }),
        ];
      }),
    );
    this.attached();
  }

  /** Attaches the disks and creates the device under test over them: what a new rig does. */
  async launch(): Promise<this> {
    this.attach();
    await this.start();
    return this;
  }

  /** Creates the device under test over the attached handles. */
  async start(): Promise<D> {
    return this.#use(await this.createDevice());
  }

  /** Opens the device under test over the attached handles (after {@link crash}, say, with a cut armed). */
  async openAttached(): Promise<D> {
    return this.#use(await this.openDevice());
  }

  /** Opens the device over fresh handles on the disks as they are. */
  async open(): Promise<D> {
    this.attach();
    return this.openAttached();
  }

  /** Closes the device and opens it again. */
  async reopen(): Promise<D> {
    await this.closeDevice(this.device);
    return this.open();
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
   * A power cut on every disk at once: each keeps its durable writes and, by
   * `seed` (made the disk's own as {@link DiskRigOptions.crashSeeds} says),
   * some of the rest, whole or torn; the disks are crashed in the order the
   * rig lists them. Then fresh handles are attached, and nothing is opened.
   */
  async crash(seed: number): Promise<void> {
    this.power.cut();
    const consecutive = this.#options.crashSeeds === 'consecutive';
    for (const [i, d] of this.#disks.entries()) {
      await this.faulty(d.name).crash(consecutive ? seed + i : seed ^ (d.crashSalt ?? 0));
    }
    this.attach();
  }

  /** {@link crash}, then open what the disks hold. */
  async crashAndReopen(seed: number): Promise<D> {
    await this.crash(seed);
    return this.openAttached();
  }

  /** Closes the device if the power is still on (after a cut there is nothing to close). */
  async dispose(): Promise<void> {
    if (this.power.isOn && this.#device !== undefined) await this.closeDevice(this.#device);
  }

  #use(device: D): D {
    this.#device = device;
    this.opened(device);
    return device;
  }
}

/** What a {@link SnapshotRig}'s device must offer. */
export interface SnapshotSource {
  openSnapshot(id: string): Promise<Snapshot>;
  close(): Promise<void>;
}

/** A {@link DiskRig} whose device takes snapshots: keeps open snapshot handles, forgotten when the device reopens. */
export abstract class SnapshotRig<Name extends string, D extends SnapshotSource> extends DiskRig<
  Name,
  D
> {
  /** Snapshot handles by id, on the current device; cleared whenever a device is created or opened. */
  readonly handles = new Map<string, Snapshot>();

  protected override closeDevice(device: D): Promise<void> {
    return device.close();
  }

  protected override opened(_device: D): void {
    this.handles.clear();
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
}
