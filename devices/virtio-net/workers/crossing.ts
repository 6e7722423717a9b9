/**
 * Rx frames that were crossing between workers when they stopped (docs/workers.md, "Stopping"): in a
 * forward ring to their owner, or in a sender's spill (forward.ts). The pool collects them once no worker
 * forwards any more (WorkerPool.stop); tx frames in the rings were written out or counted dropped by
 * their owner already. Nothing is left behind: each frame is either in a backlog or counted.
 */
import type { VirtioNet } from '../device.js';
import type { CrossingFrame } from './protocol.js';

/**
 * Takes `frames` on the main thread, which owns the device's state while the workers are stopped.
 * `discard` (device reset, restore, close: the guest's queues go away): each counts in its pair's
 * rxDropped. Otherwise the device goes on (snapshot, DEV_MODE_SET, queue reset or enable), and each frame
 * meets the rules it would have met at its owner, without touching the guest's ring: not ready (link
 * down, device broken), filtered, or into its pair's backlog, which a snapshot carries and the next start
 * hands to the owner; a full backlog drops it (rxDropped, rxDropOverruns), as on one thread.
 */
export function takeCrossing(net: VirtioNet, frames: readonly CrossingFrame[], discard: boolean): void {
  const s = net.shared;
  for (const f of frames) {
    const st = net.queueStats[f.pair];
    const backlog = net.backlogs[f.pair];
    if (!st || !backlog) s.deviceStats.rxDroppedNotReady++;
    else if (discard) st.rxDropped++;
    else if (s.broken || !s.linkUp) s.deviceStats.rxDroppedNotReady++;
    else if (!s.rxFilter.acceptsAt(f.frame, 0, f.frame.length)) st.rxFiltered++;
    else if (backlog.push(f.frame, f.offload, f.hash, f.report)) {
      st.rxBacklogged++;
      st.rxBacklogDepth = backlog.count;
    } else {
      st.rxDropped++;
      st.rxDropOverruns++;
    }
  }
}
