/** The part of random-access-file (v4, untyped CommonJS) the benchmark uses. */
declare module 'random-access-file' {
  interface RandomAccessFileOptions {
    /** Truncate the file before reading or writing. */
    truncate?: boolean;
    /** Truncate the file to this size first. */
    size?: number;
    readable?: boolean;
    writable?: boolean;
    lock?: boolean;
    sparse?: boolean;
  }

  class RandomAccessFile {
    constructor(filename: string, options?: RandomAccessFileOptions);
    open(callback: (err: Error | null) => void): void;
    read(offset: number, size: number, callback: (err: Error | null, data?: Buffer) => void): void;
    write(offset: number, data: Uint8Array, callback: (err: Error | null) => void): void;
    close(callback: (err: Error | null) => void): void;
  }

  export = RandomAccessFile;
}
