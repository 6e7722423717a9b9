/**
 * Message framing for vfio-user over a connected AF_UNIX stream socket, on Node's event loop.
 *
 * Readiness comes from a libuv poll handle (koffi.node.poll): no thread, no blocking call. When the socket is
 * readable, recvmsg(MSG_DONTWAIT) is called until EAGAIN. A message is read as its header, then exactly
 * the rest of its size, never past its end, so the SCM_RIGHTS descriptors received belong to the message
 * being read (a sender attaches them to the message's first byte). Descriptors are received close-on-exec.
 * Replies go out with one sendmsg each when the socket has room, else they queue until it is writable.
 *
 * Backpressure (the peer is untrusted): while more than `sendQueueLimit` bytes wait to be sent, the channel
 * stops reading, so a peer that never reads its replies stops being served instead of growing the queue;
 * reading resumes once half of it has drained. A peer that leaves reading paused for `sendStallMs` without
 * taking a byte, or a queue past `sendQueueHardLimit`, is disconnected. One readiness event handles at most
 * `messagesPerWake` messages and about 64 KiB read or answered (the poll is level-triggered: the rest wait
 * for the next loop turn), so a flood cannot hold the event loop.
 */
import { decodeHeader, HEADER_SIZE, type MessageHeader } from './protocol.js';
import * as sys from '../host/socket.js';

/** One received message. The handler owns `fds` and must close or keep each one. */
export interface ReceivedMessage {
  header: MessageHeader;
  /** The bytes after the header (header.size - 16 of them). */
  body: Uint8Array;
  fds: number[];
  /** More descriptors arrived than the channel accepts (the excess was closed by the kernel or by us). */
  fdOverflow: boolean;
}

/** A header whose size cannot be honoured: too small (< 16) or larger than `maxMessageSize`. */
export interface RejectedMessage {
  header: MessageHeader;
  reason: 'short' | 'oversized';
}

export interface ChannelHandlers {
  message(msg: ReceivedMessage): void;
  /** The message was dropped (its body is discarded and its descriptors closed); the server answers it. */
  rejected(msg: RejectedMessage): void;
  /** The peer closed or the socket failed; the channel has closed its fd. Called once. */
  closed(error?: Error): void;
}

export interface ChannelOptions {
  /** Largest message accepted, header included. */
  maxMessageSize: number;
  /** Most descriptors accepted with one message. */
  maxFds: number;
  /** Unsent bytes above which reading pauses (until half of them are sent). Default: no limit. */
  sendQueueLimit?: number;
  /** Unsent bytes past which the peer is disconnected. Default: 4 × sendQueueLimit. */
  sendQueueHardLimit?: number;
  /** Milliseconds reading may stay paused with no byte sent before the peer is disconnected. Default: none. */
  sendStallMs?: number;
  /** Most messages handled per readiness event. Default 64. */
  messagesPerWake?: number;
}

/** Send-queue figures for diagnostics. */
export interface ChannelQueueStats {
  /** Bytes queued and not yet sent. */
  queuedBytes: number;
  /** The most ever queued at once. */
  peakQueuedBytes: number;
  /** Times reading paused because the peer did not take its replies. */
  readPauses: number;
}

const SCRATCH = 64 * 1024;
/** Bytes read plus reply bytes produced per readiness event before yielding to the event loop. */
const BYTES_PER_WAKE = 64 << 10;

export class MessageChannel {
  readonly #fd: number;
  readonly #h: ChannelHandlers;
  readonly #opts: ChannelOptions;
  readonly #poll: sys.FdPoll;
  // Native memory: msghdr, iovec, control buffer, data buffer.
  readonly #msg = new sys.NativeBuffer(sys.MSGHDR.SIZE);
  readonly #iov = new sys.NativeBuffer(sys.IOVEC.SIZE);
  readonly #ctrl: sys.NativeBuffer;
  readonly #data = new sys.NativeBuffer(SCRATCH);
  // Receive state.
  #header = new Uint8Array(HEADER_SIZE);
  #have = 0; // bytes of the current part read so far
  #body: Uint8Array | null = null; // null while reading the header
  #discard = 0; // bytes still to skip after a rejected header
  #fds: number[] = [];
  #fdOverflow = false;
  // Send state.
  #queue: { bytes: Uint8Array; fds: number[] }[] = [];
  #queued = 0;
  #enqueued = 0; // bytes ever passed to send(): replies produced count as work done in a wake
  #peakQueued = 0;
  #readPauses = 0;
  #paused = false;
  #lastProgress = 0;
  #stallTimer: ReturnType<typeof setTimeout> | null = null;
  /** Poll interest last requested: bit 0 readable, bit 1 writable. */
  #interest = 1;
  readonly #limit: number;
  readonly #hardLimit: number;
  readonly #stallMs: number;
  readonly #perWake: number;
  #closed = false;
  #dispatching = false;

  constructor(fd: number, handlers: ChannelHandlers, options: ChannelOptions) {
    this.#fd = fd;
    this.#h = handlers;
    this.#opts = options;
    // Room for more than maxFds so an excess is seen (and closed), not silently truncated mid-array.
    this.#ctrl = new sys.NativeBuffer(sys.cmsgSpace(4 * (options.maxFds + 8)));
    this.#limit = options.sendQueueLimit ?? Number.POSITIVE_INFINITY;
    this.#hardLimit = options.sendQueueHardLimit ?? 4 * this.#limit;
    this.#stallMs = options.sendStallMs ?? Number.POSITIVE_INFINITY;
    this.#perWake = options.messagesPerWake ?? 64;
    this.#poll = sys.pollFd(fd, (ev) => this.#onPoll(ev));
    this.#poll.start({ readable: true });
  }

  get closed(): boolean {
    return this.#closed;
  }

  get queueStats(): ChannelQueueStats {
    return { queuedBytes: this.#queued, peakQueuedBytes: this.#peakQueued, readPauses: this.#readPauses };
  }

  /** Queues one message (already encoded) with optional descriptors to pass (they stay owned by the caller). */
  send(bytes: Uint8Array, fds: number[] = []): void {
    if (this.#closed) return;
    this.#queue.push({ bytes, fds });
    this.#queued += bytes.length;
    this.#enqueued += bytes.length;
    if (this.#queued > this.#peakQueued) this.#peakQueued = this.#queued;
    if (this.#queued > this.#hardLimit) {
      this.close(new Error(`peer does not read its replies (${this.#queued} bytes unsent)`));
      return;
    }
    if (this.#queue.length === 1) this.#flush();
    else this.#updatePoll();
  }

  /** Closes the socket and every descriptor still held for a half-read message. Idempotent. */
  close(error?: Error): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#stallTimer !== null) clearTimeout(this.#stallTimer);
    this.#stallTimer = null;
    this.#poll.close();
    for (const fd of this.#fds) sys.close(fd);
    this.#fds = [];
    this.#queue = [];
    this.#queued = 0;
    sys.close(this.#fd);
    this.#msg.free();
    this.#iov.free();
    this.#ctrl.free();
    this.#data.free();
    this.#h.closed(error);
  }

  /**
   * Handles the messages already waiting on the socket, past the per-wake budget (up to `maxBytes`): a
   * kick that came by eventfd must not pass the writes the client sent before it (lib/vfio-user/iofds.ts).
   */
  drain(maxBytes: number): void {
    if (this.#closed || this.#dispatching) return;
    this.#dispatching = true;
    try {
      for (let bytes = 0; !this.#closed && !this.#paused && bytes < maxBytes; ) {
        const n = this.#recv(this.#wanted());
        if (n < 0) return; // EAGAIN or closed
        bytes += n;
        this.#consume(n);
      }
    } finally {
      this.#dispatching = false;
    }
  }

  #onPoll(ev: { readable: boolean; writable: boolean; disconnect: boolean }): void {
    if (this.#closed) return;
    if (ev.writable) this.#flush();
    if (ev.readable || ev.disconnect) this.#readAll();
  }

  #readAll(): void {
    if (this.#dispatching) return;
    this.#dispatching = true;
    this.#handled = 0;
    let bytes = 0;
    const enqueued0 = this.#enqueued;
    try {
      // Within the budget only: the level-triggered poll calls again on the next turn if more is waiting.
      while (
        !this.#closed &&
        !this.#paused &&
        this.#handled < this.#perWake &&
        bytes + this.#enqueued - enqueued0 < BYTES_PER_WAKE
      ) {
        const want = this.#wanted();
        const n = this.#recv(want);
        if (n < 0) return; // EAGAIN or closed
        bytes += n;
        this.#consume(n);
      }
    } finally {
      this.#dispatching = false;
    }
  }

  /** Messages delivered or rejected during the current readiness event. */
  #handled = 0;

  /** Pauses or resumes reading by the send queue's size, and asks for writability while it is not empty. */
  #updatePoll(): void {
    if (this.#closed) return;
    if (!this.#paused && this.#queued > this.#limit) {
      this.#paused = true;
      this.#readPauses++;
      this.#lastProgress = Date.now();
      this.#armStallTimer(this.#stallMs);
    } else if (this.#paused && this.#queued <= this.#limit / 2) {
      this.#paused = false;
      if (this.#stallTimer !== null) clearTimeout(this.#stallTimer);
      this.#stallTimer = null;
    }
    const interest = (this.#paused ? 0 : 1) | (this.#queue.length > 0 ? 2 : 0);
    if (interest === this.#interest) return;
    this.#interest = interest;
    // While paused, a peer's half-close is not asked for either: level-triggered, it would fire every turn.
    const readable = (interest & 1) !== 0;
    this.#poll.start({ readable, writable: (interest & 2) !== 0, disconnect: readable });
  }

  #armStallTimer(ms: number): void {
    if (!Number.isFinite(ms)) return;
    this.#stallTimer = setTimeout(() => {
      this.#stallTimer = null;
      if (this.#closed || !this.#paused) return;
      const idle = Date.now() - this.#lastProgress;
      if (idle >= this.#stallMs) {
        this.close(new Error(`peer has not read its replies for ${idle} ms (${this.#queued} bytes unsent)`));
      } else this.#armStallTimer(this.#stallMs - idle);
    }, ms);
    this.#stallTimer.unref?.();
  }

  /** How many bytes to ask for so that no read crosses the current message's end. */
  #wanted(): number {
    if (this.#discard > 0) return Math.min(this.#discard, SCRATCH);
    if (this.#body === null) return HEADER_SIZE - this.#have;
    return Math.min(this.#body.length - this.#have, SCRATCH);
  }

  /** One recvmsg into the data buffer; returns the byte count, or -1 (EAGAIN, or the channel closed). */
  #recv(want: number): number {
    const m = this.#msg.view;
    const iov = this.#iov.view;
    iov.setBigUint64(sys.IOVEC.base, this.#data.address, true);
    iov.setBigUint64(sys.IOVEC.len, BigInt(want), true);
    m.setBigUint64(sys.MSGHDR.name, 0n, true);
    m.setUint32(sys.MSGHDR.namelen, 0, true);
    m.setBigUint64(sys.MSGHDR.iov, this.#iov.address, true);
    m.setBigUint64(sys.MSGHDR.iovlen, 1n, true);
    m.setBigUint64(sys.MSGHDR.control, this.#ctrl.address, true);
    m.setBigUint64(sys.MSGHDR.controllen, BigInt(this.#ctrl.size), true);
    m.setInt32(sys.MSGHDR.flags, 0, true);
    const n = sys.recvmsg(this.#fd, this.#msg, sys.MSG_DONTWAIT | sys.MSG_CMSG_CLOEXEC);
    if (n < 0) {
      const e = sys.errno();
      if (e === sys.EAGAIN || e === sys.EINTR) return -1;
      this.close(new sys.SysError('recvmsg', e));
      return -1;
    }
    this.#takeFds(m);
    if (n === 0) {
      this.close();
      return -1;
    }
    return n;
  }

  #takeFds(m: DataView): void {
    if (m.getInt32(sys.MSGHDR.flags, true) & sys.MSG_CTRUNC) this.#fdOverflow = true;
    const ctrlLen = Number(m.getBigUint64(sys.MSGHDR.controllen, true));
    const cv = this.#ctrl.view;
    let off = 0;
    while (off + sys.CMSG.data <= ctrlLen) {
      const len = Number(cv.getBigUint64(off + sys.CMSG.len, true));
      if (len < sys.CMSG.data || off + len > ctrlLen) break;
      if (
        cv.getInt32(off + sys.CMSG.level, true) === sys.SOL_SOCKET &&
        cv.getInt32(off + sys.CMSG.type, true) === sys.SCM_RIGHTS
      ) {
        for (let p = off + sys.CMSG.data; p + 4 <= off + len; p += 4) {
          const fd = cv.getInt32(p, true);
          if (this.#fds.length >= this.#opts.maxFds || this.#discard > 0) {
            this.#fdOverflow ||= this.#discard === 0;
            sys.close(fd);
          } else this.#fds.push(fd);
        }
      }
      off += (len + 7) & ~7;
    }
  }

  #consume(n: number): void {
    const src = this.#data.bytes.subarray(0, n);
    if (this.#discard > 0) {
      this.#discard -= n;
      return;
    }
    if (this.#body === null) {
      this.#header.set(src, this.#have);
      this.#have += n;
      if (this.#have < HEADER_SIZE) return;
      const header = decodeHeader(this.#header);
      this.#have = 0;
      if (header.size < HEADER_SIZE || header.size > this.#opts.maxMessageSize) {
        // Skip the body of an oversized message to stay in step; a short one has nothing to skip.
        this.#discard = header.size > HEADER_SIZE ? header.size - HEADER_SIZE : 0;
        this.#dropFds();
        this.#handled++;
        this.#h.rejected({ header, reason: header.size < HEADER_SIZE ? 'short' : 'oversized' });
        return;
      }
      this.#body = new Uint8Array(header.size - HEADER_SIZE);
      if (this.#body.length === 0) this.#deliver(header);
      return;
    }
    this.#body.set(src, this.#have);
    this.#have += n;
    if (this.#have === this.#body.length) this.#deliver(decodeHeader(this.#header));
  }

  #dropFds(): void {
    for (const fd of this.#fds) sys.close(fd);
    this.#fds = [];
    this.#fdOverflow = false;
  }

  #deliver(header: MessageHeader): void {
    const msg: ReceivedMessage = {
      header,
      body: this.#body ?? new Uint8Array(0),
      fds: this.#fds,
      fdOverflow: this.#fdOverflow,
    };
    this.#body = null;
    this.#have = 0;
    this.#fds = [];
    this.#fdOverflow = false;
    this.#handled++;
    this.#h.message(msg);
  }

  #flush(): void {
    while (this.#queue.length > 0 && !this.#closed) {
      const head = this.#queue[0] as { bytes: Uint8Array; fds: number[] };
      const n = this.#sendOne(head.bytes, head.fds);
      if (n < 0 || this.#closed) break;
      this.#queued -= Math.min(n, head.bytes.length);
      this.#lastProgress = Date.now();
      if (n < head.bytes.length) {
        // Partial write: the descriptors went with the first byte; the rest follows without them.
        head.bytes = head.bytes.subarray(n);
        head.fds = [];
        continue;
      }
      this.#queue.shift();
    }
    this.#updatePoll();
  }

  #sendOne(bytes: Uint8Array, fds: number[]): number {
    const len = Math.min(bytes.length, SCRATCH);
    this.#data.bytes.set(bytes.subarray(0, len));
    const m = this.#msg.view;
    const iov = this.#iov.view;
    iov.setBigUint64(sys.IOVEC.base, this.#data.address, true);
    iov.setBigUint64(sys.IOVEC.len, BigInt(len), true);
    m.setBigUint64(sys.MSGHDR.name, 0n, true);
    m.setUint32(sys.MSGHDR.namelen, 0, true);
    m.setBigUint64(sys.MSGHDR.iov, this.#iov.address, true);
    m.setBigUint64(sys.MSGHDR.iovlen, 1n, true);
    if (fds.length > 0) {
      const cv = this.#ctrl.view;
      const space = sys.cmsgSpace(4 * fds.length);
      if (space > this.#ctrl.size)
        throw new RangeError(`too many descriptors for one message (${fds.length})`);
      cv.setBigUint64(sys.CMSG.len, BigInt(sys.CMSG.data + 4 * fds.length), true);
      cv.setInt32(sys.CMSG.level, sys.SOL_SOCKET, true);
      cv.setInt32(sys.CMSG.type, sys.SCM_RIGHTS, true);
      for (let i = 0; i < fds.length; i++) cv.setInt32(sys.CMSG.data + 4 * i, fds[i] as number, true);
      m.setBigUint64(sys.MSGHDR.control, this.#ctrl.address, true);
      m.setBigUint64(sys.MSGHDR.controllen, BigInt(space), true);
    } else {
      m.setBigUint64(sys.MSGHDR.control, 0n, true);
      m.setBigUint64(sys.MSGHDR.controllen, 0n, true);
    }
    m.setInt32(sys.MSGHDR.flags, 0, true);
    const n = sys.sendmsg(this.#fd, this.#msg, sys.MSG_DONTWAIT | sys.MSG_NOSIGNAL);
    if (n < 0) {
      const e = sys.errno();
      if (e === sys.EAGAIN || e === sys.EINTR) return -1;
      this.close(new sys.SysError('sendmsg', e));
      return bytes.length; // dropped with the connection
    }
    return n;
  }
}
