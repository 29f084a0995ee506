/*
 * The volume's I/O gate (docs/ARCHITECTURE.md, "VirtualVolume"). I/O passes
 * straight to the partitions unless an operation holds the gate; then
 * every read and write called is queued, and started in call order, all
 * synchronously, when the last hold is released — so a partition sees the
 * held I/O after whatever the holder started and before anything called
 * after the release. A snapshot never holds it (each partition holds its
 * own writes for its own cut, in call order); a restore holds it from its
 * call until it is durable.
 */

/** Queues I/O while held, in call order; passes it through otherwise. */
export class VolumeGate {
  #holds = 0;
  #queue: (() => void)[] = [];

  /** Whether I/O called now would wait. */
  get held(): boolean {
    return this.#holds > 0;
  }

  /** Starts `start` now, or, while held, at the release, after everything queued before it. */
  run<T>(start: () => Promise<T>): Promise<T> {
    if (this.#holds === 0) return start();
    return new Promise<T>((resolve, reject) => {
      this.#queue.push(() => {
        let op: Promise<T>;
        try {
          op = start();
        } catch (err) {
          op = Promise.reject(err);
        }
        op.then(resolve, reject);
      });
    });
  }

  /** Holds the gate; the function returned releases this hold (once). */
  hold(): () => void {
    this.#holds++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      if (--this.#holds > 0) return;
      const queued = this.#queue;
      this.#queue = [];
      for (const start of queued) start();
    };
  }
}
