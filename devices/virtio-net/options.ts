/**
 * Validation of the embeddable virtio-net-pci device's options (options-types.ts), with QEMU's
 * `virtio-net-pci` property names and defaults (hw/net/virtio-net.c `virtio_net_properties`,
 * hw/virtio/virtio-pci.c, hw/virtio/virtio.c). An unknown option or a bad value throws an `OptionsError`
 * naming the option and the values it accepts.
 */
import { z } from 'zod';
import { OptionsError } from '../../lib/errors.js';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import type { NetBackend } from '../../lib/net/backend.js';
import type { VirtioNetInterrupts, VirtioNetPciConfig, VirtioNetPciOptions } from './options-types.js';

export type {
  OnOffAuto,
  VirtioNetInterrupts,
  VirtioNetMsiInterrupts,
  VirtioNetPciConfig,
  VirtioNetPciOptions,
  VirtioNetSriovOptions,
  VirtioNetVectorInterrupts,
} from './options-types.js';

/** Default MAC of QEMU's first NIC (net/net.c qemu_macaddr_default_if_unset). */
export const DEFAULT_MAC = '52:54:00:12:34:56';

const macString = z
  .string()
  .regex(/^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/, 'expected a MAC address like 52:54:00:12:34:56')
  .refine(
    (mac) => (Number.parseInt(mac.slice(0, 2), 16) & 1) === 0,
    'expected a unicast MAC (bit 0 of the first byte clear)',
  );

const queueSize = z
  .number()
  .int()
  .refine((n) => n >= 256 && n <= 1024 && (n & (n - 1)) === 0, 'expected a power of two from 256 to 1024');

/** What the device signals: MSI-X messages, or per-vector signals where the VMM emulates the table. */
const interruptsSchema = z.custom<VirtioNetInterrupts>(
  (v) =>
    typeof v === 'object' &&
    v !== null &&
    (typeof (v as { msi?: unknown }).msi === 'function' ||
      typeof (v as { vector?: unknown }).vector === 'function'),
  'expected { msi(address, data) } or { vector(n) }, with an optional intx(asserted)',
);

const onOffAuto = z.enum(['on', 'off', 'auto']).default('auto');

const backendSchema = z.custom<NetBackend>(
  (v) =>
    typeof v === 'object' &&
    v !== null &&
    typeof (v as NetBackend).transmit === 'function' &&
    typeof (v as NetBackend).attach === 'function' &&
    typeof (v as NetBackend).capabilities === 'object',
  'expected a NetBackend (MemoryBackend, TapBackend, or an object implementing lib/net/backend.ts)',
);

const sriovSchema = z
  .object({
    totalVfs: z.number().int().min(1, 'expected 1..255').max(255, 'expected 1..255'),
    vfDeviceId: z.number().int().min(0).max(0xffff).optional(),
    /** The backend of VF `index`; default: a MemoryBackend per VF. */
    vfBackend: z
      .custom<(index: number) => NetBackend>(
        (v) => typeof v === 'function',
        'expected a function (index) => NetBackend',
      )
      .optional(),
    /**
     * The guest memory of VF `index` (default: the PF's `memory`). A VMM that assigns each VF to a guest
     * of its own, or a vfio-user server whose VFs each have a client mapping its own memory, passes one per VF.
     */
    vfMemory: z
      .custom<(index: number) => GuestMemory>(
        (v) => typeof v === 'function',
        'expected a function (index) => GuestMemory',
      )
      .optional(),
  })
  .strict();

/**
 * Zod schema of `VirtioNetPciOptions` (options-types.ts, checked below to agree). Booleans are JavaScript
 * booleans here; QEMU's on/off spellings are `parseQemuDevice`'s business.
 */
export const virtioNetPciOptionsSchema = z
  .object({
    memory: z.instanceof(GuestMemory, { message: 'expected a GuestMemory' }),
    backend: backendSchema,
    interrupts: interruptsSchema,

    mac: macString.default(DEFAULT_MAC),
    queues: z.number().int().min(1, 'expected 1..256').max(256, 'expected 1..256').default(1),
    bus: z.enum(['pcie', 'pci']).default('pcie'),
    sriov: sriovSchema.optional(),
    /** MSI-X table size; QEMU's default for virtio-net-pci is 2 * queues + 2. 0 disables MSI-X. */
    vectors: z.number().int().min(0, 'expected 0..2048').max(2048, 'expected 0..2048').optional(),

    // virtio-net properties (hw/net/virtio-net.c), QEMU defaults.
    csum: z.boolean().default(true),
    guest_csum: z.boolean().default(true),
    gso: z.boolean().default(true),
    guest_tso4: z.boolean().default(true),
    guest_tso6: z.boolean().default(true),
    guest_ecn: z.boolean().default(true),
    guest_ufo: z.boolean().default(true),
    guest_uso4: z.boolean().default(true),
    guest_uso6: z.boolean().default(true),
    guest_announce: z.boolean().default(true),
    host_tso4: z.boolean().default(true),
    host_tso6: z.boolean().default(true),
    host_ecn: z.boolean().default(true),
    host_ufo: z.boolean().default(true),
    host_uso: z.boolean().default(true),
    mrg_rxbuf: z.boolean().default(true),
    status: z.boolean().default(true),
    ctrl_vq: z.boolean().default(true),
    ctrl_rx: z.boolean().default(true),
    ctrl_vlan: z.boolean().default(true),
    ctrl_rx_extra: z.boolean().default(true),
    ctrl_mac_addr: z.boolean().default(true),
    ctrl_guest_offloads: z.boolean().default(true),
    mq: z.boolean().default(false),
    rss: z.boolean().default(false),
    hash: z.boolean().default(false),
    failover: z.boolean().default(false),
    // Not QEMU 11.1 properties (it lacks these features): names in its style, off by default.
    notf_coal: z.boolean().default(false),
    vq_notf_coal: z.boolean().default(false),
    device_stats: z.boolean().default(false),
    guest_hdrlen: z.boolean().default(false),
    // VIRTIO 1.4 UDP tunnel GSO (QEMU 11.1 properties, default on).
    guest_tunnel: z.boolean().default(true),
    guest_tunnel_csum: z.boolean().default(true),
    host_tunnel: z.boolean().default(true),
    host_tunnel_csum: z.boolean().default(true),
    hash_tunnel: z.boolean().default(false),
    rss_context: z.boolean().default(false),
    /** Queue pairs on worker threads: true (one per pair) or a thread count; false (default): one thread. */
    workers: z
      .union([z.boolean(), z.number().int().min(1, 'expected true, false or 1..256').max(256)])
      .default(false),
    'hash-ipv4': onOffAuto,
    'hash-tcp4': onOffAuto,
    'hash-udp4': onOffAuto,
    'hash-ipv6': onOffAuto,
    'hash-tcp6': onOffAuto,
    'hash-udp6': onOffAuto,
    'hash-ipv6ex': onOffAuto,
    'hash-tcp6ex': onOffAuto,
    'hash-udp6ex': onOffAuto,
    rx_queue_size: queueSize.default(256),
    tx_queue_size: queueSize.default(256),
    /** 0 = not offered (QEMU's default); otherwise 68..65535. */
    host_mtu: z
      .number()
      .int()
      .refine((n) => n === 0 || (n >= 68 && n <= 65535), 'expected 0 (off) or 68..65535')
      .default(0),
    /** Mbit/s; -1 = unknown (QEMU's default: SPEED_DUPLEX offered only when speed or duplex is set). */
    speed: z.number().int().min(-1, 'expected -1 (unknown) or 0..2147483647').max(0x7fffffff).default(-1),
    duplex: z.enum(['half', 'full']).optional(),

    // virtio common properties (hw/virtio/virtio.c).
    event_idx: z.boolean().default(true),
    indirect_desc: z.boolean().default(true),
    packed: z.boolean().default(false),
    queue_reset: z.boolean().default(true),
    notification_data: z.boolean().default(false),
    in_order: z.boolean().default(false),
    iommu_platform: z.boolean().default(false),
    any_layout: z.boolean().default(true),
    notify_on_empty: z.boolean().default(true),

    // virtio-pci properties.
    'disable-legacy': z.union([z.boolean(), z.enum(['on', 'off', 'auto'])]).default('auto'),
    'disable-modern': z.boolean().default(false),
  })
  .strict()
  .superRefine((o, ctx) => {
    if (o.rss && !o.ctrl_vq)
      ctx.addIssue({ code: 'custom', path: ['rss'], message: 'rss=on needs ctrl_vq=on' });
    if (o.hash_tunnel && !o.rss && !o.hash)
      ctx.addIssue({
        code: 'custom',
        path: ['hash_tunnel'],
        message: 'hash_tunnel=on needs rss=on or hash=on',
      });
    if (o.rss_context && !o.rss)
      ctx.addIssue({ code: 'custom', path: ['rss_context'], message: 'rss_context=on needs rss=on' });
    if (o.mq && !o.ctrl_vq) ctx.addIssue({ code: 'custom', path: ['mq'], message: 'mq=on needs ctrl_vq=on' });
    if (o.queues > 1 && !o.mq && !o.rss)
      ctx.addIssue({ code: 'custom', path: ['queues'], message: 'queues > 1 needs mq=on or rss=on' });
    if (o['disable-modern'] && (o['disable-legacy'] === true || o['disable-legacy'] === 'on'))
      ctx.addIssue({
        code: 'custom',
        path: ['disable-modern'],
        message: 'disable-modern=on with disable-legacy=on leaves no interface',
      });
    if (o.sriov && o.bus !== 'pcie')
      ctx.addIssue({
        code: 'custom',
        path: ['sriov'],
        message: "SR-IOV needs bus: 'pcie' (an extended capability)",
      });
    if (o.vectors !== undefined && o.vectors > 0 && o.vectors < 2 && o.queues > 0) {
      // QEMU accepts any count; with too few vectors drivers fall back to sharing. Nothing to reject.
    }
  });

// The schema and the hand-written interfaces must agree both ways (a compile-time check).
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const inputAgrees: Same<z.input<typeof virtioNetPciOptionsSchema>, VirtioNetPciOptions> = true;
const outputAgrees: Same<
  Omit<z.output<typeof virtioNetPciOptionsSchema>, 'vectors' | 'disable-legacy'>,
  Omit<VirtioNetPciConfig, 'vectors' | 'disable-legacy'>
> = true;
void inputAgrees;
void outputAgrees;

function describe(issue: z.core.$ZodIssue): string {
  const name = issue.path.length > 0 ? issue.path.join('.') : '(options)';
  if (issue.code === 'unrecognized_keys') {
    return `unknown option${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${k}"`).join(', ')}; accepted options: ${Object.keys(virtioNetPciOptionsSchema.shape).join(', ')}`;
  }
  if (issue.code === 'invalid_value' && 'values' in issue) {
    return `option "${name}": expected one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`;
  }
  return `option "${name}": ${issue.message}`;
}

/** Validates options and applies QEMU's defaults; throws `OptionsError` naming the bad option. */
export function parseVirtioNetPciOptions(options: unknown): VirtioNetPciConfig {
  const result = virtioNetPciOptionsSchema.safeParse(options);
  if (!result.success) {
    throw new OptionsError(`virtio-net-pci: ${result.error.issues.map(describe).join('; ')}`);
  }
  const o = result.data;
  const legacy = o['disable-legacy'];
  return {
    ...o,
    vectors: o.vectors ?? 2 * o.queues + 2, // hw/virtio/virtio-net-pci.c realize
    // QEMU's disable-legacy=auto (virtio_pci_realize): legacy off behind a PCIe port, on for conventional PCI.
    'disable-legacy': legacy === 'auto' ? o.bus === 'pcie' : legacy === true || legacy === 'on',
  };
}

/** supported_hash_types (§5.1.4) for the `hash-*` options: every type but those set 'off' (QEMU 10+). */
export function supportedHashTypes(o: VirtioNetPciConfig): number {
  const order = [
    o['hash-ipv4'],
    o['hash-tcp4'],
    o['hash-udp4'],
    o['hash-ipv6'],
    o['hash-tcp6'],
    o['hash-udp6'],
    o['hash-ipv6ex'],
    o['hash-tcp6ex'],
    o['hash-udp6ex'],
  ];
  let mask = 0;
  for (const [i, v] of order.entries()) if (v !== 'off') mask |= 1 << i;
  return mask;
}
