/**
 * The contract between the virtio-net device and a host-side network backend (tap, in-memory, ...).
 *
 * Frames cross this boundary without the virtio-net header. Offload metadata travels separately in a
 * `NetOffload` record that the caller owns and reuses (no allocation per frame). A backend that takes a
 * vnet header (a tap with IFF_VNET_HDR) turns it into `struct virtio_net_hdr` on the wire itself, with
 * the codec in vnet-header.ts.
 */

/**
 * Largest frame (vnet header excluded) the device takes from a backend or the guest: 65535, the largest
 * IP packet a GSO frame can describe (the 16-bit IPv4 total length; Linux's GSO_MAX_SIZE is 64 KiB), plus
 * the 14-byte Ethernet header and two 4-byte 802.1Q tags (QinQ). Larger frames are counted drops.
 */
export const MAX_FRAME = 65535 + 14 + 8;

/** Offload metadata of one frame: the fields of `struct virtio_net_hdr` (VIRTIO 1.3 §5.1.6) a host needs. */
export interface NetOffload {
  /** VIRTIO_NET_HDR_F_* (NEEDS_CSUM 1, DATA_VALID 2, RSC_INFO 4, UDP_TUNNEL_CSUM 8). */
  flags: number;
  /** VIRTIO_NET_HDR_GSO_* (NONE 0, TCPV4 1, UDP 3, TCPV6 4, UDP_L4 5) | UDP_TUNNEL_IPV4/6 0x20/0x40 | ECN 0x80. */
  gsoType: number;
  hdrLen: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
  /**
   * UDP tunnel GSO (VIRTIO 1.4, gsoType | UDP_TUNNEL_IPV4/6): offsets of the outer UDP header and of the
   * inner network header in the frame. Undefined when the header has no such fields (shorter than 24
   * bytes); a backend that reads or writes 24-byte headers sets both.
   */
  outerThOffset?: number;
  innerNhOffset?: number;
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
  /**
   * GSO over a UDP tunnel (TUN_F_UDP_TUNNEL_GSO, VIRTIO 1.4) and with the outer UDP checksum offloaded
   * as well (TUN_F_UDP_TUNNEL_GSO_CSUM). Absent means no: frames carry no tunnel metadata.
   */
  tunnel?: boolean;
  tunnelCsum?: boolean;
}

/**
 * VIRTIO RSS (VIRTIO 1.3 §5.1.6.4.3) for a backend to apply to its own queue choice: queue =
 * `table[toeplitz(key, input of the first hash type that applies) & (table.length - 1)]`, `defaultQueue`
 * when none applies. Queue numbers are the device's queue pairs (backend queue i feeds pair i).
 */
export interface BackendRssConfig {
  key: Uint8Array;
  /** VIRTIO_NET_RSS_HASH_TYPE_* bits. */
  hashTypes: number;
  /** Length a power of two, at most 128. */
  table: ArrayLike<number>;
  defaultQueue: number;
}

/** What the backend can do; the device gates the feature bits it offers on this, as QEMU does. */
export interface BackendCapabilities {
  /** Frames may carry offload metadata (a tap with IFF_VNET_HDR). Without it: no csum/TSO/UFO/ECN/hash-report. */
  vnetHeader: boolean;
  /** Offloads the host side can take in frames the guest sends, and may deliver to the guest. */
  offloads: BackendOffloads;
  /** Queue pairs the backend has (one tap fd per pair with IFF_MULTI_QUEUE). */
  queuePairs: number;
  /**
   * The backend already delivers each flow on the queue pair the guest last sent it on (a multiqueue
   * tap: tun's automq flow table), so the device does not steer again (VIRTIO 1.3 §5.1.6.5.5 automatic
   * receive steering), as QEMU leaves it to the tap. Default false: the device steers.
   */
  steersFlows?: boolean;
}

/**
 * Where a backend may write one received frame without a copy: the segments of a guest receive buffer
 * (`BackendSink.lendReceive` fills it). Segment i is `bytes[i][offsets[i], offsets[i] + lengths[i])`;
 * `bytes[i]` is a whole guest-memory region, so a backend with FFI turns it into a host address once
 * per region (see TapBackend). Reused by the backend for every frame.
 */
export class ReceiveTarget {
  /** The most segments a lend fills; a buffer with more takes the copying path. */
  static readonly MAX_SEGMENTS = 64;
  count = 0;
  /** Sum of `lengths`. */
  capacity = 0;
  readonly bytes: Uint8Array[] = [];
  readonly offsets = new Float64Array(ReceiveTarget.MAX_SEGMENTS);
  readonly lengths = new Uint32Array(ReceiveTarget.MAX_SEGMENTS);
}

/** The device side of the contract: the backend calls these. */
export interface BackendSink {
  /**
   * A frame for the guest arrived on backend queue `queuePair`. `frame` and `offload` are only valid during
   * the call (the backend reuses its buffers). `offload` is null when the backend has no vnet header.
   * The device always takes the frame: it delivers, queues in its bounded backlog, or counts a drop.
   */
  receive(frame: Uint8Array, queuePair: number, offload: NetOffload | null): void;
  /**
   * Optional: `receive` of the frame at `bytes[offset, offset + length)`, with no view of it (the SR-IOV
   * switch hands a frame it reads in guest memory to another function this way).
   */
  receiveRange?(
    bytes: Uint8Array,
    offset: number,
    length: number,
    queuePair: number,
    offload: NetOffload | null,
  ): void;
  /** The backend's link went down or up (tap carrier, peer gone). */
  linkChanged?(up: boolean): void;
  /**
   * Optional: how many frames backend queue `queuePair` can hand over now and find guest buffers (the free
   * entries of the receive ring it feeds; a number larger than any ring, such as 0xffff or Infinity, when
   * the device picks the ring per frame or cannot tell). A backend that reads in batches reads no more than this (at least one: a frame that finds no
   * buffer is what pauses the queue), so frames past the ring's end wait in the host's queue instead of
   * being copied into the device's backlog. Never throws.
   */
  receiveRoom?(queuePair: number): number;
  /**
   * Direct receive, optional (a backend that reads with scatter I/O uses it to skip the copy): lends the
   * guest's next receive buffer for backend queue `queuePair`. The backend writes `[vnet header of
   * headerSize bytes (0: none)][frame]` over `target`'s segments in order, the rest (a frame larger than
   * the buffer) into an overflow buffer of its own, then calls `completeReceive`, or `cancelReceive` when
   * it read nothing. False means "use `receive`": the device must see the frame before choosing a buffer
   * (RSS, flow steering), frames are already waiting, there is no suitable buffer, the header sizes differ.
   * One lend at a time; nothing else may be called on the sink until it is completed or cancelled.
   */
  lendReceive?(queuePair: number, headerSize: number, target: ReceiveTarget): boolean;
  /**
   * The lent receive holds `length` bytes (vnet header included): the lent segments first, then whatever
   * did not fit at the start of `overflow`. The device takes the frame as `receive` would (filter, offload
   * checks, more buffers for mergeable rx, backlog, counted drops).
   */
  completeReceive?(length: number, overflow: Uint8Array): void;
  /** The lent buffer was not used (the read found nothing or failed): the guest gets it back untouched in the ring. */
  cancelReceive?(): void;
  /** The backend said no to `transmitAllowed(queuePair)` and may now take frames again. */
  transmitReady?(queuePair: number): void;
  /**
   * Optional: the frames handed over until the matching `endReceiveBurst` arrived together (one batch of
   * reads). The device then decides each receive queue's used buffer notification once per burst (VIRTIO
   * 1.3 §2.7.10 / §2.8.21: the driver is notified of all buffers used since the last notification) instead
   * of once per frame. Bursts nest; every begin must be followed by an end (try/finally), or the burst's
   * notifications are never raised. Never throws.
   */
  beginReceiveBurst?(): void;
  /** Optional: ends the burst `beginReceiveBurst` opened; raises the notifications it held. Never throws. */
  endReceiveBurst?(): void;
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
  /**
   * `transmit` for the frame at `bytes[offset, offset + length)`, optional. The device calls it instead
   * of `transmit` for frames that lie in guest memory, with `bytes` a whole guest-memory region, so a
   * frame costs no view (no allocation per frame). Read only those bytes, and only until the next
   * `flushTransmit` (the device completes the chain after it); frames the device assembled in its own
   * buffers (gathered, segmented) come through `transmit`, valid during that call only.
   */
  transmitRange?(
    bytes: Uint8Array,
    offset: number,
    length: number,
    queuePair: number,
    offload: NetOffload | null,
  ): TransmitResult;
  /**
   * Sends what `transmitRange` queued, optional: a backend that batches writes (TapBackend: one io_uring
   * submission per burst) reports queued frames as 'sent' and writes them here. The device calls it after
   * each burst and before it gives the chains back to the guest (queued frames may point into them).
   * Returns how many of the queued frames failed; the device counts them as dropped. Never throws.
   */
  flushTransmit?(queuePair: number): number;
  /**
   * Whether the device may take the next frame of `queuePair` from the guest now, optional (a rate limit:
   * the embedded switch's `maxTxRateMbps`). False: the frame stays in the guest's ring, and the backend
   * calls `BackendSink.transmitReady(queuePair)` when it may go. Never throws.
   */
  transmitAllowed?(queuePair: number): boolean;
  /** Stop / resume delivering frames on a queue pair (the guest ran out of rx buffers / posted more). */
  pause(queuePair: number): void;
  resume(queuePair: number): void;
  /** The guest's offload choice for frames towards it (TUNSETOFFLOAD); the backend segments what is off. */
  setOffloads?(offloads: BackendOffloads): void;
  /** The negotiated header size (10, 12, 20 or 24): a tap sets TUNSETVNETHDRSZ. */
  setVnetHeaderSize?(size: number): void;
  /** Attach or detach a queue pair (VQ_PAIRS_SET; TUNSETQUEUE on a multiqueue tap). */
  setQueuePairEnabled?(queuePair: number, enabled: boolean): void;
  /**
   * The device's link state as the guest sees it (VMM `setLinkUp`, or a link change the backend reported):
   * a tap mirrors it as the kernel-side carrier (TUNSETCARRIER), so the host sees NO-CARRIER while the
   * virtual cable is out. Never throws.
   */
  setCarrier?(up: boolean): void;
  /**
   * Steer frames by the guest's RSS configuration in the backend (a tap: an eBPF steering program, as
   * QEMU's), optional. True when from now on every frame arrives on the queue RSS selects, so the device
   * only keeps that choice (and can receive it straight into guest buffers); false when the backend cannot
   * (it then steers as before and the device does RSS in software). null stops it. Never throws.
   */
  setRssSteering?(config: BackendRssConfig | null): boolean;
  /** Releases every host resource. Idempotent. */
  close(): void;
}

/** A reusable NetOffload with every field zero (no offload). */
export function emptyOffload(): NetOffload {
  return {
    flags: 0,
    gsoType: 0,
    hdrLen: 0,
    gsoSize: 0,
    csumStart: 0,
    csumOffset: 0,
    outerThOffset: undefined,
    innerNhOffset: undefined,
  };
}

/**
 * Copies `from` into `to` field by field, the tunnel offsets too when `from` has none (a record from a
 * short header must not keep a previous frame's offsets). Returns `to`.
 */
export function copyOffload(to: NetOffload, from: NetOffload): NetOffload {
  to.flags = from.flags;
  to.gsoType = from.gsoType;
  to.hdrLen = from.hdrLen;
  to.gsoSize = from.gsoSize;
  to.csumStart = from.csumStart;
  to.csumOffset = from.csumOffset;
  to.outerThOffset = from.outerThOffset;
  to.innerNhOffset = from.innerNhOffset;
  return to;
}
