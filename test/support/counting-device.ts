import type { BlockDevice } from '../../src/index.js';

/** Counts the I/O a layer issues to the device below it; passes everything through. */
export class CountingDevice implements BlockDevice {
  reads = 0;
  writes = 0;
  flushes = 0;
  readonly log: string[] = [];
  constructor(readonly inner: BlockDevice) {}
  get size(): number {
    return this.inner.size;
  }
  get blockSize(): number {
    return this.inner.blockSize;
  }
  get readOnly(): boolean {
    return this.inner.readOnly;
  }
  read(offset: number, length: number): Promise<Uint8Array> {
    this.reads++;
    this.log.push(`read ${offset}+${length}`);
    return this.inner.read(offset, length);
  }
  write(offset: number, data: Uint8Array): Promise<void> {
    this.writes++;
    this.log.push(`write ${offset}+${data.length}`);
    return this.inner.write(offset, data);
  }
  flush(): Promise<void> {
    this.flushes++;
    this.log.push('flush');
    return this.inner.flush();
  }
  close(): Promise<void> {
    return this.inner.close();
  }
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
  reset(): void {
    this.reads = 0;
    this.writes = 0;
    this.flushes = 0;
    this.log.length = 0;
  }
}
