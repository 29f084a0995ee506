/**
 * The NBD wire protocol's numbers, as the NBD project's `proto.md` defines
 * them: the fixed-newstyle handshake, option haggling, and the transmission
 * phase's requests and replies (simple, structured and extended headers).
 * Shared by the server (`serveNbd`) and the client (`NbdDevice`); each side
 * keeps its own encoding and parsing, since each writes what the other reads.
 * The formats are drawn in docs/ARCHITECTURE.md ("NBD").
 *
 * Every integer on the wire is big-endian.
 */

/** `NBDMAGIC`: the first eight bytes the server sends. */
export const NBD_MAGIC = 0x4e42444d41474943n;
/** `IHAVEOPT`: after NBD_MAGIC in the handshake, and before every option the client sends. */
export const NBD_OPTS_MAGIC = 0x49484156454f5054n;
/** Before every option reply the server sends. */
export const NBD_OPTION_REPLY_MAGIC = 0x3e889045565a9n;

/** Handshake flags, 16 bits, sent by the server after IHAVEOPT. */
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;
/** Client flags, 32 bits, the client's answer to the handshake flags. */
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;

/** Option types (the client's requests during haggling). */
export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_PEEK_EXPORT = 4;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_OPT_LIST_META_CONTEXT = 9;
export const NBD_OPT_SET_META_CONTEXT = 10;
export const NBD_OPT_EXTENDED_HEADERS = 11;

/** Option reply types. Errors have bit 31 set. */
export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_META_CONTEXT = 4;
export const NBD_REP_FLAG_ERROR = 0x80000000;
export const NBD_REP_ERR_UNSUP = 0x80000001;
export const NBD_REP_ERR_POLICY = 0x80000002;
export const NBD_REP_ERR_INVALID = 0x80000003;
export const NBD_REP_ERR_PLATFORM = 0x80000004;
export const NBD_REP_ERR_TLS_REQD = 0x80000005;
export const NBD_REP_ERR_UNKNOWN = 0x80000006;
export const NBD_REP_ERR_SHUTDOWN = 0x80000007;
export const NBD_REP_ERR_BLOCK_SIZE_REQD = 0x80000008;
export const NBD_REP_ERR_TOO_BIG = 0x80000009;
export const NBD_REP_ERR_EXT_HEADER_REQD = 0x8000000a;

/** Information types in `NBD_REP_INFO` replies (and requested in INFO/GO). */
export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

/** Transmission flags, 16 bits, describing an export. */
export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_ROTATIONAL = 1 << 4;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_SEND_DF = 1 << 7;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;
export const NBD_FLAG_SEND_RESIZE = 1 << 9;
export const NBD_FLAG_SEND_CACHE = 1 << 10;
export const NBD_FLAG_SEND_FAST_ZERO = 1 << 11;
export const NBD_FLAG_BLOCK_STAT_PAYLOAD = 1 << 12;

/** Request magics: compact (28-byte header) and extended (32-byte header). */
export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_EXTENDED_REQUEST_MAGIC = 0x21e41c71;
/** Header sizes in bytes. */
export const NBD_REQUEST_SIZE = 28;
export const NBD_EXTENDED_REQUEST_SIZE = 32;

/** Commands (the request's type field). */
export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_CACHE = 5;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_BLOCK_STATUS = 7;
export const NBD_CMD_RESIZE = 8;

/** Command flags (the request's flags field). */
export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;
export const NBD_CMD_FLAG_DF = 1 << 2;
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;
export const NBD_CMD_FLAG_FAST_ZERO = 1 << 4;
export const NBD_CMD_FLAG_PAYLOAD_LEN = 1 << 5;

/** Reply magics: simple (16-byte header), structured (20), extended (32). */
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;
export const NBD_EXTENDED_REPLY_MAGIC = 0x6e8a278c;
export const NBD_SIMPLE_REPLY_SIZE = 16;
export const NBD_STRUCTURED_REPLY_SIZE = 20;
export const NBD_EXTENDED_REPLY_SIZE = 32;

/** Structured reply chunk flags and types. Error types have bit 15 set. */
export const NBD_REPLY_FLAG_DONE = 1 << 0;
export const NBD_REPLY_TYPE_NONE = 0;
export const NBD_REPLY_TYPE_OFFSET_DATA = 1;
export const NBD_REPLY_TYPE_OFFSET_HOLE = 2;
export const NBD_REPLY_TYPE_BLOCK_STATUS = 5;
export const NBD_REPLY_TYPE_BLOCK_STATUS_EXT = 6;
export const NBD_REPLY_TYPE_ERROR_BIT = 1 << 15;
export const NBD_REPLY_TYPE_ERROR = (1 << 15) + 1;
export const NBD_REPLY_TYPE_ERROR_OFFSET = (1 << 15) + 2;

/** Block status flags of the `base:allocation` context. */
export const NBD_STATE_HOLE = 1 << 0;
export const NBD_STATE_ZERO = 1 << 1;
/** The metadata context every server that offers block status knows. */
export const BASE_ALLOCATION = 'base:allocation';

/** Error values in replies: Linux errno numbers, whatever the platform. */
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

/** The NBD error values by name, for messages. */
export const NBD_ERROR_NAMES: Readonly<Record<number, string>> = {
  [NBD_EPERM]: 'EPERM',
  [NBD_EIO]: 'EIO',
  [NBD_ENOMEM]: 'ENOMEM',
  [NBD_EINVAL]: 'EINVAL',
  [NBD_ENOSPC]: 'ENOSPC',
  [NBD_EOVERFLOW]: 'EOVERFLOW',
  [NBD_ENOTSUP]: 'ENOTSUP',
  [NBD_ESHUTDOWN]: 'ESHUTDOWN',
};

/** The option names by number, for messages and events. */
export const NBD_OPTION_NAMES: Readonly<Record<number, string>> = {
  [NBD_OPT_EXPORT_NAME]: 'EXPORT_NAME',
  [NBD_OPT_ABORT]: 'ABORT',
  [NBD_OPT_LIST]: 'LIST',
  [NBD_OPT_PEEK_EXPORT]: 'PEEK_EXPORT',
  [NBD_OPT_STARTTLS]: 'STARTTLS',
  [NBD_OPT_INFO]: 'INFO',
  [NBD_OPT_GO]: 'GO',
  [NBD_OPT_STRUCTURED_REPLY]: 'STRUCTURED_REPLY',
  [NBD_OPT_LIST_META_CONTEXT]: 'LIST_META_CONTEXT',
  [NBD_OPT_SET_META_CONTEXT]: 'SET_META_CONTEXT',
  [NBD_OPT_EXTENDED_HEADERS]: 'EXTENDED_HEADERS',
};

/** The command names by number, for messages and events. */
export const NBD_COMMAND_NAMES: Readonly<Record<number, string>> = {
  [NBD_CMD_READ]: 'READ',
  [NBD_CMD_WRITE]: 'WRITE',
  [NBD_CMD_DISC]: 'DISC',
  [NBD_CMD_FLUSH]: 'FLUSH',
  [NBD_CMD_TRIM]: 'TRIM',
  [NBD_CMD_CACHE]: 'CACHE',
  [NBD_CMD_WRITE_ZEROES]: 'WRITE_ZEROES',
  [NBD_CMD_BLOCK_STATUS]: 'BLOCK_STATUS',
  [NBD_CMD_RESIZE]: 'RESIZE',
};

/** The port IANA assigned to NBD. */
export const NBD_DEFAULT_PORT = 10809;
/** Longest export name or metadata context name either side accepts (the spec's limit). */
export const NBD_MAX_STRING = 4096;
/**
 * Largest read or write payload by default: 32 MiB, as qemu-nbd and nbdkit
 * use. The server announces it in `NBD_INFO_BLOCK_SIZE`, and refuses bigger
 * requests with `EINVAL` or `EOVERFLOW` without reading their payload into
 * memory.
 */
export const NBD_DEFAULT_MAX_PAYLOAD = 32 * 1024 * 1024;

/**
 * blocksnap's own metadata context namespace: `blocksnap:changed:<snapshot
 * name or id>` reports, for a change-tracking export, which ranges changed
 * since that snapshot (like QEMU's `qemu:dirty-bitmap:<bitmap>`).
 */
export const BLOCKSNAP_CHANGED_PREFIX = 'blocksnap:changed:';
/** Block status flag of a `blocksnap:changed:` context: the range changed since the snapshot. */
export const BLOCKSNAP_STATE_CHANGED = 1 << 0;
