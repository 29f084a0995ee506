import type { MessagePort } from 'node:worker_threads';
import { BlockDeviceError, type BlockDeviceErrorCode, ERROR_CODES } from '../errors.js';
import type { DeviceSpec } from './device-spec.js';

/*
 * The messages between the volume and a processor's worker
 * (docs/ARCHITECTURE.md, "VirtualVolume"). Reads, writes and flushes go
 * through the shared ring (src/volume/worker-ring.ts) when they fit; every
 * other request is posted here. Every request carries an id the reply
 * names. A message is an array: the requests the volume made since its
 * last ring entry, in call order (the replies the worker has at the end of
 * one of its turns, likewise), since a message costs more than a 4 KiB
 * I/O. The worker takes a message when it reaches the MESSAGE entry that
 * marks its place in the ring and starts each request's work synchronously,
 * in array order, so the partition sees writes and snapshots in the order
 * the volume called them. Bytes posted cross by transfer, never by copy: a
 * write's data is copied once into a buffer of its own and that buffer
 * moves; a read result (a buffer the reader owns, see src/device.ts) moves
 * back.
 */

/** Opening a partition in the worker: its specs, and at create the format options. */
export interface OpenRequest {
  readonly op: 'open';
  readonly origin: DeviceSpec;
  readonly store: DeviceSpec;
  readonly format?: { readonly maxSnapshots: number; readonly force: boolean } | undefined;
}

/** A request to a worker's partition `p`. */
export type PartitionRequest =
  | OpenRequest
  | { readonly op: 'read'; readonly offset: number; readonly length: number }
  | { readonly op: 'write'; readonly offset: number; readonly data: Uint8Array }
  | { readonly op: 'flush' }
  | { readonly op: 'snapshot'; readonly name: string }
  | { readonly op: 'deleteSnapshot'; readonly snapshot: string }
  | { readonly op: 'restore'; readonly snapshot: string }
  | {
      readonly op: 'readSnapshot';
      readonly snapshot: string;
      readonly offset: number;
      readonly length: number;
    }
  | { readonly op: 'listSnapshots' }
  | {
      readonly op: 'check';
      readonly options: { readonly verifyData?: boolean | undefined };
      /** Whether the worker sends the check's progress as {@link ProgressReply}s. */
      readonly progress: boolean;
    }
  | { readonly op: 'close' };

/**
 * How a fault test makes a worker die the way a bug would: an exception no
 * handler catches, or `process.exit` inside the worker.
 */
export type FaultRequest = { readonly op: 'fault'; readonly how: 'throw' | 'exit' };

/** One message to a worker. */
export type WorkerMessage =
  | ({ readonly id: number; readonly p: number } & PartitionRequest)
  | ({ readonly id: number } & FaultRequest)
  | {
      /** A synchronous question (see `SyncQuestion`): the answer goes to `port`, then `flag` is set. */
      readonly op: 'sync';
      readonly p: number;
      readonly question: SyncQuestion;
      readonly port: MessagePort;
      readonly flag: Int32Array;
    };

/** A question the volume must answer synchronously (ChangeTracking is synchronous). */
export type SyncQuestion = {
  readonly kind: 'changedExtents';
  readonly from: string;
  readonly to: string;
};

/** A failure as it crosses threads: the code and message of a BlockDeviceError. */
export interface ErrorReply {
  readonly code: string | undefined;
  readonly message: string;
}

/** A worker's answer to request `id`. */
export type WorkerReply =
  | { readonly id: number; readonly ok: true; readonly value: unknown }
  | { readonly id: number; readonly ok: false; readonly error: ErrorReply };

/** The failure of ring operation `ticket` (src/volume/worker-ring.ts): errors cross by message. */
export interface RingFailure {
  readonly ticket: number;
  readonly error: ErrorReply;
}

/**
 * A progress event of request `id` (a `check`), sent before its final reply:
 * replies leave the worker in the order they were made and a port keeps
 * that order, so the last event arrives before the request settles.
 */
export interface ProgressReply {
  readonly id: number;
  readonly progress: { readonly done: number; readonly total: number };
}

/** `err` as it crosses to the other thread. */
export function toErrorReply(err: unknown): ErrorReply {
  if (BlockDeviceError.is(err)) return { code: err.code, message: err.message };
  return { code: undefined, message: err instanceof Error ? err.message : String(err) };
}

/**
 * The error again on this side: a BlockDeviceError with its code (its
 * message already starts with it), or `EIO` for anything else.
 */
export function fromErrorReply(reply: ErrorReply): BlockDeviceError {
  const code = ERROR_CODES.includes(reply.code as BlockDeviceErrorCode)
    ? (reply.code as BlockDeviceErrorCode)
    : 'EIO';
  const prefix = `${code}: `;
  const message = reply.message.startsWith(prefix)
    ? reply.message.slice(prefix.length)
    : reply.message;
  return new BlockDeviceError(code, message);
}
