import { PassThroughDevice } from './pass-through-device.js';

/** One read a layer issued to the device below it. */
export interface LoggedRead {
  offset: number;
  length: number;
}

/**
 * Logs every read a layer issues to the device below it (while `logging`),
 * and hands each read's result to `inspect` — so a test can tell exactly
 * which bytes a layer touched, and what it got, without keeping the data.
 */
export class ReadLogDevice extends PassThroughDevice {
  logging = false;
  readonly reads: LoggedRead[] = [];
  inspect: ((read: LoggedRead, data: Uint8Array) => void) | undefined;

  /** Bytes of the reads logged so far. */
  get bytesRead(): number {
    return this.reads.reduce((sum, r) => sum + r.length, 0);
  }

  override async read(offset: number, length: number): Promise<Uint8Array> {
    const data = await super.read(offset, length);
    if (this.logging) {
      const read = { offset, length };
      this.reads.push(read);
      this.inspect?.(read, data);
    }
    return data;
  }
}
