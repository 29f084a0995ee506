import { AbstractBlockDevice, type BlockDevice, BlockDeviceError } from '../../src/index.js';

/**
 * A device of your own: it keeps every byte XORed with `key` on the device
 * below, so that device never holds the plain bytes (an obfuscation, not
 * encryption). AbstractBlockDevice checks every argument and waits for I/O in
 * flight on close; this class only moves bytes.
 */
export class XorDevice extends AbstractBlockDevice {
  readonly #lower: BlockDevice;
  readonly #key: number;

  /** @throws `EINVAL` unless `key` is an integer from 1 to 255. */
  constructor(lower: BlockDevice, key: number) {
    super('XorDevice', lower.size, lower.blockSize, lower.readOnly);
    if (!Number.isInteger(key) || key < 1 || key > 255) {
      throw new BlockDeviceError('EINVAL', `key must be an integer from 1 to 255, got ${key}`);
    }
    this.#lower = lower;
    this.#key = key;
  }

  // The range is checked and never empty.
  protected async _read(offset: number, length: number): Promise<Uint8Array> {
    const data = await this.#lower.read(offset, length).catch(failed('read'));
    // A read returns fresh memory: ours to unscramble in place.
    for (let i = 0; i < data.length; i++) data[i]! ^= this.#key;
    return data;
  }

  // `data` is a private copy: scrambling it in place leaves the caller's alone.
  protected async _write(offset: number, data: Uint8Array): Promise<void> {
    for (let i = 0; i < data.length; i++) data[i]! ^= this.#key;
    await this.#lower.write(offset, data).catch(failed('write'));
  }

  protected async _flush(): Promise<void> {
    await this.#lower.flush().catch(failed('flush'));
  }

  // Called once, after every read, write and flush in flight settled and a final flush.
  protected async _close(): Promise<void> {
    await this.#lower.close().catch(failed('close'));
  }
}

/** The device below failed: `EIO`, with its error as `cause`. */
function failed(what: string): (err: unknown) => never {
  return (err) => {
    throw new BlockDeviceError('EIO', `XorDevice: ${what} failed`, { cause: err });
  };
}
