/**
 * Validation of a transport snapshot (`VirtioPciSnapshot`) before any of it is written: shapes and bounds
 * with zod, then what only the target knows (queue count and sizes, rings inside guest memory), so that a
 * restore or a DEV_PARTS_SET (VIRTIO 1.4 §2.12.1.5) either applies whole or changes nothing. A state is as
 * untrusted as a migration stream; with device parts it comes from a guest's PF driver.
 */
import { z } from 'zod';
import type { GuestMemory } from '../../lib/memory/guest-memory.js';
import type { DeviceMode } from '../virtio-device.js';
import type { AdminQueuesSnapshot } from './transport-admin.js';
import {
  createRing,
  type QueueRegisters,
  type QueueSnapshot,
  VIRTIO_QUEUE_MAX,
} from './transport-registers.js';

/** JSON-serialisable transport state (see `TransportCore.snapshot`). */
export interface TransportSnapshot {
  status: number;
  deviceFeatureSelect: number;
  driverFeatureSelect: number;
  /** Hex string: bigint is not JSON. */
  driverFeatures: string;
  configVector: number;
  queueSelect: number;
  configGeneration: number;
  isr: number;
  activated: boolean;
  broken: boolean;
  legacyDriver: boolean;
  queues: QueueSnapshot[];
  /** Administration virtqueues (only when the transport has them): LIST_USE state and queue registers. */
  admin?: AdminQueuesSnapshot;
  /** DEV_MODE_SET state (absent: 'active'). */
  mode?: DeviceMode;
  device?: unknown;
}

const u8 = z.number().int().min(0).max(0xff);
const u16 = z.number().int().min(0).max(0xffff);
const u32 = z.number().int().min(0).max(0xffff_ffff);

const ringSchema = z
  .object({
    nextAvail: u16,
    nextUsed: u16,
    availWrap: z.boolean().optional(),
    usedWrap: z.boolean().optional(),
    notificationsDisabled: z.boolean(),
    signalledUsed: u16.optional(),
  })
  .strict();

const queueSchema = z
  .object({
    size: u16,
    vector: u16,
    enabled: z.boolean(),
    desc: z.tuple([u32, u32]),
    driver: z.tuple([u32, u32]),
    device: z.tuple([u32, u32]),
    ring: ringSchema.nullable(),
  })
  .strict();

const transportSchema = z
  .object({
    status: u8,
    deviceFeatureSelect: u32,
    driverFeatureSelect: u32,
    driverFeatures: z.string().regex(/^[0-9a-f]{1,32}$/i, 'expected a hex feature mask (up to 128 bits)'),
    configVector: u16,
    queueSelect: u16,
    configGeneration: u8,
    isr: u8,
    activated: z.boolean(),
    broken: z.boolean(),
    legacyDriver: z.boolean(),
    queues: z.array(queueSchema).max(VIRTIO_QUEUE_MAX),
    admin: z
      .object({
        commands: z.record(z.string().max(16), z.string().max(65_536)),
        queues: z.array(queueSchema).max(VIRTIO_QUEUE_MAX),
      })
      .strict()
      .optional(),
    mode: z.enum(['active', 'stopped', 'frozen']).optional(),
    device: z.unknown().optional(),
  })
  .strict();

/** What the target tells the check: its queues' maximum sizes, guest memory, offered features. */
export interface TransportLimits {
  readonly memory: GuestMemory;
  readonly offered: bigint;
  /** Maximum size of device queue `i` for `features` (0: no such queue). */
  maxQueueSize(i: number, features: bigint): number;
  readonly queueCount: number;
}

function fail(path: string, message: string): never {
  throw new TypeError(`virtio-net-pci snapshot: field "${path}": ${message}`);
}

/**
 * Checks `state` (a `VirtioPciSnapshot`) without writing anything: zod shape and bounds, then, with
 * `limits`, queue sizes within the target's and every enabled ring inside guest memory (a trial ring is
 * built). `validateDevice` checks the device part. Throws a TypeError naming the field.
 */
export function validateTransportSnapshot(
  state: unknown,
  validateDevice: (device: unknown) => void,
  path = 'transport',
  limits?: TransportLimits,
): TransportSnapshot {
  if (!state || typeof state !== 'object') fail(path, 'missing');
  const r = transportSchema.safeParse((state as { transport?: unknown }).transport);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    fail([path, 'transport', ...issue.path].join('.'), issue.message);
  }
  const t = r.data as TransportSnapshot;
  if (limits) {
    const features = BigInt(`0x${t.driverFeatures}`) & limits.offered;
    if (t.queues.length > limits.queueCount)
      fail(`${path}.transport.queues`, `${t.queues.length} queues, the device has ${limits.queueCount}`);
    for (const [i, q] of t.queues.entries()) {
      const max = limits.maxQueueSize(i, features);
      if (q.size > max && (q.enabled || max > 0))
        fail(`${path}.transport.queues.${i}.size`, `${q.size} exceeds the queue's maximum ${max}`);
      if (!q.enabled) continue;
      const regs: QueueRegisters = {
        size: q.size,
        maxSize: max,
        vector: q.vector,
        enabled: true,
        descLo: q.desc[0],
        descHi: q.desc[1],
        driverLo: q.driver[0],
        driverHi: q.driver[1],
        deviceLo: q.device[0],
        deviceHi: q.device[1],
        vq: null,
      };
      try {
        createRing(limits.memory, regs, i, features);
      } catch (e) {
        fail(`${path}.transport.queues.${i}`, e instanceof Error ? e.message : String(e));
      }
    }
  }
  if (t.device !== undefined) validateDevice(t.device);
  return t;
}
