/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Yields to the event loop until `ready()` holds (a bounded number of turns). */
export async function until(ready: () => boolean, what: string, turns = 10_000): Promise<void> {
  for (let i = 0; i < turns; i++) {
    if (ready()) return;
    await new Promise((resolve) => setImmediate(resolve));
  }
  throw new Error(`timed out waiting until ${what}`);
}

/** Resolves with `p`'s value if it settles within `ms`, else rejects naming `what`. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: still pending after ${ms} ms`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** Tracks whether a promise settled yet, without ever letting it reject unhandled. */
export function watch<T>(p: Promise<T>): {
  readonly settled: boolean;
  readonly promise: Promise<T>;
} {
  let settled = false;
  const mark = () => {
    settled = true;
  };
  p.then(mark, mark);
  return {
    get settled() {
      return settled;
    },
    promise: p,
  };
}

/** The reason `p` rejects with; fails if it resolves. */
export async function rejectionOf(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection, but the promise resolved');
}

/** Lets every setImmediate queued so far run (e.g. the journal's idle marker after a flush). */
export async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve));
}
