/** Checks a restored config space against the live one (QEMU get_pci_config_device's "Bad config data"). */
import type { ConfigSpace } from './config-space.js';

/**
 * The first byte of the function's identity and structure that `bytes` would change although no guest
 * write could (IDs, class, header type, subsystem, interrupt pin, every capability header, the vendor
 * and MSI-X capabilities whole), or -1.
 */
export function readOnlyMismatch(cs: ConfigSpace, bytes: Uint8Array): number {
  const cur = cs.bytes;
  const check = (o: number, n: number): number => {
    for (let i = o; i < o + n && i < cur.length; i++) {
      const ro = ~((cs.wmask[i] as number) | (cs.w1cmask[i] as number)) & 0xff;
      if (((cur[i] as number) ^ (bytes[i] as number)) & ro) return i;
    }
    return -1;
  };
  for (const [o, n] of [
    [0x00, 4],
    [0x08, 4],
    [0x0e, 1],
    [0x2c, 4],
    [0x34, 1],
    [0x3d, 1],
  ] as const) {
    const r = check(o, n);
    if (r >= 0) return r;
  }
  // Status: only the Capabilities List bit is fixed (interrupt status and error bits move).
  if (((cur[0x06] as number) ^ (bytes[0x06] as number)) & 0x10) return 0x06;
  // Capability headers, walked in the current layout (bounded: a list cannot loop here).
  for (let o = cur[0x34] as number, n = 0; o >= 0x40 && n < 48; o = cur[o + 1] as number, n++) {
    // Whole capabilities as QEMU's cmask has them; their writable fields are excluded by the masks.
    const id = cur[o] as number;
    const r = check(o, capLength(id, o, cur));
    if (r >= 0) return r;
  }
  if (cs.size === 4096) {
    for (let o = 0x100, n = 0; o >= 0x100 && n < 960; n++) {
      // SR-IOV (0x40 bytes) and ARI (8) are read-only as a whole but for their writable registers.
      const id = cs.getU32(o) & 0xffff;
      const r = check(o, id === 0x10 ? 0x40 : id === 0x0e ? 8 : 4);
      if (r >= 0) return r;
      o = cs.getU32(o) >>> 20;
      if (o === 0) break;
    }
  }
  return -1;
}

/** Bytes of a standard capability at `o` that a restore must keep (at least its 2-byte header). */
function capLength(id: number, o: number, cur: Uint8Array): number {
  const max = 0x100 - o;
  switch (id) {
    case 0x01: // Power Management
      return Math.min(8, max);
    case 0x09: // vendor specific (virtio): its own length byte
      return Math.max(2, Math.min(cur[o + 2] as number, max));
    case 0x10: // PCI Express (v2)
      return Math.min(0x3c, max);
    case 0x11: // MSI-X: table and PBA locations
      return Math.min(12, max);
    default:
      return 2;
  }
}
