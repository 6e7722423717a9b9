/**
 * Used buffer notification coalescing per data virtqueue (VIRTIO 1.3 "Notifications Coalescing",
 * VIRTIO_NET_F_NOTF_COAL / VIRTIO_NET_F_VQ_NOTF_COAL). A notification the driver wants (the ring's
 * suppression check, NO_INTERRUPT / event index, said yes) is held until `maxPackets` packets were used
 * since the last one, or `maxUsecs` passed since it was held, whichever comes first. With either
 * parameter 0 every packet meets the condition (the spec's rule), so 0/0 is no coalescing.
 *
 * Node timers have millisecond resolution: a hold under 1 ms ends on the next event-loop turn
 * (setImmediate), a longer one after floor(maxUsecs / 1000) ms, so no hold outlasts what was set by more
 * than the loop's own latency. At most one timer per queue, armed only while a notification is held (a
 * timer object per held notification, none per packet).
 */
import type { QueueStats } from './stats.js';

/** What a coalescer needs to raise a notification (the device's context and guard). */
export interface CoalesceHost {
  /** Raises the used buffer notification of `index` now (no-op when the device is not running). */
  notifyQueue(index: number): void;
  /** Runs deferred work with the device's guest-error handling; skipped while stopped or broken. */
  runGuarded(work: () => void): void;
}

/** The timer functions (globals by default; tests may use vitest's fake timers instead). */
export interface CoalesceTimers {
  setTimeout(cb: () => void, ms: number): NodeJS.Timeout;
  clearTimeout(t: NodeJS.Timeout): void;
  setImmediate(cb: () => void): NodeJS.Immediate;
  clearImmediate(t: NodeJS.Immediate): void;
}

const globalTimers: CoalesceTimers = {
  setTimeout: (cb, ms) => setTimeout(cb, ms),
  clearTimeout: (t) => clearTimeout(t),
  setImmediate: (cb) => setImmediate(cb),
  clearImmediate: (t) => clearImmediate(t),
};

/** One data virtqueue's coalescing parameters and held notification. */
export class Coalescer {
  maxPackets = 0;
  maxUsecs = 0;
  /** Packets used since the last notification condition was met. */
  private count = 0;
  /** The driver wanted a notification that has not been sent yet. */
  private held = false;
  private timeout: NodeJS.Timeout | null = null;
  private immediate: NodeJS.Immediate | null = null;
  private armed = false;
  private readonly expire = () => {
    this.armed = false;
    this.immediate = null;
    this.timeout = null;
    this.host.runGuarded(() => this.conditionMet());
  };

  constructor(
    readonly index: number,
    private readonly host: CoalesceHost,
    private readonly stats: QueueStats,
    private readonly timers: CoalesceTimers = globalTimers,
  ) {}

  /** Coalescing is in effect (both parameters non-zero). */
  get active(): boolean {
    return this.maxPackets !== 0 && this.maxUsecs !== 0;
  }

  /** A notification is being held (tests, snapshots). */
  get holding(): boolean {
    return this.held;
  }

  /** Its timer is armed (tests: none may be left behind). */
  get timing(): boolean {
    return this.armed;
  }

  /**
   * `packets` packets were just published on the ring; `wanted` is the ring's suppression check
   * (needsNotification) for them. Sends, holds or drops the notification. Allocates nothing.
   */
  used(packets: number, wanted: boolean): void {
    if (!this.active) {
      if (wanted) this.notify();
      return;
    }
    this.count += packets;
    if (wanted) this.held = true;
    if (this.count >= this.maxPackets) this.conditionMet();
    else if (this.held && !this.armed) this.arm();
  }

  /**
   * New parameters (a SET command): the condition is checked again at once, so a lower max_packets or
   * turning coalescing off releases a held notification (the spec's "Notifications When Coalescing
   * Parameters Change"); a held one otherwise waits at most the new max_usecs from now.
   */
  set(maxPackets: number, maxUsecs: number): void {
    this.maxPackets = maxPackets;
    this.maxUsecs = maxUsecs;
    if (!this.held) return;
    if (!this.active || this.count >= maxPackets) {
      this.conditionMet();
      return;
    }
    this.disarm();
    this.arm();
  }

  /** Sends a held notification now (the device left the 'stopped' mode, in which the timer did nothing). */
  flush(): void {
    if (this.held) this.conditionMet();
  }

  /** Stopped or frozen: no timer runs; a held notification waits for `flush`. */
  suspend(): void {
    this.disarm();
  }

  /**
   * Another thread takes the queue (workers, docs/workers.md): returns [packets counted, held] for its
   * `takeOver` and keeps only the parameters here, so no hold or count is left behind to resurface.
   */
  handOff(): [number, boolean] {
    const out: [number, boolean] = [this.count, this.held];
    this.reset(this.maxPackets, this.maxUsecs);
    return out;
  }

  /** What `handOff` gave: the count goes on, a held notification waits at most max_usecs from now. */
  takeOver([count, held]: readonly [number, boolean]): void {
    this.count = count;
    if (held) this.used(0, true);
  }

  /** Queue or device reset: parameters to the given defaults, nothing held, no timer. */
  reset(maxPackets = 0, maxUsecs = 0): void {
    this.disarm();
    this.count = 0;
    this.held = false;
    this.maxPackets = maxPackets;
    this.maxUsecs = maxUsecs;
  }

  private conditionMet(): void {
    this.disarm();
    this.count = 0;
    if (!this.held) return;
    this.held = false;
    this.notify();
  }

  private notify(): void {
    if (this.index & 1) this.stats.txInterrupts++;
    else this.stats.rxInterrupts++;
    this.host.notifyQueue(this.index);
  }

  private arm(): void {
    this.armed = true;
    const ms = Math.floor(this.maxUsecs / 1000);
    if (ms === 0) {
      this.immediate = this.timers.setImmediate(this.expire);
      return;
    }
    this.timeout = this.timers.setTimeout(this.expire, ms);
    this.timeout.unref?.();
  }

  private disarm(): void {
    if (!this.armed) return;
    this.armed = false;
    if (this.immediate !== null) {
      this.timers.clearImmediate(this.immediate);
      this.immediate = null;
    }
    if (this.timeout !== null) {
      this.timers.clearTimeout(this.timeout);
      this.timeout = null;
    }
  }
}

/** `struct virtio_net_ctrl_coal` (le32 max_packets, le32 max_usecs) at `b[o]`. */
export function decodeCoal(b: Uint8Array, o: number): [number, number] {
  const u32 = (at: number) => (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
  return [u32(o), u32(o + 4)];
}

/** `struct virtio_net_ctrl_coal` into `b[o]` (8 bytes). */
export function encodeCoal(b: Uint8Array, o: number, maxPackets: number, maxUsecs: number): void {
  for (let i = 0; i < 4; i++) {
    b[o + i] = (maxPackets >>> (8 * i)) & 0xff;
    b[o + 4 + i] = (maxUsecs >>> (8 * i)) & 0xff;
  }
}
