export { JournalDevice, type JournalDeviceOptions } from './journal-device.js';
