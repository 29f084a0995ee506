import { randomInt } from 'node:crypto';
import type { BlockDevice } from '../device.js';
import { BlockDeviceError } from '../errors.js';

/*
 * What a store remembers of the device it was created over (docs/ARCHITECTURE.md,
 * "Stack identity"): the kind of layer that device was, and that layer's own
 * id, a random number its store got at `create`. A JournalDevice created over
 * a CowSnapshotDevice and opened later over the raw volume file (the COW layer
 * forgotten) would replay onto the wrong device and its snapshots would read
 * wrong data; with the identity on record, `open` refuses it.
 */

/** Internal method of a blocksnap layer: its {@link StackIdentity}. */
export const STACK_IDENTITY: unique symbol = Symbol('blocksnap.stackIdentity');

/** What kind of layer a device is: 0 for one that is not a blocksnap layer. */
export const LayerKind = {
  plain: 0,
  cow: 1,
  selective: 2,
  journal: 3,
} as const;

const KIND_NAMES = [
  'a device that is not a blocksnap layer',
  'a CowSnapshotDevice',
  'a SelectiveSnapshotDevice',
  'a JournalDevice',
];

/** A device's kind of layer and, for a layer, the id its store was created with (0: none on record). */
export interface StackIdentity {
  kind: number;
  id: number;
}

/** A fresh id for a store being created (never 0, which means "none on record"). */
export function newLayerId(): number {
  return randomInt(1, 0xffffffff);
}

/** `device`'s identity: a blocksnap layer's own, else a plain device's. */
export function stackIdentityOf(device: BlockDevice): StackIdentity {
  const own = (device as { [STACK_IDENTITY]?: () => StackIdentity })[STACK_IDENTITY];
  return typeof own === 'function' ? own.call(device) : { kind: LayerKind.plain, id: 0 };
}

/** How a message names identity `identity`. */
export function describeIdentity(identity: StackIdentity): string {
  const kind = KIND_NAMES[identity.kind] ?? `an unknown kind of layer (${identity.kind})`;
  return identity.id === 0 ? kind : `${kind} (id ${identity.id.toString(16).padStart(8, '0')})`;
}

/**
 * Checks that `device` is the device a store recorded (`recorded`; undefined
 * for a store made before identities were kept, which is not checked). Ids
 * are compared where both are on record.
 * @throws `EINVAL` naming what the store expects and what it got.
 */
export function checkStackIdentity(
  recorded: StackIdentity | undefined,
  device: BlockDevice,
  what: string,
): void {
  if (recorded === undefined) return;
  const actual = stackIdentityOf(device);
  const sameId = recorded.id === 0 || actual.id === 0 || recorded.id === actual.id;
  if (recorded.kind === actual.kind && sameId) return;
  throw new BlockDeviceError(
    'EINVAL',
    `${what} was created over ${describeIdentity(recorded)}, but was given ${describeIdentity(actual)}: open the stack as it was created, layer by layer (docs/ARCHITECTURE.md, "Stack identity")`,
  );
}

/** What a store recorded of the device it was created over. */
export interface RecordedBelow {
  size: number;
  blockSize: number;
  /** Undefined for a store made before identities were kept. */
  identity: StackIdentity | undefined;
}

/**
 * Checks that `device` is the device a store was created over: its geometry,
 * then (see {@link checkStackIdentity}) its kind of layer and id.
 * @param what - the store, for the message (`'the journal'`).
 * @param role - what the store calls that device (`'production device'`).
 * @throws `EINVAL` naming what the store expects and what it got.
 */
export function checkStackedOver(
  recorded: RecordedBelow,
  device: BlockDevice,
  what: string,
  role: string,
): void {
  if (recorded.size !== device.size || recorded.blockSize !== device.blockSize) {
    throw new BlockDeviceError(
      'EINVAL',
      `${what} belongs to a ${role} of ${recorded.size} bytes in ${recorded.blockSize}-byte blocks, ` +
        `not ${device.size} in ${device.blockSize}`,
    );
  }
  checkStackIdentity(recorded.identity, device, what);
}
