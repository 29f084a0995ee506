import { MemoryDevice } from '../../src/index.js';
import { PassThroughDevice } from './pass-through-device.js';

/** A small LCG, so a failure replays. */
export function lcg(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    return s;
  };
}

/** A MemoryDevice of `size` bytes (512-byte blocks) filled with seeded bytes, and those bytes. */
export async function randomRegion(
  size: number,
): Promise<{ device: MemoryDevice; content: Uint8Array }> {
  const device = await MemoryDevice.create({ size, blockSize: 512 });
  const content = new Uint8Array(size);
  const next = lcg(3);
  for (let i = 0; i < size; i++) content[i] = next() & 0xff;
  await device.write(0, content);
  return { device, content };
}

/** Fails every read that reaches `from` or beyond (a bad sector there). */
export class FailingPast extends PassThroughDevice {
  constructor(
    inner: MemoryDevice,
    readonly from: number,
  ) {
    super(inner);
  }

  override read(offset: number, length: number): Promise<Uint8Array> {
    if (offset + length > this.from) return Promise.reject(new Error('bad sector'));
    return super.read(offset, length);
  }
}
