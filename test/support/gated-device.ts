import type fc from 'fast-check';
import type { BlockDevice } from '../../src/index.js';
import { watch } from './async.js';
import { PassThroughDevice } from './pass-through-device.js';

/** The kinds of operation a {@link GatedDevice} can stop. */
export type GatedKind = 'read' | 'write' | 'flush';

/** One operation stopped at the door until {@link Gate.open} is called. */
export interface Gate {
  /** Resolves once the operation arrived (it is then waiting). */
  readonly reached: Promise<void>;
  /** Whether it arrived. */
  readonly isReached: boolean;
  /** Lets it through (before or after it arrived). */
  open(): void;
}

/**
 * The doors of a test device: a test arms one for the next operation of a
 * kind whose range matches (optionally on its way back, `reply`), and the
 * device passes every operation through {@link Doors.pass}, which holds an
 * armed one until its gate opens.
 */
export class Doors<K extends string> {
  readonly #armed: {
    kind: K;
    reply: boolean;
    match: (offset: number, length: number) => boolean;
    arrive: () => void;
    opened: Promise<void>;
  }[] = [];

  /** Arms a door for the next `kind` operation whose range `match`es. */
  arm(kind: K, match: (offset: number, length: number) => boolean, reply = false): Gate {
    let arrive!: () => void;
    let open!: () => void;
    let isReached = false;
    const reached = new Promise<void>((resolve) => {
      arrive = () => {
        isReached = true;
        resolve();
      };
    });
    const opened = new Promise<void>((resolve) => {
      open = resolve;
    });
    this.#armed.push({ kind, reply, match, arrive, opened });
    return {
      reached,
      get isReached() {
        return isReached;
      },
      open,
    };
  }

  /** Holds the operation if a door is armed for it; false (at once) if none is. */
  async pass(kind: K, offset: number, length: number, reply = false): Promise<boolean> {
    const i = this.#armed.findIndex(
      (a) => a.kind === kind && a.reply === reply && a.match(offset, length),
    );
    if (i < 0) return false;
    const [armed] = this.#armed.splice(i, 1);
    armed!.arrive();
    await armed!.opened;
    return true;
  }
}

/**
 * Passes I/O through to `inner`, except that a test can stop the next
 * operation of a kind (and matching a range) until it opens the gate, to
 * hold a layer at an exact point of its work; and, with a fast-check
 * scheduler set, lets the scheduler decide when every other operation starts.
 */
export class GatedDevice extends PassThroughDevice {
  scheduler: fc.Scheduler | undefined;
  readonly #doors = new Doors<GatedKind>();

  constructor(inner: BlockDevice) {
    super(inner);
  }

  /** Stops the next `kind` operation whose range `match`es (every one, by default). */
  gate(kind: GatedKind, match: (offset: number, length: number) => boolean = () => true): Gate {
    return this.#doors.arm(kind, match);
  }

  async #door(kind: GatedKind, offset: number, length: number): Promise<void> {
    if (await this.#doors.pass(kind, offset, length)) return;
    if (this.scheduler !== undefined) {
      await this.scheduler.schedule(Promise.resolve(), `${kind} ${offset}+${length}`);
    }
  }

  override async read(offset: number, length: number): Promise<Uint8Array> {
    await this.#door('read', offset, length);
    return super.read(offset, length);
  }

  override async write(offset: number, data: Uint8Array): Promise<void> {
    // The caller may reuse `data` once the promise exists (a Buffer's slice() would be a view).
    const copy = new Uint8Array(data);
    await this.#door('write', offset, copy.length);
    return super.write(offset, copy);
  }

  override async flush(): Promise<void> {
    await this.#door('flush', 0, 0);
    return super.flush();
  }
}

/** Watches promises and records the order in which they resolve, by name. */
export function resolutionOrder(): {
  order: string[];
  log<T>(what: string, p: Promise<T>): { readonly settled: boolean; readonly promise: Promise<T> };
} {
  const order: string[] = [];
  return {
    order,
    log: (what, p) =>
      watch(
        p.then((value) => {
          order.push(what);
          return value;
        }),
      ),
  };
}
