/**
 * The tap poller: each open TapBackend queue that wants reading has a libuv poll handle (uv_poll, epoll
 * on the thread's own event loop), so readiness costs no thread. It used to be one koffi async `poll(2)`
 * on the libuv threadpool per thread, which is process-wide and 4 threads by default: 4 queue-pair
 * workers on a tap held all of them, and the VMM's fs, dns and crypto calls waited for ever.
 */
import { type Libc, POLLERR, POLLHUP, POLLIN, type UvPollHandle } from '../host/libc.js';

/** One fd in the poll set: `ready` is called on this thread with its revents while `enabled`. */
export interface PollEntry {
  fd: number;
  enabled: boolean;
  ready(revents: number): void;
}

type PollEvents = { readable: boolean; writable: boolean; disconnect: boolean };

/** Readable only: a hang-up is reported with the next readable event (tun sets POLLERR when it goes). */
const READABLE = { readable: true, writable: false, disconnect: false };

interface Watch {
  handle: UvPollHandle | null;
  started: boolean;
  failures: number;
  retry: NodeJS.Timeout | null;
  readonly cb: (status: number, ev: PollEvents) => void;
}

/**
 * The entries of this thread, each watched by its own poll handle while `enabled`. Entries may be
 * added, removed or flipped from inside `ready` (libuv allows stopping or closing a handle from its
 * own callback). A handle is closed before its entry leaves, so the caller may close the fd then.
 */
export class SharedPoller {
  private readonly watches = new Map<PollEntry, Watch>();

  constructor(private readonly c: Libc) {}

  add(entry: PollEntry): void {
    if (this.watches.has(entry)) return;
    const w: Watch = {
      handle: null,
      started: false,
      failures: 0,
      retry: null,
      cb: (status, ev) => this.fired(entry, w, status, ev),
    };
    this.watches.set(entry, w);
    this.sync(entry, w);
  }

  remove(entry: PollEntry): void {
    const w = this.watches.get(entry);
    if (!w) return;
    this.watches.delete(entry);
    if (w.retry) clearTimeout(w.retry);
    w.handle?.close();
    w.handle = null;
  }

  /** Call after flipping `entry`'s `enabled` (without it: every entry's). No allocation with it. */
  changed(entry?: PollEntry): void {
    if (entry === undefined) {
      for (const [e, w] of this.watches) this.sync(e, w);
      return;
    }
    const w = this.watches.get(entry);
    if (w) this.sync(entry, w);
  }

  private sync(e: PollEntry, w: Watch): void {
    const want = e.enabled && w.retry === null;
    if (want === w.started) return;
    w.started = want;
    if (!want) w.handle?.stop();
    else if (w.handle === null) w.handle = this.c.uvPoll(e.fd, READABLE, w.cb);
    else w.handle.start(READABLE, w.cb);
  }

  private fired(e: PollEntry, w: Watch, status: number, ev: PollEvents): void {
    if (this.watches.get(e) !== w || !e.enabled) return;
    if (status < 0) {
      // The poll itself failed: the sink's read reports what is wrong with the fd. Polled again after a
      // back-off, so an error that persists cannot spin the CPU.
      w.failures++;
      w.started = false;
      w.handle?.stop();
      w.retry = setTimeout(
        () => {
          w.retry = null;
          if (this.watches.get(e) === w) this.sync(e, w);
        },
        Math.min(1000, 10 * w.failures),
      );
      w.retry.unref?.();
      e.ready(POLLERR);
      return;
    }
    w.failures = 0;
    e.ready((ev.readable ? POLLIN : 0) | (ev.disconnect ? POLLHUP : 0));
  }
}

const pollers = new WeakMap<Libc, SharedPoller>();

/** This thread's poller for `c`, created on first use. */
export function sharedPoller(c: Libc): SharedPoller {
  let p = pollers.get(c);
  if (!p) {
    p = new SharedPoller(c);
    pollers.set(c, p);
  }
  return p;
}
