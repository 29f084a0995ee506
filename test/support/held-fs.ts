import nodeFs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { expect } from 'vitest';

/** The completions of node:fs callbacks a test holds back. */
export interface HeldCompletions {
  /** Completions held so far (the I/O itself is done; its callback waits). */
  readonly count: number;
  /** Waits until at least `n` completions are held. */
  reached(n: number): Promise<void>;
  /** Runs every held callback, in the order the I/O completed. */
  releaseAll(): void;
  /**
   * Closes `device` while `n` completions are held and checks that the
   * close does not finish before they are released; resolves once closed.
   */
  closeWaitsFor(device: { close(): Promise<void> }, n: number): Promise<void>;
}

type FsCallback = (...results: unknown[]) => void;

/**
 * Runs `body` with the callbacks of node:fs's `names` (e.g. `read`,
 * `write`, `writev`) held until released: the I/O runs, its callback
 * waits. For tests of what must wait for I/O in flight. ESM imports of
 * node:fs see the change (`syncBuiltinESMExports`); it is undone after.
 */
export async function withHeldFs<T>(
  names: readonly ('read' | 'write' | 'writev')[],
  body: (held: HeldCompletions) => Promise<T>,
): Promise<T> {
  const fs = nodeFs as unknown as Record<string, (...args: unknown[]) => void>;
  const real = new Map(names.map((name) => [name, fs[name]!]));
  const held: (() => void)[] = [];
  for (const name of names) {
    const original = real.get(name)!;
    fs[name] = (...args: unknown[]) => {
      const callback = args.pop() as FsCallback;
      original(...args, (...results: unknown[]) => {
        held.push(() => callback(...results));
      });
    };
  }
  syncBuiltinESMExports();
  try {
    const completions: HeldCompletions = {
      get count() {
        return held.length;
      },
      async reached(n) {
        while (held.length < n) await new Promise((resolve) => setTimeout(resolve, 1));
      },
      releaseAll() {
        for (const release of held.splice(0)) release();
      },
      async closeWaitsFor(device, n) {
        let closed = false;
        const closing = device.close().then(() => {
          closed = true;
        });
        await completions.reached(n);
        await new Promise((resolve) => setTimeout(resolve, 20));
        expect(closed, 'close finished with I/O still in flight').toBe(false);
        completions.releaseAll();
        await closing;
      },
    };
    return await body(completions);
  } finally {
    for (const [name, original] of real) fs[name] = original;
    syncBuiltinESMExports();
  }
}
