/**
 * Device parts (VIRTIO 1.4 §2.13 "Device parts", spec source device-parts.tex): `struct virtio_dev_part_hdr`
 * and the part lists DEV_PARTS_GET returns and DEV_PARTS_SET takes. The one codec of that layout.
 */

/** `struct virtio_dev_part_hdr`, 16 bytes. */
export const DEV_PART_HDR = {
  partType: 0, // le16
  flags: 2, // u8
  reserved: 3, // u8
  /** selector: u8[8]: pci_common_cfg.offset le32 | vq_index.index le16 | device_type_raw. */
  selector: 4,
  length: 12, // le32
  size: 16,
} as const;

/** Common part types (device-parts.tex table "Common device parts"). */
export const DevPart = {
  DEV_FEATURES: 0x100,
  DRV_FEATURES: 0x101,
  PCI_COMMON_CFG: 0x102,
  DEVICE_STATUS: 0x103,
  VQ_CFG: 0x104,
  VQ_NOTIFY_CFG: 0x105,
} as const;

/** VIRTIO_DEV_PART_F_OPTIONAL (bit 0 of flags). */
export const DEV_PART_F_OPTIONAL = 1;

/** One part: header fields and its value. */
export interface DevicePart {
  type: number;
  flags: number;
  /** The 8 selector bytes. */
  selector: Uint8Array;
  value: Uint8Array;
}

/** Selector of a PCI_COMMON_CFG part (le32 offset) or a VQ part (le16 index). */
export function selector(v: number, bytes: 2 | 4): Uint8Array {
  const s = new Uint8Array(8);
  for (let i = 0; i < bytes; i++) s[i] = (v >>> (8 * i)) & 0xff;
  return s;
}

/** The header of `p` into `out` at `at`. */
export function writePartHeader(out: Uint8Array, at: number, p: DevicePart): void {
  out.fill(0, at, at + DEV_PART_HDR.size);
  out[at] = p.type & 0xff;
  out[at + 1] = (p.type >>> 8) & 0xff;
  out[at + DEV_PART_HDR.flags] = p.flags;
  out.set(p.selector.subarray(0, 8), at + DEV_PART_HDR.selector);
  const n = p.value.length;
  for (let i = 0; i < 4; i++) out[at + DEV_PART_HDR.length + i] = (n >>> (8 * i)) & 0xff;
}

/** Bytes `encodeParts` writes for `parts`. */
export function partsSize(parts: readonly DevicePart[]): number {
  let n = 0;
  for (const p of parts) n += DEV_PART_HDR.size + p.value.length;
  return n;
}

/** `struct virtio_dev_part parts[]` into `out` at `at` (it must hold `partsSize`). */
export function encodeParts(parts: readonly DevicePart[], out: Uint8Array, at = 0): number {
  let o = at;
  for (const p of parts) {
    writePartHeader(out, o, p);
    out.set(p.value, o + DEV_PART_HDR.size);
    o += DEV_PART_HDR.size + p.value.length;
  }
  return o - at;
}

/** A part list from bytes, or why it is malformed (a header cut short, a length past the end). */
export function decodeParts(b: Uint8Array): DevicePart[] | string {
  const parts: DevicePart[] = [];
  let o = 0;
  while (o < b.length) {
    if (o + DEV_PART_HDR.size > b.length) return `part ${parts.length}: header cut short at byte ${o}`;
    const len = (b[o + 12]! | (b[o + 13]! << 8) | (b[o + 14]! << 16) | (b[o + 15]! << 24)) >>> 0;
    const start = o + DEV_PART_HDR.size;
    if (len > b.length - start) return `part ${parts.length}: length ${len} runs past the data`;
    parts.push({
      type: b[o]! | (b[o + 1]! << 8),
      flags: b[o + DEV_PART_HDR.flags]!,
      selector: b.slice(o + DEV_PART_HDR.selector, o + DEV_PART_HDR.selector + 8),
      value: b.subarray(start, start + len),
    });
    o = start + len;
  }
  return parts;
}

/** Whether two parts name the same thing (type and selector). */
export function samePart(
  a: { type: number; selector: Uint8Array },
  b: { type: number; selector: Uint8Array },
): boolean {
  if (a.type !== b.type) return false;
  for (let i = 0; i < 8; i++) if ((a.selector[i] ?? 0) !== (b.selector[i] ?? 0)) return false;
  return true;
}
