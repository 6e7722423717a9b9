/**
 * The process-wide tap poller: every open TapBackend's readable-wanted fds in one `poll(2)` on a koffi
 * worker thread, plus an eventfd that re-arms it. When it returns, the main thread calls each ready
 * entry (which drains its fd with non-blocking reads), then re-arms. One worker thread whatever the number
 * of taps, no busy-waiting, and the async hop is paid per batch, not per frame.
 */
import { EFD_CLOEXEC, EFD_NONBLOCK, type Libc, POLLIN } from '../host/libc.js';
import { errnoError } from './tap-fd.js';

/** One fd in the poll set: `ready` is called on the main thread with its revents while `enabled`. */
export interface PollEntry {
  fd: number;
  enabled: boolean;
  ready(revents: number): void;
}

/**
 * One outstanding koffi async `poll` over the enabled fds plus a wake eventfd. Changes to the set write
 * the eventfd so the in-flight poll returns and is re-armed with the new set. When the last entry leaves
 * (every tap closed), the poller closes its eventfd and frees its poll array once no poll is in flight,
 * so a process that is done with taps holds no fd of ours; the next `sharedPoller` makes a new one.
 */
export class SharedPoller {
  private readonly entries = new Set<PollEntry>();
  private readonly c: Libc;
  private readonly wakeFd: number;
  private readonly wakeBuf = new Uint8Array(8);
  private mem: { ptr: unknown; bytes: Uint8Array } | undefined;
  private view: DataView | undefined;
  private capacity = 0;
  /** Entries in the in-flight poll array, by index (slot 0 is the eventfd). */
  private armed: PollEntry[] = [];
  private inFlight = false;
  private dispatching = false;
  private failures = 0;
  private disposed = false;

  constructor(c: Libc) {
    this.c = c;
    this.wakeFd = c.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (this.wakeFd < 0) throw errnoError('eventfd', c.errno());
    new DataView(this.wakeBuf.buffer).setBigUint64(0, 1n, true);
  }

  add(entry: PollEntry): void {
    this.entries.add(entry);
    this.changed();
  }

  remove(entry: PollEntry): void {
    if (this.entries.delete(entry)) this.changed();
  }

  /** Call after flipping an entry's `enabled`. */
  changed(): void {
    if (this.disposed || this.dispatching) return; // re-armed with the new set once dispatch ends
    if (this.inFlight) this.c.write(this.wakeFd, this.wakeBuf, 8);
    else this.arm();
  }

  private arm(): void {
    if (this.inFlight || this.disposed) return;
    const list = this.armed;
    list.length = 0;
    for (const e of this.entries) if (e.enabled) list.push(e);
    if (list.length === 0) {
      // Nothing wanted: no pending work keeps the process alive. Nobody left at all: let go of the fd.
      if (this.entries.size === 0) this.dispose();
      return;
    }
    const n = list.length + 1;
    if (n > this.capacity) {
      this.capacity = Math.max(n, this.capacity * 2, 8);
      this.mem = this.c.alloc(this.capacity * 8);
      this.view = new DataView(this.mem.bytes.buffer, this.mem.bytes.byteOffset, this.capacity * 8);
    }
    const v = this.view as DataView;
    v.setInt32(0, this.wakeFd, true);
    v.setInt16(4, POLLIN, true);
    v.setInt16(6, 0, true);
    for (let i = 0; i < list.length; i++) {
      v.setInt32((i + 1) * 8, (list[i] as PollEntry).fd, true);
      v.setInt16((i + 1) * 8 + 4, POLLIN, true);
      v.setInt16((i + 1) * 8 + 6, 0, true);
    }
    this.inFlight = true;
    this.c.pollAsync(this.mem?.ptr, n, -1, this.onPolled);
  }

  private readonly onPolled = (err: unknown, res: number): void => {
    this.inFlight = false;
    const v = this.view as DataView;
    if (err || res < 0) {
      // EINTR or worse: re-arm, backing off if it keeps failing so an error cannot spin the CPU.
      this.failures++;
      if (this.failures > 3) {
        setTimeout(() => this.arm(), Math.min(1000, 10 * this.failures)).unref?.();
        return;
      }
      this.arm();
      return;
    }
    this.failures = 0;
    if (v.getInt16(6, true) !== 0) this.c.read(this.wakeFd, this.wakeBuf, 8);
    // Sinks may pause/resume/close from inside `ready`: `changed()` defers to the arm() below, so the
    // poll array is not rewritten while it is being read. A throwing sink still leaves the poller armed.
    this.dispatching = true;
    let thrown: unknown;
    const list = this.armed;
    for (let i = 0; i < list.length; i++) {
      const revents = v.getInt16((i + 1) * 8 + 6, true);
      const e = list[i] as PollEntry;
      if (revents === 0 || !e.enabled || !this.entries.has(e)) continue;
      try {
        e.ready(revents);
      } catch (err) {
        thrown ??= err;
      }
    }
    this.dispatching = false;
    this.arm();
    if (thrown !== undefined) throw thrown;
  };

  /** Closes the wake eventfd and frees the poll array; only with no poll in flight and no entry. */
  private dispose(): void {
    this.disposed = true;
    if (poller === this) poller = undefined;
    this.c.close(this.wakeFd);
    if (this.mem) this.c.free(this.mem.ptr);
    this.mem = undefined;
    this.view = undefined;
    this.capacity = 0;
  }
}

let poller: SharedPoller | undefined;

/** The process's poller, created on first use (again after the previous one let go of its last entry). */
export function sharedPoller(c: Libc): SharedPoller {
  poller ??= new SharedPoller(c);
  return poller;
}
