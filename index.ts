/**
 * virtio-net-ts: a QEMU-compatible virtio-net PCI device model for JavaScript VMMs.
 * The stable public surface (the API contract: README.md and docs/architecture.md); everything else is internal.
 */

export type { VfInfo, VfLinkState, VfPolicy } from './devices/eswitch/policy.js';
export type { PortStats } from './devices/eswitch/port.js';
export type { SwitchStats } from './devices/eswitch/switch.js';
export { type CliRun, cliInfo, runCli } from './devices/serve/cli.js';
export type { VirtioNetVfioUserDevice } from './devices/serve/vfio-user.js';
export { virtioNetVfioUserDevice } from './devices/serve/vfio-user.js';
export {
  type SriovPfFunction,
  type VirtioNetSriovFunctions,
  type VirtioNetSriovVfioUserOptions,
  virtioNetSriovVfioUser,
} from './devices/serve/sriov.js';
export { VirtioNet } from './devices/virtio-net/device.js';
export { NetF } from './devices/virtio-net/features.js';
export type {
  OnOffAuto,
  VirtioNetInterrupts,
  VirtioNetMsiInterrupts,
  VirtioNetPciConfig,
  VirtioNetPciOptions,
  VirtioNetSriovOptions,
  VirtioNetVectorInterrupts,
} from './devices/virtio-net/options-types.js';
export { DEFAULT_MAC, parseVirtioNetPciOptions } from './devices/virtio-net/options.js';
export { parseQemuDevice, QEMU_PROPERTIES, type QemuProperty } from './devices/virtio-net/qemu-device.js';
export type { NetSnapshot } from './devices/virtio-net/persist.js';
export type { NetDeviceStats } from './devices/virtio-net/stats.js';
export { QueueStats } from './devices/virtio-net/stats.js';
export type {
  BarInfo,
  QueuePairStats,
  VirtioNetPci,
  VirtioNetPciSnapshot,
  VirtioNetPciStats,
} from './devices/virtio-net-pci.js';
export { createVirtioNetPci } from './devices/virtio-net-pci.js';
export { BackendError, GuestMemoryError, OptionsError, VirtioNetError } from './lib/errors.js';
export type { GuestMemoryOptions, GuestMemoryRegion } from './lib/memory/guest-memory.js';
export { GuestMemory } from './lib/memory/guest-memory.js';
export type {
  BackendCapabilities,
  BackendOffloads,
  BackendRssConfig,
  BackendSink,
  NetBackend,
  NetOffload,
  TransmitResult,
} from './lib/net/backend.js';
export { emptyOffload, ReceiveTarget } from './lib/net/backend.js';
export type { MemoryBackendOptions, MemoryBackendStats } from './lib/net/memory-backend.js';
export { MemoryBackend } from './lib/net/memory-backend.js';
export { ParsedPacket, parsePacket } from './lib/net/packet-parser.js';
export * from './lib/net/rss-hash.js';
export { ToeplitzKey, toeplitzHash } from './lib/net/toeplitz.js';
export type { TapAdoptOptions, TapOpenOptions, TapStats } from './lib/tap/tap-backend.js';
export { TapBackend } from './lib/tap/tap-backend.js';
export type {
  VfioUserDevice,
  VfioUserDoorbell,
  VfioUserDoorbellEventfds,
  VfioUserInterruptSink,
} from './lib/vfio-user/device.js';
export type { VfioUserServerOptions } from './lib/vfio-user/server.js';
export { VfioUserServer } from './lib/vfio-user/server.js';
export type { InterruptSink } from './pci/msix.js';
export type { BarMapping } from './pci/pci-function.js';
export { PciRouter } from './pci/pci-router.js';
