import type { BlockDevice, ChangeTracking, Extent } from '../device.js';
import {
  BASE_ALLOCATION,
  BLOCKSNAP_CHANGED_PREFIX,
  BLOCKSNAP_STATE_CHANGED,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_OPT_SET_META_CONTEXT,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_META_CONTEXT,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_BLOCK_STATUS_EXT,
} from './protocol.js';
import { type ExportLease, snapshotNamed } from './server-exports.js';
import type { HandshakeContext, Negotiated } from './server-handshake.js';
import type { Request } from './server-request.js';
import {
  blockStatusChunk,
  decodeName,
  optionError,
  optionReply,
  type ReplyStyle,
} from './server-wire.js';

/**
 * The metadata contexts the server offers (docs/ARCHITECTURE.md, "NBD"):
 * `base:allocation`, which reports every byte as data (the BlockDevice
 * contract carries no allocation information, so claiming holes or zeroes
 * would be a guess), and `blocksnap:changed:<snapshot>` on change-tracking
 * exports, which reports what changed since that snapshot.
 */

/** A context selected with `NBD_OPT_SET_META_CONTEXT`. */
export type MetaContext =
  | { readonly id: number; readonly name: string; readonly kind: 'allocation' }
  | {
      readonly id: number;
      readonly name: string;
      readonly kind: 'changed';
      readonly snapshotId: string;
    };

/** What the handshake keeps of metadata context negotiation. */
export interface MetaState {
  readonly style: ReplyStyle;
  /** The canonical export name the contexts were selected for. */
  metaExport: string | undefined;
  contexts: MetaContext[];
}

/** One block status descriptor: a run of bytes and its flags. */
export interface StatusExtent {
  readonly length: number;
  readonly flags: number;
}

/** Most descriptors one status chunk carries (the spec asks for at most 2^20). */
const MAX_DESCRIPTORS = 1 << 16;

function changeTracking(device: BlockDevice): (BlockDevice & ChangeTracking) | undefined {
  const d = device as Partial<ChangeTracking>;
  return typeof d.changedExtents === 'function' && typeof d.listSnapshots === 'function'
    ? (device as BlockDevice & ChangeTracking)
    : undefined;
}

/** The id of the snapshot `key` names on `device` (an id first, else the newest with that name). */
function snapshotIdOf(device: BlockDevice, key: string): string | undefined {
  const tracking = changeTracking(device);
  if (tracking === undefined) return undefined;
  return snapshotNamed(tracking.listSnapshots(), key)?.id;
}

/**
 * The context names `query` matches on `device`, or `'invalid'` for a query
 * without a namespace. For `NBD_OPT_LIST_META_CONTEXT` (`listing`) an empty
 * leaf (`base:`, `blocksnap:`) is a wildcard; for SET it selects nothing, as
 * the spec asks. Unknown namespaces and leaves match nothing.
 */
export function matchQuery(
  query: string,
  device: BlockDevice,
  listing: boolean,
): string[] | 'invalid' {
  const colon = query.indexOf(':');
  if (colon <= 0) return 'invalid';
  const namespace = query.slice(0, colon);
  if (namespace === 'base') {
    if (query === BASE_ALLOCATION || (listing && query === 'base:')) return [BASE_ALLOCATION];
    return [];
  }
  if (namespace !== 'blocksnap') return [];
  if (listing && (query === 'blocksnap:' || query === BLOCKSNAP_CHANGED_PREFIX)) {
    const tracking = changeTracking(device);
    if (tracking === undefined) return [];
    return tracking.listSnapshots().map((s) => `${BLOCKSNAP_CHANGED_PREFIX}${s.name ?? s.id}`);
  }
  if (!query.startsWith(BLOCKSNAP_CHANGED_PREFIX)) return [];
  const key = query.slice(BLOCKSNAP_CHANGED_PREFIX.length);
  return key !== '' && snapshotIdOf(device, key) !== undefined ? [query] : [];
}

/** Every context `device` offers, for a LIST with no queries. */
export function allContexts(device: BlockDevice): string[] {
  return [BASE_ALLOCATION, ...(matchQuery('blocksnap:', device, true) as string[])];
}

/** The selected context for `name` (which {@link matchQuery} accepted), numbered `id`. */
export function selectContext(
  name: string,
  id: number,
  device: BlockDevice,
): MetaContext | undefined {
  if (name === BASE_ALLOCATION) return { id, name, kind: 'allocation' };
  const snapshotId = snapshotIdOf(device, name.slice(BLOCKSNAP_CHANGED_PREFIX.length));
  return snapshotId === undefined ? undefined : { id, name, kind: 'changed', snapshotId };
}

/**
 * The status of `[offset, offset + length)` in `context`, as consecutive
 * descriptors from `offset`, each at most `maxLength` bytes (the 32-bit
 * field of compact replies), at most one with `one` (`NBD_CMD_FLAG_REQ_ONE`);
 * it may cover less than asked, as the spec allows, never more.
 * @throws `ENOENT` if the snapshot was deleted since, `ECLOSED`.
 */
export function blockStatus(
  context: MetaContext,
  device: BlockDevice,
  offset: number,
  length: number,
  maxLength: number,
  one: boolean,
): StatusExtent[] {
  const end = offset + length;
  if (context.kind === 'allocation') return [{ length: Math.min(length, maxLength), flags: 0 }];
  const changed = (device as BlockDevice & ChangeTracking).changedExtents(
    context.snapshotId,
    'live',
  );
  const out: StatusExtent[] = [];
  let at = offset;
  const push = (until: number, flags: number): boolean => {
    const run = Math.min(until - at, maxLength);
    const last = out[out.length - 1];
    if (last !== undefined && last.flags === flags && last.length + run <= maxLength) {
      out[out.length - 1] = { length: last.length + run, flags };
    } else {
      out.push({ length: run, flags });
    }
    at += run;
    // Stop at a run cut short by maxLength, at one descriptor, or at the cap.
    return at === until && !(one && out.length === 1) && out.length < MAX_DESCRIPTORS;
  };
  for (const extent of overlapping(changed, offset, end)) {
    if (extent.offset > at && !push(extent.offset, 0)) return out;
    if (!push(Math.min(extent.offset + extent.length, end), BLOCKSNAP_STATE_CHANGED)) return out;
  }
  if (at < end) push(end, 0);
  return out;
}

/** The extents of an ascending list that overlap `[start, end)`, clipped to it. */
function* overlapping(extents: readonly Extent[], start: number, end: number): Generator<Extent> {
  for (const e of extents) {
    const from = Math.max(e.offset, start);
    const to = Math.min(e.offset + e.length, end);
    if (to > from) yield { offset: from, length: to - from };
    if (e.offset >= end) return;
  }
}

/**
 * Answers `NBD_OPT_LIST_META_CONTEXT` and `NBD_OPT_SET_META_CONTEXT`: the
 * contexts the queries match on the named export, numbered from 1 for SET
 * (which replaces `state`'s selection, even when it fails, as the spec says).
 */
export async function metaContextOption(
  ctx: Pick<HandshakeContext, 'stream' | 'exports'>,
  state: MetaState,
  option: number,
  data: Buffer,
): Promise<undefined> {
  const setting = option === NBD_OPT_SET_META_CONTEXT;
  // SET replaces the selection even when it fails (the spec).
  if (setting) {
    state.contexts = [];
    state.metaExport = undefined;
  }
  const refuse = (type: number, message: string) =>
    void ctx.stream.write(optionError(option, type, message));
  if (state.style === 'simple') {
    return refuse(NBD_REP_ERR_INVALID, 'negotiate structured replies or extended headers first');
  }
  const parsed = parseMetaRequest(data);
  if (parsed === undefined)
    return refuse(NBD_REP_ERR_INVALID, 'malformed metadata context request');
  let lease: ExportLease | undefined;
  try {
    lease = await ctx.exports.acquire(parsed.name);
  } catch (err) {
    return refuse(
      NBD_REP_ERR_UNKNOWN,
      `export ${JSON.stringify(parsed.name)} failed: ${String(err)}`,
    );
  }
  if (lease === undefined)
    return refuse(NBD_REP_ERR_UNKNOWN, `no export named ${JSON.stringify(parsed.name)}`);
  try {
    const names = new Set<string>();
    if (parsed.queries.length === 0 && !setting) {
      for (const name of allContexts(lease.device)) names.add(name);
    }
    for (const query of parsed.queries) {
      const matched = matchQuery(query, lease.device, !setting);
      if (matched === 'invalid') {
        return refuse(NBD_REP_ERR_INVALID, `query ${JSON.stringify(query)} has no namespace`);
      }
      for (const name of matched) names.add(name);
    }
    const selected: MetaContext[] = [];
    const replies: Buffer[] = [];
    for (const name of names) {
      const context = setting ? selectContext(name, selected.length + 1, lease.device) : undefined;
      if (setting && context === undefined) continue;
      if (context !== undefined) selected.push(context);
      const nameBytes = Buffer.from(name, 'utf8');
      const payload = Buffer.allocUnsafe(4 + nameBytes.length);
      // LIST replies carry id 0 (reserved); SET numbers its selections from 1.
      payload.writeUInt32BE(context?.id ?? 0, 0);
      nameBytes.copy(payload, 4);
      replies.push(optionReply(option, NBD_REP_META_CONTEXT, payload));
    }
    ctx.stream.write(Buffer.concat([...replies, optionReply(option, NBD_REP_ACK)]));
    if (setting) {
      state.contexts = selected;
      state.metaExport = lease.name;
    }
    return undefined;
  } finally {
    lease.release();
  }
}

function parseMetaRequest(data: Buffer): { name: string; queries: string[] } | undefined {
  if (data.length < 8) return undefined;
  const nameLength = data.readUInt32BE(0);
  if (nameLength > data.length - 8) return undefined;
  const name = decodeName(data.subarray(4, 4 + nameLength));
  if (name === undefined) return undefined;
  let at = 4 + nameLength;
  const count = data.readUInt32BE(at);
  at += 4;
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    if (at + 4 > data.length) return undefined;
    const length = data.readUInt32BE(at);
    at += 4;
    if (length > data.length - at) return undefined;
    const query = decodeName(data.subarray(at, at + length));
    if (query === undefined) return undefined;
    queries.push(query);
    at += length;
  }
  return at === data.length ? { name, queries } : undefined;
}

/**
 * The whole reply to a BLOCK_STATUS request: one chunk per negotiated
 * context, the last one flagged done.
 * @throws as {@link blockStatus}.
 */
export function blockStatusReply(
  negotiated: Negotiated,
  replyStyle: ReplyStyle,
  request: Request,
  offset: number,
  length: number,
): Buffer {
  const { device } = negotiated.lease;
  const style = replyStyle === 'extended' ? 'extended' : 'structured';
  const type = style === 'extended' ? NBD_REPLY_TYPE_BLOCK_STATUS_EXT : NBD_REPLY_TYPE_BLOCK_STATUS;
  // Compact descriptors have 32-bit lengths: keep runs to whole blocks below 4 GiB.
  const maxLength = style === 'extended' ? Number.MAX_SAFE_INTEGER : 2 ** 32 - device.blockSize;
  const one = (request.flags & NBD_CMD_FLAG_REQ_ONE) !== 0;
  const { contexts } = negotiated;
  return Buffer.concat(
    contexts.map((context, i) =>
      blockStatusChunk(
        style,
        request,
        type,
        context.id,
        blockStatus(context, device, offset, length, maxLength, one),
        i === contexts.length - 1,
      ),
    ),
  );
}
