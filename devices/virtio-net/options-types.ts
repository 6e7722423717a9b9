/**
 * The public options of `createVirtioNetPci`, written out by hand so that editors and the API reference
 * show plain TypeScript (options.ts checks at compile time that its zod schema accepts exactly these).
 * Names and defaults are QEMU's `virtio-net-pci` properties (hw/net/virtio-net.c, hw/virtio/virtio-pci.c,
 * hw/virtio/virtio.c); feature bits are VIRTIO 1.3 §5.1.3 and §6.
 */
import type { GuestMemory } from '../../lib/memory/guest-memory.js';
import type { NetBackend } from '../../lib/net/backend.js';

/** Interrupts as MSI-X messages: the device emulates its MSI-X table (VIRTIO 1.3 §4.1.5.1.2). */
export interface VirtioNetMsiInterrupts {
  /** An MSI-X message: write `data` (le32) to `address`. */
  msi(address: bigint, data: number): void;
  /** Not called when `msi` is given (the device then emulates the table itself). */
  vector?(n: number, vf?: number): void;
  /** The INTx line level (used when MSI-X is disabled). */
  intx?(asserted: boolean): void;
}

/** Interrupts per vector, for VMMs that emulate the MSI-X table themselves (QEMU's vfio-user client). */
export interface VirtioNetVectorInterrupts {
  /** Vector `n` fired (of VF `vf` when an SR-IOV VF raised it; of the PF when undefined). */
  vector(n: number, vf?: number): void;
  /**
   * The eventfd that signals vector `n` now (assigned, unmasked), or null. With it, queue-pair workers
   * (`workers`) write that eventfd themselves instead of handing the interrupt to the main thread; call
   * `interruptRoutesChanged()` on the transport before an answer changes or an fd it named is closed.
   */
  vectorFd?(n: number, vf?: number): number | null;
  /** Absent in this form (with `msi` the object is a `VirtioNetMsiInterrupts`). */
  msi?: undefined;
  /** The INTx line level (used when MSI-X is disabled). */
  intx?(asserted: boolean): void;
}

/** The interrupt outputs of the device: at least one of `msi` or `vector` (so `{}` does not type-check). */
export type VirtioNetInterrupts = VirtioNetMsiInterrupts | VirtioNetVectorInterrupts;

/** An SR-IOV physical function (PCIe SR-IOV extended capability; docs/sriov.md). */
export interface VirtioNetSriovOptions {
  /** TotalVFs, 1..255 (more than 7 uses ARI). */
  totalVfs: number;
  /** VF Device ID in the SR-IOV capability (default: the PF's). */
  vfDeviceId?: number;
  /** The backend of VF `index`; default: a MemoryBackend per VF. */
  vfBackend?: (index: number) => NetBackend;
  /**
   * The guest memory of VF `index` (default: the PF's `memory`): for a VMM that gives each VF its own
   * guest, or a vfio-user server whose VFs each have a client mapping its own memory.
   */
  vfMemory?: (index: number) => GuestMemory;
}

/** QEMU's OnOffAuto. */
export type OnOffAuto = 'on' | 'off' | 'auto';

/** Options of `createVirtioNetPci`; every property but the first three has QEMU's default. */
export interface VirtioNetPciOptions {
  /** Guest RAM the device reads and writes (descriptors, buffers). */
  memory: GuestMemory;
  /** Where frames go: MemoryBackend, TapBackend, or your own NetBackend. */
  backend: NetBackend;
  /** The interrupt outputs (MSI-X messages or per-vector signals, and INTx). */
  interrupts: VirtioNetInterrupts;

  /** MAC address (default 52:54:00:12:34:56, QEMU's first NIC); must be unicast. */
  mac?: string;
  /** Queue pairs, 1..256 (QEMU takes it from `-netdev queues=`); more than 1 needs `mq` or `rss`. */
  queues?: number;
  /** 'pcie' (default): behind a PCIe port, with PCIe, PM and MSI-X capabilities; 'pci': conventional PCI. */
  bus?: 'pcie' | 'pci';
  /** Make this function an SR-IOV PF (needs bus 'pcie'). */
  sriov?: VirtioNetSriovOptions;
  /** MSI-X table size, 0..2048; default 2 * queues + 2 (QEMU's virtio-net-pci). 0 disables MSI-X. */
  vectors?: number;

  /** VIRTIO_NET_F_CSUM (default true). */
  csum?: boolean;
  /** VIRTIO_NET_F_GUEST_CSUM (default true). */
  guest_csum?: boolean;
  /** VIRTIO_NET_F_GSO, offered on the legacy interface only, as QEMU does (default true). */
  gso?: boolean;
  /** VIRTIO_NET_F_GUEST_TSO4 (default true). */
  guest_tso4?: boolean;
  /** VIRTIO_NET_F_GUEST_TSO6 (default true). */
  guest_tso6?: boolean;
  /** VIRTIO_NET_F_GUEST_ECN (default true). */
  guest_ecn?: boolean;
  /** VIRTIO_NET_F_GUEST_UFO (default true). */
  guest_ufo?: boolean;
  /** VIRTIO_NET_F_GUEST_USO4 (default true). */
  guest_uso4?: boolean;
  /** VIRTIO_NET_F_GUEST_USO6 (default true). */
  guest_uso6?: boolean;
  /** VIRTIO_NET_F_GUEST_ANNOUNCE (default true). */
  guest_announce?: boolean;
  /** VIRTIO_NET_F_HOST_TSO4 (default true). */
  host_tso4?: boolean;
  /** VIRTIO_NET_F_HOST_TSO6 (default true). */
  host_tso6?: boolean;
  /** VIRTIO_NET_F_HOST_ECN (default true). */
  host_ecn?: boolean;
  /** VIRTIO_NET_F_HOST_UFO (default true). */
  host_ufo?: boolean;
  /** VIRTIO_NET_F_HOST_USO (default true). */
  host_uso?: boolean;
  /** VIRTIO_NET_F_MRG_RXBUF (default true). */
  mrg_rxbuf?: boolean;
  /** VIRTIO_NET_F_STATUS (default true). */
  status?: boolean;
  /** VIRTIO_NET_F_CTRL_VQ (default true). */
  ctrl_vq?: boolean;
  /** VIRTIO_NET_F_CTRL_RX (default true). */
  ctrl_rx?: boolean;
  /** VIRTIO_NET_F_CTRL_VLAN (default true). */
  ctrl_vlan?: boolean;
  /** VIRTIO_NET_F_CTRL_RX_EXTRA (default true). */
  ctrl_rx_extra?: boolean;
  /** VIRTIO_NET_F_CTRL_MAC_ADDR (default true). */
  ctrl_mac_addr?: boolean;
  /** VIRTIO_NET_F_CTRL_GUEST_OFFLOADS (default true). */
  ctrl_guest_offloads?: boolean;
  /** VIRTIO_NET_F_MQ (default false). */
  mq?: boolean;
  /** VIRTIO_NET_F_RSS (default false). */
  rss?: boolean;
  /** VIRTIO_NET_F_HASH_REPORT (default false). */
  hash?: boolean;
  /** VIRTIO_NET_F_STANDBY: this NIC is the standby of a failover pair (default false; §5.1.3). */
  failover?: boolean;
  /** VIRTIO_NET_F_NOTF_COAL: TX_SET / RX_SET notification coalescing (default false; VIRTIO 1.3 "Notifications Coalescing"). */
  notf_coal?: boolean;
  /** VIRTIO_NET_F_VQ_NOTF_COAL: per-virtqueue VQ_SET / VQ_GET coalescing (default false; VIRTIO 1.3 "Notifications Coalescing"). */
  vq_notf_coal?: boolean;
  /** VIRTIO_NET_F_DEVICE_STATS: STATS_QUERY / STATS_GET (default false; VIRTIO 1.3 "Device Statistics"). */
  device_stats?: boolean;
  /** VIRTIO_NET_F_GUEST_HDRLEN: the driver's hdr_len is exact for GSO frames (default false; VIRTIO 1.3 §5.1.6.2). */
  guest_hdrlen?: boolean;
  /**
   * VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO: tunnel GSO frames from the backend reach the guest as they are
   * (default true, as QEMU 11.1; VIRTIO 1.4 §5.1.6.4). Offered when the backend can deliver them.
   */
  guest_tunnel?: boolean;
  /** VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO_CSUM: ... with the outer UDP checksum left partial (default true). */
  guest_tunnel_csum?: boolean;
  /**
   * VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO: the guest may send VXLAN/GENEVE-style tunnel GSO frames, passed to a
   * backend that takes them, else segmented in software (default true, as QEMU 11.1; VIRTIO 1.4 §5.1.6.2).
   */
  host_tunnel?: boolean;
  /** VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO_CSUM: ... with the outer UDP checksum offloaded too (default true). */
  host_tunnel_csum?: boolean;
  /** VIRTIO_NET_F_HASH_TUNNEL: inner header hash of encapsulated frames (default false; VIRTIO 1.4 "Inner Header Hash"). Needs rss or hash. */
  hash_tunnel?: boolean;
  /** VIRTIO_NET_F_RSS_CONTEXT: RSS contexts besides the default configuration (default false; VIRTIO 1.4 "RSS Context"). Needs rss. */
  rss_context?: boolean;
  /**
   * Queue pairs on worker threads (docs/workers.md): true runs each pair's rx/tx virtqueues and tap
   * queue fd on a thread of its own, a number deals the pairs over that many threads; false (default)
   * keeps everything on the caller's thread. Needs a TapBackend with a queue per pair and guest memory
   * of SharedArrayBuffer regions.
   */
  workers?: boolean | number;
  /** Hash types offered in supported_hash_types (§5.1.4): 'off' withholds one; 'auto' and 'on' offer it. */
  'hash-ipv4'?: OnOffAuto;
  /** See `hash-ipv4`. */
  'hash-tcp4'?: OnOffAuto;
  /** See `hash-ipv4`. */
  'hash-udp4'?: OnOffAuto;
  /** See `hash-ipv4`. */
  'hash-ipv6'?: OnOffAuto;
  /** See `hash-ipv4`. */
  'hash-tcp6'?: OnOffAuto;
  /** See `hash-ipv4`. */
  'hash-udp6'?: OnOffAuto;
  /** See `hash-ipv4`. */
  'hash-ipv6ex'?: OnOffAuto;
  /** See `hash-ipv4`. */
  'hash-tcp6ex'?: OnOffAuto;
  /** See `hash-ipv4`. */
  'hash-udp6ex'?: OnOffAuto;
  /** Receive queue size, a power of two 256..1024 (default 256). */
  rx_queue_size?: number;
  /** Transmit queue size, a power of two 256..1024 (default 256). */
  tx_queue_size?: number;
  /** VIRTIO_NET_F_MTU with this MTU; 0 (default) = not offered, else 68..65535. */
  host_mtu?: number;
  /** Mbit/s; -1 (default) = unknown. SPEED_DUPLEX is offered when speed or duplex is set. */
  speed?: number;
  /** Duplex for SPEED_DUPLEX; default unknown. */
  duplex?: 'half' | 'full';

  /** VIRTIO_F_EVENT_IDX (default true). */
  event_idx?: boolean;
  /** VIRTIO_F_INDIRECT_DESC (default true). */
  indirect_desc?: boolean;
  /** VIRTIO_F_RING_PACKED (default false). */
  packed?: boolean;
  /** VIRTIO_F_RING_RESET (default true). */
  queue_reset?: boolean;
  /** VIRTIO_F_NOTIFICATION_DATA (default false). */
  notification_data?: boolean;
  /** VIRTIO_F_IN_ORDER (default false). */
  in_order?: boolean;
  /** VIRTIO_F_ACCESS_PLATFORM (default false). */
  iommu_platform?: boolean;
  /** VIRTIO_F_ANY_LAYOUT, legacy interface only (default true). */
  any_layout?: boolean;
  /** VIRTIO_F_NOTIFY_ON_EMPTY, legacy interface only (default true). */
  notify_on_empty?: boolean;

  /**
   * The legacy (transitional) interface in I/O BAR0. 'auto' (default), as QEMU's virtio_pci_realize:
   * off behind a PCIe port (bus 'pcie'), on for conventional PCI (bus 'pci').
   */
  'disable-legacy'?: boolean | OnOffAuto;
  /** No modern interface (default false); needs the legacy one. */
  'disable-modern'?: boolean;
}

/** The options after validation, with every default applied (what `parseVirtioNetPciOptions` returns). */
export interface VirtioNetPciConfig
  extends Required<Omit<VirtioNetPciOptions, 'sriov' | 'duplex' | 'disable-legacy'>> {
  sriov?: VirtioNetSriovOptions;
  duplex?: 'half' | 'full';
  /** Resolved from 'auto' by the bus. */
  'disable-legacy': boolean;
}
