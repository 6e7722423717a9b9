/**
 * Interrupts that leave a queue-pair worker directly (docs/workers.md): where the VMM serves an MSI-X
 * vector by eventfd (vfio-user's SET_IRQS), the worker writes that eventfd itself instead of handing the
 * interrupt to the main thread. Each worker owns `dup`s of the fds, given with `start` and replaced by an
 * `irqfds` request whenever the routes change (a vector, a mask, MSI-X Enable, the client's fds): the
 * main thread waits for the worker's answer before the old fds or answers go, so a worker never writes
 * an fd number that was closed (and perhaps reused) or a vector the VMM has masked since.
 */
import { F_DUPFD_CLOEXEC, libc } from '../../../lib/host/libc.js';
import type { VirtioDeviceContext } from '../../../virtio/virtio-device.js';

/**
 * Per owned pair [rx, tx]: a dup of the eventfd that notifies that queue now, or -1 (notified through
 * the main thread). The caller hands them to the worker, which closes them.
 */
export function queueFdsFor(ctx: VirtioDeviceContext | null, pairs: readonly number[]): number[] {
  const out: number[] = [];
  const c = libc();
  for (const p of pairs) {
    for (const q of [2 * p, 2 * p + 1]) {
      let fd: number | null = null;
      try {
        fd = ctx?.queueInterruptFd?.(q) ?? null;
      } catch {
        // The VMM's vectorFd threw: that queue stays on the main thread's path.
      }
      // Also a failed dup (EMFILE) leaves that queue on the main thread's path.
      out.push(fd === null || !Number.isInteger(fd) || fd < 0 ? -1 : c.fcntl(fd, F_DUPFD_CLOEXEC, 0));
    }
  }
  return out;
}

/** Closes the fds of `queueFdsFor` that were never handed over. */
export function closeQueueFds(fds: readonly number[]): void {
  const c = libc();
  for (const fd of fds) if (fd >= 0) c.close(fd);
}
