/**
 * Per-VF policy set by the VMM, with the vocabulary of `ip link set DEV vf N …` for hardware NICs:
 * `mac`, `vlan` + `qos` (VST: the switch tags the VF's transmit and strips and filters its receive),
 * `spoofchk`, `trust`, `state auto|enable|disable`, `max_tx_rate` (Mbit/s). Validated with zod; a bad
 * value throws an `OptionsError` naming the field.
 */
import { z } from 'zod';
import { OptionsError } from '../../lib/errors.js';

export type VfLinkState = 'auto' | 'enable' | 'disable';

/** A VF's policy as `vfInfo` reports it (every field set). */
export interface VfInfo {
  /** The MAC the VF's config space shows (assigned, or derived from the PF's). */
  mac: string;
  /** Port VLAN (VST), 0 for none. */
  vlan: number;
  /** 802.1p priority of the port VLAN's tag. */
  qos: number;
  /** Drop (and count) the VF's frames whose source MAC is not its own. */
  spoofCheck: boolean;
  /** Let the VF change its MAC and turn on promiscuous / all-multicast receive. */
  trust: boolean;
  linkState: VfLinkState;
  /** Transmit rate limit in Mbit/s, 0 for none. */
  maxTxRateMbps: number;
}

/** What `setVf` takes: any subset of `VfInfo`. */
export type VfPolicy = Partial<VfInfo>;

const macString = z
  .string()
  .regex(/^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/, 'expected a MAC address like 52:54:00:12:34:56')
  .refine((mac) => (Number.parseInt(mac.slice(0, 2), 16) & 1) === 0, 'expected a unicast MAC');

const policySchema = z
  .object({
    mac: macString,
    vlan: z.number().int().min(0, 'expected 0 (none) or 1..4094').max(4094, 'expected 0 (none) or 1..4094'),
    qos: z.number().int().min(0, 'expected 0..7').max(7, 'expected 0..7'),
    spoofCheck: z.boolean(),
    trust: z.boolean(),
    linkState: z.enum(['auto', 'enable', 'disable']),
    maxTxRateMbps: z
      .number()
      .min(0, 'expected 0 (no limit) or a rate in Mbit/s up to 1000000')
      .max(1_000_000, 'expected 0 (no limit) or a rate in Mbit/s up to 1000000'),
  })
  .partial()
  .strict();

/** Default policy of a VF: as a hardware NIC's after `echo N > sriov_numvfs` (spoof check on). */
export function defaultVfInfo(mac: string): VfInfo {
  return { mac, vlan: 0, qos: 0, spoofCheck: true, trust: false, linkState: 'auto', maxTxRateMbps: 0 };
}

/** Validates `policy` for VF `index`; throws `OptionsError` naming the field. */
export function parseVfPolicy(index: number, policy: unknown): VfPolicy {
  const r = policySchema.safeParse(policy);
  if (r.success) return r.data as VfPolicy;
  const issue = r.error.issues[0]!;
  const field = issue.path.length > 0 ? issue.path.join('.') : '';
  const what =
    issue.code === 'unrecognized_keys'
      ? `unknown field(s) ${issue.keys.map((k) => `"${k}"`).join(', ')}; accepted: mac, vlan, qos, spoofCheck, trust, linkState, maxTxRateMbps`
      : issue.message;
  throw new OptionsError(`setVf(${index}): ${field ? `field "${field}": ` : ''}${what}`);
}
