/**
 * Host-side link state of a network interface, watched through rtnetlink (NETLINK_ROUTE, RTMGRP_LINK):
 * the kernel multicasts an RTM_NEWLINK whenever an interface's flags change (`ip link set … down/up`,
 * carrier on/off), and we read them on Node's own event loop through a libuv poll handle
 * (`koffi.node.poll` through lib/host/libc.ts, as the vfio-user server does): no thread, no timer, no busy
 * loop.
 *
 * `LinkMonitor` is the generic watcher (one interface, by name, in any network namespace).
 * `TapLinkWatch` is what TapBackend uses: it finds the tap's namespace from its fd (TUNGETDEVNETNS),
 * turns the flags into "is the host's end of the cable in", and keeps the device's own TUNSETCARRIER
 * (NetBackend.setCarrier) from being reported back to the device as a host change.
 *
 * Wire layouts: rtnetlink(7), linux/netlink.h (nlmsghdr), linux/rtnetlink.h (ifinfomsg, rtattr),
 * linux/if_link.h (IFLA_*), linux/if.h (IFF_*).
 */
import { fstatSync } from 'node:fs';
import { BackendError } from '../errors.js';
import { describeErrno, type Libc, libc, type UvPollHandle } from './libc.js';

/** linux/if.h interface flags (ifinfomsg.ifi_flags). */
export const IFF_UP = 0x1;
export const IFF_RUNNING = 0x40;
export const IFF_LOWER_UP = 0x10000;

/** linux/rtnetlink.h message types and groups. */
export const RTM_NEWLINK = 16;
export const RTM_DELLINK = 17;
export const RTM_GETLINK = 18;
export const RTMGRP_LINK = 1;
/** linux/netlink.h */
const NLMSG_NOOP = 1;
const NLMSG_ERROR = 2;
const NLMSG_DONE = 3;
const NLM_F_REQUEST = 1;
const AF_NETLINK = 16;
const NETLINK_ROUTE = 0;
const SOCK_RAW = 3;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const O_RDONLY = 0;
const O_CLOEXEC = 0o2000000;
const CLONE_NEWNET = 0x40000000;
const EINTR = 4;
const ENOBUFS = 105;
/** linux/if_tun.h: TUNGETIFF (_IOR('T', 210, int)) and TUNGETDEVNETNS (_IO('T', 227)). */
const TUNGETIFF = 0x800454d2;
const TUNGETDEVNETNS = 0x54e3;
/** linux/if_link.h */
const IFLA_IFNAME = 3;

/** nlmsghdr: len u32, type u16, flags u16, seq u32, pid u32. */
const NLMSGHDR = { len: 0, type: 4, flags: 6, seq: 8, pid: 12, SIZE: 16 } as const;
/** ifinfomsg: family u8, pad u8, type u16, index s32, flags u32, change u32. */
const IFINFOMSG = { family: 0, type: 2, index: 4, flags: 8, change: 12, SIZE: 16 } as const;
/** rtattr: len u16, type u16, then the payload; attributes are 4-byte aligned. */
const RTATTR = { len: 0, type: 2, SIZE: 4 } as const;
const align4 = (n: number) => (n + 3) & ~3;

/** One interface's state from an RTM_NEWLINK. */
export interface LinkState {
  ifindex: number;
  /** IFLA_IFNAME ('' when the message had none). */
  name: string;
  /** ifi_flags (IFF_*). */
  flags: number;
  /** IFF_UP: administratively up (`ip link set … up`). */
  adminUp: boolean;
  /** IFF_LOWER_UP: up with carrier (what `ip link` shows as LOWER_UP). */
  lowerUp: boolean;
  /** IFF_RUNNING: operationally up. */
  running: boolean;
}

/** A parsed rtnetlink link message: a new/changed interface, a removed one, or an error reply. */
export type LinkMessage =
  | { kind: 'link'; state: LinkState }
  | { kind: 'removed'; ifindex: number; name: string }
  | { kind: 'error'; errno: number };

/**
 * Parses the netlink messages in `buf[0, len)` and calls `each` for every RTM_NEWLINK / RTM_DELLINK and
 * NLMSG_ERROR with a non-zero code; other types are skipped. A truncated or malformed message ends the
 * parse (the kernel never sends one, but nothing here may read past `len`).
 */
export function parseLinkMessages(buf: Uint8Array, len: number, each: (m: LinkMessage) => void): void {
  const v = new DataView(buf.buffer, buf.byteOffset, Math.min(len, buf.length));
  const end = v.byteLength;
  let off = 0;
  while (off + NLMSGHDR.SIZE <= end) {
    const mlen = v.getUint32(off + NLMSGHDR.len, true);
    const type = v.getUint16(off + NLMSGHDR.type, true);
    if (mlen < NLMSGHDR.SIZE || off + mlen > end) return;
    const body = off + NLMSGHDR.SIZE;
    if (type === NLMSG_ERROR && mlen >= NLMSGHDR.SIZE + 4) {
      const code = v.getInt32(body, true);
      if (code !== 0) each({ kind: 'error', errno: -code });
    } else if ((type === RTM_NEWLINK || type === RTM_DELLINK) && mlen >= NLMSGHDR.SIZE + IFINFOMSG.SIZE) {
      const ifindex = v.getInt32(body + IFINFOMSG.index, true);
      const flags = v.getUint32(body + IFINFOMSG.flags, true);
      let name = '';
      let a = body + IFINFOMSG.SIZE;
      const mend = off + mlen;
      while (a + RTATTR.SIZE <= mend) {
        const alen = v.getUint16(a + RTATTR.len, true);
        if (alen < RTATTR.SIZE || a + alen > mend) break;
        if ((v.getUint16(a + RTATTR.type, true) & 0x3fff) === IFLA_IFNAME) {
          let z = a + RTATTR.SIZE;
          while (z < a + alen && buf[z] !== 0) z++;
          name = Buffer.from(buf.buffer, buf.byteOffset + a + RTATTR.SIZE, z - a - RTATTR.SIZE).toString();
        }
        a += align4(alen);
      }
      if (type === RTM_DELLINK) each({ kind: 'removed', ifindex, name });
      else
        each({
          kind: 'link',
          state: {
            ifindex,
            name,
            flags,
            adminUp: (flags & IFF_UP) !== 0,
            lowerUp: (flags & IFF_LOWER_UP) !== 0,
            running: (flags & IFF_RUNNING) !== 0,
          },
        });
    } else if (type === NLMSG_DONE || type === NLMSG_NOOP) {
      // nothing to report
    }
    off += align4(mlen);
  }
}

/** An RTM_GETLINK request for one interface, by index (> 0) or else by name. */
export function getLinkRequest(seq: number, ifindex: number, name: string): Uint8Array {
  const nameBytes = Buffer.from(name, 'utf8');
  const attr = ifindex > 0 ? 0 : align4(RTATTR.SIZE + nameBytes.length + 1);
  const len = NLMSGHDR.SIZE + IFINFOMSG.SIZE + attr;
  const b = new Uint8Array(len);
  const v = new DataView(b.buffer);
  v.setUint32(NLMSGHDR.len, len, true);
  v.setUint16(NLMSGHDR.type, RTM_GETLINK, true);
  v.setUint16(NLMSGHDR.flags, NLM_F_REQUEST, true);
  v.setUint32(NLMSGHDR.seq, seq, true);
  v.setInt32(NLMSGHDR.SIZE + IFINFOMSG.index, Math.max(ifindex, 0), true);
  if (attr > 0) {
    const a = NLMSGHDR.SIZE + IFINFOMSG.SIZE;
    v.setUint16(a + RTATTR.len, RTATTR.SIZE + nameBytes.length + 1, true);
    v.setUint16(a + RTATTR.type, IFLA_IFNAME, true);
    b.set(nameBytes, a + RTATTR.SIZE);
  }
  return b;
}

/** Runs `fn` with this thread in the network namespace `nsFd` (setns there and back). */
function inNetns<T>(s: Libc, nsFd: number | undefined, fn: () => T): T {
  if (nsFd === undefined) return fn();
  const self = s.open('/proc/thread-self/ns/net', O_RDONLY | O_CLOEXEC, 0);
  if (self < 0)
    throw new BackendError(
      `link monitor: open(/proc/thread-self/ns/net) failed: ${describeErrno(s.errno())}`,
    );
  try {
    if (fstatSync(self).ino === fstatSync(nsFd).ino) return fn(); // already there: no CAP_SYS_ADMIN needed
    if (s.setns(nsFd, CLONE_NEWNET) < 0)
      throw new BackendError(
        `link monitor: setns into the interface's namespace failed: ${describeErrno(s.errno())}`,
      );
    let result: T | undefined;
    let failure: unknown;
    try {
      result = fn();
    } catch (err) {
      failure = err;
    }
    // Going back cannot fail for a namespace we were just in; if it did, this thread would be stranded.
    if (s.setns(self, CLONE_NEWNET) < 0)
      throw new BackendError(`link monitor: setns back to our namespace failed: ${describeErrno(s.errno())}`);
    if (failure !== undefined) throw failure;
    return result as T;
  } finally {
    s.close(self);
  }
}

/** Options of `LinkMonitor.open`. */
export interface LinkMonitorOptions {
  /** The interface to watch (its current name; after the first answer it is followed by index). */
  name: string;
  /** An fd of the network namespace the interface lives in (not closed here); default: this thread's. */
  netnsFd?: number;
  /** The interface's flags changed (IFF_UP, IFF_LOWER_UP, IFF_RUNNING, ...). Not called for the initial state. */
  onChange(state: LinkState, previous: LinkState): void;
  /** The interface left the namespace (deleted, or moved elsewhere). The monitor stops after this. */
  onRemoved?(): void;
}

/** Counters of one monitor. */
export interface LinkMonitorStats {
  /** Link messages about our interface. */
  messages: number;
  /** onChange calls. */
  changes: number;
  /** Socket buffer overruns (ENOBUFS): the state was asked for again. */
  overruns: number;
}

const RECV_SIZE = 32 * 1024;

/** Watches one interface's flags through an rtnetlink socket on the event loop. */
export class LinkMonitor {
  #fd: number;
  #poll: UvPollHandle | null = null;
  #state: LinkState;
  #closed = false;
  #seq = 1;
  readonly #s: Libc;
  readonly #opts: LinkMonitorOptions;
  readonly #buf = new Uint8Array(RECV_SIZE);
  readonly #stats: LinkMonitorStats = { messages: 0, changes: 0, overruns: 0 };

  private constructor(s: Libc, fd: number, state: LinkState, opts: LinkMonitorOptions) {
    this.#s = s;
    this.#fd = fd;
    this.#state = state;
    this.#opts = opts;
  }

  /**
   * Opens a NETLINK_ROUTE socket in the interface's namespace, joins RTMGRP_LINK, and reads the current
   * state (RTM_GETLINK by name: the kernel answers synchronously). Throws BackendError when the socket
   * cannot be had or the interface does not exist there.
   */
  static open(opts: LinkMonitorOptions): LinkMonitor {
    const s = libc();
    const fd = inNetns(s, opts.netnsFd, () =>
      s.socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE),
    );
    if (fd < 0)
      throw new BackendError(`link monitor: socket(AF_NETLINK) failed: ${describeErrno(s.errno())}`);
    try {
      // sockaddr_nl: family u16, pad u16, pid u32 (0: the kernel picks), groups u32.
      const sa = new Uint8Array(12);
      const sv = new DataView(sa.buffer);
      sv.setUint16(0, AF_NETLINK, true);
      sv.setUint32(8, RTMGRP_LINK, true);
      if (s.bind(fd, sa, sa.length) < 0)
        throw new BackendError(`link monitor: bind(RTMGRP_LINK) failed: ${describeErrno(s.errno())}`);
      const req = getLinkRequest(1, 0, opts.name);
      if (s.write(fd, req, req.length) !== req.length)
        throw new BackendError(`link monitor: RTM_GETLINK failed: ${describeErrno(s.errno())}`);
      const buf = new Uint8Array(RECV_SIZE);
      let state: LinkState | null = null;
      let error = 0;
      for (;;) {
        const n = s.read(fd, buf, buf.length);
        if (n < 0) {
          const e = s.errno();
          if (e === EINTR) continue;
          break; // EAGAIN: the answer (sent synchronously with the request) has been read
        }
        parseLinkMessages(buf, n, (m) => {
          if (m.kind === 'error') error = m.errno;
          else if (m.kind === 'link' && m.state.name === opts.name) state = m.state;
        });
      }
      if (!state)
        throw new BackendError(
          `link monitor: no interface '${opts.name}' in that namespace${error ? ` (${describeErrno(error)})` : ''}`,
        );
      const mon = new LinkMonitor(s, fd, state, opts);
      // koffi calls back with (status, events); a negative status is a poll error.
      mon.#poll = s.uvPoll(fd, { readable: true }, (status: number) => mon.#onReadable(status));
      mon.#poll.unref(); // watching a link never keeps the process alive by itself
      return mon;
    } catch (err) {
      s.close(fd);
      throw err;
    }
  }

  /** The interface's state as last reported by the kernel. */
  get state(): LinkState {
    return this.#state;
  }

  stats(): LinkMonitorStats {
    return { ...this.#stats };
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Stops watching and closes the socket. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#poll?.close();
    this.#poll = null;
    this.#s.close(this.#fd);
    this.#fd = -1;
  }

  /**
   * Drains the socket, then reports once with the latest state (a down/up pair queued together is
   * coalesced: what matters is where the link ends up, and the device's own TUNSETCARRIER echoes land
   * in the same batch as the change that caused them).
   */
  #onReadable(status: number): void {
    if (this.#closed) return;
    void status; // an error status still means "read to find out"
    const s = this.#s;
    const prev = this.#state;
    let latest: LinkState = prev;
    let removed = false;
    let overrun = false;
    const idx = prev.ifindex;
    for (;;) {
      const n = s.read(this.#fd, this.#buf, this.#buf.length);
      if (n < 0) {
        const e = s.errno();
        if (e === EINTR) continue;
        if (e === ENOBUFS) {
          overrun = true; // messages were lost: ask for the state again, keep reading
          continue;
        }
        break;
      }
      if (n === 0) break;
      parseLinkMessages(this.#buf, n, (m) => {
        if (m.kind === 'link' && m.state.ifindex === idx) {
          this.#stats.messages++;
          latest = m.state;
          removed = false;
        } else if (m.kind === 'removed' && m.ifindex === idx) {
          this.#stats.messages++;
          removed = true;
        }
      });
    }
    if (overrun) {
      this.#stats.overruns++;
      const req = getLinkRequest(++this.#seq, idx, '');
      s.write(this.#fd, req, req.length); // the answer arrives as RTM_NEWLINK on the next readable
    }
    this.#state = latest;
    if (removed) {
      this.close();
      this.#opts.onRemoved?.();
      return;
    }
    if (latest.flags !== prev.flags) {
      this.#stats.changes++;
      this.#opts.onChange(latest, prev);
    }
  }
}

/**
 * The host's end of a tap's cable, from its flags: in when the tap is administratively up and has
 * carrier; a carrier the device itself took away (TUNSETCARRIER off, `carrierSet` false) does not count
 * as the host pulling it. Pure, for tests.
 */
export function hostLinkUp(state: Pick<LinkState, 'adminUp' | 'lowerUp'>, carrierSet: boolean): boolean {
  return state.adminUp && (state.lowerUp || !carrierSet);
}

/**
 * Follows a tap's host-side link for TapBackend: `onHostLink(up)` is called when the host takes the tap
 * down or up (`ip link set TAP down|up`, `ip link set TAP carrier off|on`). Avoiding feedback: the
 * device answers a reported change with NetBackend.setCarrier; the tap must not apply that echo (the
 * host already did what it says, and TUNSETCARRIER off would then look like the host pulling the cable
 * again), so `applyCarrier` says false while a report is being delivered. A carrier the device drops on
 * its own (the VMM's setLinkUp(false)) is remembered with `carrierApplied`, so its RTM_NEWLINK is not
 * mistaken for the host.
 */
export class TapLinkWatch {
  #monitor: LinkMonitor | null = null;
  #carrier = true;
  #up: boolean;
  #reporting = false;
  #closed = false;
  readonly #tapFd: number;
  readonly #onHostLink: (up: boolean) => void;
  readonly #onError: (err: Error) => void;

  private constructor(tapFd: number, onHostLink: (up: boolean) => void, onError: (err: Error) => void) {
    this.#tapFd = tapFd;
    this.#onHostLink = onHostLink;
    this.#onError = onError;
    this.#monitor = this.#open();
    this.#up = hostLinkUp(this.#monitor.state, this.#carrier);
  }

  /**
   * Starts watching the tap behind `tapFd` (any of its queue fds), wherever its namespace is now
   * (TUNGETDEVNETNS). Throws BackendError when it cannot (no rtnetlink, no CAP_SYS_ADMIN to enter
   * another namespace). `onError` gets failures after that (the watch then stops).
   */
  static start(
    tapFd: number,
    onHostLink: (up: boolean) => void,
    onError: (err: Error) => void = () => {},
  ): TapLinkWatch {
    return new TapLinkWatch(tapFd, onHostLink, onError);
  }

  /** The host-side link as last seen. */
  get hostUp(): boolean {
    return this.#up;
  }

  /** The underlying monitor (null once stopped). */
  get monitor(): LinkMonitor | null {
    return this.#monitor;
  }

  /** Whether NetBackend.setCarrier(up) should reach the tap: false for the echo of a host change. */
  applyCarrier(up: boolean): boolean {
    void up;
    return !this.#reporting;
  }

  /** TUNSETCARRIER(up) succeeded. */
  carrierApplied(up: boolean): void {
    this.#carrier = up;
  }

  close(): void {
    this.#closed = true;
    this.#monitor?.close();
    this.#monitor = null;
  }

  #open(): LinkMonitor {
    const s = libc();
    const ifr = new Uint8Array(40);
    if (s.ioctlPtr(this.#tapFd, TUNGETIFF, ifr) < 0)
      throw new BackendError(`link monitor: TUNGETIFF failed: ${describeErrno(s.errno())} (not a tap fd?)`);
    const end = ifr.indexOf(0);
    const name = Buffer.from(ifr.subarray(0, end < 0 || end > 16 ? 16 : end)).toString();
    const nsFd = s.ioctlVal(this.#tapFd, TUNGETDEVNETNS, 0); // Linux 5.2+; older: watch our own namespace
    try {
      return LinkMonitor.open({
        name,
        netnsFd: nsFd >= 0 ? nsFd : undefined,
        onChange: (st) => this.#changed(st),
        onRemoved: () => this.#removed(),
      });
    } finally {
      if (nsFd >= 0) s.close(nsFd);
    }
  }

  #changed(st: LinkState): void {
    const up = hostLinkUp(st, this.#carrier);
    if (up === this.#up) return;
    this.#up = up;
    this.#reporting = true;
    try {
      this.#onHostLink(up);
    } finally {
      this.#reporting = false;
    }
  }

  /** The tap left its namespace: moved (follow it there) or deleted (the tap backend notices that itself). */
  #removed(): void {
    this.#monitor = null;
    setImmediate(() => {
      if (this.#closed) return;
      try {
        this.#monitor = this.#open();
        this.#changed(this.#monitor.state);
      } catch (err) {
        this.#onError(err as Error);
      }
    });
  }
}
