/**
 * The contract between the virtio-net device and a host-side network backend (tap, in-memory, ...).
 *
 * Frames cross this boundary without the virtio-net header. Offload metadata travels separately in a
 * `NetOffload` record that the caller owns and reuses (no allocation per frame). A backend that takes a
 * vnet header (a tap with IFF_VNET_HDR) turns it into `struct virtio_net_hdr` on the wire itself.
 */

/** Offload metadata of one frame: the fields of `struct virtio_net_hdr` (VIRTIO 1.3 §5.1.6) a host needs. */
export interface NetOffload {
  /** VIRTIO_NET_HDR_F_* (NEEDS_CSUM 1, DATA_VALID 2, RSC_INFO 4). */
  flags: number;
  /** VIRTIO_NET_HDR_GSO_* (NONE 0, TCPV4 1, UDP 3, TCPV6 4, UDP_L4 5) | ECN 0x80. */
  gsoType: number;
  hdrLen: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
}

/** Offloads the backend can accept from the guest (TUNSETOFFLOAD's TUN_F_* in tap terms). */
export interface BackendOffloads {
  csum: boolean;
  tso4: boolean;
  tso6: boolean;
  ecn: boolean;
  ufo: boolean;
  uso4: boolean;
  uso6: boolean;
}

/** What the backend can do; the device gates the feature bits it offers on this, as QEMU does. */
export interface BackendCapabilities {
  /** Frames may carry offload metadata (a tap with IFF_VNET_HDR). Without it: no csum/TSO/UFO/ECN/hash-report. */
  vnetHeader: boolean;
  /** Offloads the host side can take in frames the guest sends, and may deliver to the guest. */
  offloads: BackendOffloads;
  /** Queue pairs the backend has (one tap fd per pair with IFF_MULTI_QUEUE). */
  queuePairs: number;
}

/** The device side of the contract: the backend calls these. */
export interface BackendSink {
  /**
   * A frame for the guest arrived on backend queue `queuePair`. `frame` and `offload` are only valid during
   * the call (the backend reuses its buffers). `offload` is null when the backend has no vnet header.
   * The device always takes the frame: it delivers, queues in its bounded backlog, or counts a drop.
   */
  receive(frame: Uint8Array, queuePair: number, offload: NetOffload | null): void;
  /** The backend's link went down or up (tap carrier, peer gone). */
  linkChanged?(up: boolean): void;
}

/** Outcome of `NetBackend.transmit`. */
export type TransmitResult = 'sent' | 'dropped';

/** A host-side network backend. */
export interface NetBackend {
  readonly capabilities: BackendCapabilities;
  /** Connects the device. Called once, before any other call but `capabilities`. */
  attach(sink: BackendSink): void;
  /**
   * Sends one guest frame (header stripped; `offload` null when the guest sent no offload request or the
   * backend has no vnet header). Must not retain `frame` after returning: it may be a view of guest memory.
   * Never throws for a per-frame failure (EAGAIN, ENOBUFS, tap gone): it returns 'dropped'.
   */
  transmit(frame: Uint8Array, queuePair: number, offload: NetOffload | null): TransmitResult;
  /** Stop / resume delivering frames on a queue pair (the guest ran out of rx buffers / posted more). */
  pause(queuePair: number): void;
  resume(queuePair: number): void;
  /** The guest's offload choice for frames towards it (TUNSETOFFLOAD); the backend segments what is off. */
  setOffloads?(offloads: BackendOffloads): void;
  /** The negotiated header size (10, 12 or 20): a tap sets TUNSETVNETHDRSZ. */
  setVnetHeaderSize?(size: number): void;
  /** Attach or detach a queue pair (VQ_PAIRS_SET; TUNSETQUEUE on a multiqueue tap). */
  setQueuePairEnabled?(queuePair: number, enabled: boolean): void;
  /**
   * The device's link state as the guest sees it (VMM `setLinkUp`, or a link change the backend reported):
   * a tap mirrors it as the kernel-side carrier (TUNSETCARRIER), so the host sees NO-CARRIER while the
   * virtual cable is out. Never throws.
   */
  setCarrier?(up: boolean): void;
  /** Releases every host resource. Idempotent. */
  close(): void;
}

/** A reusable NetOffload with every field zero (no offload). */
export function emptyOffload(): NetOffload {
  return { flags: 0, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 0, csumOffset: 0 };
}
