/**
 * Inner header hash state (VIRTIO 1.4 §5.1.6 "Inner Header Hash"): `enabled_tunnel_types`, set by
 * VIRTIO_NET_CTRL_HASH_TUNNEL_SET (class 7, command 0, `struct virtnet_hash_tunnel { le32
 * enabled_tunnel_types; }`). The hash configuration in force (RSS_CONFIG, HASH_CONFIG or an RSS context)
 * hashes the inner headers of frames of the enabled encapsulation types (lib/net/tunnel-inner.ts).
 */
import { HASH_TUNNEL_SUPPORTED_TYPES } from '../../lib/net/tunnel-inner.js';

/** VIRTIO_NET_CTRL_HASH_TUNNEL and its one command (VIRTIO 1.4 "Inner Header Hash"). */
export const CTRL_HASH_TUNNEL = 7;
export const CTRL_HASH_TUNNEL_SET = 0;

/** Encodes `struct virtnet_hash_tunnel`, the command-specific-data of HASH_TUNNEL_SET. */
export function encodeHashTunnel(enabledTunnelTypes: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, enabledTunnelTypes >>> 0, true);
  return b;
}

export class HashTunnel {
  /** enabled_tunnel_types; 0 (every type disabled) initially and after reset. */
  types = 0;

  /** `supported_tunnel_types` (§5.1.4): a SET naming any other bit is refused. */
  constructor(readonly supported: number = HASH_TUNNEL_SUPPORTED_TYPES) {}

  reset(): void {
    this.types = 0;
  }

  /**
   * HASH_TUNNEL_SET. False (VIRTIO_NET_ERR, state unchanged) for fewer than 4 bytes or a bit outside
   * `supported_tunnel_types` (the device SHOULD refuse it: "Inner Header Hash" device requirements). Bytes after the structure are
   * ignored, as for the other fixed-size commands.
   */
  set(data: Uint8Array): boolean {
    if (data.length < 4) return false;
    const types = (data[0]! | (data[1]! << 8) | (data[2]! << 16) | (data[3]! << 24)) >>> 0;
    if ((types & ~this.supported) !== 0) return false;
    this.types = types;
    return true;
  }
}
