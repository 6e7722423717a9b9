/**
 * A group member's device parts (VIRTIO 1.4 §2.13, device-parts.tex) from its transport state: the common
 * parts in the order of the "Device parts order" table, then one device-type part carrying what the common
 * parts cannot express (ring positions, device-type state). PCI config space and the MSI-X table are not
 * parts (device-parts.tex "Assumptions": the hypervisor keeps them).
 */
import { DEV_PART_F_OPTIONAL, type DevicePart, DevPart, samePart, selector } from '../admin/device-parts.js';
import type { TransportSnapshot } from './transport-core.js';

/** Common config fields carried as VIRTIO_DEV_PART_PCI_COMMON_CFG parts: [offset, size]. */
export const PART_COMMON_FIELDS: readonly (readonly [number, 2 | 4])[] = [
  [0x00, 4], // device_feature_select
  [0x08, 4], // driver_feature_select
  [0x10, 2], // config_msix_vector
  [0x12, 2], // num_queues (read-only: checked, not written)
  [0x16, 2], // queue_select
];

function le(v: bigint | number, n: number): Uint8Array {
  const b = new Uint8Array(n);
  let x = BigInt(v);
  for (let i = 0; i < n; i++) {
    b[i] = Number(x & 0xffn);
    x >>= 8n;
  }
  return b;
}

/** What the common parts need beyond the snapshot. */
export interface PartsContext {
  /** Features the device offers (device_feature as the driver reads it). */
  readonly offered: bigint;
  /** num_queues for the driver features. */
  numQueues(features: bigint): number;
}

/** The common parts of a transport state, in table order (DEV_FEATURES optional). */
export function commonParts(t: TransportSnapshot, c: PartsContext): DevicePart[] {
  const none = new Uint8Array(8);
  const features = BigInt(`0x${t.driverFeatures}`);
  const numQueues = Math.min(c.numQueues(features), t.queues.length);
  // le64 feature_bits[]: as many words as the offered bits need (two past bit 63, e.g. VIRTIO 1.4's 65-68).
  const featureBytes = c.offered >> 64n === 0n ? 8 : 16;
  const parts: DevicePart[] = [
    {
      type: DevPart.DEV_FEATURES,
      flags: DEV_PART_F_OPTIONAL,
      selector: none,
      value: le(c.offered, featureBytes),
    },
    { type: DevPart.DRV_FEATURES, flags: 0, selector: none, value: le(features, featureBytes) },
  ];
  const field: Record<number, number> = {
    0: t.deviceFeatureSelect,
    8: t.driverFeatureSelect,
    16: t.configVector,
    18: c.numQueues(features),
    22: t.queueSelect,
  };
  for (const [off, size] of PART_COMMON_FIELDS)
    parts.push({
      type: DevPart.PCI_COMMON_CFG,
      flags: 0,
      selector: selector(off, 4),
      value: le(field[off]!, size),
    });
  parts.push({ type: DevPart.DEVICE_STATUS, flags: 0, selector: none, value: le(t.status, 1) });
  for (let i = 0; i < numQueues; i++) {
    const q = t.queues[i]!;
    const v = new Uint8Array(32);
    v.set(le(q.size, 2), 0);
    v.set(le(q.vector, 2), 2);
    v.set(le(q.enabled ? 1 : 0, 2), 4);
    v.set(le((BigInt(q.desc[1]) << 32n) | BigInt(q.desc[0]), 8), 8);
    v.set(le((BigInt(q.driver[1]) << 32n) | BigInt(q.driver[0]), 8), 16);
    v.set(le((BigInt(q.device[1]) << 32n) | BigInt(q.device[0]), 8), 24);
    parts.push({ type: DevPart.VQ_CFG, flags: 0, selector: selector(i, 2), value: v });
  }
  for (let i = 0; i < numQueues; i++) {
    // queue_notify_off reads the queue index; queue_notif_config_data reads 0 (no NOTIF_CONFIG_DATA).
    const v = new Uint8Array(8);
    v.set(le(i, 2), 0);
    parts.push({ type: DevPart.VQ_NOTIFY_CFG, flags: 0, selector: selector(i, 2), value: v });
  }
  return parts;
}

/** The state part: `{ format, transport }` as UTF-8 JSON under a device-type part type. */
export function statePart(type: number, format: string, t: TransportSnapshot): DevicePart {
  return {
    type,
    flags: 0,
    selector: new Uint8Array(8),
    value: new TextEncoder().encode(JSON.stringify({ format, transport: t })),
  };
}

/**
 * Reads the state part out of a DEV_PARTS_SET list and checks the other parts against it: every common
 * part must name one this state has, with its length and value (DEV_FEATURES: the device's own, §2.12.1.5
 * "MUST verify"); unknown parts are refused unless optional. Returns the parsed JSON (still to be
 * validated) or why not.
 */
export function checkParts(
  parts: readonly DevicePart[],
  type: number,
  format: string,
  expected: (t: TransportSnapshot) => DevicePart[],
  validate: (state: unknown) => TransportSnapshot,
): { transport: TransportSnapshot } | string {
  const states = parts.filter((p) => p.type === type);
  if (states.length !== 1)
    return states.length === 0
      ? `the device-type part 0x${type.toString(16)} (ring positions and device state) is missing`
      : `part 0x${type.toString(16)} appears ${states.length} times`;
  let json: { format?: unknown; transport?: unknown };
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(states[0]!.value));
  } catch (e) {
    return `part 0x${type.toString(16)}: not UTF-8 JSON (${e instanceof Error ? e.message : String(e)})`;
  }
  if (!json || typeof json !== 'object' || json.format !== format)
    return `part 0x${type.toString(16)}: format is not "${format}"`;
  let t: TransportSnapshot;
  try {
    t = validate({ transport: json.transport });
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
  const mine = expected(t);
  const seen = new Set<string>();
  for (const p of parts) {
    if (p.type === type) continue;
    const key = `${p.type}:${Array.from(p.selector).join('.')}`;
    if (seen.has(key)) return `part 0x${p.type.toString(16)} (selector ${key}) appears twice`;
    seen.add(key);
    const e = mine.find((m) => samePart(m, p));
    if (!e) {
      if (p.flags & DEV_PART_F_OPTIONAL) continue;
      return `part 0x${p.type.toString(16)} with selector ${Array.from(p.selector).join(',')} is not one this device has`;
    }
    if (p.value.length !== e.value.length)
      return `part 0x${p.type.toString(16)}: length ${p.value.length}, the device's is ${e.value.length}`;
    for (let i = 0; i < e.value.length; i++)
      if (p.value[i] !== e.value[i])
        return `part 0x${p.type.toString(16)} (selector ${Array.from(p.selector).join(',')}) disagrees with the device ${p.type === DevPart.DEV_FEATURES ? 'features' : 'state part'}`;
  }
  return { transport: t };
}
