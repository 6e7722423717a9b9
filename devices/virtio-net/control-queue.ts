/**
 * The virtio-net control virtqueue (VIRTIO 1.3 §5.1.6.5): every class and command QEMU 7.2 implements
 * (RX, MAC, VLAN, ANNOUNCE, MQ incl. RSS_CONFIG / HASH_CONFIG, GUEST_OFFLOADS), acked VIRTIO_NET_OK or
 * VIRTIO_NET_ERR the way hw/net/virtio-net.c `virtio_net_handle_ctrl_iov` does. A command without room
 * for the class/command header or the ack byte is a broken driver: DEVICE_NEEDS_RESET, as in QEMU.
 */

import type { NetBackend } from '../../lib/net/backend.js';
import { gatherReadable, scatterWritable } from '../../virtio/queue/descriptor-chain.js';
import { DescriptorChain, VirtqueueError } from '../../virtio/queue/virtqueue.js';
import type { VirtioDeviceContext } from '../../virtio/virtio-device.js';
import { type Coalescer, decodeCoal, encodeCoal } from './coalesce.js';
import { type StatsSource, statsGet, statsQuery } from './device-stats.js';
import { GUEST_OFFLOAD_MASK, guestOffloadsFromCtrl, has, NetF } from './features.js';
import { CTRL_HASH_TUNNEL, CTRL_HASH_TUNNEL_SET } from './hash-tunnel.js';
import type { RssState } from './rss.js';
import { CTRL_RSS_CTX, CtrlRssCtx, type RssContexts } from './rss-context.js';
import { MAC_TABLE_ENTRIES, MAX_VLAN, type RxFilter, RxMode } from './rx-filter.js';
import type { NetDeviceStats, QueueStats } from './stats.js';

export const CtrlClass = {
  RX: 0,
  MAC: 1,
  VLAN: 2,
  ANNOUNCE: 3,
  MQ: 4,
  GUEST_OFFLOADS: 5,
  NOTF_COAL: 6,
  /** VIRTIO 1.4 inner header hash. */
  HASH_TUNNEL: CTRL_HASH_TUNNEL,
  STATS: 8,
  /** VIRTIO 1.4 RSS contexts (VIRTNET_RSS_CTX_CTRL). */
  RSS_CTX: CTRL_RSS_CTX,
} as const;
export const CtrlNotfCoal = { TX_SET: 0, RX_SET: 1, VQ_SET: 2, VQ_GET: 3 } as const;
export const CtrlStats = { QUERY: 0, GET: 1 } as const;
export const CtrlMac = { TABLE_SET: 0, ADDR_SET: 1 } as const;
export const CtrlVlan = { ADD: 0, DEL: 1 } as const;
export const CtrlMq = { VQ_PAIRS_SET: 0, RSS_CONFIG: 1, HASH_CONFIG: 2 } as const;
export const VIRTIO_NET_OK = 0;
export const VIRTIO_NET_ERR = 1;
/** VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN / MAX (§5.1.6.5.5). */
export const VQ_PAIRS_MIN = 1;
export const VQ_PAIRS_MAX = 0x8000;

/** Commands handled per kick before yielding to the event loop (the queue holds 64). */
const CTRL_BURST = 64;

/** Commands larger than this are answered ERR without being read (a MAC table of 64 entries is 780 bytes). */
const MAX_COMMAND = 1 << 16;
/** Room for a command-specific-result (STATS_GET of 4096 entries is far below it); more is left unwritten. */
const MAX_RESULT = 1 << 16;

/** What the control queue needs of the device (VirtioNet implements it). */
export interface ControlQueueHost extends StatsSource {
  /** The running device's context; null while the driver has not activated it. */
  readonly context: VirtioDeviceContext | null;
  /** Negotiated features. */
  readonly negotiated: bigint;
  readonly maxQueuePairs: number;
  readonly backend: Pick<NetBackend, 'capabilities'>;
  readonly deviceStats: Pick<NetDeviceStats, 'ctrlCommands' | 'ctrlErrors'>;
  readonly queueStats: readonly QueueStats[];
  /** Queue pairs on workers (docs/workers.md): copies their published counters into `queueStats`. */
  readonly dataPlane?: { refreshStats(): void } | null;
  /** Notification coalescing per data virtqueue, by index. */
  readonly coalescers: readonly Coalescer[];
  /** The last RX_SET / TX_SET [max_packets, max_usecs] (a reset queue returns to them). */
  coalesceRx: [number, number];
  coalesceTx: [number, number];
  readonly rxFilter: RxFilter;
  readonly rss: RssState;
  readonly rssContexts: RssContexts;
  /** The hash configuration changed outside an MQ command (HASH_TUNNEL_SET). */
  rssChanged(): void;
  controlQueueIndex(): number;
  /** Runs deferred work with the guest-error handling of a kick. */
  runGuarded(work: () => void): void;
  /** Clears VIRTIO_NET_S_ANNOUNCE; false when it was not set. */
  clearAnnounce(): boolean;
  setMac(mac: Uint8Array): void;
  /** The function's current MAC. */
  readonly mac: Uint8Array;
  /**
   * False for an SR-IOV VF without `trust` (docs/sriov.md): it may not change its MAC nor turn on
   * promiscuous or all-multicast receive, as a hardware NIC refuses an untrusted VF.
   */
  readonly trusted: boolean;
  /** VQ_PAIRS_SET / RSS max_tx_vq: the number of pairs in use. */
  setQueuePairs(pairs: number): void;
  setGuestOffloads(offloads: bigint): void;
}

export class ControlQueue {
  private readonly chain = new DescriptorChain(8);
  private readonly buffer = new Uint8Array(MAX_COMMAND);
  private readonly ack = new Uint8Array(1);
  /** A command's command-specific-result (STATS, VQ_GET): `resultLength` bytes, room `resultRoom`. */
  private result: Uint8Array | null = null;
  private resultLength = -1;
  private resultRoom = MAX_RESULT;
  private scheduled = false;

  constructor(private readonly net: ControlQueueHost) {}

  /** Handles every available command (called on a kick of the control queue). */
  process(): void {
    const ctx = this.net.context;
    const index = this.net.controlQueueIndex();
    const q = ctx?.queue(index);
    if (!ctx || !q) return;
    let handled = 0;
    // Bounded per call so a guest refilling the queue as fast as we drain it cannot hold the event loop;
    // the rest is picked up on the next turn.
    while (handled < CTRL_BURST && q.pop(this.chain)) {
      const chain = this.chain;
      if (chain.readableLength < 2 || chain.writableLength < 1) {
        throw new VirtqueueError('length-overflow', 'virtio-net ctrl missing headers');
      }
      let status = VIRTIO_NET_ERR;
      this.resultRoom = Math.min(chain.writableLength - 1, MAX_RESULT);
      this.resultLength = -1;
      if (chain.readableLength <= MAX_COMMAND) {
        const cmd = this.buffer.subarray(0, chain.readableLength);
        gatherReadable(ctx.memory, chain, cmd);
        status = this.execute(cmd[0]!, cmd[1]!, cmd.subarray(2));
      }
      this.net.deviceStats.ctrlCommands++;
      if (status !== VIRTIO_NET_OK) this.net.deviceStats.ctrlErrors++;
      this.ack[0] = status;
      scatterWritable(ctx.memory, chain, this.ack);
      let used = 1;
      // struct virtio_net_ctrl: the ack, then command-specific-result (STATS, VQ_GET) on OK.
      if (status === VIRTIO_NET_OK && this.resultLength > 0) {
        used += scatterWritable(ctx.memory, chain, this.result!.subarray(0, this.resultLength), 1);
      }
      q.push(chain, used);
      handled++;
    }
    if (handled > 0 && q.needsNotification()) ctx.notifyQueue(index);
    if (handled === CTRL_BURST && !this.scheduled) {
      this.scheduled = true;
      setImmediate(() => {
        this.scheduled = false;
        this.net.runGuarded(() => this.process());
      });
    }
  }

  /** One command: class, command, command-specific data. Returns the ack. Public for unit tests. */
  execute(cls: number, cmd: number, data: Uint8Array): number {
    switch (cls) {
      case CtrlClass.RX:
        return this.rxMode(cmd, data);
      case CtrlClass.MAC:
        return this.macCommand(cmd, data);
      case CtrlClass.VLAN:
        return this.vlan(cmd, data);
      case CtrlClass.ANNOUNCE:
        // QEMU acks OK only when the ANNOUNCE bit is set (virtio_net_handle_announce).
        return cmd === 0 && this.net.clearAnnounce() ? VIRTIO_NET_OK : VIRTIO_NET_ERR;
      case CtrlClass.MQ:
        return this.mq(cmd, data);
      case CtrlClass.GUEST_OFFLOADS:
        return this.guestOffloads(cmd, data);
      case CtrlClass.NOTF_COAL:
        return this.notfCoal(cmd, data);
      case CtrlClass.STATS:
        return this.stats(cmd, data);
      case CtrlClass.HASH_TUNNEL:
        return this.hashTunnel(cmd, data);
      case CtrlClass.RSS_CTX:
        return this.rssContext(cmd, data);
      default:
        return VIRTIO_NET_ERR;
    }
  }

  /**
   * The command-specific-result of the last command executed (STATS_QUERY, STATS_GET, VQ_GET), or null.
   * Public for unit tests.
   */
  lastResult(): Uint8Array | null {
    return this.resultLength >= 0 ? this.result!.subarray(0, this.resultLength) : null;
  }

  /** Room for a result in the command `execute` runs next (the queue sets it per chain). For unit tests. */
  setResultRoom(room: number): void {
    this.resultRoom = Math.min(room, MAX_RESULT);
  }

  private resultBuffer(): Uint8Array {
    this.result ??= new Uint8Array(MAX_RESULT);
    return this.result.subarray(0, this.resultRoom);
  }

  /**
   * VIRTIO 1.3 "Notifications Coalescing": TX_SET / RX_SET (`struct virtio_net_ctrl_coal`, le32
   * max_packets, le32 max_usecs) set every transmit / receive virtqueue; VQ_SET (le16 vq_index, le16
   * reserved, the coal struct) and VQ_GET (vq_index in, the coal struct as result) one enabled data
   * virtqueue.
   */
  private notfCoal(cmd: number, data: Uint8Array): number {
    const net = this.net;
    const f = net.negotiated;
    const coal = net.coalescers;
    if (cmd === CtrlNotfCoal.TX_SET || cmd === CtrlNotfCoal.RX_SET) {
      if (!has(f, NetF.NOTF_COAL) || data.length < 8) return VIRTIO_NET_ERR;
      const p = decodeCoal(data, 0);
      const odd = cmd === CtrlNotfCoal.TX_SET ? 1 : 0;
      if (odd) net.coalesceTx = p;
      else net.coalesceRx = p;
      for (let i = odd; i < coal.length; i += 2) coal[i]!.set(p[0], p[1]);
      return VIRTIO_NET_OK;
    }
    if (cmd !== CtrlNotfCoal.VQ_SET && cmd !== CtrlNotfCoal.VQ_GET) return VIRTIO_NET_ERR;
    // VQ_GET needs only vq_index: Linux's probe (virtnet_get_coal_init_value) sends the le16 alone.
    if (!has(f, NetF.VQ_NOTF_COAL) || data.length < 2) return VIRTIO_NET_ERR;
    const vq = data[0]! | (data[1]! << 8);
    // "an enabled transmit or receive virtqueue": not the control queue, nor one the driver left off.
    if (vq >= net.dataQueues || vq >= coal.length || !net.context?.queue(vq)) return VIRTIO_NET_ERR;
    const c = coal[vq]!;
    if (cmd === CtrlNotfCoal.VQ_SET) {
      if (data.length < 12) return VIRTIO_NET_ERR;
      const [packets, usecs] = decodeCoal(data, 4);
      c.set(packets, usecs);
      return VIRTIO_NET_OK;
    }
    const out = this.resultBuffer();
    if (out.length < 8) return VIRTIO_NET_ERR;
    encodeCoal(out, 0, c.maxPackets, c.maxUsecs);
    this.resultLength = 8;
    return VIRTIO_NET_OK;
  }

  /** VIRTIO 1.3 "Device Statistics": STATS_QUERY and STATS_GET (device-stats.ts). */
  private stats(cmd: number, data: Uint8Array): number {
    const out = this.resultBuffer();
    let n = -1;
    if (cmd === CtrlStats.QUERY) n = statsQuery(this.net.negotiated, out);
    else if (cmd === CtrlStats.GET) {
      // Pairs on workers: their counters as last published, not as they were when they started.
      this.net.dataPlane?.refreshStats();
      n = statsGet(this.net, data, out);
    }
    if (n < 0) return VIRTIO_NET_ERR;
    this.resultLength = n;
    return VIRTIO_NET_OK;
  }

  /** VIRTIO 1.4 "Inner Header Hash": HASH_TUNNEL_SET, the only command of its class. */
  private hashTunnel(cmd: number, data: Uint8Array): number {
    const net = this.net;
    if (!has(net.negotiated, NetF.HASH_TUNNEL) || cmd !== CTRL_HASH_TUNNEL_SET) return VIRTIO_NET_ERR;
    if (!net.rss.tunnel.set(data)) return VIRTIO_NET_ERR;
    net.rssChanged();
    return VIRTIO_NET_OK;
  }

  /** VIRTIO 1.4 "RSS Context": CAP_GET (no data; result le16 max_rss_contexts), ADD, MOD, DEL. */
  private rssContext(cmd: number, data: Uint8Array): number {
    const ctxs = this.net.rssContexts;
    if (!has(this.net.negotiated, NetF.RSS_CONTEXT)) return VIRTIO_NET_ERR;
    let ok = false;
    if (cmd === CtrlRssCtx.CAP_GET) {
      const n = data.length === 0 ? ctxs.capGet(this.resultBuffer()) : -1;
      if (n > 0) this.resultLength = n;
      ok = n > 0;
    } else if (cmd === CtrlRssCtx.ADD || cmd === CtrlRssCtx.MOD) {
      ok = ctxs.addOrModify(data, cmd === CtrlRssCtx.ADD);
    } else if (cmd === CtrlRssCtx.DEL) {
      ok = ctxs.del(data);
    }
    return ok ? VIRTIO_NET_OK : VIRTIO_NET_ERR;
  }

  /** §5.1.6.5.1: one byte, on or off. QEMU does not check CTRL_RX / CTRL_RX_EXTRA negotiation. */
  private rxMode(cmd: number, data: Uint8Array): number {
    if (data.length < 1) return VIRTIO_NET_ERR;
    const on = data[0] !== 0;
    if (on && !this.net.trusted && (cmd === RxMode.PROMISC || cmd === RxMode.ALLMULTI)) return VIRTIO_NET_ERR;
    return this.net.rxFilter.setMode(cmd, on) ? VIRTIO_NET_OK : VIRTIO_NET_ERR;
  }

  private macCommand(cmd: number, data: Uint8Array): number {
    if (cmd === CtrlMac.ADDR_SET) {
      if (data.length !== 6) return VIRTIO_NET_ERR;
      if (!this.net.trusted && !data.every((b, i) => b === this.net.mac[i])) return VIRTIO_NET_ERR;
      this.net.setMac(data);
      return VIRTIO_NET_OK;
    }
    if (cmd !== CtrlMac.TABLE_SET) return VIRTIO_NET_ERR;
    // §5.1.6.5.2: le32 entries + unicast MACs, then le32 entries + multicast MACs, nothing after.
    // The table is built aside and committed only if the whole command is valid (as QEMU does).
    const f = this.net.rxFilter;
    if (data.length < 4) return VIRTIO_NET_ERR;
    const uni = le32(data, 0);
    let off = 4;
    if (uni * 6 > data.length - off) return VIRTIO_NET_ERR;
    const macs = new Uint8Array(MAC_TABLE_ENTRIES * 6);
    let inUse = 0;
    let uniOverflow = false;
    if (uni <= MAC_TABLE_ENTRIES) {
      macs.set(data.subarray(off, off + uni * 6), 0);
      inUse = uni;
    } else uniOverflow = true;
    off += uni * 6;
    const firstMulti = inUse;
    if (data.length - off < 4) return VIRTIO_NET_ERR;
    const multi = le32(data, off);
    off += 4;
    if (multi * 6 !== data.length - off) return VIRTIO_NET_ERR;
    let multiOverflow = false;
    if (multi <= MAC_TABLE_ENTRIES - inUse) {
      macs.set(data.subarray(off, off + multi * 6), inUse * 6);
      inUse += multi;
    } else multiOverflow = true;
    f.macs.set(macs);
    f.inUse = inUse;
    f.firstMulti = firstMulti;
    f.uniOverflow = uniOverflow;
    f.multiOverflow = multiOverflow;
    return VIRTIO_NET_OK;
  }

  private vlan(cmd: number, data: Uint8Array): number {
    if (data.length < 2) return VIRTIO_NET_ERR;
    const vid = data[0]! | (data[1]! << 8);
    if (vid >= MAX_VLAN) return VIRTIO_NET_ERR;
    if (cmd === CtrlVlan.ADD) this.net.rxFilter.vlanAdd(vid);
    else if (cmd === CtrlVlan.DEL) this.net.rxFilter.vlanDel(vid);
    else return VIRTIO_NET_ERR;
    return VIRTIO_NET_OK;
  }

  private mq(cmd: number, data: Uint8Array): number {
    const net = this.net;
    const f = net.negotiated;
    switch (cmd) {
      case CtrlMq.VQ_PAIRS_SET: {
        if (!has(f, NetF.MQ) || data.length < 2) return VIRTIO_NET_ERR;
        const pairs = data[0]! | (data[1]! << 8);
        if (pairs < VQ_PAIRS_MIN || pairs > VQ_PAIRS_MAX || pairs > net.maxQueuePairs) return VIRTIO_NET_ERR;
        // VIRTIO 1.4: the driver MUST NOT send it while an RSS context exists; refused, nothing changes.
        if (net.rssContexts.size > 0) return VIRTIO_NET_ERR;
        // "The last command wins" between automatic steering and RSS (§5.1.6.5.5).
        if (net.rss.redirect) net.rss.reset();
        net.setQueuePairs(pairs);
        return VIRTIO_NET_OK;
      }
      case CtrlMq.RSS_CONFIG: {
        if (!has(f, NetF.RSS)) return VIRTIO_NET_ERR;
        const r = net.rss.rssConfig(data);
        if (!r) return VIRTIO_NET_ERR;
        net.setQueuePairs(r.queuePairs);
        return VIRTIO_NET_OK;
      }
      case CtrlMq.HASH_CONFIG: {
        // §5.1.6.5.6.4: required whenever HASH_REPORT is negotiated, also with a single queue pair.
        if (!has(f, NetF.HASH_REPORT) || has(f, NetF.RSS)) return VIRTIO_NET_ERR;
        return net.rss.hashConfig(data) ? VIRTIO_NET_OK : VIRTIO_NET_ERR;
      }
      default:
        return VIRTIO_NET_ERR;
    }
  }

  /** §5.1.6.5.6.1: le64 bitmask in feature-bit layout; only negotiated guest offloads may be set. */
  private guestOffloads(cmd: number, data: Uint8Array): number {
    const net = this.net;
    if (!has(net.negotiated, NetF.CTRL_GUEST_OFFLOADS) || data.length < 8 || cmd !== 0) return VIRTIO_NET_ERR;
    if (!net.backend.capabilities.vnetHeader) return VIRTIO_NET_ERR;
    const offloads = BigInt(le32(data, 0)) | (BigInt(le32(data, 4)) << 32n);
    // QEMU strips RSC_EXT (it selects RSC, not an offload) before checking.
    const requested = guestOffloadsFromCtrl(offloads) & ~(1n << BigInt(NetF.RSC_EXT));
    const supported = net.negotiated & GUEST_OFFLOAD_MASK;
    if ((requested & ~supported) !== 0n) return VIRTIO_NET_ERR;
    net.setGuestOffloads(requested);
    return VIRTIO_NET_OK;
  }
}

function le32(b: Uint8Array, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
}
