import { PassThroughDevice } from './pass-through-device.js';

/** Counts the I/O a layer issues to the device below it; passes everything through. */
export class CountingDevice extends PassThroughDevice {
  reads = 0;
  writes = 0;
  flushes = 0;
  override read(offset: number, length: number): Promise<Uint8Array> {
    this.reads++;
    return super.read(offset, length);
  }
  override write(offset: number, data: Uint8Array): Promise<void> {
    this.writes++;
    return super.write(offset, data);
  }
  override flush(): Promise<void> {
    this.flushes++;
    return super.flush();
  }
  reset(): void {
    this.reads = 0;
    this.writes = 0;
    this.flushes = 0;
  }
}
