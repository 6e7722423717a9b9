/**
 * The envelope of a `VirtioNetPci` snapshot: the format version, the options the state was taken with
 * (checked against the target before anything is written), and the PF-level state beside the functions'
 * own: per-VF switch policies and the switch's counters. Everything here is as untrusted as a migration
 * stream: validated with zod, a refusal names the field.
 */
import { z } from 'zod';
import type { VfInfo } from './eswitch/policy.js';
import { PortStats } from './eswitch/port.js';
import type { SwitchStats } from './eswitch/switch.js';

/**
 * The format `snapshot()` writes. Fields added within /2 are optional in the device state so earlier /2
 * states still restore: `coalesce` (NOTF_COAL parameters; absent = none), the DEVICE_STATS counters
 * (absent = the target keeps its own), `hashTunnel` and `rssContexts` (VIRTIO 1.4; absent = off, none).
 */
export const SNAPSHOT_FORMAT = 'virtio-net-ts/2';
/**
 * The previous format, still read: it lacks the backlogs, counters, VF policies and modes (a /1 target
 * keeps its own counters and default policies, and its backlogs start empty).
 */
export const SNAPSHOT_FORMAT_V1 = 'virtio-net-ts/1';

/** What a state was taken from: `restore()` refuses a device built differently, naming the field. */
export interface SnapshotOptions {
  bus: 'pcie' | 'pci';
  queues: number;
  /** The virtio features the device offered (hex). */
  features: string;
  vectors: number;
  totalVfs: number;
  /** The embedded switch is in use (SR-IOV without `sriov.vfBackend`). */
  eswitch: boolean;
  /** supported_hash_types from the `hash-*` options (hex); absent in states taken before it was saved. */
  hashTypes?: string;
}

/** Options older states did not record: compared only when the state has them. */
const LATER_KEYS: ReadonlySet<keyof SnapshotOptions> = new Set(['hashTypes']);

/**
 * Checks a state's format and options against `mine`; returns the format version (1 or 2) or throws a
 * TypeError naming what differs. Writes nothing.
 */
export function checkSnapshotEnvelope(state: unknown, mine: SnapshotOptions): 1 | 2 {
  const s = state as { format?: unknown; options?: Partial<SnapshotOptions> } | null;
  if (!s || typeof s !== 'object') throw new TypeError('virtio-net-pci snapshot: not an object');
  if (s.format !== SNAPSHOT_FORMAT && s.format !== SNAPSHOT_FORMAT_V1) {
    throw new TypeError(
      s.format === undefined
        ? `virtio-net-pci snapshot: no "format" field (a state from before ${SNAPSHOT_FORMAT_V1}); it cannot be restored`
        : `virtio-net-pci snapshot: format ${JSON.stringify(s.format)} is not "${SNAPSHOT_FORMAT}" (or "${SNAPSHOT_FORMAT_V1}", which is still read)`,
    );
  }
  for (const key of Object.keys(mine) as (keyof SnapshotOptions)[]) {
    const theirs = s.options?.[key];
    if (theirs === undefined && LATER_KEYS.has(key)) continue;
    if (theirs !== mine[key]) {
      throw new TypeError(
        `virtio-net-pci snapshot: option "${key}" is ${JSON.stringify(theirs)} in the state, ${JSON.stringify(mine[key])} on this device`,
      );
    }
  }
  return s.format === SNAPSHOT_FORMAT ? 2 : 1;
}

const counter = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const portStatsSchema = z
  .object(Object.fromEntries(Object.keys(new PortStats()).map((k) => [k, counter])))
  .strict();
const switchStatsSchema = z
  .object({
    uplink: portStatsSchema,
    pf: portStatsSchema,
    vfs: z.array(portStatsSchema.extend({ index: z.number().int().min(0).max(255) }).strict()).max(256),
  })
  .strict();

const vfInfoSchema = z
  .object({
    mac: z
      .string()
      .regex(/^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/)
      .refine((m) => (Number.parseInt(m.slice(0, 2), 16) & 1) === 0, 'expected a unicast MAC'),
    vlan: z.number().int().min(0).max(4094),
    qos: z.number().int().min(0).max(7),
    spoofCheck: z.boolean(),
    trust: z.boolean(),
    linkState: z.enum(['auto', 'enable', 'disable']),
    maxTxRateMbps: z.number().min(0).max(1_000_000),
  })
  .strict();

/** The PF-level part of a /2 state: VF policies (switch only) and switch counters. */
export interface PfState {
  vfPolicies?: VfInfo[];
  switch?: SwitchStats;
}

/** Validates the PF-level part of a /2 state for a PF with `totalVfs` policies; throws naming the field. */
export function parsePfState(state: unknown, eswitch: boolean, totalVfs: number): PfState {
  const schema = z.object({
    vfPolicies: eswitch
      ? z.array(vfInfoSchema).length(totalVfs, `expected ${totalVfs} VF policies`)
      : z.undefined({ message: 'expected none (no embedded switch)' }).optional(),
    switch: eswitch
      ? switchStatsSchema
      : z.undefined({ message: 'expected none (no embedded switch)' }).optional(),
  });
  const r = schema.safeParse(state);
  if (r.success) return r.data as PfState;
  const issue = r.error.issues[0]!;
  throw new TypeError(`virtio-net-pci snapshot: field "${issue.path.join('.')}": ${issue.message}`);
}
