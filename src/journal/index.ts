export { JournalDevice, type JournalDeviceOptions } from './journal-device.js';
export { catalogSlotBytes, RING_START } from './journal-format.js';
export type { JournalRepair } from './journal-snapshot-registry.js';
