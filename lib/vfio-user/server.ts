/**
 * A vfio-user server (QEMU docs/interop/vfio-user.rst) that serves one PCI function to QEMU 10.1+
 * (`-device vfio-user-pci`), Cloud Hypervisor (`--user-device`) or any other vfio-user client.
 *
 * The client forwards the function's config space and BAR accesses (REGION_READ/WRITE; BAR writes are
 * posted: NO_REPLY, never answered), hands guest RAM over as file descriptors (DMA_MAP, mmap'd here into
 * the device's guest memory) and takes interrupts as one eventfd per MSI-X vector (SET_IRQS). The client
 * emulates the MSI-X table and its masking itself, so the device signals "vector n" through the sink.
 *
 * Runs on Node's event loop (lib/vfio-user/channel.ts): a libuv poll handle on the sockets, non-blocking
 * recvmsg/sendmsg through koffi. A hostile or broken client gets error replies; it can never crash the
 * process, leak descriptors or mappings, or reach memory outside what it mapped.
 *
 * This file accepts the client and dispatches its messages; the commands live with their state:
 * regions.ts (region info and access), irqs.ts (irq info, SET_IRQS, signalling), iofds.ts (doorbells as
 * ioeventfds, GET_REGION_IO_FDS), dma.ts (DMA_MAP/UNMAP),
 * socket-file.ts (the socket's mode and group), device.ts (the device interface).
 */
import { existsSync, lstatSync, unlinkSync } from 'node:fs';
import {
  type ChannelOptions,
  MessageChannel,
  type ReceivedMessage,
  type RejectedMessage,
} from './channel.js';
import type { VfioUserDevice } from './device.js';
import { DmaMappings, type DmaRegionInfo, dmaMapCommand, dmaUnmapCommand } from './dma.js';
import { VfioUserIoFds } from './iofds.js';
import { VfioUserIrqs } from './irqs.js';
import {
  Command,
  commandName,
  DEVICE_INFO,
  DeviceFlag,
  decodeVersionBody,
  Errno,
  encodeErrorReply,
  encodeReply,
  encodeVersionBody,
  Irq,
  MsgFlag,
  body as makeBody,
  REGION_RW,
  Region,
  type ServerCapabilities,
  view,
} from './protocol.js';
import { pieces, VfioUserRegions } from './regions.js';
import type { Responder } from './responder.js';
import { secureSocketFile } from './socket-file.js';
import * as sys from '../host/socket.js';

export type {
  VfioUserBar,
  VfioUserDevice,
  VfioUserDoorbell,
  VfioUserDoorbellEventfds,
  VfioUserInterruptSink,
} from './device.js';

const NUM_REGIONS = Region.COUNT;
const NUM_IRQS = Irq.COUNT;

export interface VfioUserServerOptions {
  socketPath: string;
  /**
   * Mode of the socket file (connecting needs write permission on it). Default 0o600 (the server's user
   * only), 0o660 with `socketGroup`; never taken from the umask. Permission bits only (0..0o777).
   */
  socketMode?: number;
  /** Group of the socket file, by name or id (the server's user must be in it, or root). */
  socketGroup?: string | number;
  /** Diagnostics (connection events, rejected messages); silent by default. */
  log?: (line: string) => void;
  /** Largest REGION_READ/WRITE payload (and the capability stated in VERSION). Default 1 MiB. */
  maxDataXferSize?: number;
  /** Most descriptors per message (VERSION's max_msg_fds; QEMU accepts at most 16). Default 8. */
  maxMsgFds?: number;
  /** Most live DMA mappings. Default 65535. */
  maxDmaMaps?: number;
  /** Offer REGION_WRITE_MULTI (QEMU batches posted writes when its queue is long). Default true. */
  writeMultiple?: boolean;
  /**
   * Unsent reply bytes above which the server stops reading the client's requests until half of them
   * are sent (a client that never reads its replies cannot grow the server). Default 4 MiB.
   */
  maxQueuedReplyBytes?: number;
  /** A client that leaves reading paused this long (ms) without taking a byte is disconnected. Default 10 s. */
  replyStallMs?: number;
}

/** Counters for tests and diagnostics. */
export interface VfioUserServerStats {
  connections: number;
  /** Requests received, by command name. */
  requests: Record<string, number>;
  /** Error replies sent (or suppressed for NO_REPLY requests), by errno. */
  errors: Record<number, number>;
  /** REGION_READ / REGION_WRITE requests per region index (0-5 BARs, 7 config). */
  regionReads: Record<number, number>;
  regionWrites: Record<number, number>;
  /** MSI-X / INTx eventfd signals written, and signals dropped for want of an eventfd. */
  irqsSignalled: number;
  irqsDropped: number;
  /** Doorbell writes made on an ioeventfd wake-up (GET_REGION_IO_FDS), and the signals they took in. */
  kicksByEventfd: number;
  kickSignalsByEventfd: number;
  /** The most reply bytes ever waiting to be sent to a client. */
  replyQueuePeak: number;
  /** Times reading paused because a client did not take its replies. */
  readPauses: number;
}

/** Serves one device on a UNIX socket, one client connection at a time. */
export class VfioUserServer {
  readonly #device: VfioUserDevice;
  readonly #path: string;
  readonly #socketMode: number;
  readonly #socketGroup: string | number | undefined;
  readonly #log: (line: string) => void;
  readonly #caps: ServerCapabilities;
  readonly #dma: DmaMappings;
  readonly #maxQueued: number;
  readonly #stallMs: number;
  #listenFd = -1;
  #listenPoll: sys.FdPoll | null = null;
  #conn: MessageChannel | null = null;
  #versioned = false;
  #closedWaiters: (() => void)[] = [];
  readonly #irqs: VfioUserIrqs;
  readonly #regions: VfioUserRegions;
  readonly #ioFds: VfioUserIoFds;
  readonly #stats: VfioUserServerStats = {
    connections: 0,
    requests: {},
    errors: {},
    regionReads: {},
    regionWrites: {},
    irqsSignalled: 0,
    irqsDropped: 0,
    kicksByEventfd: 0,
    kickSignalsByEventfd: 0,
    replyQueuePeak: 0,
    readPauses: 0,
  };
  #pausesBefore = 0;
  readonly #responder: Responder;

  constructor(device: VfioUserDevice, options: VfioUserServerOptions) {
    if (device.bars.length !== 6)
      throw new RangeError(`device.bars must have 6 entries, got ${device.bars.length}`);
    if (!Number.isInteger(device.msixVectors) || device.msixVectors < 0 || device.msixVectors > 2048) {
      throw new RangeError(`device.msixVectors must be 0..2048, got ${device.msixVectors}`);
    }
    this.#device = device;
    this.#path = options.socketPath;
    this.#socketGroup = options.socketGroup;
    this.#socketMode = options.socketMode ?? (options.socketGroup === undefined ? 0o600 : 0o660);
    if (!Number.isInteger(this.#socketMode) || this.#socketMode < 0 || this.#socketMode > 0o777) {
      throw new RangeError(`socketMode must be permission bits (0..0o777), got ${options.socketMode}`);
    }
    this.#log = options.log ?? (() => {});
    this.#caps = {
      maxMsgFds: options.maxMsgFds ?? 8,
      maxDataXferSize: options.maxDataXferSize ?? 1 << 20,
      pgsizes: 4096,
      maxDmaMaps: options.maxDmaMaps ?? 65535,
      writeMultiple: options.writeMultiple ?? true,
    };
    this.#dma = new DmaMappings(device.memory, this.#caps.maxDmaMaps);
    this.#maxQueued = options.maxQueuedReplyBytes ?? 4 << 20;
    this.#stallMs = options.replyStallMs ?? 10_000;
    const r: Responder = {
      reply: (h, body, fds) => this.#reply(h, body, fds),
      error: (h, errno, why) => this.#error(h, errno, why),
      safe: (fn) => this.#safe(fn),
      log: (line) => this.#log(line),
    };
    this.#responder = r;
    this.#irqs = new VfioUserIrqs(device.msixVectors, this.#stats, r, () =>
      this.#safe(() => device.interruptRoutesChanged?.()),
    );
    this.#regions = new VfioUserRegions(device, this.#caps.maxDataXferSize, this.#stats, r);
    this.#ioFds = new VfioUserIoFds(
      device,
      this.#caps.maxMsgFds,
      this.#stats,
      r,
      () => this.#conn?.drain(this.#maxQueued),
      () => this.#safe(() => device.interruptRoutesChanged?.()),
    );
    device.setDoorbellEventfds?.({
      fd: (i) => this.#ioFds.fdOf(i),
      hold: (i, held) => this.#ioFds.hold(i, held),
    });
    device.setInterruptSink({
      vector: (n) => this.#irqs.signalMsix(n),
      vectorFd: (n) => this.#irqs.vectorFd(n),
      intx: (a) => this.#irqs.setIntx(a),
    });
  }

  /** Binds the socket (replacing a stale socket file, never another kind of file) and starts accepting. */
  async listen(): Promise<void> {
    if (this.#listenFd >= 0) throw new Error('VfioUserServer is already listening');
    if (existsSync(this.#path)) {
      if (!lstatSync(this.#path).isSocket()) throw new Error(`${this.#path} exists and is not a socket`);
      unlinkSync(this.#path);
    }
    // Owner and mode are set between bind and listen: nobody can connect before they are right.
    const fd = sys.bindUnix(this.#path);
    try {
      secureSocketFile(this.#path, this.#socketMode, this.#socketGroup);
      sys.listenOn(fd);
    } catch (e) {
      sys.close(fd);
      try {
        unlinkSync(this.#path);
      } catch {
        // not created
      }
      throw e;
    }
    this.#listenFd = fd;
    this.#listenPoll = sys.pollFd(this.#listenFd, () => this.#accept());
    this.#listenPoll.start({ readable: true });
    this.#log(`listening on ${this.#path}`);
  }

  /** Stops listening, drops the client (unmapping its memory, closing its eventfds) and removes the socket. */
  async close(): Promise<void> {
    this.#listenPoll?.close();
    this.#listenPoll = null;
    if (this.#listenFd >= 0) {
      sys.close(this.#listenFd);
      this.#listenFd = -1;
      try {
        unlinkSync(this.#path);
      } catch {
        // already gone
      }
    }
    this.#conn?.close();
  }

  /** True while a client is connected. */
  get connected(): boolean {
    return this.#conn !== null;
  }

  /** Resolves when the current client (if any) has disconnected. */
  waitForDisconnect(): Promise<void> {
    if (this.#conn === null) return Promise.resolve();
    return new Promise((resolve) => this.#closedWaiters.push(resolve));
  }

  stats(): VfioUserServerStats {
    this.#takeQueueStats();
    return structuredClone(this.#stats);
  }

  #takeQueueStats(): void {
    const q = this.#conn?.queueStats;
    if (q === undefined) return;
    this.#stats.replyQueuePeak = Math.max(this.#stats.replyQueuePeak, q.peakQueuedBytes);
    this.#stats.readPauses = this.#pausesBefore + q.readPauses;
  }

  /** The live DMA mappings. */
  dmaRegions(): DmaRegionInfo[] {
    return this.#dma.list();
  }

  /** DMA chunks kept mapped for good because a worker thread did not confirm it dropped them (dma.ts). */
  dmaPinned(): number {
    return this.#dma.pinned;
  }

  /** Vectors of an irq index that currently have an eventfd (for tests and diagnostics). */
  armedVectors(index: number): number[] {
    return this.#irqs.armedVectors(index);
  }

  /** Splits [offset, offset+count) into naturally aligned pieces of at most `max` bytes. */
  static pieces(offset: number, count: number, max: 4 | 8): [number, 1 | 2 | 4 | 8][] {
    return pieces(offset, count, max);
  }

  // ---------------------------------------------------------------- connection

  #accept(): void {
    for (;;) {
      let fd: number;
      try {
        fd = sys.accept(this.#listenFd);
      } catch (e) {
        this.#log(`accept failed: ${(e as Error).message}`);
        return;
      }
      if (fd < 0) return;
      if (this.#conn !== null) {
        this.#log('refusing a second client while one is connected');
        sys.close(fd);
        continue;
      }
      this.#stats.connections++;
      this.#versioned = false;
      const opts: ChannelOptions = {
        maxMessageSize: this.#maxMessageSize(),
        maxFds: this.#caps.maxMsgFds,
        sendQueueLimit: this.#maxQueued,
        // Reading pauses after the reply that crossed the limit; only a bug could queue much more.
        sendQueueHardLimit: 2 * this.#maxQueued + this.#maxMessageSize(),
        sendStallMs: this.#stallMs,
      };
      this.#conn = new MessageChannel(
        fd,
        {
          message: (m) => this.#onMessage(m),
          rejected: (m) => this.#onRejected(m),
          closed: (err) => this.#onClosed(err),
        },
        opts,
      );
      this.#log('client connected');
    }
  }

  #maxMessageSize(): number {
    // The biggest legitimate request: a REGION_WRITE of max_data_xfer_size bytes.
    return 16 + REGION_RW.SIZE + this.#caps.maxDataXferSize;
  }

  #onClosed(err?: Error): void {
    this.#log(`client disconnected${err ? `: ${err.message}` : ''}`);
    this.#takeQueueStats();
    this.#pausesBefore = this.#stats.readPauses;
    this.#conn = null;
    this.#dma.unmapAll();
    this.#irqs.disableAll();
    this.#ioFds.closeAll();
    this.#safe(() => this.#device.reset());
    const waiters = this.#closedWaiters;
    this.#closedWaiters = [];
    for (const w of waiters) w();
  }

  #send(bytes: Uint8Array): void {
    this.#conn?.send(bytes);
  }

  #error(req: { id: number; command: number; flags: number }, errno: number, why: string): void {
    this.#stats.errors[errno] = (this.#stats.errors[errno] ?? 0) + 1;
    this.#log(`${commandName(req.command)} #${req.id}: error ${errno}: ${why}`);
    if (req.flags & MsgFlag.NO_REPLY) return;
    this.#send(encodeErrorReply(req, errno));
  }

  #onRejected(m: RejectedMessage): void {
    const h = m.header;
    this.#error(h, m.reason === 'short' ? Errno.EINVAL : Errno.E2BIG, `${m.reason} message (size ${h.size})`);
  }

  #onMessage(m: ReceivedMessage) {
    const h = m.header;
    const name = commandName(h.command);
    this.#stats.requests[name] = (this.#stats.requests[name] ?? 0) + 1;
    const fds = m.fds;
    const closeFds = () => {
      for (const fd of fds.splice(0)) sys.close(fd);
    };
    try {
      if ((h.flags & MsgFlag.TYPE_MASK) !== MsgFlag.REQUEST) {
        // We send no requests, so no reply is expected; answering a reply could loop.
        closeFds();
        this.#log(`dropping a message of type ${h.flags & MsgFlag.TYPE_MASK} (${name})`);
        return;
      }
      if (m.fdOverflow) {
        closeFds();
        return this.#error(h, Errno.EINVAL, 'too many descriptors');
      }
      if (!this.#versioned && h.command !== Command.VERSION) {
        closeFds();
        return this.#error(h, Errno.EINVAL, 'VERSION must come first');
      }
      const takesFds = h.command === Command.DMA_MAP || h.command === Command.DEVICE_SET_IRQS;
      if (!takesFds && fds.length > 0) {
        closeFds();
        return this.#error(h, Errno.EINVAL, 'descriptors where none belong');
      }
      switch (h.command) {
        case Command.VERSION:
          return this.#version(h, m.body);
        case Command.DMA_MAP:
          return dmaMapCommand(this.#responder, this.#dma, h, m.body, fds);
        case Command.DMA_UNMAP:
          return dmaUnmapCommand(this.#responder, this.#dma, h, m.body);
        case Command.DEVICE_GET_INFO:
          return this.#deviceInfo(h, m.body);
        case Command.DEVICE_GET_REGION_INFO:
          return this.#regions.info(h, m.body);
        case Command.DEVICE_GET_REGION_IO_FDS:
          return this.#ioFds.get(h, m.body);
        case Command.DEVICE_GET_IRQ_INFO:
          return this.#irqs.info(h, m.body);
        case Command.DEVICE_SET_IRQS:
          return this.#irqs.set(h, m.body, fds);
        case Command.REGION_READ:
          return this.#regions.read(h, m.body);
        case Command.REGION_WRITE:
          return this.#regions.write(h, m.body);
        case Command.REGION_WRITE_MULTI:
          return this.#regions.writeMulti(h, m.body);
        case Command.DEVICE_RESET:
          if (m.body.length !== 0) return this.#error(h, Errno.EINVAL, 'DEVICE_RESET takes no body');
          this.#safe(() => this.#device.reset());
          return this.#reply(h);
        default:
          return this.#error(h, Errno.ENOSYS, 'unsupported command');
      }
    } catch (e) {
      closeFds();
      this.#error(h, Errno.EIO, `internal error: ${(e as Error).stack ?? e}`);
    }
  }

  #reply(h: { id: number; command: number; flags: number }, body?: Uint8Array, fds?: number[]): void {
    if (h.flags & MsgFlag.NO_REPLY) return;
    this.#conn?.send(encodeReply(h, body), fds);
  }

  #safe(fn: () => void): boolean {
    try {
      fn();
      return true;
    } catch (e) {
      this.#log(`device threw: ${(e as Error).stack ?? e}`);
      return false;
    }
  }

  // ---------------------------------------------------------------- commands

  #version(h: ReceivedMessage['header'], b: Uint8Array) {
    const v = decodeVersionBody(b);
    if (v === null) return this.#error(h, Errno.EINVAL, 'malformed VERSION');
    if (v.major !== 0) return this.#error(h, Errno.ENOTSUP, `unsupported major version ${v.major}`);
    this.#versioned = true;
    this.#reply(h, encodeVersionBody(0, 0, this.#caps));
  }

  #deviceInfo(h: ReceivedMessage['header'], b: Uint8Array) {
    if (b.length < DEVICE_INFO.SIZE || view(b).getUint32(DEVICE_INFO.argsz, true) < DEVICE_INFO.SIZE) {
      return this.#error(h, Errno.EINVAL, 'malformed DEVICE_GET_INFO');
    }
    this.#reply(
      h,
      makeBody(DEVICE_INFO.SIZE, (o) => {
        o.setUint32(DEVICE_INFO.argsz, DEVICE_INFO.SIZE, true);
        o.setUint32(DEVICE_INFO.flags, DeviceFlag.RESET | DeviceFlag.PCI, true);
        o.setUint32(DEVICE_INFO.numRegions, NUM_REGIONS, true);
        o.setUint32(DEVICE_INFO.numIrqs, NUM_IRQS, true);
      }),
    );
  }
}
