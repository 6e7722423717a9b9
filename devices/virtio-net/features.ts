/**
 * virtio-net feature bits (VIRTIO 1.3 §5.1.3) and the one place that decides which the device offers:
 * offered = f(options, backend capabilities), gated the way QEMU's `virtio_net_get_features` gates them.
 */
import type { BackendCapabilities } from '../../lib/net/backend.js';
import { featureBit as bit, hasFeature as has, VIRTIO_F_VERSION_1 } from '../../virtio/features.js';
import type { VirtioNetPciConfig } from './options.js';

/** Feature bit numbers (§5.1.3). */
export const NetF = {
  CSUM: 0,
  GUEST_CSUM: 1,
  CTRL_GUEST_OFFLOADS: 2,
  MTU: 3,
  MAC: 5,
  GSO: 6,
  GUEST_TSO4: 7,
  GUEST_TSO6: 8,
  GUEST_ECN: 9,
  GUEST_UFO: 10,
  HOST_TSO4: 11,
  HOST_TSO6: 12,
  HOST_ECN: 13,
  HOST_UFO: 14,
  MRG_RXBUF: 15,
  STATUS: 16,
  CTRL_VQ: 17,
  CTRL_RX: 18,
  CTRL_VLAN: 19,
  CTRL_RX_EXTRA: 20,
  GUEST_ANNOUNCE: 21,
  MQ: 22,
  CTRL_MAC_ADDR: 23,
  DEVICE_STATS: 50,
  /** VIRTIO 1.4: inner header hash. */
  HASH_TUNNEL: 51,
  VQ_NOTF_COAL: 52,
  NOTF_COAL: 53,
  GUEST_USO4: 54,
  GUEST_USO6: 55,
  HOST_USO: 56,
  HASH_REPORT: 57,
  GUEST_HDRLEN: 59,
  RSS: 60,
  RSC_EXT: 61,
  STANDBY: 62,
  SPEED_DUPLEX: 63,
  /** VIRTIO 1.4: RSS contexts (feature word 2). */
  RSS_CONTEXT: 64,
  // VIRTIO 1.4, feature word 2.
  GUEST_UDP_TUNNEL_GSO: 65,
  GUEST_UDP_TUNNEL_GSO_CSUM: 66,
  HOST_UDP_TUNNEL_GSO: 67,
  HOST_UDP_TUNNEL_GSO_CSUM: 68,
} as const;

export { bit, has, VIRTIO_F_VERSION_1 };

/**
 * Guest offload bits, in feature-bit layout (also the CTRL_GUEST_OFFLOADS_SET bitmask layout,
 * §5.1.6.5.6.1, except for the tunnel bits: see `guestOffloadsFromCtrl`).
 */
export const GUEST_OFFLOAD_BITS = [
  NetF.GUEST_CSUM,
  NetF.GUEST_TSO4,
  NetF.GUEST_TSO6,
  NetF.GUEST_ECN,
  NetF.GUEST_UFO,
  NetF.GUEST_USO4,
  NetF.GUEST_USO6,
  NetF.GUEST_UDP_TUNNEL_GSO,
  NetF.GUEST_UDP_TUNNEL_GSO_CSUM,
] as const;

export const GUEST_OFFLOAD_MASK = GUEST_OFFLOAD_BITS.reduce((m, b) => m | bit(b), 0n);

/**
 * The le64 of CTRL_GUEST_OFFLOADS_SET in feature-bit layout: the tunnel offloads, whose feature bits
 * (65, 66) do not fit 64 bits, travel as bits 46 and 47 (VIRTIO 1.4 "Setting Offloads State").
 */
export function guestOffloadsFromCtrl(v: bigint): bigint {
  const mapped = (v >> 46n) & 3n;
  return (v & ~(3n << 46n)) | (mapped << BigInt(NetF.GUEST_UDP_TUNNEL_GSO));
}

/** Bits that exist only if the backend passes a vnet header (QEMU: `peer_has_vnet_hdr`). */
const VNET_HDR_ONLY = [
  NetF.CSUM,
  NetF.HOST_TSO4,
  NetF.HOST_TSO6,
  NetF.HOST_ECN,
  NetF.HOST_UFO,
  NetF.HOST_USO,
  NetF.GUEST_CSUM,
  NetF.GUEST_TSO4,
  NetF.GUEST_TSO6,
  NetF.GUEST_ECN,
  NetF.GUEST_UFO,
  NetF.GUEST_USO4,
  NetF.GUEST_USO6,
  NetF.HASH_REPORT,
  NetF.NOTF_COAL,
  NetF.VQ_NOTF_COAL,
  NetF.DEVICE_STATS,
  NetF.GUEST_UDP_TUNNEL_GSO,
  NetF.GUEST_UDP_TUNNEL_GSO_CSUM,
  NetF.HOST_UDP_TUNNEL_GSO,
  NetF.HOST_UDP_TUNNEL_GSO_CSUM,
];

/** Bits that require CTRL_VQ (§5.1.3.1). */
const NEEDS_CTRL_VQ = [
  NetF.CTRL_RX,
  NetF.CTRL_VLAN,
  NetF.CTRL_RX_EXTRA,
  NetF.GUEST_ANNOUNCE,
  NetF.MQ,
  NetF.CTRL_MAC_ADDR,
  NetF.CTRL_GUEST_OFFLOADS,
  NetF.RSS,
  NetF.HASH_REPORT,
  NetF.NOTF_COAL,
  NetF.VQ_NOTF_COAL,
  NetF.DEVICE_STATS,
  NetF.HASH_TUNNEL,
  NetF.RSS_CONTEXT,
];

/**
 * Device-type feature bits offered for `options` over a backend with `caps`. Transport bits (VERSION_1,
 * EVENT_IDX, ...) are the transport's business and are not included.
 *
 * Gating follows QEMU: without a vnet header no checksum, TSO, UFO, USO, ECN or hash report; host offloads
 * the backend cannot take are not offered (QEMU checks UFO and USO support of the tap). Unlike QEMU, bits
 * that need the control queue are not offered when `ctrl_vq=off` (QEMU offers them and Linux then fails
 * feature validation): see docs/compatibility.md.
 */
export function offeredNetFeatures(o: VirtioNetPciConfig, caps: BackendCapabilities): bigint {
  const on: Array<[boolean, number]> = [
    [o.csum, NetF.CSUM],
    [o.guest_csum, NetF.GUEST_CSUM],
    [o.ctrl_guest_offloads, NetF.CTRL_GUEST_OFFLOADS],
    [o.host_mtu > 0, NetF.MTU],
    [true, NetF.MAC],
    [o.guest_tso4, NetF.GUEST_TSO4],
    [o.guest_tso6, NetF.GUEST_TSO6],
    [o.guest_ecn, NetF.GUEST_ECN],
    [o.guest_ufo, NetF.GUEST_UFO],
    [o.host_tso4, NetF.HOST_TSO4],
    [o.host_tso6, NetF.HOST_TSO6],
    [o.host_ecn, NetF.HOST_ECN],
    [o.host_ufo, NetF.HOST_UFO],
    [o.mrg_rxbuf, NetF.MRG_RXBUF],
    [o.status, NetF.STATUS],
    [o.ctrl_vq, NetF.CTRL_VQ],
    [o.ctrl_rx, NetF.CTRL_RX],
    [o.ctrl_vlan, NetF.CTRL_VLAN],
    [o.ctrl_rx_extra, NetF.CTRL_RX_EXTRA],
    [o.guest_announce, NetF.GUEST_ANNOUNCE],
    [o.mq, NetF.MQ],
    [o.ctrl_mac_addr, NetF.CTRL_MAC_ADDR],
    [o.guest_uso4, NetF.GUEST_USO4],
    [o.guest_uso6, NetF.GUEST_USO6],
    [o.host_uso, NetF.HOST_USO],
    [o.hash, NetF.HASH_REPORT],
    [o.rss, NetF.RSS],
    [o.speed >= 0 || o.duplex !== undefined, NetF.SPEED_DUPLEX],
    // Only the bit: pairing with the primary (hiding it until the driver acks STANDBY) is the VMM's.
    [o.failover, NetF.STANDBY],
    [o.notf_coal, NetF.NOTF_COAL],
    [o.vq_notf_coal, NetF.VQ_NOTF_COAL],
    [o.device_stats, NetF.DEVICE_STATS],
    [o.guest_hdrlen, NetF.GUEST_HDRLEN],
    [o.guest_tunnel, NetF.GUEST_UDP_TUNNEL_GSO],
    [o.guest_tunnel_csum, NetF.GUEST_UDP_TUNNEL_GSO_CSUM],
    [o.host_tunnel, NetF.HOST_UDP_TUNNEL_GSO],
    [o.host_tunnel_csum, NetF.HOST_UDP_TUNNEL_GSO_CSUM],
    [o.hash_tunnel, NetF.HASH_TUNNEL],
    [o.rss_context, NetF.RSS_CONTEXT],
  ];
  let f = 0n;
  for (const [enabled, b] of on) if (enabled) f |= bit(b);

  if (!caps.vnetHeader) for (const b of VNET_HDR_ONLY) f &= ~bit(b);
  const off = caps.offloads;
  // Guest-side offloads: the backend must be able to deliver such frames (TUNSETOFFLOAD).
  if (!off.csum) f &= ~(bit(NetF.CSUM) | bit(NetF.GUEST_CSUM));
  if (!off.ufo) f &= ~(bit(NetF.GUEST_UFO) | bit(NetF.HOST_UFO));
  if (!off.uso4 || !off.uso6) f &= ~(bit(NetF.HOST_USO) | bit(NetF.GUEST_USO4) | bit(NetF.GUEST_USO6));
  if (!off.tso4) f &= ~bit(NetF.GUEST_TSO4);
  if (!off.tso6) f &= ~bit(NetF.GUEST_TSO6);
  if (!off.ecn) f &= ~bit(NetF.GUEST_ECN);
  // Tunnel GSO towards the guest only from a backend that delivers it; from the guest we segment in
  // software what the backend cannot take, so HOST_UDP_TUNNEL_GSO needs only the vnet header.
  if (!off.tunnel) f &= ~bit(NetF.GUEST_UDP_TUNNEL_GSO);
  if (!off.tunnelCsum) f &= ~bit(NetF.GUEST_UDP_TUNNEL_GSO_CSUM);

  if (!has(f, NetF.CTRL_VQ)) for (const b of NEEDS_CTRL_VQ) f &= ~bit(b);
  return dropBrokenDependencies(f);
}

/**
 * Device bits offered on the legacy interface only: VIRTIO_NET_F_GSO with `gso` (QEMU's
 * virtio_net_class_init puts it in `legacy_features`, so the modern device_feature never shows it).
 */
export function legacyOnlyNetFeatures(o: VirtioNetPciConfig): bigint {
  return o.gso ? bit(NetF.GSO) : 0n;
}

/** Removes bits whose prerequisites are absent, so the offered set itself satisfies §5.1.3.1. */
function dropBrokenDependencies(f: bigint): bigint {
  let out = f;
  for (const [b, ok] of dependencyRules) if (has(out, b) && !ok(out)) out &= ~bit(b);
  return out;
}

/** §5.1.3.1: "The driver MUST NOT negotiate X unless it negotiates Y". Order matters for pruning. */
const dependencyRules: Array<[number, (f: bigint) => boolean]> = [
  [NetF.GUEST_TSO4, (f) => has(f, NetF.GUEST_CSUM)],
  [NetF.GUEST_TSO6, (f) => has(f, NetF.GUEST_CSUM)],
  [NetF.GUEST_UFO, (f) => has(f, NetF.GUEST_CSUM)],
  [NetF.GUEST_USO4, (f) => has(f, NetF.GUEST_CSUM)],
  [NetF.GUEST_USO6, (f) => has(f, NetF.GUEST_CSUM)],
  [NetF.GUEST_ECN, (f) => has(f, NetF.GUEST_TSO4) || has(f, NetF.GUEST_TSO6)],
  [NetF.HOST_TSO4, (f) => has(f, NetF.CSUM)],
  [NetF.HOST_TSO6, (f) => has(f, NetF.CSUM)],
  [NetF.HOST_UFO, (f) => has(f, NetF.CSUM)],
  [NetF.HOST_USO, (f) => has(f, NetF.CSUM)],
  [NetF.HOST_ECN, (f) => has(f, NetF.HOST_TSO4) || has(f, NetF.HOST_TSO6)],
  [NetF.CTRL_RX, (f) => has(f, NetF.CTRL_VQ)],
  [NetF.CTRL_VLAN, (f) => has(f, NetF.CTRL_VQ)],
  [NetF.CTRL_RX_EXTRA, (f) => has(f, NetF.CTRL_VQ)],
  [NetF.GUEST_ANNOUNCE, (f) => has(f, NetF.CTRL_VQ)],
  [NetF.MQ, (f) => has(f, NetF.CTRL_VQ)],
  [NetF.CTRL_MAC_ADDR, (f) => has(f, NetF.CTRL_VQ)],
  [NetF.CTRL_GUEST_OFFLOADS, (f) => has(f, NetF.CTRL_VQ)],
  [NetF.RSS, (f) => has(f, NetF.CTRL_VQ)],
  [NetF.HASH_REPORT, (f) => has(f, NetF.CTRL_VQ)],
  [NetF.NOTF_COAL, (f) => has(f, NetF.CTRL_VQ)],
  [NetF.VQ_NOTF_COAL, (f) => has(f, NetF.CTRL_VQ)],
  [NetF.DEVICE_STATS, (f) => has(f, NetF.CTRL_VQ)],
  // VIRTIO 1.4 §5.1.3.1 (after RSS and HASH_REPORT, whose pruning they follow).
  [NetF.HASH_TUNNEL, (f) => has(f, NetF.CTRL_VQ) && (has(f, NetF.RSS) || has(f, NetF.HASH_REPORT))],
  [NetF.RSS_CONTEXT, (f) => has(f, NetF.CTRL_VQ) && has(f, NetF.RSS)],
  [NetF.RSC_EXT, (f) => has(f, NetF.HOST_TSO4) || has(f, NetF.HOST_TSO6)],
  // VIRTIO 1.4: after the TSO/USO rules, so pruning them prunes these too.
  [
    NetF.GUEST_UDP_TUNNEL_GSO,
    (f) =>
      has(f, NetF.GUEST_TSO4) &&
      has(f, NetF.GUEST_TSO6) &&
      has(f, NetF.GUEST_USO4) &&
      has(f, NetF.GUEST_USO6),
  ],
  [NetF.GUEST_UDP_TUNNEL_GSO_CSUM, (f) => has(f, NetF.GUEST_UDP_TUNNEL_GSO)],
  [
    NetF.HOST_UDP_TUNNEL_GSO,
    (f) => has(f, NetF.HOST_TSO4) && has(f, NetF.HOST_TSO6) && has(f, NetF.HOST_USO),
  ],
  [NetF.HOST_UDP_TUNNEL_GSO_CSUM, (f) => has(f, NetF.HOST_UDP_TUNNEL_GSO)],
];

/** Why `features` (as the driver would accept them) break §5.1.3.1, or null. */
export function netFeatureDependencyError(features: bigint): string | null {
  for (const [b, ok] of dependencyRules) {
    if (has(features, b) && !ok(features)) {
      const name = Object.entries(NetF).find(([, v]) => v === b)?.[0] ?? String(b);
      return `VIRTIO_NET_F_${name} negotiated without its prerequisite (VIRTIO 1.3 §5.1.3.1)`;
    }
  }
  return null;
}

/** Size of the virtio-net header for the negotiated features (§5.1.6; 24 with VIRTIO 1.4 tunnel GSO). */
export function netHeaderSize(features: bigint): number {
  if (has(features, NetF.GUEST_UDP_TUNNEL_GSO) || has(features, NetF.HOST_UDP_TUNNEL_GSO)) return 24;
  if (has(features, NetF.HASH_REPORT)) return 20;
  if (has(features, VIRTIO_F_VERSION_1) || has(features, NetF.MRG_RXBUF)) return 12;
  return 10;
}
