/**
 * A virtio-net driver for the synthetic guest (`virtio-net-ts/testing`): what Linux's virtio_net does
 * (drivers/net/virtio_net.c virtnet_probe / virtnet_open / start_xmit / receive_buf), driving a device
 * only through its config-space and BAR accessors and guest memory, on top of `VirtioPciDriver`.
 * VMM authors use it to test their wiring; our own tests use it to drive the device as a guest would.
 *
 * It is synchronous: the device model processes a queue when it is kicked, so after `send` or `control`
 * the answer is already in the used ring.
 */
import type { GuestMemory } from '../../lib/memory/guest-memory.js';
import type { NetOffload } from '../../lib/net/backend.js';
import { NetHdr, readVnetHeader, writeVnetHeader } from '../../lib/net/vnet-header.js';
import { BumpAllocator } from '../../virtio/testing/bump-allocator.js';
import type { DriverQueue, PciTarget } from '../../virtio/testing/pci-driver.js';
import { InterruptCollector, VirtioPciDriver } from '../../virtio/testing/pci-driver.js';
import { encodeCoal } from '../virtio-net/coalesce.js';
import { NetConfig } from '../virtio-net/config.js';
import {
  CtrlClass,
  CtrlMac,
  CtrlMq,
  CtrlNotfCoal,
  CtrlStats,
  CtrlVlan,
  VIRTIO_NET_OK,
} from '../virtio-net/control-queue.js';
import { encodeStatsRequest, parseStatsReplies, type StatsReply } from '../virtio-net/device-stats.js';
import { NetF, netHeaderSize } from '../virtio-net/features.js';

export type { StatsReply } from '../virtio-net/device-stats.js';

import { encodeHashTunnel } from '../virtio-net/hash-tunnel.js';
import { encodeHashConfig, encodeRssConfig, type RssConfigFields } from '../virtio-net/rss.js';
import { CtrlRssCtx, encodeRssContext, encodeRssContextDel } from '../virtio-net/rss-context.js';

import { LINUX_6_1_FEATURES } from './linux-features.js';

export { LINUX_6_1_FEATURES, LINUX_7_2_FEATURES } from './linux-features.js';

/** A frame the guest received, reassembled from its buffers. */
export interface ReceivedFrame {
  frame: Uint8Array;
  /** The header's offload fields. */
  offload: NetOffload;
  numBuffers: number;
  /** With VIRTIO_NET_F_HASH_REPORT (20- or 24-byte header), else 0. */
  hashValue: number;
  hashReport: number;
}

export interface NetDriverOptions {
  /** Features the driver accepts (default: what Linux 6.1 accepts). */
  wanted?: bigint;
  /** Queue pairs to use when MQ/RSS is negotiated (default: all the device offers). */
  pairs?: number;
  /** Rx buffer size: mergeable buffers are this big; without MRG_RXBUF the default is 65562 (big packets). */
  rxBufferSize?: number;
  /** Rx buffers posted per queue at open (default: the queue size). */
  rxBuffers?: number;
  /** Post each rx buffer as two descriptors, the header's bytes first (contiguous in memory). */
  rxSplitHeader?: boolean;
  /** Post rx buffers through indirect tables (VIRTIO_F_INDIRECT_DESC). */
  rxIndirect?: boolean;
  /** Guest RAM the driver may use for rings and buffers. */
  allocator?: BumpAllocator;
  interrupts?: InterruptCollector;
}

/** A command's ack and the command-specific-result buffer as the device left it. */
export interface ControlReply {
  ack: number;
  result: Uint8Array;
  /** The used length the device reported (ack + result bytes written), -1 without an answer. */
  usedLength: number;
}

interface PostedRx {
  addr: number;
  len: number;
}

export class VirtioNetDriver {
  readonly pci: VirtioPciDriver;
  features = 0n;
  hdrSize = 12;
  maxPairs = 1;
  pairs = 1;
  private readonly rx = new Map<number, Map<number, PostedRx>>();
  private readonly txSlots = new Map<number, { free: number[]; addrs: number[]; slot: number }>();
  private readonly txInFlight = new Map<number, Map<number, number>>();
  private ctrlBuf = 0;
  private readonly options: NetDriverOptions;

  constructor(
    readonly device: PciTarget,
    readonly memory: GuestMemory,
    options: NetDriverOptions = {},
  ) {
    this.options = options;
    this.pci = new VirtioPciDriver(device, memory, {
      allocator: options.allocator ?? new BumpAllocator(0x100000, 0x100000 + 0x4000000),
      interrupts: options.interrupts ?? new InterruptCollector(),
    });
  }

  get interrupts(): InterruptCollector {
    return this.pci.interrupts;
  }

  has(bit: number): boolean {
    return ((this.features >> BigInt(bit)) & 1n) === 1n;
  }

  rxIndex(pair: number): number {
    return 2 * pair;
  }
  txIndex(pair: number): number {
    return 2 * pair + 1;
  }
  get ctrlIndex(): number {
    return this.has(NetF.MQ) || this.has(NetF.RSS) ? 2 * this.maxPairs : 2;
  }

  /**
   * virtnet_probe + virtnet_open: discover, negotiate, set up every queue, DRIVER_OK, post rx buffers, and
   * (as Linux's set_rx_mode does) turn promiscuous mode off and program an empty MAC table; with MQ,
   * VQ_PAIRS_SET to `pairs`. Returns the negotiated features.
   */
  open(): bigint {
    const pci = this.pci;
    pci.probe();
    pci.assignBars();
    if (pci.msix) pci.enableMsix();
    this.features = pci.negotiate(this.options.wanted ?? LINUX_6_1_FEATURES);
    this.hdrSize = netHeaderSize(this.features);
    const mq = this.has(NetF.MQ) || this.has(NetF.RSS);
    this.maxPairs = mq ? this.readConfig(NetConfig.MAX_VIRTQUEUE_PAIRS, 2) : 1;
    this.pairs = Math.min(this.options.pairs ?? this.maxPairs, this.maxPairs);
    if (pci.msix) pci.setConfigVector(0);
    for (let p = 0; p < this.maxPairs; p++) {
      pci.setupQueue(this.rxIndex(p));
      pci.setupQueue(this.txIndex(p));
    }
    if (this.has(NetF.CTRL_VQ)) pci.setupQueue(this.ctrlIndex);
    pci.driverOk();
    for (let p = 0; p < this.maxPairs; p++) this.postRx(p, this.options.rxBuffers);
    if (this.has(NetF.CTRL_RX)) {
      this.rxMode(0, false);
      this.rxMode(1, false);
    }
    if (mq && this.has(NetF.MQ) && this.pairs > 1) this.setQueuePairs(this.pairs);
    return this.features;
  }

  queue(index: number): DriverQueue {
    const q = this.pci.queues.get(index);
    if (!q) throw new Error(`virtio-net driver: queue ${index} is not set up`);
    return q;
  }

  /** Reads the device config (§5.1.4). */
  readConfig(offset: number, size: 1 | 2 | 4): number {
    return this.pci.readDeviceConfig(offset, size);
  }

  mac(): string {
    const b: string[] = [];
    for (let i = 0; i < 6; i++) b.push(this.readConfig(i, 1).toString(16).padStart(2, '0'));
    return b.join(':');
  }

  linkUp(): boolean {
    return (this.readConfig(NetConfig.STATUS, 2) & 1) === 1;
  }

  // ---------------------------------------------------------------- rx

  /** Posts `count` (default: as many as fit) rx buffers on pair `pair` and kicks if the device wants it. */
  postRx(pair: number, count?: number): number {
    const q = this.queue(this.rxIndex(pair));
    const size = this.options.rxBufferSize ?? (this.has(NetF.MRG_RXBUF) ? 1536 + this.hdrSize : 65562);
    let posted = this.rx.get(pair);
    if (!posted) {
      posted = new Map();
      this.rx.set(pair, posted);
    }
    const per = this.options.rxSplitHeader && !this.options.rxIndirect ? 2 : 1;
    const free = Math.floor(q.numFree / per);
    const n = Math.min(count ?? free, free);
    for (let i = 0; i < n; i++) {
      const addr = this.pci.allocator.alloc(size, 64);
      const id = this.addRx(q, { addr, len: size });
      posted.set(id, { addr, len: size });
    }
    this.pci.kickIfNeeded(this.rxIndex(pair));
    return n;
  }

  /** Takes every frame the device delivered on `pair`, reposting the buffers (as Linux refills). */
  receive(pair = 0): ReceivedFrame[] {
    const q = this.queue(this.rxIndex(pair));
    const posted = this.rx.get(pair) ?? new Map<number, PostedRx>();
    const out: ReceivedFrame[] = [];
    const recycle: PostedRx[] = [];
    for (;;) {
      const u = q.getUsed();
      if (!u) break;
      const first = posted.get(u.id);
      if (!first) throw new Error(`virtio-net driver: unknown rx id ${u.id}`);
      posted.delete(u.id);
      recycle.push(first);
      const head = this.memory.read(first.addr, u.len);
      const hdr = this.hdrSize;
      const numBuffers = this.has(NetF.MRG_RXBUF)
        ? head[NetHdr.NUM_BUFFERS]! | (head[NetHdr.NUM_BUFFERS + 1]! << 8)
        : 1;
      const parts = [head.subarray(hdr)];
      for (let i = 1; i < numBuffers; i++) {
        const v = q.getUsed();
        if (!v) throw new Error(`virtio-net driver: ${numBuffers - i} of ${numBuffers} buffers missing`);
        const b = posted.get(v.id)!;
        posted.delete(v.id);
        recycle.push(b);
        parts.push(this.memory.read(b.addr, v.len));
      }
      const frame = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
      let o = 0;
      for (const p of parts) {
        frame.set(p, o);
        o += p.length;
      }
      const dv = new DataView(head.buffer, head.byteOffset, head.byteLength);
      out.push({
        frame,
        // A 24-byte header (UDP tunnel GSO) also gives outer_th_offset / inner_nh_offset.
        offload: readVnetHeader(
          head,
          0,
          { flags: 0, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 0, csumOffset: 0 },
          hdr,
        ),
        numBuffers,
        hashValue: this.has(NetF.HASH_REPORT) ? dv.getUint32(NetHdr.HASH_VALUE, true) : 0,
        hashReport: this.has(NetF.HASH_REPORT) ? dv.getUint16(NetHdr.HASH_REPORT, true) : 0,
      });
    }
    // As virtnet_poll's napi completion: ask for an interrupt for the next used entry (EVENT_IDX used_event).
    q.enableInterrupts();
    for (const b of recycle) {
      const id = this.addRx(q, b);
      posted.set(id, b);
    }
    if (recycle.length > 0) this.pci.kickIfNeeded(this.rxIndex(pair));
    return out;
  }

  private addRx(q: DriverQueue, b: PostedRx): number {
    const o = this.options;
    const segs = o.rxSplitHeader
      ? [
          { addr: b.addr, len: this.hdrSize },
          { addr: b.addr + this.hdrSize, len: b.len - this.hdrSize },
        ]
      : [{ addr: b.addr, len: b.len }];
    return q.add([], segs, { indirect: o.rxIndirect ?? false });
  }

  // ---------------------------------------------------------------- tx

  /**
   * Sends one frame on `pair` with an optional offload request: header and frame in one descriptor
   * (Linux with VERSION_1 / ANY_LAYOUT), or in two with `split: true`; through an indirect table with
   * `indirect: true`. Reclaims finished tx buffers first.
   */
  send(
    frame: Uint8Array,
    options: {
      pair?: number;
      offload?: Partial<NetOffload>;
      split?: boolean;
      indirect?: boolean;
      /** Kick after adding it (default true); false queues a burst for one `kickTx`. */
      kick?: boolean;
    } = {},
  ): void {
    const pair = options.pair ?? 0;
    const index = this.txIndex(pair);
    const q = this.queue(index);
    this.reclaimTx(pair);
    const hdr = this.hdrSize;
    const o = {
      flags: 0,
      gsoType: 0,
      hdrLen: 0,
      gsoSize: 0,
      csumStart: 0,
      csumOffset: 0,
      ...options.offload,
    };
    const header = new Uint8Array(hdr);
    writeVnetHeader(header, 0, o, hdr);
    const slots = this.txPool(pair, q.size);
    const total = hdr + frame.length;
    let addr: number;
    const slot = slots.free.pop();
    if (slot !== undefined && total <= slots.slot) addr = slots.addrs[slot]!;
    else {
      if (slot !== undefined) slots.free.push(slot);
      addr = this.pci.allocator.alloc(total, 64);
    }
    this.memory.write(addr, header);
    this.memory.write(addr + hdr, frame);
    const id = options.split
      ? q.add(
          [
            { addr, len: hdr },
            { addr: addr + hdr, len: frame.length },
          ],
          [],
          { indirect: options.indirect ?? false },
        )
      : q.add([{ addr, len: total }], [], { indirect: options.indirect ?? false });
    if (slot !== undefined && total <= slots.slot) this.inflight(pair).set(id, slot);
    if (options.kick !== false) this.pci.kickIfNeeded(index);
  }

  /** Kicks tx pair `pair` (if the device wants a kick): sends a burst queued with `send(f, { kick: false })`. */
  kickTx(pair = 0): void {
    this.pci.kickIfNeeded(this.txIndex(pair));
  }

  /** Completed tx buffers on `pair` (used entries taken back). */
  reclaimTx(pair = 0): number {
    const q = this.queue(this.txIndex(pair));
    const slots = this.txPool(pair, q.size);
    const inflight = this.inflight(pair);
    let n = 0;
    for (let u = q.getUsed(); u; u = q.getUsed()) {
      const s = inflight.get(u.id);
      if (s !== undefined) {
        inflight.delete(u.id);
        slots.free.push(s);
      }
      n++;
    }
    q.enableInterrupts();
    return n;
  }

  private txPool(pair: number, size: number) {
    let p = this.txSlots.get(pair);
    if (!p) {
      const slot = 2048;
      const addrs: number[] = [];
      for (let i = 0; i < size; i++) addrs.push(this.pci.allocator.alloc(slot, 64));
      p = { free: addrs.map((_, i) => size - 1 - i), addrs, slot };
      this.txSlots.set(pair, p);
    }
    return p;
  }

  private inflight(pair: number): Map<number, number> {
    let m = this.txInFlight.get(pair);
    if (!m) {
      m = new Map();
      this.txInFlight.set(pair, m);
    }
    return m;
  }

  // ---------------------------------------------------------------- control queue

  /**
   * Sends one control command (§5.1.6.5) and returns the ack (VIRTIO_NET_OK 0 / ERR 1), or -1 when the
   * device returned no answer (e.g. it entered DEVICE_NEEDS_RESET).
   */
  control(cls: number, cmd: number, data: Uint8Array = new Uint8Array(0)): number {
    const index = this.ctrlIndex;
    const q = this.queue(index);
    if (!this.ctrlBuf) this.ctrlBuf = this.pci.allocator.alloc(4096, 64);
    const cmdLen = 2 + data.length;
    const cmdAddr = cmdLen + 1 <= 4096 ? this.ctrlBuf : this.pci.allocator.alloc(cmdLen + 1, 64);
    this.memory.write(cmdAddr, Uint8Array.of(cls, cmd));
    this.memory.write(cmdAddr + 2, data);
    const ackAddr = cmdAddr + cmdLen;
    this.memory.writeU8(ackAddr, 0xff);
    q.add([{ addr: cmdAddr, len: cmdLen }], [{ addr: ackAddr, len: 1 }]);
    this.pci.kick(index);
    const used = q.getUsed();
    if (!used) return -1;
    return this.memory.readU8(ackAddr);
  }

  /**
   * A control command with a command-specific-result (STATS, NOTF_COAL VQ_GET): the device-writable part
   * is the ack byte, then a `resultLength`-byte buffer (struct virtio_net_ctrl; Linux's
   * virtnet_send_command_reply adds the status before the result too). `ack` is -1 when the device
   * returned no answer.
   */
  controlReply(cls: number, cmd: number, data: Uint8Array, resultLength: number): ControlReply {
    const index = this.ctrlIndex;
    const q = this.queue(index);
    const cmdLen = 2 + data.length;
    const cmdAddr = this.pci.allocator.alloc(cmdLen + 1 + resultLength, 64);
    this.memory.write(cmdAddr, Uint8Array.of(cls, cmd));
    this.memory.write(cmdAddr + 2, data);
    const ackAddr = cmdAddr + cmdLen;
    const resAddr = ackAddr + 1;
    this.memory.writeU8(ackAddr, 0xff);
    this.memory.write(resAddr, new Uint8Array(resultLength));
    const result = resultLength > 0 ? [{ addr: resAddr, len: resultLength }] : [];
    q.add([{ addr: cmdAddr, len: cmdLen }], [{ addr: ackAddr, len: 1 }, ...result]);
    this.pci.kick(index);
    const used = q.getUsed();
    return {
      ack: used ? this.memory.readU8(ackAddr) : -1,
      result: this.memory.read(resAddr, resultLength).slice(),
      usedLength: used ? used.len : -1,
    };
  }

  /** VIRTIO_NET_CTRL_STATS_QUERY: the ack and supported_stats_types (as Linux's probe sends it). */
  statsQuery(): { ack: number; capabilities: bigint } {
    const r = this.controlReply(CtrlClass.STATS, CtrlStats.QUERY, new Uint8Array(0), 8);
    return { ack: r.ack, capabilities: new DataView(r.result.buffer).getBigUint64(0, true) };
  }

  /**
   * VIRTIO_NET_CTRL_STATS_GET for `requests` (vq index, types_bitmap): the ack and the replies parsed
   * from a result buffer of `resultLength` bytes (default: exactly what the requested types need, as
   * Linux sizes it). Parsing stops at a reply header of size 0 or past the buffer.
   */
  statsGet(
    requests: { vq: number; types: bigint }[],
    resultLength?: number,
  ): { ack: number; replies: StatsReply[]; raw: Uint8Array; usedLength: number } {
    const { data, need } = encodeStatsRequest(requests);
    const r = this.controlReply(CtrlClass.STATS, CtrlStats.GET, data, resultLength ?? need);
    const replies = r.ack === VIRTIO_NET_OK ? parseStatsReplies(r.result) : [];
    return { ack: r.ack, replies, raw: r.result, usedLength: r.usedLength };
  }

  /** VIRTIO_NET_CTRL_NOTF_COAL_RX_SET (what `ethtool -C rx-frames / rx-usecs` sends). */
  setRxCoalescing(maxPackets: number, maxUsecs: number): number {
    const b = new Uint8Array(8);
    encodeCoal(b, 0, maxPackets, maxUsecs);
    return this.control(CtrlClass.NOTF_COAL, CtrlNotfCoal.RX_SET, b);
  }

  /** VIRTIO_NET_CTRL_NOTF_COAL_TX_SET (`ethtool -C tx-frames / tx-usecs`). */
  setTxCoalescing(maxPackets: number, maxUsecs: number): number {
    const b = new Uint8Array(8);
    encodeCoal(b, 0, maxPackets, maxUsecs);
    return this.control(CtrlClass.NOTF_COAL, CtrlNotfCoal.TX_SET, b);
  }

  /** VIRTIO_NET_CTRL_NOTF_COAL_VQ_SET for virtqueue `vq` (`ethtool --per-queue ... -C`). */
  setVqCoalescing(vq: number, maxPackets: number, maxUsecs: number): number {
    const b = new Uint8Array(12);
    b[0] = vq & 0xff;
    b[1] = vq >> 8;
    encodeCoal(b, 4, maxPackets, maxUsecs);
    return this.control(CtrlClass.NOTF_COAL, CtrlNotfCoal.VQ_SET, b);
  }

  /** VIRTIO_NET_CTRL_NOTF_COAL_VQ_GET for virtqueue `vq`: the ack and the device's parameters. */
  getVqCoalescing(vq: number): { ack: number; maxPackets: number; maxUsecs: number } {
    const r = this.controlReply(
      CtrlClass.NOTF_COAL,
      CtrlNotfCoal.VQ_GET,
      Uint8Array.of(vq & 0xff, vq >> 8, 0, 0),
      8,
    );
    const dv = new DataView(r.result.buffer);
    return { ack: r.ack, maxPackets: dv.getUint32(0, true), maxUsecs: dv.getUint32(4, true) };
  }

  rxMode(cmd: number, on: boolean): number {
    return this.control(CtrlClass.RX, cmd, Uint8Array.of(on ? 1 : 0));
  }

  /** VIRTIO_NET_CTRL_MAC_TABLE_SET with unicast and multicast MACs ("aa:bb:..."). */
  setMacTable(unicast: string[], multicast: string[]): number {
    const data = new Uint8Array(8 + 6 * (unicast.length + multicast.length));
    const dv = new DataView(data.buffer);
    dv.setUint32(0, unicast.length, true);
    unicast.forEach((m, i) => {
      data.set(macBytes(m), 4 + 6 * i);
    });
    const o = 4 + 6 * unicast.length;
    dv.setUint32(o, multicast.length, true);
    multicast.forEach((m, i) => {
      data.set(macBytes(m), o + 4 + 6 * i);
    });
    return this.control(CtrlClass.MAC, CtrlMac.TABLE_SET, data);
  }

  setMac(mac: string): number {
    return this.control(CtrlClass.MAC, CtrlMac.ADDR_SET, macBytes(mac));
  }

  vlan(add: boolean, vid: number): number {
    return this.control(
      CtrlClass.VLAN,
      add ? CtrlVlan.ADD : CtrlVlan.DEL,
      Uint8Array.of(vid & 0xff, vid >> 8),
    );
  }

  setQueuePairs(pairs: number): number {
    const r = this.control(CtrlClass.MQ, CtrlMq.VQ_PAIRS_SET, Uint8Array.of(pairs & 0xff, pairs >> 8));
    if (r === VIRTIO_NET_OK) this.pairs = pairs;
    return r;
  }

  /** VIRTIO_NET_CTRL_MQ_RSS_CONFIG (§5.1.6.5.7.1). */
  setRss(o: {
    hashTypes: number;
    table: number[];
    unclassified?: number;
    maxTxVq?: number;
    key: Uint8Array;
  }): number {
    const b = encodeRssConfig({ ...o, maxTxVq: o.maxTxVq ?? this.pairs });
    return this.control(CtrlClass.MQ, CtrlMq.RSS_CONFIG, b);
  }

  /** VIRTIO_NET_CTRL_MQ_HASH_CONFIG (§5.1.6.5.6.4). */
  setHashConfig(hashTypes: number, key: Uint8Array): number {
    const b = encodeHashConfig(hashTypes, key);
    return this.control(CtrlClass.MQ, CtrlMq.HASH_CONFIG, b);
  }

  /** VIRTIO 1.4 VIRTIO_NET_CTRL_HASH_TUNNEL_SET: the `VIRTIO_NET_HASH_TUNNEL_TYPE_*` to hash inside. */
  setHashTunnel(enabledTunnelTypes: number): number {
    return this.control(CtrlClass.HASH_TUNNEL, 0, encodeHashTunnel(enabledTunnelTypes));
  }

  /** VIRTIO 1.4 VIRTNET_RSS_CTX_CTRL_CAP_GET: the ack and max_rss_contexts. */
  rssContextCapGet(): { ack: number; maxContexts: number } {
    const r = this.controlReply(CtrlClass.RSS_CTX, CtrlRssCtx.CAP_GET, new Uint8Array(0), 2);
    return { ack: r.ack, maxContexts: r.result[0]! | (r.result[1]! << 8) };
  }

  /** VIRTIO 1.4 VIRTNET_RSS_CTX_CTRL_ADD (`modify` false) or _MOD of context `id`. */
  setRssContext(
    id: number,
    o: Omit<RssConfigFields, 'maxTxVq'> & { maxTxVq?: number },
    modify = false,
  ): number {
    const b = encodeRssContext(id, { ...o, maxTxVq: o.maxTxVq ?? this.pairs });
    return this.control(CtrlClass.RSS_CTX, modify ? CtrlRssCtx.MOD : CtrlRssCtx.ADD, b);
  }

  /** VIRTIO 1.4 VIRTNET_RSS_CTX_CTRL_DEL of context `id`. */
  deleteRssContext(id: number): number {
    return this.control(CtrlClass.RSS_CTX, CtrlRssCtx.DEL, encodeRssContextDel(id));
  }

  /**
   * CTRL_GUEST_OFFLOADS_SET with `offloads` in feature-bit layout; the tunnel bits (65, 66) go out as bits
   * 46 and 47 of the le64, as VIRTIO 1.4 lays them out (bits above 63 are otherwise dropped).
   */
  setGuestOffloads(offloads: bigint): number {
    const b = new Uint8Array(8);
    const tunnel = (offloads >> BigInt(NetF.GUEST_UDP_TUNNEL_GSO)) & 3n;
    new DataView(b.buffer).setBigUint64(0, BigInt.asUintN(64, offloads) | (tunnel << 46n), true);
    return this.control(CtrlClass.GUEST_OFFLOADS, 0, b);
  }

  announceAck(): number {
    return this.control(CtrlClass.ANNOUNCE, 0);
  }
}

function macBytes(mac: string): Uint8Array {
  return Uint8Array.from(mac.split(':').map((h) => Number.parseInt(h, 16)));
}
