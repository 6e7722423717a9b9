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
 */
import {
  chmodSync,
  existsSync,
  lchownSync,
  lstatSync,
  readFileSync,
  readlinkSync,
  unlinkSync,
} from 'node:fs';
import {
  type ChannelOptions,
  MessageChannel,
  type ReceivedMessage,
  type RejectedMessage,
} from './channel.js';
import { DmaError, DmaMappings, type DmaMemory, type DmaRegionInfo } from './dma.js';
import {
  Command,
  commandName,
  DEVICE_INFO,
  DeviceFlag,
  DMA_MAP,
  DMA_UNMAP,
  DmaUnmapFlag,
  decodeVersionBody,
  Errno,
  encodeErrorReply,
  encodeReply,
  encodeVersionBody,
  IRQ_INFO,
  IRQ_SET,
  Irq,
  IrqInfoFlag,
  IrqSetFlag,
  MsgFlag,
  body as makeBody,
  REGION_INFO,
  REGION_RW,
  Region,
  RegionFlag,
  type ServerCapabilities,
  view,
  WRITE_MULTI,
} from './protocol.js';
import * as sys from './sys.js';

/** One BAR as the device declares it (null: no such BAR, or the upper half of a 64-bit BAR). */
export interface VfioUserBar {
  size: number;
  type: 'mem32' | 'mem64' | 'io';
}

/** Where the device signals interrupts when a vfio-user client emulates the MSI-X table. */
export interface VfioUserInterruptSink {
  /** MSI-X vector `n` fired (coalesces like an edge: several signals before delivery may arrive as one). */
  vector(n: number): void;
  /** INTx level changed. */
  intx?(asserted: boolean): void;
}

/**
 * The PCI function the server exposes. Accesses arrive in naturally aligned pieces of 1, 2, 4 (config) or
 * 1, 2, 4, 8 bytes (BARs), offsets relative to the region. Must not throw for guest-chosen values.
 */
export interface VfioUserDevice {
  configRead(offset: number, size: 1 | 2 | 4): number;
  configWrite(offset: number, size: 1 | 2 | 4, value: number): void;
  barRead(bar: number, offset: number, size: 1 | 2 | 4 | 8): number | bigint;
  barWrite(bar: number, offset: number, size: 1 | 2 | 4 | 8, value: number | bigint): void;
  /** Six entries, BAR0..BAR5. */
  readonly bars: readonly (VfioUserBar | null)[];
  readonly msixVectors: number;
  /** Guest memory: DMA_MAP regions are added here and removed on DMA_UNMAP / disconnect. */
  readonly memory: DmaMemory;
  setInterruptSink(sink: VfioUserInterruptSink): void;
  /** Function-level reset (DEVICE_RESET, and when the client disconnects). */
  reset(): void;
}

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
  /** The most reply bytes ever waiting to be sent to a client. */
  replyQueuePeak: number;
  /** Times reading paused because a client did not take its replies. */
  readPauses: number;
}

const CONFIG_SIZE = 4096;

/** Whether `fd` is an eventfd (as Linux's vfio checks with eventfd_ctx_fdget). */
function isEventfd(fd: number): boolean {
  try {
    return readlinkSync(`/proc/self/fd/${fd}`) === 'anon_inode:[eventfd]';
  } catch {
    return false;
  }
}
/** A group id from a number, a numeric string or a name in /etc/group; throws for an unknown group. */
function groupId(group: string | number): number {
  if (typeof group === 'number' || /^\d+$/.test(group)) {
    const gid = Number(group);
    if (!Number.isSafeInteger(gid) || gid < 0 || gid > 0xfffffffe)
      throw new RangeError(`bad group id ${group}`);
    return gid;
  }
  let text = '';
  try {
    text = readFileSync('/etc/group', 'utf8');
  } catch {
    // no /etc/group: the name is unknown
  }
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f[0] === group && f[2] !== undefined && /^\d+$/.test(f[2])) return Number(f[2]);
  }
  throw new Error(`unknown group ${group} (give its numeric id if it is not in /etc/group)`);
}
const NUM_REGIONS = Region.COUNT;
const NUM_IRQS = Irq.COUNT;

interface IrqIndexState {
  fds: (number | null)[];
  masked: boolean[];
  pending: boolean[];
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
  readonly #irqs: IrqIndexState[];
  #intxLevel = false;
  readonly #stats: VfioUserServerStats = {
    connections: 0,
    requests: {},
    errors: {},
    regionReads: {},
    regionWrites: {},
    irqsSignalled: 0,
    irqsDropped: 0,
    replyQueuePeak: 0,
    readPauses: 0,
  };
  #pausesBefore = 0;

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
    this.#irqs = Array.from({ length: NUM_IRQS }, (_, i) => {
      const n = this.#irqCount(i);
      return {
        fds: new Array(n).fill(null),
        masked: new Array(n).fill(false),
        pending: new Array(n).fill(false),
      };
    });
    device.setInterruptSink({ vector: (n) => this.#signalMsix(n), intx: (a) => this.#setIntx(a) });
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
      this.#secureSocketFile();
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

  /** Sets the socket file's group and mode and checks them; throws when it cannot (listen refuses to start). */
  #secureSocketFile(): void {
    const path = this.#path;
    const gid = this.#socketGroup === undefined ? undefined : groupId(this.#socketGroup);
    if (!lstatSync(path).isSocket()) throw new Error(`${path} is not the socket just bound`);
    try {
      if (gid !== undefined) lchownSync(path, -1, gid);
      chmodSync(path, this.#socketMode);
    } catch (e) {
      throw new Error(`cannot set the permissions of ${path}: ${(e as Error).message}`);
    }
    const st = lstatSync(path);
    if (!st.isSocket() || (st.mode & 0o7777) !== this.#socketMode || (gid !== undefined && st.gid !== gid)) {
      throw new Error(
        `${path} did not take mode ${this.#socketMode.toString(8)}${gid === undefined ? '' : ` group ${gid}`}`,
      );
    }
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

  /** Vectors of an irq index that currently have an eventfd (for tests and diagnostics). */
  armedVectors(index: number): number[] {
    const st = this.#irqs[index];
    if (!st) return [];
    return st.fds.flatMap((fd, i) => (fd === null ? [] : [i]));
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
    for (const st of this.#irqs) this.#disableIndex(st);
    this.#intxLevel = false;
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
          return this.#dmaMap(h, m.body, fds);
        case Command.DMA_UNMAP:
          return this.#dmaUnmap(h, m.body);
        case Command.DEVICE_GET_INFO:
          return this.#deviceInfo(h, m.body);
        case Command.DEVICE_GET_REGION_INFO:
          return this.#regionInfo(h, m.body);
        case Command.DEVICE_GET_IRQ_INFO:
          return this.#irqInfo(h, m.body);
        case Command.DEVICE_SET_IRQS:
          return this.#setIrqs(h, m.body, fds);
        case Command.REGION_READ:
          return this.#regionRead(h, m.body);
        case Command.REGION_WRITE:
          return this.#regionWrite(h, m.body);
        case Command.REGION_WRITE_MULTI:
          return this.#writeMulti(h, m.body);
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

  #reply(h: { id: number; command: number; flags: number }, body?: Uint8Array): void {
    if (h.flags & MsgFlag.NO_REPLY) return;
    this.#send(encodeReply(h, body));
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

  #dmaMap(h: ReceivedMessage['header'], b: Uint8Array, fds: number[]) {
    if (b.length < DMA_MAP.SIZE || view(b).getUint32(DMA_MAP.argsz, true) < DMA_MAP.SIZE || fds.length > 1) {
      for (const fd of fds.splice(0)) sys.close(fd);
      return this.#error(h, Errno.EINVAL, 'malformed DMA_MAP');
    }
    const v = view(b);
    const fd = fds.length === 1 ? (fds.pop() as number) : null;
    try {
      this.#dma.map(
        v.getBigUint64(DMA_MAP.address, true),
        v.getBigUint64(DMA_MAP.size, true),
        v.getBigUint64(DMA_MAP.offset, true),
        v.getUint32(DMA_MAP.flags, true),
        fd,
      );
    } catch (e) {
      if (e instanceof DmaError) return this.#error(h, e.errno, e.message);
      throw e;
    }
    this.#reply(h);
  }

  #dmaUnmap(h: ReceivedMessage['header'], b: Uint8Array) {
    if (b.length < DMA_UNMAP.SIZE || view(b).getUint32(DMA_UNMAP.argsz, true) < DMA_UNMAP.SIZE) {
      return this.#error(h, Errno.EINVAL, 'malformed DMA_UNMAP');
    }
    const v = view(b);
    const flags = v.getUint32(DMA_UNMAP.flags, true);
    const address = v.getBigUint64(DMA_UNMAP.address, true);
    const size = v.getBigUint64(DMA_UNMAP.size, true);
    let unmapped: bigint;
    try {
      if (flags === DmaUnmapFlag.ALL) {
        if (address !== 0n || size !== 0n)
          return this.#error(h, Errno.EINVAL, 'DMA_UNMAP ALL needs address 0, size 0');
        unmapped = this.#dma.unmapAll();
      } else if (flags === 0) {
        unmapped = this.#dma.unmap(address, size);
      } else {
        return this.#error(h, Errno.EINVAL, `unsupported DMA_UNMAP flags ${flags}`);
      }
    } catch (e) {
      if (e instanceof DmaError) return this.#error(h, e.errno, e.message);
      throw e;
    }
    this.#reply(
      h,
      makeBody(DMA_UNMAP.SIZE, (o) => {
        o.setUint32(DMA_UNMAP.argsz, DMA_UNMAP.SIZE, true);
        o.setUint32(DMA_UNMAP.flags, flags, true);
        o.setBigUint64(DMA_UNMAP.address, address, true);
        o.setBigUint64(DMA_UNMAP.size, unmapped, true);
      }),
    );
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

  /** Size of a region (0: absent). */
  #regionSize(index: number): number {
    if (index === Region.CONFIG) return CONFIG_SIZE;
    if (index >= Region.BAR0 && index <= Region.BAR5) return this.#device.bars[index]?.size ?? 0;
    return 0;
  }

  #regionInfo(h: ReceivedMessage['header'], b: Uint8Array) {
    if (
      b.length < REGION_INFO.REQUEST_SIZE ||
      view(b).getUint32(REGION_INFO.argsz, true) < REGION_INFO.SIZE
    ) {
      return this.#error(h, Errno.EINVAL, 'malformed DEVICE_GET_REGION_INFO');
    }
    const index = view(b).getUint32(REGION_INFO.index, true);
    if (index >= NUM_REGIONS) return this.#error(h, Errno.EINVAL, `no region ${index}`);
    const size = this.#regionSize(index);
    this.#reply(
      h,
      makeBody(REGION_INFO.SIZE, (o) => {
        o.setUint32(REGION_INFO.argsz, REGION_INFO.SIZE, true);
        o.setUint32(REGION_INFO.flags, size > 0 ? RegionFlag.READ | RegionFlag.WRITE : 0, true);
        o.setUint32(REGION_INFO.index, index, true);
        o.setUint32(REGION_INFO.capOffset, 0, true);
        o.setBigUint64(REGION_INFO.size, BigInt(size), true);
        o.setBigUint64(REGION_INFO.offset, 0n, true);
      }),
    );
  }

  #irqCount(index: number): number {
    if (index === Irq.INTX) return 1;
    if (index === Irq.MSIX) return this.#device.msixVectors;
    return 0;
  }

  #irqInfo(h: ReceivedMessage['header'], b: Uint8Array) {
    if (b.length < IRQ_INFO.SIZE || view(b).getUint32(IRQ_INFO.argsz, true) < IRQ_INFO.SIZE) {
      return this.#error(h, Errno.EINVAL, 'malformed DEVICE_GET_IRQ_INFO');
    }
    const index = view(b).getUint32(IRQ_INFO.index, true);
    if (index >= NUM_IRQS) return this.#error(h, Errno.EINVAL, `no irq index ${index}`);
    // As Linux's vfio-pci: INTx is maskable and automasked; MSI-X without NORESIZE, so QEMU arms vectors
    // one at a time as the guest unmasks them. MSI, ERR and REQ have no vectors.
    const flags =
      index === Irq.INTX
        ? IrqInfoFlag.EVENTFD | IrqInfoFlag.MASKABLE | IrqInfoFlag.AUTOMASKED
        : index === Irq.MSIX || index === Irq.MSI
          ? IrqInfoFlag.EVENTFD
          : 0;
    this.#reply(
      h,
      makeBody(IRQ_INFO.SIZE, (o) => {
        o.setUint32(IRQ_INFO.argsz, IRQ_INFO.SIZE, true);
        o.setUint32(IRQ_INFO.flags, flags, true);
        o.setUint32(IRQ_INFO.index, index, true);
        o.setUint32(IRQ_INFO.count, this.#irqCount(index), true);
      }),
    );
  }

  #disableIndex(st: IrqIndexState): void {
    for (let i = 0; i < st.fds.length; i++) {
      const fd = st.fds[i];
      if (fd !== null && fd !== undefined) sys.close(fd);
      st.fds[i] = null;
      st.masked[i] = false;
      st.pending[i] = false;
    }
  }

  #setIrqs(h: ReceivedMessage['header'], b: Uint8Array, fds: number[]) {
    const fail = (why: string) => {
      for (const fd of fds.splice(0)) sys.close(fd);
      this.#error(h, Errno.EINVAL, why);
    };
    if (b.length < IRQ_SET.SIZE || view(b).getUint32(IRQ_SET.argsz, true) < IRQ_SET.SIZE)
      return fail('malformed SET_IRQS');
    const v = view(b);
    const flags = v.getUint32(IRQ_SET.flags, true);
    const index = v.getUint32(IRQ_SET.index, true);
    const start = v.getUint32(IRQ_SET.start, true);
    const count = v.getUint32(IRQ_SET.count, true);
    const data = flags & IrqSetFlag.DATA_MASK;
    const action = flags & IrqSetFlag.ACTION_MASK_ALL;
    if ((flags & ~(IrqSetFlag.DATA_MASK | IrqSetFlag.ACTION_MASK_ALL)) !== 0)
      return fail('unknown SET_IRQS flags');
    if (![IrqSetFlag.DATA_NONE, IrqSetFlag.DATA_BOOL, IrqSetFlag.DATA_EVENTFD].includes(data as 1 | 2 | 4)) {
      return fail('SET_IRQS needs exactly one DATA_* flag');
    }
    if (
      ![IrqSetFlag.ACTION_MASK, IrqSetFlag.ACTION_UNMASK, IrqSetFlag.ACTION_TRIGGER].includes(
        action as 8 | 16 | 32,
      )
    ) {
      return fail('SET_IRQS needs exactly one ACTION_* flag');
    }
    const st = this.#irqs[index];
    if (st === undefined) return fail(`no irq index ${index}`);
    if (data !== IrqSetFlag.DATA_EVENTFD && fds.length > 0) return fail('descriptors without DATA_EVENTFD');
    // DATA_NONE|TRIGGER with count 0 disables the whole index (vfio_pci_set_irqs_ioctl).
    if (data === IrqSetFlag.DATA_NONE && action === IrqSetFlag.ACTION_TRIGGER && count === 0) {
      this.#disableIndex(st);
      return this.#reply(h);
    }
    if (count === 0 || start >= st.fds.length || count > st.fds.length - start) {
      return fail(`vectors ${start}+${count} outside index ${index} (${st.fds.length})`);
    }
    let bools: Uint8Array | null = null;
    if (data === IrqSetFlag.DATA_BOOL) {
      if (b.length < IRQ_SET.SIZE + count) return fail('SET_IRQS DATA_BOOL without its bytes');
      bools = b.subarray(IRQ_SET.SIZE, IRQ_SET.SIZE + count);
    } else if (b.length !== IRQ_SET.SIZE) {
      return fail('SET_IRQS carries unexpected data');
    }
    const chosen = (i: number) => bools === null || (bools[i] ?? 0) !== 0;
    if (data === IrqSetFlag.DATA_EVENTFD) {
      // Eventfds only for TRIGGER (the unmask-by-eventfd resampler is a KVM path QEMU falls back from).
      if (action !== IrqSetFlag.ACTION_TRIGGER) return fail('eventfds are only taken for ACTION_TRIGGER');
      if (fds.length !== 0 && fds.length !== count)
        return fail(`${fds.length} descriptors for ${count} vectors`);
      if (!fds.every(isEventfd)) return fail('a descriptor is not an eventfd');
      // Replace, never append: each vector keeps at most one eventfd; no descriptors de-assigns.
      for (let i = 0; i < count; i++) {
        const old = st.fds[start + i];
        if (old !== null && old !== undefined) sys.close(old);
        st.fds[start + i] = fds.length > 0 ? (fds[i] as number) : null;
      }
      fds.splice(0);
      if (index === Irq.INTX) {
        st.masked[0] = false;
        if (this.#intxLevel) this.#fireIntx();
      }
      return this.#reply(h);
    }
    for (let i = 0; i < count; i++) {
      if (!chosen(i)) continue;
      const n = start + i;
      if (action === IrqSetFlag.ACTION_MASK) st.masked[n] = true;
      else if (action === IrqSetFlag.ACTION_UNMASK) {
        st.masked[n] = false;
        if (index === Irq.INTX) {
          if (this.#intxLevel) this.#fireIntx();
        } else if (st.pending[n]) {
          st.pending[n] = false;
          this.#write(st, n);
        }
      } else if (index === Irq.INTX) this.#fireIntx();
      else this.#fire(st, n);
    }
    this.#reply(h);
  }

  // ---------------------------------------------------------------- interrupts

  #write(st: IrqIndexState, n: number): void {
    const fd = st.fds[n];
    if (fd === null || fd === undefined || !sys.eventfdSignal(fd)) {
      this.#stats.irqsDropped++;
      return;
    }
    this.#stats.irqsSignalled++;
  }

  #fire(st: IrqIndexState, n: number): void {
    if (st.masked[n]) st.pending[n] = true;
    else this.#write(st, n);
  }

  #signalMsix(n: number): void {
    const st = this.#irqs[Irq.MSIX] as IrqIndexState;
    if (!Number.isInteger(n) || n < 0 || n >= st.fds.length) {
      this.#stats.irqsDropped++;
      return;
    }
    this.#fire(st, n);
  }

  /** Level-triggered INTx as vfio-pci: signal on assertion, then stay masked until the client unmasks. */
  #fireIntx(): void {
    const st = this.#irqs[Irq.INTX] as IrqIndexState;
    if (st.masked[0]) return;
    st.masked[0] = true;
    this.#write(st, 0);
  }

  #setIntx(asserted: boolean): void {
    this.#intxLevel = asserted;
    if (asserted) this.#fireIntx();
  }

  // ---------------------------------------------------------------- region access

  /** Validates a region access; returns an error text or null. */
  #checkAccess(region: number, offset: bigint, count: number): string | null {
    const size = region < NUM_REGIONS ? this.#regionSize(region) : 0;
    if (size === 0) return `no region ${region}`;
    if (count === 0) return 'zero-length access';
    if (count > this.#caps.maxDataXferSize) return `access of ${count} bytes exceeds max_data_xfer_size`;
    if (offset + BigInt(count) > BigInt(size))
      return `access ${offset}+${count} past the end of region ${region} (${size})`;
    return null;
  }

  /** Splits [offset, offset+count) into naturally aligned pieces of at most `max` bytes. */
  static pieces(offset: number, count: number, max: 4 | 8): [number, 1 | 2 | 4 | 8][] {
    const out: [number, 1 | 2 | 4 | 8][] = [];
    let o = offset;
    const end = offset + count;
    while (o < end) {
      let s: 1 | 2 | 4 | 8 = max;
      while (s > 1 && (o % s !== 0 || o + s > end)) s = (s >> 1) as 1 | 2 | 4;
      out.push([o, s]);
      o += s;
    }
    return out;
  }

  #readRegion(region: number, offset: number, out: Uint8Array): void {
    const v = view(out);
    const isConfig = region === Region.CONFIG;
    for (const [o, s] of VfioUserServer.pieces(offset, out.length, isConfig ? 4 : 8)) {
      const at = o - offset;
      let value: number | bigint;
      if (isConfig) value = this.#device.configRead(o, s as 1 | 2 | 4);
      else value = this.#device.barRead(region, o, s);
      // A number is taken modulo 2^64 (negative values as two's complement); NaN or Infinity reads as 0.
      const big = BigInt.asUintN(
        64,
        typeof value === 'bigint' ? value : BigInt(Number.isFinite(value) ? Math.trunc(value) : 0),
      );
      if (s === 8) v.setBigUint64(at, big, true);
      else if (s === 4) v.setUint32(at, Number(big & 0xffffffffn), true);
      else if (s === 2) v.setUint16(at, Number(big & 0xffffn), true);
      else v.setUint8(at, Number(big & 0xffn));
    }
  }

  #writeRegion(region: number, offset: number, data: Uint8Array): void {
    const v = view(data);
    const isConfig = region === Region.CONFIG;
    for (const [o, s] of VfioUserServer.pieces(offset, data.length, isConfig ? 4 : 8)) {
      const at = o - offset;
      const value =
        s === 8
          ? v.getBigUint64(at, true)
          : s === 4
            ? v.getUint32(at, true)
            : s === 2
              ? v.getUint16(at, true)
              : v.getUint8(at);
      if (isConfig) this.#device.configWrite(o, s as 1 | 2 | 4, value as number);
      else this.#device.barWrite(region, o, s, value);
    }
  }

  #regionRead(h: ReceivedMessage['header'], b: Uint8Array) {
    if (b.length !== REGION_RW.SIZE) return this.#error(h, Errno.EINVAL, 'malformed REGION_READ');
    const v = view(b);
    const offset = v.getBigUint64(REGION_RW.offset, true);
    const region = v.getUint32(REGION_RW.region, true);
    const count = v.getUint32(REGION_RW.count, true);
    const bad = this.#checkAccess(region, offset, count);
    if (bad !== null) return this.#error(h, Errno.EINVAL, bad);
    this.#stats.regionReads[region] = (this.#stats.regionReads[region] ?? 0) + 1;
    const out = new Uint8Array(REGION_RW.SIZE + count);
    out.set(b.subarray(0, REGION_RW.SIZE));
    let ok = true;
    try {
      this.#readRegion(region, Number(offset), out.subarray(REGION_RW.data));
    } catch (e) {
      ok = false;
      this.#log(`device threw on read: ${(e as Error).stack ?? e}`);
    }
    if (!ok) return this.#error(h, Errno.EIO, 'device read failed');
    this.#reply(h, out);
  }

  #regionWrite(h: ReceivedMessage['header'], b: Uint8Array) {
    if (b.length < REGION_RW.SIZE) return this.#error(h, Errno.EINVAL, 'malformed REGION_WRITE');
    const v = view(b);
    const offset = v.getBigUint64(REGION_RW.offset, true);
    const region = v.getUint32(REGION_RW.region, true);
    const count = v.getUint32(REGION_RW.count, true);
    if (b.length !== REGION_RW.SIZE + count)
      return this.#error(h, Errno.EINVAL, 'REGION_WRITE count does not match its data');
    const bad = this.#checkAccess(region, offset, count);
    if (bad !== null) return this.#error(h, Errno.EINVAL, bad);
    this.#stats.regionWrites[region] = (this.#stats.regionWrites[region] ?? 0) + 1;
    if (!this.#safe(() => this.#writeRegion(region, Number(offset), b.subarray(REGION_RW.data)))) {
      return this.#error(h, Errno.EIO, 'device write failed');
    }
    this.#reply(h, b.subarray(0, REGION_RW.SIZE));
  }

  /** REGION_WRITE_MULTI: posted writes of at most 8 bytes each, batched by QEMU; applied in order. */
  #writeMulti(h: ReceivedMessage['header'], b: Uint8Array) {
    if (b.length < WRITE_MULTI.entries) return this.#error(h, Errno.EINVAL, 'malformed REGION_WRITE_MULTI');
    const v = view(b);
    const n = v.getBigUint64(WRITE_MULTI.count, true);
    if (
      n > BigInt(WRITE_MULTI.maxEntries) ||
      b.length < WRITE_MULTI.entries + Number(n) * WRITE_MULTI.entrySize
    ) {
      return this.#error(h, Errno.EINVAL, 'REGION_WRITE_MULTI count does not match its size');
    }
    const entries: { region: number; offset: bigint; data: Uint8Array }[] = [];
    for (let i = 0; i < Number(n); i++) {
      const at = WRITE_MULTI.entries + i * WRITE_MULTI.entrySize;
      const offset = v.getBigUint64(at + WRITE_MULTI.entryOffset, true);
      const region = v.getUint32(at + WRITE_MULTI.entryRegion, true);
      const count = v.getUint32(at + WRITE_MULTI.entryCount, true);
      if (count > WRITE_MULTI.maxData)
        return this.#error(h, Errno.EINVAL, `REGION_WRITE_MULTI entry ${i} count ${count}`);
      const bad = this.#checkAccess(region, offset, count);
      if (bad !== null) return this.#error(h, Errno.EINVAL, `REGION_WRITE_MULTI entry ${i}: ${bad}`);
      entries.push({
        region,
        offset,
        data: b.subarray(at + WRITE_MULTI.entryData, at + WRITE_MULTI.entryData + count),
      });
    }
    for (const e of entries) {
      this.#stats.regionWrites[e.region] = (this.#stats.regionWrites[e.region] ?? 0) + 1;
      if (!this.#safe(() => this.#writeRegion(e.region, Number(e.offset), e.data))) {
        return this.#error(h, Errno.EIO, 'device write failed');
      }
    }
    this.#reply(h);
  }
}
