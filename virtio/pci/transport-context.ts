/**
 * The VirtioDeviceContext a transport lends its device at DRIVER_OK (virtio-device.ts), with the routes
 * by which a queue's notifications may bypass the transport's registers: the eventfd of its MSI-X vector
 * (used-buffer notifications) and the eventfd the VMM's client signals for its doorbell (kicks). A device
 * that runs queues on other threads uses them; the answers hold while the queue runs and is enabled and
 * the device is active, and the device hears `interruptRoutesChanged` before they change.
 */
import type { GuestMemory } from '../../lib/memory/guest-memory.js';
import type { DeviceMode, VirtioDeviceContext } from '../virtio-device.js';
import type { Virtqueue } from '../queue/virtqueue.js';
import { VIRTIO_MSI_NO_VECTOR } from './transport-registers.js';

/**
 * Eventfds that carry the driver's kicks past the notify registers (vfio-user ioeventfds), by queue
 * index: VirtioDeviceContext.queueKickFd and holdKick.
 */
export interface QueueKickEventfds {
  fd(queue: number): number | null;
  hold(queue: number, held: boolean): void;
}

/** What the context reads of its transport (TransportCore). */
export interface ContextHost {
  readonly memory: GuestMemory;
  readonly driverFeatures: bigint;
  readonly activated: boolean;
  readonly broken: boolean;
  readonly mode: DeviceMode;
  readonly queues: readonly { enabled: boolean; vector: number; vq: Virtqueue | null }[];
  readonly kicks: QueueKickEventfds | null;
  /** The eventfd that delivers MSI-X `vector` now, or null. */
  vectorFd(vector: number): number | null;
  notifyQueue(i: number): void;
  configChanged(): void;
  needsReset(reason: string): void;
}

/** Queue `i` may have its notifications carried by eventfds: running, active and enabled. */
function routable(host: ContextHost, i: number): boolean {
  if (!host.activated || host.broken || host.mode !== 'active') return false;
  return host.queues[i]?.enabled === true;
}

/** The context `host` lends its device. */
export function deviceContext(host: ContextHost): VirtioDeviceContext {
  return {
    memory: host.memory,
    get features() {
      return host.driverFeatures;
    },
    queue: (i) => (host.activated && i >= 0 && i < host.queues.length ? (host.queues[i]?.vq ?? null) : null),
    notifyQueue: (i) => host.notifyQueue(i),
    // What notifyQueue(i) would signal, as an eventfd.
    queueInterruptFd: (i) => {
      if (!routable(host, i)) return null;
      const v = host.queues[i]!.vector;
      return v === VIRTIO_MSI_NO_VECTOR ? null : host.vectorFd(v);
    },
    queueKickFd: (i) => (routable(host, i) ? (host.kicks?.fd(i) ?? null) : null),
    holdKick: (i, held) => host.kicks?.hold(i, held),
    configChanged: () => host.configChanged(),
    needsReset: (reason) => host.needsReset(reason),
  };
}
