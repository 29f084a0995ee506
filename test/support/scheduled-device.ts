import type fc from 'fast-check';
import type { BlockDevice } from '../../src/index.js';
import { PassThroughDevice } from './pass-through-device.js';

/**
 * Passes I/O through, but lets fast-check's scheduler decide when each
 * operation starts (while `scheduler` is set): the races of property tests
 * with `fc.scheduler()`. `name` prefixes the scheduler's labels, to tell
 * several disks apart in a counterexample.
 */
export class ScheduledDevice extends PassThroughDevice {
  scheduler: fc.Scheduler | undefined;
  readonly #prefix: string;

  constructor(inner: BlockDevice, name?: string) {
    super(inner);
    this.#prefix = name === undefined ? '' : `${name} `;
  }

  async #turn(label: string): Promise<void> {
    if (this.scheduler) await this.scheduler.schedule(Promise.resolve(), `${this.#prefix}${label}`);
  }

  override async read(offset: number, length: number): Promise<Uint8Array> {
    await this.#turn(`read ${offset}`);
    return super.read(offset, length);
  }

  override async write(offset: number, data: Uint8Array): Promise<void> {
    await this.#turn(`write ${offset}`);
    return super.write(offset, data);
  }

  override async flush(): Promise<void> {
    await this.#turn('flush');
    return super.flush();
  }
}
