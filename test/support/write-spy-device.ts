import { PassThroughDevice } from './pass-through-device.js';

/** Passes I/O through and keeps every buffer handed to its `write`, so a test can check a layer passed the caller's buffer down uncopied. */
export class WriteSpyDevice extends PassThroughDevice {
  readonly written: Uint8Array[] = [];

  override write(offset: number, data: Uint8Array): Promise<void> {
    this.written.push(data);
    return super.write(offset, data);
  }
}
