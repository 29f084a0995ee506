export {
  type ConformanceOptions,
  type ConformanceSubject,
  type DescribeFn,
  type ItFn,
  runConformanceSuite,
} from './conformance.js';
export * from './faulty-device.js';
export { ModelDevice, type ModelDeviceOptions } from './model-device.js';
