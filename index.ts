/**
 * virtio-net-ts: a QEMU-compatible virtio-net PCI device model for JavaScript VMMs.
 * The stable public surface (../shared/docs/api.md); everything else is internal.
 */
export type { VirtioNetPci, VirtioNetPciSnapshot, BarInfo } from './devices/virtio-net-pci.js';
export { createVirtioNetPci } from './devices/virtio-net-pci.js';
export type {
  VirtioNetPciOptions,
  VirtioNetInterrupts,
  VirtioNetPciConfig,
} from './devices/virtio-net-options.js';
export { parseQemuDevice, parseVirtioNetPciOptions, DEFAULT_MAC } from './devices/virtio-net-options.js';
export { VirtioNet, QueueStats } from './devices/virtio-net.js';
export type { NetDeviceStats, NetSnapshot } from './devices/virtio-net.js';
export { NetF } from './devices/virtio-net-features.js';
export { VfioUserServer } from './devices/vfio-user-server.js';
export type { VfioUserDevice, VfioUserServerOptions } from './devices/vfio-user-server.js';
export { virtioNetVfioUserDevice } from './devices/virtio-net-vfio-user.js';
export type { VirtioNetVfioUserDevice } from './devices/virtio-net-vfio-user.js';

export { GuestMemory } from './lib/guest-memory.js';
export type { GuestMemoryRegion, GuestMemoryOptions } from './lib/guest-memory.js';
export { VirtioNetError, GuestMemoryError, OptionsError, BackendError } from './lib/errors.js';
export { MemoryBackend } from './lib/memory-backend.js';
export type { MemoryBackendOptions, MemoryBackendStats } from './lib/memory-backend.js';
export { TapBackend } from './lib/tap-backend.js';
export type { TapOpenOptions, TapAdoptOptions, TapStats } from './lib/tap-backend.js';
export type {
  NetBackend,
  BackendSink,
  BackendCapabilities,
  BackendOffloads,
  NetOffload,
  TransmitResult,
} from './lib/net-backend.js';
export { toeplitzHash, ToeplitzKey } from './lib/toeplitz.js';
export * from './lib/rss-hash.js';
export { parsePacket, ParsedPacket } from './lib/packet-parser.js';

export { PciRouter } from './pci/pci-router.js';
export type { InterruptSink } from './pci/msix.js';
export type { BarMapping } from './pci/pci-function.js';
