import { BlockDeviceError } from '../errors.js';
import type { ChunkReader } from './stream-chunks.js';
import { decodeHeader, HEADER_PREFIX, headerLength, type StreamHeader } from './stream-format.js';
import {
  decodeManifest,
  decodeManifestHead,
  MANIFEST_CRC,
  MANIFEST_ENTRY,
  MANIFEST_HEAD,
  type Manifest,
} from './stream-manifest.js';

/*
 * Reading a stream's structures out of its bytes for `applyStream`: exact
 * sizes however the input is chunked, a short read being truncation
 * (`ECORRUPT`), each structure decoded and checked before it is returned.
 */

/**
 * The next `length` bytes of the stream, assembled into `scratch` if they
 * span chunks (see ChunkReader.read).
 * @throws `ECORRUPT` naming `what` if the stream ends first.
 */
export async function readExact(
  reader: ChunkReader,
  length: number,
  what: string,
  scratch?: Uint8Array,
): Promise<Uint8Array> {
  const bytes = await reader.read(length, scratch);
  if (bytes.length < length) {
    throw new BlockDeviceError(
      'ECORRUPT',
      `stream ends at byte ${reader.position}, in ${what} (truncated)`,
    );
  }
  return bytes;
}

/** Reads and checks the header. @throws `ECORRUPT`, `EINVAL` (see decodeHeader). */
export async function readHeader(reader: ChunkReader): Promise<StreamHeader> {
  const prefix = await reader.read(HEADER_PREFIX);
  if (prefix.length === 0) throw new BlockDeviceError('ECORRUPT', 'stream is empty');
  if (prefix.length < HEADER_PREFIX) {
    throw new BlockDeviceError('ECORRUPT', `stream ends at byte ${prefix.length}, in its header`);
  }
  const length = headerLength(prefix);
  // Copied: the prefix may be a view of a chunk the next read replaces.
  const bytes = new Uint8Array(length);
  bytes.set(prefix);
  bytes.set(await readExact(reader, length - HEADER_PREFIX, 'the header'), HEADER_PREFIX);
  return decodeHeader(bytes);
}

/** Reads and checks an incremental stream's manifest. @throws `ECORRUPT`, `EINVAL` (see decodeManifest). */
export async function readManifest(
  reader: ChunkReader,
  header: StreamHeader,
  streamId: Uint8Array,
): Promise<Manifest> {
  const head = decodeManifestHead(
    await readExact(reader, MANIFEST_HEAD, 'the manifest head'),
    header,
    streamId,
  );
  const entries = (await readExact(reader, head.count * MANIFEST_ENTRY, 'the manifest')).slice();
  const crc = await readExact(reader, MANIFEST_CRC, 'the manifest CRC');
  return decodeManifest(entries, crc, head, header);
}
