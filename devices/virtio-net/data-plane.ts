/**
 * A data plane that runs the device's queue pairs elsewhere (worker threads, docs/workers.md). The
 * device keeps the control plane and calls these at the points where the per-pair paths must see new
 * state or give their rings back; while `running`, data virtqueue kicks go to `kick`.
 */
export interface DataPlane {
  /** Started and not stopped: the workers own the data virtqueues. */
  readonly running: boolean;
  /** A driver notification of data virtqueue `index`. */
  kick(index: number): void;
  /** Hands the enabled data virtqueues, backlogs and counters to the workers and lets them run. */
  start(): void;
  /** Pushes the control plane's current state (filter, RSS, offloads, pairs in use, coalescing). */
  sync(): void;
  /**
   * Quiesces the workers and takes ring positions, backlogs and counters back (main authoritative).
   * Frames crossing between workers then are delivered or counted (workers/crossing.ts); `discard`
   * (the guest's queues go away: reset, restore, close) counts them all dropped.
   */
  stop(discard?: boolean): void;
  /**
   * The context's `queueInterruptFd` answers may change (VirtioDevice.interruptRoutesChanged): the
   * workers stop using the fds they had before this returns.
   */
  routesChanged?(): void;
  /** Copies the workers' published counters into the device's queue stats. */
  refreshStats(): void;
  /** Stops and terminates the workers; no thread or fd of theirs is left. */
  close(): void;
}
