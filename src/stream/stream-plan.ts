import { randomUUID } from 'node:crypto';
import { checkGeometry, checkOptions } from '../base/index.js';
import type { ChangeTracking, Extent } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import {
  canFreezeSnapshots,
  preparesExport,
  SNAPSHOT_FREEZE,
  type SnapshotFreeze,
} from '../snapshot/index.js';
import type { ExportStreamOptions } from './stream.js';
import { FRAME_DATA_MAX, type HeaderFields, MAX_ID_BYTES, uuidBytes } from './stream-format.js';

/*
 * What an export sends, settled when `exportStream` is called, before the
 * stream exists: the arguments checked, the extents from the device's change
 * tables (memory lookups), a writable `to` frozen. stream-export.ts sends it.
 */

/** What an export will send, settled before the stream exists. */
export interface ExportPlan {
  /** The header but its total, which is the extents' once they are settled. */
  header: Omit<HeaderFields, 'totalBytes'>;
  streamId: Uint8Array;
  /** Ascending, disjoint, coalesced: what the frames carry. */
  extents: Extent[];
  /** Incremental streams: what the base snapshot `from` holds (ascending, coalesced). */
  baseHolds: Extent[];
  /**
   * A writable `to`, held still from the `exportStream` call until the
   * export ends: `extents` are settled again once the writes called before
   * the freeze have landed, and the frames carry that one state.
   */
  freeze: SnapshotFreeze | undefined;
  /** The device prepares its snapshots first (PREPARE_EXPORT): `extents` are settled on the first pull. */
  prepare: boolean;
}

/**
 * Checks `exportStream`'s arguments and settles what the stream carries,
 * before anything is read: the device's change tables are memory lookups.
 * @throws `EINVAL`, `ENOENT`, `ECLOSED`.
 */
export function planExport(device: ChangeTracking, options: ExportStreamOptions): ExportPlan {
  const methods = ['changedExtents', 'snapshotExtents', 'openSnapshot'] as const;
  if (
    typeof device !== 'object' ||
    device === null ||
    methods.some((m) => typeof device[m] !== 'function')
  ) {
    throw new BlockDeviceError(
      'EINVAL',
      'exportStream: device must be change-tracking (changedExtents, snapshotExtents, openSnapshot)',
    );
  }
  checkGeometry('exportStream: device', device.size, device.blockSize);
  const types = { to: 'string', from: 'string', signal: 'signal', onProgress: 'function' } as const;
  const { to, from } = checkOptions(options, types, 'exportStream');
  checkSnapshotId('to', to);
  if (from !== undefined) checkSnapshotId('from', from);
  // Memory lookups, which throw ENOENT for an unknown id now. A device that
  // prepares its snapshots first says what to send on the first pull.
  const prepare = preparesExport(device);
  if (prepare) {
    device.snapshotExtents(to);
    if (from !== undefined) device.snapshotExtents(from);
  }
  const extents = prepare ? [] : extentsToSend(device, from, to);
  const streamId = randomUUID();
  return {
    header: {
      incremental: from !== undefined,
      deviceSize: device.size,
      blockSize: device.blockSize,
      maxFrameData: FRAME_DATA_MAX,
      streamId,
      from,
      to,
    },
    streamId: uuidBytes(streamId),
    extents,
    baseHolds:
      from === undefined ? [] : coalesce(device.snapshotExtents(from), device, 'snapshotExtents'),
    prepare,
    // Last: nothing above may throw once the snapshot is held.
    freeze: freezeIfWritable(device, to),
  };
}

/** What the frames carry: all `to` holds, or what changed since `from`, from the change tables. */
export function extentsToSend(
  device: ChangeTracking,
  from: string | undefined,
  to: string,
): Extent[] {
  return from === undefined
    ? coalesce(device.snapshotExtents(to), device, 'snapshotExtents')
    : coalesce(device.changedExtents(from, to), device, 'changedExtents');
}

/**
 * Holds `to` still if it is writable, so the stream carries one state of it:
 * writes to it called after this fail `EBUSY` until the export ends. A
 * device that cannot hold a snapshot still cannot export a writable one:
 * a write during the export would land in some frames and not in others.
 */
function freezeIfWritable(device: ChangeTracking, to: string): SnapshotFreeze | undefined {
  const info = device.listSnapshots().find((s) => s.id === to);
  if (info === undefined || !info.writable) return undefined;
  if (!canFreezeSnapshots(device)) {
    throw new BlockDeviceError(
      'EINVAL',
      `exportStream: snapshot ${to} is writable and this device cannot hold a snapshot's writes during an export; export a read-only snapshot`,
    );
  }
  return device[SNAPSHOT_FREEZE](to);
}

function checkSnapshotId(what: string, id: unknown): void {
  if (typeof id !== 'string' || id.length === 0) {
    throw new BlockDeviceError('EINVAL', `exportStream: ${what} must be a snapshot id, got ${id}`);
  }
  if (Buffer.byteLength(id) > MAX_ID_BYTES) {
    throw new BlockDeviceError(
      'EINVAL',
      `exportStream: ${what} id is longer than ${MAX_ID_BYTES} UTF-8 bytes`,
    );
  }
}

/**
 * Checks the extents a device reported — whole blocks, inside it, ascending
 * and disjoint — and merges adjacent ones, so that the trailer's extent
 * count is what a reader can recount from the frames.
 */
function coalesce(extents: readonly Extent[], device: ChangeTracking, source: string): Extent[] {
  const bs = device.blockSize;
  const out: { offset: number; length: number }[] = [];
  let end = 0;
  for (const extent of extents) {
    const { offset, length } = extent ?? {};
    if (
      !Number.isSafeInteger(offset) ||
      !Number.isSafeInteger(length) ||
      offset % bs !== 0 ||
      length % bs !== 0 ||
      length <= 0 ||
      offset < end ||
      offset + length > device.size
    ) {
      throw new BlockDeviceError(
        'EINVAL',
        `exportStream: device.${source} returned [${offset}, +${length}), not whole ${bs}-byte blocks after ${end} inside ${device.size}`,
      );
    }
    const last = out[out.length - 1];
    if (last !== undefined && last.offset + last.length === offset) last.length += length;
    else out.push({ offset, length });
    end = offset + length;
  }
  return out;
}
