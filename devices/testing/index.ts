/**
 * `virtio-net-ts/testing`: a synthetic guest for tests and examples. It drives a device only through its
 * config-space and BAR accessors and guest memory, as a real driver does.
 */

/** VIRTIO_NET_HASH_TUNNEL_TYPE_* bits for `VirtioNetDriver.setHashTunnel` (VIRTIO 1.4 "Inner Header Hash"). */
export { HASH_TUNNEL_SUPPORTED_TYPES, HashTunnelType } from '../../lib/net/tunnel-inner.js';
export type { AdminDriverOptions, AdminReply } from '../../virtio/testing/admin-driver.js';
export {
  ADMIN_GROUP_SELF,
  ADMIN_GROUP_SRIOV,
  AdminCmd,
  AdminDriver,
  DEV_MODE,
  LINUX_ADMIN_CMD_BITMAP,
} from '../../virtio/testing/admin-driver.js';
export { BumpAllocator } from '../../virtio/testing/bump-allocator.js';
export type { AddOptions, DriverBuffer, UsedBuffer } from '../../virtio/testing/driver-buffer.js';
export { PackedDriverQueue } from '../../virtio/testing/packed-driver.js';
export type {
  AssignedBar,
  DriverQueue,
  PciDriverOptions,
  PciTarget,
  QueueSetupOptions,
  VirtioCap,
} from '../../virtio/testing/pci-driver.js';
export {
  BarAddressAllocator,
  InterruptCollector,
  MSI_ADDRESS,
  NO_VECTOR,
  STATUS,
  VirtioPciDriver,
} from '../../virtio/testing/pci-driver.js';
export { SplitDriverQueue } from '../../virtio/testing/split-driver.js';
/** VIRTIO_NET_STATS_TYPE_* bit numbers for `VirtioNetDriver.statsGet` (VIRTIO 1.3 "Device Statistics"). */
export { StatsType } from '../virtio-net/device-stats.js';
export * as frames from './frames.js';
export type { ControlReply, NetDriverOptions, ReceivedFrame, StatsReply } from './net-driver.js';
export { LINUX_6_1_FEATURES, LINUX_7_2_FEATURES, VirtioNetDriver } from './net-driver.js';
export { captureSink } from './sink.js';
