/**
 * Offloads (VIRTIO 1.3 §5.1.3, §5.1.6.2, §5.1.6.4): which `struct virtio_net_hdr` requests the guest may
 * send (host side, HOST_* features) and may receive (guest side, GUEST_* features or
 * CTRL_GUEST_OFFLOADS), as integer masks so the per-frame checks do no BigInt work, and whether a frame
 * passes through with its metadata or the device finishes it in software (checksum, segmentation).
 */
import type { BackendOffloads, NetOffload } from '../../lib/net/backend.js';
import { GSO_UDP_TUNNEL, GsoType, NetHdrFlags } from '../../lib/net/vnet-header.js';
import { has, NetF } from './features.js';

/** Offload kinds as bits; TUNNEL(_CSUM): GSO over a UDP tunnel (and its outer checksum), VIRTIO 1.4. */
const Offload = {
  CSUM: 1,
  TSO4: 2,
  TSO6: 4,
  UFO: 8,
  USO: 16,
  ECN: 32,
  TUNNEL: 64,
  TUNNEL_CSUM: 128,
} as const;

/** Feature bits granting each offload kind: transmit (host) side and receive (guest) side (§5.1.3). */
const HOST_OFFLOAD_FEATURES: readonly [number, number][] = [
  [Offload.CSUM, NetF.CSUM],
  [Offload.TSO4, NetF.HOST_TSO4],
  [Offload.TSO6, NetF.HOST_TSO6],
  [Offload.UFO, NetF.HOST_UFO],
  [Offload.USO, NetF.HOST_USO],
  [Offload.ECN, NetF.HOST_ECN],
  [Offload.TUNNEL, NetF.HOST_UDP_TUNNEL_GSO],
  [Offload.TUNNEL_CSUM, NetF.HOST_UDP_TUNNEL_GSO_CSUM],
];
const GUEST_OFFLOAD_FEATURES: readonly [number, number][] = [
  [Offload.CSUM, NetF.GUEST_CSUM],
  [Offload.TSO4, NetF.GUEST_TSO4],
  [Offload.TSO6, NetF.GUEST_TSO6],
  [Offload.UFO, NetF.GUEST_UFO],
  [Offload.USO, NetF.GUEST_USO4],
  [Offload.USO, NetF.GUEST_USO6],
  [Offload.ECN, NetF.GUEST_ECN],
  [Offload.TUNNEL, NetF.GUEST_UDP_TUNNEL_GSO],
  [Offload.TUNNEL_CSUM, NetF.GUEST_UDP_TUNNEL_GSO_CSUM],
];

function offloadMask(features: bigint, table: readonly [number, number][]): number {
  let m = 0;
  for (const [kind, feature] of table) if (has(features, feature)) m |= kind;
  return m;
}

/** What the guest may ask of the device on tx, from the negotiated features. */
export function hostOffloadMask(features: bigint): number {
  return offloadMask(features, HOST_OFFLOAD_FEATURES);
}

/** What the guest accepts on rx, from its current guest offloads (feature-bit layout). */
export function guestOffloadMask(guestOffloads: bigint): number {
  return offloadMask(guestOffloads, GUEST_OFFLOAD_FEATURES);
}

/** The guest offloads as a backend takes them (TUNSETOFFLOAD). */
export function backendOffloads(g: bigint): BackendOffloads {
  return {
    csum: has(g, NetF.GUEST_CSUM),
    tso4: has(g, NetF.GUEST_TSO4),
    tso6: has(g, NetF.GUEST_TSO6),
    ecn: has(g, NetF.GUEST_ECN),
    ufo: has(g, NetF.GUEST_UFO),
    uso4: has(g, NetF.GUEST_USO4),
    uso6: has(g, NetF.GUEST_USO6),
    tunnel: has(g, NetF.GUEST_UDP_TUNNEL_GSO),
    tunnelCsum: has(g, NetF.GUEST_UDP_TUNNEL_GSO_CSUM),
  };
}

/** The frame asks for segmentation (a GSO type other than NONE, ECN aside). */
export function isGso(o: NetOffload): boolean {
  return (o.gsoType & ~GsoType.ECN) !== GsoType.NONE;
}

/** The frame asks for any offload: a checksum to complete or segmentation. */
export function wantsOffload(o: NetOffload): boolean {
  return (o.flags & NetHdrFlags.NEEDS_CSUM) !== 0 || isGso(o);
}

/**
 * Whether a frame's offload request is covered by `mask` (§5.1.6.2.1: the driver only asks for offloads
 * it negotiated; §5.1.6.4: the device only delivers what the driver accepts): NEEDS_CSUM needs CSUM, each
 * GSO type its TSO/UFO/USO kind, and the ECN bit ECN, a tunnel bit TUNNEL and UDP_TUNNEL_CSUM
 * TUNNEL_CSUM (the inner type still needs its own kind). When it is not, the device segments or
 * checksums the frame in software.
 */
export function offloadPermitted(o: NetOffload, mask: number): boolean {
  if ((o.flags & NetHdrFlags.NEEDS_CSUM) !== 0 && (mask & Offload.CSUM) === 0) return false;
  if ((o.gsoType & GsoType.ECN) !== 0 && (mask & Offload.ECN) === 0) return false;
  if ((o.flags & NetHdrFlags.UDP_TUNNEL_CSUM) !== 0 && (mask & Offload.TUNNEL_CSUM) === 0) return false;
  if ((o.gsoType & GSO_UDP_TUNNEL) !== 0 && (mask & Offload.TUNNEL) === 0) return false;
  switch (o.gsoType & ~(GsoType.ECN | GSO_UDP_TUNNEL)) {
    case GsoType.NONE:
      return true;
    case GsoType.TCPV4:
      return (mask & Offload.TSO4) !== 0;
    case GsoType.TCPV6:
      return (mask & Offload.TSO6) !== 0;
    case GsoType.UDP:
      return (mask & Offload.UFO) !== 0;
    case GsoType.UDP_L4:
      return (mask & Offload.USO) !== 0;
    default:
      return false;
  }
}

/**
 * The tunnel metadata of a guest frame against what was negotiated (`mask`, host side), VIRTIO 1.4
 * §5.1.6.2: true when the frame must be dropped. A tunnel bit needs HOST_UDP_TUNNEL_GSO (without it the
 * header has no offsets); with it, UDP_TUNNEL_CSUM needs a tunnel bit and HOST_UDP_TUNNEL_GSO_CSUM.
 * Without tunnel GSO negotiated the flag is one the device does not know and ignores (it is cleared).
 */
export function tunnelTxRefused(o: NetOffload, mask: number): boolean {
  const tunnel = (o.gsoType & GSO_UDP_TUNNEL) !== 0;
  if ((mask & Offload.TUNNEL) === 0) {
    o.flags &= ~NetHdrFlags.UDP_TUNNEL_CSUM;
    return tunnel;
  }
  if ((o.flags & NetHdrFlags.UDP_TUNNEL_CSUM) === 0) return false;
  return !tunnel || (mask & Offload.TUNNEL_CSUM) === 0;
}
