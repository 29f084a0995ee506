/**
 * Lets a reader (`check()`) see a metadata store stand still between two
 * commits of a pump that writes one commit at a time: {@link hold} waits
 * for the commit in progress, and the pump starts none while it runs.
 */
export class CommitGate {
  /** The last commit the pump started. */
  #committing: Promise<void> | undefined;
  /** Set while {@link hold} runs. */
  #held: Promise<void> | undefined;

  /** Settles once no hold is running; the pump awaits it before each commit when {@link held}. */
  get held(): Promise<void> | undefined {
    return this.#held;
  }

  /** The pump started `commit`: a hold from now on waits for it. */
  started(commit: Promise<void>): void {
    this.#committing = commit;
  }

  /** Runs `fn` once the commit in progress has settled, with no commit starting until it does. */
  async hold<T>(fn: () => Promise<T>): Promise<T> {
    while (this.#held !== undefined) await this.#held;
    let release!: () => void;
    this.#held = new Promise((resolve) => {
      release = resolve;
    });
    try {
      // Once #held is set no commit starts, so this one is the last to wait
      // for (its failure is the pump's to handle, not ours).
      await this.#committing?.catch(() => {});
      return await fn();
    } finally {
      this.#held = undefined;
      release();
    }
  }
}
