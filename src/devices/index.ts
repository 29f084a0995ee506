export { FileDevice, type FileDeviceOptions } from './file-device.js';
export { MemoryDevice, type MemoryDeviceOptions } from './memory-device.js';
export {
  type NbdClientTlsOptions,
  NbdDevice,
  type NbdDeviceEvents,
  type NbdDeviceOptions,
  type NbdNegotiated,
} from './nbd-device.js';
