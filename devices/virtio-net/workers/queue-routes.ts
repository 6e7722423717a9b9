/**
 * Notifications that reach and leave a queue-pair worker without the main thread (docs/workers.md).
 * Interrupts: where the VMM serves an MSI-X vector by eventfd (vfio-user's SET_IRQS), the worker writes
 * that eventfd itself. Kicks: where the VMM hands its client an ioeventfd for a queue's doorbell
 * (vfio-user's GET_REGION_IO_FDS), the worker polls it itself and the VMM is told to stop polling it
 * (`holdKick`). Each worker owns `dup`s of the fds, given with `start` and replaced by a `routes` request
 * whenever the answers change (a vector, a mask, MSI-X Enable, the client's fds): the main thread waits
 * for the worker's answer before the old fds or answers go, so a worker never touches an fd number that
 * was closed (and perhaps reused) or a vector the VMM has masked since.
 */
import { F_DUPFD_CLOEXEC, libc } from '../../../lib/host/libc.js';
import type { VirtioDeviceContext } from '../../../virtio/virtio-device.js';

/** Per owned pair, in this order: rx interrupt, tx interrupt, rx kick, tx kick. */
export const ROUTES_PER_PAIR = 4;

/**
 * Per owned pair (ROUTES_PER_PAIR): a dup of the eventfd that carries that notification now, or -1
 * (through the main thread). The caller hands them to the worker, which closes them.
 */
export function queueFdsFor(ctx: VirtioDeviceContext | null, pairs: readonly number[]): number[] {
  const out: number[] = [];
  const c = libc();
  const dup = (fd: number | null) =>
    // A failed dup (EMFILE) leaves that notification on the main thread's path.
    fd === null || !Number.isInteger(fd) || fd < 0 ? -1 : c.fcntl(fd, F_DUPFD_CLOEXEC, 0);
  for (const p of pairs) {
    for (const q of [2 * p, 2 * p + 1]) out.push(dup(ask(() => ctx?.queueInterruptFd?.(q))));
    for (const q of [2 * p, 2 * p + 1]) out.push(dup(ask(() => ctx?.queueKickFd?.(q))));
  }
  return out;
}

/** The VMM's answer; one that throws leaves that notification on the main thread's path. */
function ask(fn: () => number | null | undefined): number | null {
  try {
    return fn() ?? null;
  } catch {
    return null;
  }
}

/** The queues whose kick eventfd `fds` (queueFdsFor's answer for `pairs`) hands to the worker. */
export function kickQueues(fds: readonly number[], pairs: readonly number[]): number[] {
  const out: number[] = [];
  for (const [k, p] of pairs.entries())
    for (const d of [0, 1]) if ((fds[ROUTES_PER_PAIR * k + 2 + d] ?? -1) >= 0) out.push(2 * p + d);
  return out;
}

/** Closes the fds of `queueFdsFor` that were never handed over. */
export function closeQueueFds(fds: readonly number[]): void {
  const c = libc();
  for (const fd of fds) if (fd >= 0) c.close(fd);
}
