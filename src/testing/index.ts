export {
  type ConformanceOptions,
  type ConformanceSubject,
  runConformanceSuite,
} from './block-conformance.js';
export type { DescribeFn, ItFn } from './conformance-support.js';
export * from './faulty-device.js';
export { ModelDevice, type ModelDeviceOptions } from './model-device.js';
export {
  runSnapshotConformanceSuite,
  type SnapshotConformanceOptions,
  type SnapshotConformanceSubject,
  type SnapshotDevice,
  type SnapshotSupport,
} from './snapshot-conformance.js';
