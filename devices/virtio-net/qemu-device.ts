/**
 * QEMU's `-device virtio-net-pci,...` vocabulary: every property QEMU 11.1 lists for the device
 * (`-device virtio-net-pci,help`, recorded by the project's tests) and what we do
 * with it: honour it as an option, accept and ignore it where it only wires the device into QEMU itself,
 * accept only the value we implement, or refuse it. Refusals and ignores carry their reason.
 */
import { OptionsError } from '../../lib/errors.js';
import type { VirtioNetPciOptions } from './options-types.js';

/** How a QEMU property is handled. */
export type QemuProperty =
  /** Honoured: sets the option of the same name (`as` its value type). */
  | { kind: 'option'; as: 'bool' | 'int' | 'string' | 'on-off-auto' }
  /** Accepted with any value and ignored: it concerns QEMU's own plumbing. */
  | { kind: 'ignored'; reason: string }
  /** Accepted with the listed values (the behaviour we implement); any other value is refused with `reason`. */
  | { kind: 'only'; values: readonly string[]; reason: string }
  /** Refused with any value. */
  | { kind: 'refused'; reason: string };

const bool = { kind: 'option', as: 'bool' } as const;
const int = { kind: 'option', as: 'int' } as const;
const str = { kind: 'option', as: 'string' } as const;
const onOffAuto = { kind: 'option', as: 'on-off-auto' } as const;
const ignored = (reason: string): QemuProperty => ({ kind: 'ignored', reason });
const only = (values: readonly string[], reason: string): QemuProperty => ({ kind: 'only', values, reason });

const PLUMBING = 'wires the device into QEMU itself (the VMM does this)';
const COMPAT = "a compatibility switch for QEMU's older machine types; the current behaviour is modelled";

/**
 * Every property of QEMU 11.1's virtio-net-pci, plus `bus` / `id` (qdev's), `queues` and the switches of
 * features QEMU 11.1 lacks (`notf_coal`, `vq_notf_coal`, `device_stats`, `guest_hdrlen`,
 * `hash_tunnel`, `rss_context`; ours).
 */
export const QEMU_PROPERTIES: Readonly<Record<string, QemuProperty>> = {
  // qdev and PCI placement.
  id: ignored(`the device's QEMU id; ${PLUMBING}`),
  bus: ignored(
    `QEMU's bus id (pcie.0, a root port); ${PLUMBING}. bus=pcie and bus=pci choose our layout (behind a PCIe port or conventional PCI)`,
  ),
  addr: ignored(`slot and function on QEMU's bus; ${PLUMBING}`),
  multifunction: ignored(`QEMU's multifunction slot assembly; ${PLUMBING}`),
  busnr: ignored(`a bus number for QEMU's bus topology; ${PLUMBING}`),
  'acpi-index': ignored('an index in the ACPI tables, which the VMM builds'),
  bootindex: ignored('firmware boot order, which the VMM decides; the device has no option ROM'),
  romfile: ignored('the device exposes no expansion ROM (no network-boot firmware)'),
  rombar: ignored('the device exposes no expansion ROM (no network-boot firmware)'),
  romsize: ignored('the device exposes no expansion ROM (no network-boot firmware)'),
  netdev: ignored('the backend is the `backend` option (or `serve --tap`)'),
  failover_pair_id: ignored(
    'marks a primary device of a failover pair; hiding and plugging it is the VMM (failover=on is the standby side)',
  ),
  ioeventfd: ignored("QEMU's eventfd kick path; kicks reach us as BAR writes or vfio-user messages"),
  tx: ignored("QEMU's transmit scheduling (timer or bottom half); we transmit on each kick"),
  'x-txburst': ignored("QEMU's transmit scheduling; we transmit on each kick, bounded per event-loop turn"),
  'x-txtimer': ignored("QEMU's transmit scheduling; we transmit on each kick"),
  'ebpf-rss-fds': ignored("file descriptors of QEMU's preloaded eBPF RSS program; TapBackend loads its own"),
  'x-max-bounce-buffer-size': ignored("QEMU's DMA bounce buffer; guest memory is accessed directly"),
  'virtio-pci-bus-master-bug-migration': ignored("affects only QEMU's own migration stream"),
  'x-disable-legacy-check': ignored(
    'lifts a check for device types without a legacy interface; virtio-net has one either way',
  ),
  rsc_interval: ignored('the coalescing timer of guest_rsc_ext, which is not implemented'),
  'x-ats-page-aligned': ignored('only matters with ats=on, which is refused'),
  'x-pcie-err-unc-mask': ignored('only matters with aer=on, which is refused'),

  // Accepted at the value we implement.
  aer: only(['off'], 'no AER extended capability is modelled'),
  ats: only(['off'], 'no ATS extended capability is modelled (no device TLB)'),
  'modern-pio-notify': only(
    ['off'],
    'modern notifications are memory-mapped only (no I/O-port notify capability)',
  ),
  'page-per-vq': only(
    ['off'],
    'the notify area is 4 bytes per queue, as in QEMU by default; a page per queue is not modelled',
  ),
  guest_rsc_ext: only(['off'], 'VIRTIO_NET_F_RSC_EXT (receive segment coalescing) is not implemented'),
  'use-disabled-flag': only(['on'], COMPAT),
  'use-started': only(['on'], COMPAT),
  'x-pcie-ari-nextfn-1': only(['off'], COMPAT),
  'x-pcie-ext-tag': only(['on'], COMPAT),
  'x-pcie-flr-init': only(['on'], COMPAT),
  'x-pcie-lnksta-dllla': only(['on'], COMPAT),
  'x-pcie-pm-no-soft-reset': only(['off'], COMPAT),

  // Refused.
  'sriov-pf': {
    kind: 'refused',
    reason:
      'QEMU makes a VF a device of its own naming its PF; here the PF creates its VFs (the sriov option, { totalVfs })',
  },
  'virtio-backend': {
    kind: 'refused',
    reason: "QEMU's child object (the inner virtio-net-device), not a settable property",
  },

  // Honoured.
  mac: str,
  queues: int,
  vectors: int,
  duplex: str,
  speed: int,
  host_mtu: int,
  rx_queue_size: int,
  tx_queue_size: int,
  csum: bool,
  guest_csum: bool,
  gso: bool,
  guest_tso4: bool,
  guest_tso6: bool,
  guest_ecn: bool,
  guest_ufo: bool,
  guest_uso4: bool,
  guest_uso6: bool,
  guest_announce: bool,
  host_tso4: bool,
  host_tso6: bool,
  host_ecn: bool,
  host_ufo: bool,
  host_uso: bool,
  mrg_rxbuf: bool,
  status: bool,
  ctrl_vq: bool,
  ctrl_rx: bool,
  ctrl_vlan: bool,
  ctrl_rx_extra: bool,
  ctrl_mac_addr: bool,
  ctrl_guest_offloads: bool,
  mq: bool,
  rss: bool,
  hash: bool,
  failover: bool,
  guest_tunnel: bool,
  guest_tunnel_csum: bool,
  host_tunnel: bool,
  host_tunnel_csum: bool,
  // Ours, in QEMU's style: QEMU 11.1 has none of these features (docs/compatibility.md).
  notf_coal: bool,
  vq_notf_coal: bool,
  device_stats: bool,
  guest_hdrlen: bool,
  hash_tunnel: bool,
  rss_context: bool,
  'hash-ipv4': onOffAuto,
  'hash-tcp4': onOffAuto,
  'hash-udp4': onOffAuto,
  'hash-ipv6': onOffAuto,
  'hash-tcp6': onOffAuto,
  'hash-udp6': onOffAuto,
  'hash-ipv6ex': onOffAuto,
  'hash-tcp6ex': onOffAuto,
  'hash-udp6ex': onOffAuto,
  event_idx: bool,
  indirect_desc: bool,
  packed: bool,
  queue_reset: bool,
  notification_data: bool,
  in_order: bool,
  iommu_platform: bool,
  any_layout: bool,
  notify_on_empty: bool,
  'disable-legacy': onOffAuto,
  'disable-modern': bool,
};

/** QEMU's boolean spellings (qapi_bool_parse). */
const BOOLEAN_WORDS: Readonly<Record<string, boolean>> = {
  on: true,
  off: false,
  true: true,
  false: false,
  yes: true,
  no: false,
  y: true,
  n: false,
};

function words(v: string): string {
  const b = BOOLEAN_WORDS[v.toLowerCase()];
  return b === undefined ? v : b ? 'on' : 'off';
}

/**
 * Parses a QEMU `-device` string ("virtio-net-pci,mq=on,rss=on,mac=...") into options, with QEMU's
 * property names and value spellings (booleans on/off, also true/false, yes/no). Every property of
 * QEMU 11.1's `virtio-net-pci` is known (QEMU_PROPERTIES): honoured, ignored as QEMU plumbing, accepted
 * at the value we implement, or refused naming the property and the reason. Throws `OptionsError` for a
 * refused or unknown property (listing the accepted ones) or a malformed value.
 */
export function parseQemuDevice(spec: string): Partial<VirtioNetPciOptions> {
  const parts = spec.split(',').filter((p) => p.length > 0);
  const out: Record<string, unknown> = {};
  if (parts.length > 0 && !parts[0]!.includes('=')) {
    const driver = parts.shift()!;
    if (
      driver !== 'virtio-net-pci' &&
      driver !== 'virtio-net-pci-non-transitional' &&
      driver !== 'virtio-net-pci-transitional'
    ) {
      throw new OptionsError(`parseQemuDevice: driver "${driver}" is not virtio-net-pci`);
    }
    if (driver === 'virtio-net-pci-non-transitional') out['disable-legacy'] = true;
    if (driver === 'virtio-net-pci-transitional') out['disable-legacy'] = false;
  }
  for (const part of parts) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new OptionsError(`parseQemuDevice: "${part}" is not property=value`);
    const key = part.slice(0, eq);
    const raw = part.slice(eq + 1);
    const p = Object.hasOwn(QEMU_PROPERTIES, key) ? QEMU_PROPERTIES[key] : undefined;
    if (p === undefined) {
      const accepted = Object.keys(QEMU_PROPERTIES)
        .filter((k) => QEMU_PROPERTIES[k]!.kind !== 'refused')
        .sort();
      throw new OptionsError(`parseQemuDevice: unknown property "${key}"; accepted: ${accepted.join(', ')}`);
    }
    if (key === 'bus' && (raw === 'pcie' || raw === 'pci')) {
      out.bus = raw;
      continue;
    }
    switch (p.kind) {
      case 'ignored':
        break;
      case 'refused':
        throw new OptionsError(`parseQemuDevice: property "${key}" is not supported: ${p.reason}`);
      case 'only':
        if (!p.values.includes(words(raw)))
          throw new OptionsError(
            `parseQemuDevice: property "${key}" accepts only ${p.values.join(', ')}: ${p.reason}`,
          );
        break;
      case 'option':
        out[key] = value(key, raw, p.as);
        break;
    }
  }
  return out as Partial<VirtioNetPciOptions>;
}

function value(key: string, raw: string, as: 'bool' | 'int' | 'string' | 'on-off-auto'): unknown {
  switch (as) {
    case 'int': {
      const n = Number(raw);
      if (raw.trim() === '' || !Number.isInteger(n))
        throw new OptionsError(`parseQemuDevice: property "${key}" expects an integer, got "${raw}"`);
      return n;
    }
    case 'string':
      return raw;
    case 'on-off-auto': {
      const v = words(raw);
      if (v !== 'on' && v !== 'off' && v !== 'auto')
        throw new OptionsError(`parseQemuDevice: property "${key}" expects on, off or auto, got "${raw}"`);
      return v;
    }
    case 'bool': {
      const b = BOOLEAN_WORDS[raw.toLowerCase()];
      if (b === undefined)
        throw new OptionsError(`parseQemuDevice: property "${key}" expects on or off, got "${raw}"`);
      return b;
    }
  }
}
