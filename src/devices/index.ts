export { FileDevice, type FileDeviceOptions } from './file-device.js';
export { MemoryDevice, type MemoryDeviceOptions } from './memory-device.js';
