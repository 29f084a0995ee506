import type { BlockDevice } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import { WRITE_OWNED } from './owned-io.js';

/*
 * Ownership of a device by the layer stacked on it (docs/ARCHITECTURE.md,
 * "Layers"). A CowSnapshotDevice owns its origin and store, a JournalDevice
 * its production device and journal store, a copy job its source: a write,
 * snapshot, restore or delete that reached such a device around its owner
 * would silently break the owner (a snapshot missing journaled writes, a
 * COW snapshot reading the origin's new bytes as its own). So the owned
 * device refuses them with `EBUSY` naming the owner, and the owner reaches
 * it through a view of its own that is let through.
 *
 * How a call is let through: the owner's view sets `calling` on the claim
 * for the synchronous part of the call, and the owned device checks the
 * claim at the start of the call, before its first await — so the check
 * sees exactly who called. Nothing else runs in between.
 */

/** Internal method of a claimable device: see {@link claimDevice}. */
export const CLAIM: unique symbol = Symbol('blocksnap.claim');

/** What an owner holds on a device it owns. */
export interface DeviceClaim {
  /** The owner's name, for the `EBUSY` message. */
  readonly owner: string;
  /** Greater than zero while the owner's own call is being made. */
  calling: number;
}

/** A device that can be claimed (the library's own devices are). */
export interface Claimable {
  /**
   * Claims the device for `owner`, or `EBUSY` if another layer owns it.
   * @returns the claim, and how to release it.
   */
  [CLAIM](owner: string): { claim: DeviceClaim; release(): void };
}

/**
 * The operations an owned device refuses unless its owner makes them;
 * WRITE_OWNED is a write (a COW device's checks its owner as `write` does).
 */
const GUARDED = new Set<PropertyKey>([
  'write',
  WRITE_OWNED,
  'close',
  'snapshot',
  'restore',
  'deleteSnapshot',
]);

/** The `EBUSY` an owned device answers a call that did not come from its owner. */
export function ownedError(device: string, owner: string, operation: string): BlockDeviceError {
  return new BlockDeviceError(
    'EBUSY',
    `${device} is owned by a ${owner} stacked on it: ${operation} it through the ${owner}, not directly (docs/ARCHITECTURE.md, "Layers")`,
  );
}

/** Whether `device` can be claimed. */
function isClaimable(device: object): device is Claimable {
  return typeof (device as Partial<Claimable>)[CLAIM] === 'function';
}

/** A device an owner holds: the view it uses, and how to let go. */
export interface OwnedDevice<D extends BlockDevice> {
  /** The device as the owner must use it: its guarded calls are let through. */
  readonly view: D;
  /** Ends the claim (the owner failed to open, or is done with the device); idempotent. */
  release(): void;
}

/**
 * Claims `device` for `owner`: from now on a write, `close`, `snapshot`,
 * `restore` or `deleteSnapshot` called on it directly rejects `EBUSY`
 * naming the owner, while the same calls through the returned `view` go
 * through. Reads and flushes are never refused. A device of another
 * library cannot be guarded: it is its own view.
 * @throws `EBUSY` if another layer already owns `device`.
 */
export function claimDevice<D extends BlockDevice>(device: D, owner: string): OwnedDevice<D> {
  if (!isClaimable(device)) return { view: device, release: () => {} };
  const { claim, release } = device[CLAIM](owner);
  return { view: ownerView(device, claim, release), release };
}

/**
 * Claims every device of `devices` for `owner`, all or none: if one is
 * already owned, the ones claimed before it are released again.
 * @throws `EBUSY` as {@link claimDevice}.
 */
export function claimDevices<T extends readonly BlockDevice[]>(
  devices: T,
  owner: string,
): { views: { -readonly [K in keyof T]: T[K] }; release(): void } {
  const owned: OwnedDevice<BlockDevice>[] = [];
  try {
    for (const device of devices) owned.push(claimDevice(device, owner));
  } catch (err) {
    for (const o of owned) o.release();
    throw err;
  }
  return {
    views: owned.map((o) => o.view) as unknown as { -readonly [K in keyof T]: T[K] },
    release: () => {
      for (const o of owned) o.release();
    },
  };
}

/**
 * An object with every method and property of `device` (its class's and
 * its own, symbol-keyed fast paths included), each method bound to it, the
 * guarded ones marking the call as the owner's. Plain own properties, so a
 * call through the view costs a bound call, not a proxy trap. The owner's
 * `close` releases the claim: the device is closing, and every later call
 * fails `ECLOSED` whoever makes it.
 */
function ownerView<D extends BlockDevice>(device: D, claim: DeviceClaim, release: () => void): D {
  const view: Record<PropertyKey, unknown> = {};
  const seen = new Set<PropertyKey>(['constructor']);
  for (let proto: object | null = device; proto !== null && proto !== Object.prototype; ) {
    for (const key of Reflect.ownKeys(proto)) {
      if (seen.has(key)) continue;
      seen.add(key);
      const descriptor = Reflect.getOwnPropertyDescriptor(proto, key)!;
      const value = descriptor.get === undefined ? descriptor.value : undefined;
      if (typeof value === 'function') {
        const method = value as (...args: unknown[]) => unknown;
        view[key] =
          key === 'write'
            ? ownerWrite(device as BlockDevice, claim)
            : key === 'close' || key === Symbol.asyncDispose
              ? ownerClose(device as BlockDevice, claim, release)
              : GUARDED.has(key)
                ? asOwner(device, method, claim)
                : method.bind(device);
      } else {
        Object.defineProperty(view, key, {
          get: () => (device as unknown as Record<PropertyKey, unknown>)[key],
          enumerable: descriptor.enumerable ?? false,
        });
      }
    }
    proto = Object.getPrototypeOf(proto) as object | null;
  }
  return view as unknown as D;
}

/** `device.write` as its owner: the hot path, so no rest arguments. */
function ownerWrite(device: BlockDevice, claim: DeviceClaim): BlockDevice['write'] {
  return (offset, data) => {
    claim.calling++;
    try {
      return device.write(offset, data);
    } finally {
      claim.calling--;
    }
  };
}

/** `device.close` as its owner, which ends the claim. */
function ownerClose(
  device: BlockDevice,
  claim: DeviceClaim,
  release: () => void,
): () => Promise<void> {
  return () => {
    claim.calling++;
    try {
      return device.close();
    } finally {
      claim.calling--;
      release();
    }
  };
}

/** `method` called on `device` as its owner (see the top of this file). */
function asOwner(
  device: object,
  method: (...args: unknown[]) => unknown,
  claim: DeviceClaim,
): (...args: unknown[]) => unknown {
  return (...args) => {
    claim.calling++;
    try {
      return method.apply(device, args);
    } finally {
      claim.calling--;
    }
  };
}

/**
 * Runs `open` with `devices` claimed for `owner` and given as their views;
 * releases them again if it fails, so a failed `create` or `open` leaves
 * the devices as they were, free to open again.
 * @throws `EBUSY` as {@link claimDevice}, and what `open` throws.
 */
export async function withClaimed<T extends readonly BlockDevice[], R>(
  devices: T,
  owner: string,
  open: (views: { -readonly [K in keyof T]: T[K] }) => Promise<R>,
): Promise<R> {
  const { views, release } = claimDevices(devices, owner);
  try {
    return await open(views);
  } catch (err) {
    release();
    throw err;
  }
}
