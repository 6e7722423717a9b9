/**
 * `virtio-net-ts/testing`: a synthetic guest for tests and examples. It drives a device only through its
 * config-space and BAR accessors and guest memory, as a real driver does.
 */
export { VirtioNetDriver, LINUX_6_1_FEATURES } from './net-driver.js';
export type { ReceivedFrame, NetDriverOptions } from './net-driver.js';
export {
  VirtioPciDriver,
  InterruptCollector,
  BarAddressAllocator,
  MSI_ADDRESS,
  STATUS,
  NO_VECTOR,
} from '../../virtio/testing/pci-driver.js';
export type {
  PciTarget,
  VirtioCap,
  AssignedBar,
  DriverQueue,
  QueueSetupOptions,
} from '../../virtio/testing/pci-driver.js';
export { SplitDriverQueue } from '../../virtio/testing/split-driver.js';
export { PackedDriverQueue } from '../../virtio/testing/packed-driver.js';
export { BumpAllocator } from '../../virtio/testing/bump-allocator.js';
export type { DriverBuffer, UsedBuffer, AddOptions } from '../../virtio/testing/driver-buffer.js';
export * as frames from './frames.js';
