/**
 * Runs `task(0..count-1)` with at most `depth` in flight, in index order of
 * start. Stops starting new ones at the first failure (or abort) and
 * rethrows it only once the running ones have settled, so nothing is still
 * reading a device when the caller moves on.
 */
export async function forEachConcurrently(
  count: number,
  depth: number,
  signal: AbortSignal | undefined,
  task: (i: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  let failure: { err: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (failure === undefined && next < count) {
      const i = next++;
      try {
        signal?.throwIfAborted();
        await task(i);
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(depth, count) }, worker));
  if (failure !== undefined) throw failure.err;
}
