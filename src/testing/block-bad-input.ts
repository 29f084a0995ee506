/**
 * The block-device suite's bad-input table: every malformed read and write
 * an untyped caller can make, with the code the contract gives it.
 */

/** The device with its parameter types erased, to call it the way untyped JavaScript may. */
export interface LooseDevice {
  read(offset: unknown, length: unknown): Promise<unknown>;
  write(offset: unknown, data: unknown): Promise<unknown>;
}

interface BadRead {
  title: string;
  code: 'ERANGE' | 'EINVAL';
  args: (size: number, bs: number) => [unknown, unknown];
}

interface BadWrite {
  title: string;
  code: 'ERANGE' | 'EINVAL';
  args: (size: number, bs: number, content: Uint8Array) => [unknown, unknown];
}

export const badReads: BadRead[] = [
  { title: 'negative offset', code: 'ERANGE', args: () => [-1, 1] },
  { title: 'NaN offset', code: 'ERANGE', args: () => [Number.NaN, 1] },
  { title: 'fractional offset', code: 'ERANGE', args: () => [0.5, 1] },
  { title: 'Infinity offset', code: 'ERANGE', args: () => [Number.POSITIVE_INFINITY, 1] },
  { title: '-Infinity offset', code: 'ERANGE', args: () => [Number.NEGATIVE_INFINITY, 1] },
  { title: 'offset past the end', code: 'ERANGE', args: (size) => [size + 1, 0] },
  { title: 'offset 2^53', code: 'ERANGE', args: () => [2 ** 53, 1] },
  { title: 'negative length', code: 'ERANGE', args: () => [0, -1] },
  { title: 'NaN length', code: 'ERANGE', args: () => [0, Number.NaN] },
  { title: 'fractional length', code: 'ERANGE', args: () => [0, 1.5] },
  { title: 'Infinity length', code: 'ERANGE', args: () => [0, Number.POSITIVE_INFINITY] },
  { title: 'one byte at offset == size', code: 'ERANGE', args: (size) => [size, 1] },
  { title: 'offset + length one past the end', code: 'ERANGE', args: (size) => [size - 1, 2] },
  { title: 'length of size + 1', code: 'ERANGE', args: (size) => [0, size + 1] },
  { title: 'block run past the end', code: 'ERANGE', args: (size, bs) => [bs, size] },
  { title: 'string offset', code: 'EINVAL', args: () => ['0', 1] },
  { title: 'string length', code: 'EINVAL', args: (_, bs) => [0, String(bs)] },
  { title: 'undefined offset', code: 'EINVAL', args: () => [undefined, 1] },
  { title: 'null length', code: 'EINVAL', args: () => [0, null] },
  { title: 'bigint offset', code: 'EINVAL', args: () => [0n, 1] },
];

export const badWrites: BadWrite[] = [
  { title: 'negative offset', code: 'ERANGE', args: (_, bs, c) => [-1, changed(c, 0, bs)] },
  { title: 'NaN offset', code: 'ERANGE', args: (_, bs, c) => [Number.NaN, changed(c, 0, bs)] },
  { title: 'fractional offset', code: 'ERANGE', args: (_, bs, c) => [0.5, changed(c, 0, bs)] },
  {
    title: 'Infinity offset',
    code: 'ERANGE',
    args: (_, bs, c) => [Number.POSITIVE_INFINITY, changed(c, 0, bs)],
  },
  {
    title: '-Infinity offset',
    code: 'ERANGE',
    args: (_, bs, c) => [Number.NEGATIVE_INFINITY, changed(c, 0, bs)],
  },
  { title: 'offset past the end', code: 'ERANGE', args: (size) => [size + 1, new Uint8Array(0)] },
  { title: 'offset 2^53', code: 'ERANGE', args: (_, bs, c) => [2 ** 53, changed(c, 0, bs)] },
  {
    title: 'one byte at offset == size',
    code: 'ERANGE',
    args: (size, _, c) => [size, changed(c, size - 1, 1)],
  },
  {
    title: 'offset + length one past the end',
    code: 'ERANGE',
    args: (size, _, c) => [size - 1, changed(c, size - 1, 2)],
  },
  {
    title: 'a block run past the end',
    code: 'ERANGE',
    args: (size, bs, c) => [size - bs, changed(c, size - bs, 2 * bs)],
  },
  { title: 'size + 1 bytes', code: 'ERANGE', args: (size, _, c) => [0, changed(c, 0, size + 1)] },
  { title: 'string offset', code: 'EINVAL', args: (_, bs, c) => ['0', changed(c, 0, bs)] },
  { title: 'null offset', code: 'EINVAL', args: (_, bs, c) => [null, changed(c, 0, bs)] },
  { title: 'bigint offset', code: 'EINVAL', args: (_, bs, c) => [0n, changed(c, 0, bs)] },
  { title: 'string data', code: 'EINVAL', args: () => [0, 'abc'] },
  { title: 'null data', code: 'EINVAL', args: () => [0, null] },
  { title: 'undefined data', code: 'EINVAL', args: () => [0, undefined] },
  { title: 'array of numbers', code: 'EINVAL', args: () => [0, [1, 2, 3]] },
  { title: 'ArrayBuffer data', code: 'EINVAL', args: (_, bs) => [0, new ArrayBuffer(bs)] },
  { title: 'Uint16Array data', code: 'EINVAL', args: (_, bs) => [0, new Uint16Array(bs / 2)] },
  {
    title: 'DataView data',
    code: 'EINVAL',
    args: (_, bs) => [0, new DataView(new ArrayBuffer(bs))],
  },
];

/** Bytes that differ from `content` at every position they would cover, so any partial write shows. */
function changed(content: Uint8Array, offset: number, length: number): Uint8Array {
  const out = new Uint8Array(length).fill(0x5a);
  for (let i = 0; i < length && offset + i < content.length; i++) {
    out[i] = (content[offset + i] ?? 0) ^ 0xff;
  }
  return out;
}
