export {
  type AppliedProgress,
  type ApplyReport,
  type ApplyStreamOptions,
  applyStream,
  type ByteSource,
  type ExportStreamOptions,
  exportStream,
  StreamApplyError,
} from './stream.js';
export { encodeHeader, FRAME_DATA_MAX, uuidBytes } from './stream-format.js';
export { encodeFrameHead, encodeFrameTail, encodeTrailer } from './stream-frames.js';
