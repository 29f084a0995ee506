import type { ReadableStream } from 'node:stream/web';
import { FRAME_TAIL, RECORD_HEAD, ZERO_FRAME_MAGIC } from '../../src/stream/stream-frames.js';
import { MANIFEST_CRC, MANIFEST_ENTRY, MANIFEST_HEAD } from '../../src/stream/stream-manifest.js';

/** Reads a whole stream into one buffer. */
export async function collect(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of stream) chunks.push(chunk);
  return Buffer.concat(chunks);
}

/**
 * Yields `bytes` in chunks whose sizes cycle through `sizes` (each at least
 * 1), so a test decides where every chunk boundary falls.
 */
export async function* chunked(
  bytes: Uint8Array,
  sizes: readonly number[] = [bytes.length],
): AsyncGenerator<Uint8Array> {
  let at = 0;
  for (let i = 0; at < bytes.length; i++) {
    const size = Math.max(1, sizes[i % sizes.length]!);
    yield bytes.subarray(at, at + size);
    at += size;
  }
}

/** Where one frame sits in a stream, and what it carries. */
export interface FrameSpan {
  /** First byte of its head. */
  start: number;
  /** One past the last byte of its tail. */
  end: number;
  /** Device offset its data is for. */
  offset: number;
  /** Its data, a view of the stream bytes; for a zero frame, zeros of its length. */
  data: Uint8Array;
  /** A zero frame: a head alone, no data or tail in the stream. */
  zero: boolean;
}

/** A stream cut into its structures, as a test needs to damage one precisely. */
export interface StreamLayout {
  /** One past the header's last byte. */
  headerEnd: number;
  /** One past the manifest's last byte (= headerEnd for a full stream). */
  manifestEnd: number;
  frames: FrameSpan[];
  /** First byte of the trailer (it runs to the end). */
  trailerStart: number;
}

/**
 * Walks an intact stream by the lengths its structures state (no checks:
 * the tests damage a stream with it, `applyStream` is what checks).
 */
export function layoutOf(bytes: Uint8Array): StreamLayout {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerEnd = view.getUint16(10, true);
  const incremental = (view.getUint32(12, true) & 1) === 1;
  const manifestEnd = incremental
    ? headerEnd +
      MANIFEST_HEAD +
      view.getUint32(headerEnd + 4, true) * MANIFEST_ENTRY +
      MANIFEST_CRC
    : headerEnd;
  const frames: FrameSpan[] = [];
  let at = manifestEnd;
  while (at + RECORD_HEAD < bytes.length) {
    const offset = view.getUint32(at + 8, true) + view.getUint32(at + 12, true) * 2 ** 32;
    const length = view.getUint32(at + 16, true);
    const dataStart = at + RECORD_HEAD;
    if (view.getUint32(at, true) === ZERO_FRAME_MAGIC) {
      frames.push({ start: at, end: dataStart, offset, data: new Uint8Array(length), zero: true });
      at = dataStart;
      continue;
    }
    const end = dataStart + length + FRAME_TAIL;
    const data = bytes.subarray(dataStart, dataStart + length);
    frames.push({ start: at, end, offset, data, zero: false });
    at = end;
  }
  return { headerEnd, manifestEnd, frames, trailerStart: at };
}

/** `base` with the data of `frames` written over it: what applying them must leave. */
export function withFrames(base: Uint8Array, frames: readonly FrameSpan[]): Uint8Array {
  const out = base.slice();
  for (const frame of frames) out.set(frame.data, frame.offset);
  return out;
}
