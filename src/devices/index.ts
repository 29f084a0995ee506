export { FileDevice, type FileDeviceOptions } from './file-device.js';
export { MemoryDevice, type MemoryDeviceOptions } from './memory-device.js';
export {
  NbdDevice,
  type NbdDeviceEvents,
  type NbdDeviceOptions,
  type NbdNegotiated,
  type NbdTlsOptions,
} from './nbd-device.js';
