/** Where copied chunks go: a device, or a sink that frames them into a stream. */
export interface CopySink {
  /** Writes the chunk whose range byte `rangeOffset` starts at. */
  write(rangeOffset: number, data: Uint8Array): Promise<void>;
  /**
   * Writes consecutive chunks, the first at range byte `rangeOffset`, in one
   * vectored write of chunk-sized blocks, taking the buffers over (the
   * engine leaves them alone until it settles); absent: one `write` per chunk.
   */
  writeBlocks?(rangeOffset: number, chunks: readonly Uint8Array[]): Promise<void>;
  /** Resolves when the sink can take another run (back-pressure); absent: always. */
  ready?(): Promise<void>;
}
