/**
 * The short seeded workload the EIO matrix (eio-layers.test.ts) runs with
 * one lower operation failing (checked against byte-model.ts).
 */

/** What an operation goes through: the device, its writable snapshot, its read-only one, or a snapshot of the layer below. */
export type Target = 'device' | 'writable' | 'snapshot' | 'lower';

export interface WriteOp {
  readonly kind: 'write';
  readonly target: 'device' | 'writable';
  readonly offset: number;
  readonly length: number;
  /** Every byte of the write; unique per write in a workload, so a byte names the write that left it. */
  readonly value: number;
}

export interface ReadOp {
  readonly kind: 'read';
  readonly target: Target;
  readonly offset: number;
  readonly length: number;
}

/** Operations called together, awaited together (overlapping writes race). */
export interface BatchOp {
  readonly kind: 'batch';
  readonly ops: readonly (WriteOp | ReadOp)[];
}

export interface FlushOp {
  readonly kind: 'flush';
}

export type Step = WriteOp | ReadOp | BatchOp | FlushOp;

/** One step as a line of a failure message. */
export function describeStep(step: Step): string {
  switch (step.kind) {
    case 'flush':
      return 'flush()';
    case 'batch':
      return `together(${step.ops.map(describeStep).join(', ')})`;
    case 'write':
      return `${step.target}.write(${step.offset}, ${step.length} × ${step.value})`;
    case 'read':
      return `${step.target}.read(${step.offset}, ${step.length})`;
  }
}

/** mulberry32: small, reproducible, plenty for drawing a workload. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 0x1_0000_0000;
  };
}

/** What a workload may go through, and where. */
export interface WorkloadShape {
  /** Bytes of the device (and of its snapshots). */
  readonly size: number;
  /** The device has a writable snapshot to write and read through. */
  readonly writable: boolean;
  /** Bytes `[from, to)` the read-only snapshot holds, if there is one. */
  readonly snapshot: readonly [number, number] | undefined;
  /** The layer below has a read-only snapshot to read through. */
  readonly lower: boolean;
}

/**
 * A short workload drawn from `seed`: single writes (a quarter of them
 * unaligned), batches of two or three overlapping writes with a read among
 * them (the second step always is one, with a write through the writable
 * snapshot if there is one), reads through every handle the shape offers,
 * and flushes; the last step is a flush, so every acknowledged write is
 * meant to be durable.
 */
export function drawWorkload(seed: number, shape: WorkloadShape, steps = 10): Step[] {
  const random = prng(seed);
  const int = (n: number) => Math.floor(random() * n);
  let value = 100;
  const span = (from: number, to: number): { offset: number; length: number } => {
    const unaligned = random() < 0.25;
    const unit = unaligned ? 256 : 512;
    const length = unit * (1 + int(3));
    const offset = from + unit * int(Math.max(1, (to - from - length) / unit));
    return { offset, length: Math.min(length, to - offset) };
  };
  const write = (target: 'device' | 'writable', near?: number): WriteOp => {
    const at = span(0, shape.size);
    const offset = near === undefined ? at.offset : Math.min(near, shape.size - at.length);
    value = value >= 250 ? 100 : value + 1;
    return { kind: 'write', target, offset, length: at.length, value };
  };
  const read = (): ReadOp => {
    const choices: Target[] = ['device', 'device'];
    if (shape.writable) choices.push('writable');
    if (shape.snapshot !== undefined) choices.push('snapshot');
    if (shape.lower) choices.push('lower');
    const target = choices[int(choices.length)]!;
    const [from, to] = target === 'snapshot' ? shape.snapshot! : [0, shape.size];
    return { kind: 'read', target, ...span(from, to) };
  };
  const out: Step[] = [];
  for (let i = 0; i < steps - 1; i++) {
    const r = random();
    const target = shape.writable && random() < 0.3 ? 'writable' : 'device';
    // The second step is always a batch, so every workload races writes.
    if (i === 1 || (r >= 0.35 && r < 0.55)) {
      const first = write(target);
      const ops: (WriteOp | ReadOp)[] = [first, write(target, first.offset + 256 * int(3))];
      // With a writable snapshot, one write of the batch goes to the other side.
      if (shape.writable) ops.push(write(target === 'device' ? 'writable' : 'device'));
      else if (random() < 0.5) ops.push(write('device'));
      ops.splice(int(ops.length + 1), 0, read());
      out.push({ kind: 'batch', ops });
    } else if (r < 0.35) out.push(write(target));
    else if (r < 0.8) out.push(read());
    else out.push({ kind: 'flush' });
  }
  out.push({ kind: 'flush' });
  return out;
}
