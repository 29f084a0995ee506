import { checkOptions, TypedEventEmitter } from '../base/index.js';
import type { Snapshot, SnapshotInfo, SnapshotOptions } from '../device.js';
import { BlockDeviceError } from '../errors.js';
import { checkSnapshotOptions } from '../snapshot/index.js';
import type { SnapshotScheduleEvents } from './volume-events.js';

/*
 * Snapshots on a schedule (seed 001, claims 21–22; docs/ARCHITECTURE.md,
 * "VirtualVolume"). A schedule's snapshots carry its name, which is how it
 * knows them again after the volume is reopened: retention counts and
 * deletes only snapshots of that name, oldest first. Runs never overlap:
 * the next one is timed from the start of the last, and skipped ahead if a
 * run took longer than `every`.
 */

/** Options for {@link VirtualVolume.schedule}. */
export interface ScheduleOptions {
  /** Milliseconds between snapshots; at least 10. */
  readonly every: number;
  /**
   * How many snapshots of this schedule's name to keep: after each
   * snapshot, the oldest beyond it are deleted. @default unlimited
   */
  readonly keep?: number | undefined;
  /** The name of the snapshots the schedule takes (and prunes). @default 'scheduled' */
  readonly name?: string | undefined;
  /** Stops the schedule when aborted. @default none */
  readonly signal?: AbortSignal | undefined;
}

/** What a schedule needs of the volume. */
export interface ScheduledDevice {
  snapshot(options?: SnapshotOptions): Promise<Snapshot>;
  listSnapshots(): SnapshotInfo[];
  deleteSnapshot(id: string): Promise<void>;
}

/**
 * A running schedule of overall snapshots. Events: `snapshot`, `deleted`,
 * `error` (a run failed; the schedule goes on), `stopped`.
 */
export class SnapshotSchedule extends TypedEventEmitter<SnapshotScheduleEvents> {
  readonly #device: ScheduledDevice;
  readonly #every: number;
  readonly #keep: number;
  readonly #name: string;
  readonly #signal: AbortSignal | undefined;
  readonly #onStop: () => void;
  readonly #onAbort = () => this.stop();
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;
  /** The run in progress, if any. */
  #running: Promise<void> | undefined;

  /** Made by `VirtualVolume.schedule`. @throws `EINVAL` for bad options. @internal */
  constructor(device: ScheduledDevice, options: ScheduleOptions, onStop: () => void) {
    super();
    checkOptions(
      options,
      { every: 'number', keep: 'number', name: 'string', signal: 'signal' },
      'VirtualVolume.schedule',
    );
    if (!(options.every >= 10) || !Number.isFinite(options.every)) {
      throw new BlockDeviceError(
        'EINVAL',
        `schedule: every ${options.every} is not a number of ms ≥ 10`,
      );
    }
    const keep = options.keep ?? Number.POSITIVE_INFINITY;
    if (keep !== Number.POSITIVE_INFINITY && (!Number.isSafeInteger(keep) || keep < 1)) {
      throw new BlockDeviceError('EINVAL', `schedule: keep ${keep} is not a positive integer`);
    }
    const name = options.name ?? 'scheduled';
    checkSnapshotOptions({ name });
    this.#device = device;
    this.#every = options.every;
    this.#keep = keep;
    this.#name = name;
    this.#signal = options.signal;
    this.#onStop = onStop;
    if (this.#signal?.aborted) {
      queueMicrotask(() => this.stop());
      return;
    }
    this.#signal?.addEventListener('abort', this.#onAbort, { once: true });
    this.#arm(Date.now() + this.#every);
  }

  /** Whether the schedule has stopped. */
  get stopped(): boolean {
    return this.#stopped;
  }

  /** Stops the schedule; a run in progress finishes. Idempotent. */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#signal?.removeEventListener('abort', this.#onAbort);
    this.#onStop();
    this.emit('stopped');
  }

  /** Resolves when the run in progress (if any) has finished. */
  async settled(): Promise<void> {
    await this.#running;
  }

  #arm(at: number): void {
    this.#timer = setTimeout(
      () => {
        const started = Date.now();
        this.#running = this.#run().finally(() => {
          this.#running = undefined;
          if (this.#stopped) return;
          // The next run is timed from this one's start; a run that took
          // longer than `every` skips the slots it overran.
          let next = started + this.#every;
          while (next <= Date.now()) next += this.#every;
          this.#arm(next);
        });
      },
      Math.max(0, at - Date.now()),
    );
  }

  async #run(): Promise<void> {
    try {
      const snap = await this.#device.snapshot({ name: this.#name });
      const info = this.#device.listSnapshots().find((s) => s.id === snap.id);
      await snap.close();
      if (info !== undefined) this.emit('snapshot', info);
    } catch (err) {
      this.#fail(err);
      return;
    }
    const mine = this.#device.listSnapshots().filter((s) => s.name === this.#name);
    for (const old of mine.slice(0, Math.max(0, mine.length - this.#keep))) {
      try {
        await this.#device.deleteSnapshot(old.id);
        this.emit('deleted', old.id);
      } catch (err) {
        this.#fail(err);
      }
    }
  }

  #fail(err: unknown): void {
    if (BlockDeviceError.is(err, 'ECLOSED')) {
      this.stop();
      return;
    }
    if (this.listenerCount('error') > 0) {
      this.emit('error', err instanceof Error ? err : new Error(String(err)));
    }
  }
}
