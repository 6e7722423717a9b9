/**
 * The feature sets stock Linux drivers accept (what the synthetic guest negotiates to behave like them):
 * `virtnet` features[] plus the virtio core's transport bits, read from each kernel's source.
 */
import { NetF } from '../virtio-net/features.js';

/** Feature bits Linux 6.1's virtio_net and virtio core accept (virtnet features[] + transport bits). */
export const LINUX_6_1_FEATURES: bigint = [
  NetF.CSUM,
  NetF.GUEST_CSUM,
  NetF.CTRL_GUEST_OFFLOADS,
  NetF.MTU,
  NetF.MAC,
  NetF.GUEST_TSO4,
  NetF.GUEST_TSO6,
  NetF.GUEST_ECN,
  NetF.GUEST_UFO,
  NetF.HOST_TSO4,
  NetF.HOST_TSO6,
  NetF.HOST_ECN,
  NetF.HOST_UFO,
  NetF.MRG_RXBUF,
  NetF.STATUS,
  NetF.CTRL_VQ,
  NetF.CTRL_RX,
  NetF.CTRL_VLAN,
  NetF.GUEST_ANNOUNCE,
  NetF.MQ,
  NetF.CTRL_MAC_ADDR,
  NetF.SPEED_DUPLEX,
  NetF.STANDBY,
  NetF.RSS,
  NetF.HASH_REPORT,
  53, // NOTF_COAL
  NetF.GSO,
  28, // INDIRECT_DESC
  29, // EVENT_IDX
  32, // VERSION_1
  33, // ACCESS_PLATFORM
  34, // RING_PACKED
  36, // ORDER_PLATFORM
  37, // SR_IOV
  40, // RING_RESET
].reduce((m, b) => m | (1n << BigInt(b)), 0n);

/**
 * Feature bits Linux 7.2's virtio_net and virtio core accept from a modern virtio-pci device: the 6.1 set
 * plus USO, VQ_NOTF_COAL, DEVICE_STATS, GUEST_HDRLEN, the UDP tunnel GSO bits 65-68 (VIRTIO 1.4 §5.1.3),
 * IN_ORDER, NOTIFICATION_DATA and ADMIN_VQ (virtnet `features[]`, `vring_transport_features`,
 * `vp_transport_features`). A mask for comparing what a Linux 7.2 guest negotiated; `VirtioNetDriver`
 * itself drives the 6.1 set (no admin queue, no in-order or notification-data rings).
 */
export const LINUX_7_2_FEATURES: bigint = [
  NetF.HOST_USO,
  NetF.GUEST_USO4,
  NetF.GUEST_USO6,
  NetF.VQ_NOTF_COAL,
  NetF.DEVICE_STATS,
  NetF.GUEST_HDRLEN,
  65, // GUEST_UDP_TUNNEL_GSO
  66, // GUEST_UDP_TUNNEL_GSO_CSUM
  67, // HOST_UDP_TUNNEL_GSO
  68, // HOST_UDP_TUNNEL_GSO_CSUM
  35, // IN_ORDER
  38, // NOTIFICATION_DATA
  41, // ADMIN_VQ
].reduce((m, b) => m | (1n << BigInt(b)), LINUX_6_1_FEATURES);
