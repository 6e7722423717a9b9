// VIRTIO_NET_CTRL_STATS through the synthetic guest (VIRTIO 1.3 "Device Statistics"): STATS_QUERY's
// capability bytes, STATS_GET replies byte for byte from the device's counters, in request order, cut to
// whole replies when the buffer is short, and every malformed request answered ERR with nothing written.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GsoType, NetHdrFlags } from '../../lib/net/vnet-header.js';
import { LINUX_6_1_FEATURES } from '../testing/net-driver.js';
import {
  DEV_MAC,
  inWorkerMode,
  makeBench,
  offload,
  openBench,
  PEER_MAC,
  pattern,
  rawFrame,
  tcp4Frame,
} from './bench.test-support.js';
import { CtrlClass, CtrlStats, VIRTIO_NET_ERR, VIRTIO_NET_OK } from './control-queue.js';
import { NetF } from './features.js';

const bit = (b: number) => 1n << BigInt(b);
const STATS = { device_stats: true };
const WANT = { wanted: LINUX_6_1_FEATURES | bit(NetF.DEVICE_STATS) };
const RX_BASIC = 1n << 0n;
const TX_BASIC = 1n << 16n;
const CVQ = 1n << 32n;
const RX_CSUM = 1n << 1n;
const RX_GSO = 1n << 2n;
const TX_CSUM = 1n << 17n;
const TX_GSO = 1n << 18n;

/** A reply as the spec lays it out: type, reserved, le16 vq_index, le16 reserved1, le16 size, le64s. */
function reply(type: number, vq: number, counters: number[]): number[] {
  const size = 8 + 8 * counters.length;
  const out = [type, 0, vq & 0xff, vq >> 8, 0, 0, size & 0xff, size >> 8];
  for (const c of counters) {
    const lo = c % 2 ** 32;
    const hi = Math.floor(c / 2 ** 32);
    for (let i = 0; i < 4; i++) out.push((lo >>> (8 * i)) & 0xff);
    for (let i = 0; i < 4; i++) out.push((hi >>> (8 * i)) & 0xff);
  }
  return out;
}

describe('STATS_QUERY', () => {
  it('offered only with device_stats; the capabilities follow the negotiated offloads, le64', () => {
    expect(openBench().dev.net.offered & bit(NetF.DEVICE_STATS)).toBe(0n);
    const b = openBench(STATS, {}, WANT);
    expect(b.driver.has(NetF.DEVICE_STATS)).toBe(true);
    const r = b.driver.controlReply(CtrlClass.STATS, CtrlStats.QUERY, new Uint8Array(0), 8);
    expect(r.ack).toBe(VIRTIO_NET_OK);
    // Linux 6.1's features have CSUM, GUEST_CSUM, GUEST_TSO4/6, HOST_TSO4/6: both csum and gso groups.
    expect(Array.from(r.result)).toEqual([0x07, 0x00, 0x07, 0x00, 0x01, 0x00, 0x00, 0x00]);
    expect(r.usedLength).toBe(9);
    expect(b.driver.statsQuery()).toEqual({
      ack: VIRTIO_NET_OK,
      capabilities: CVQ | RX_BASIC | RX_CSUM | RX_GSO | TX_BASIC | TX_CSUM | TX_GSO,
    });
    // Without the offloads only the basic groups (the speed groups never).
    const offloads: number[] = [NetF.CSUM, NetF.GUEST_CSUM, NetF.GUEST_TSO4, NetF.GUEST_TSO6, NetF.GUEST_ECN];
    offloads.push(NetF.GUEST_UFO, NetF.HOST_TSO4, NetF.HOST_TSO6, NetF.HOST_ECN, NetF.HOST_UFO);
    offloads.push(NetF.CTRL_GUEST_OFFLOADS);
    const off = offloads.reduce((m, x) => m | bit(x), 0n);
    const bare = openBench(STATS, {}, { wanted: WANT.wanted & ~off });
    expect(bare.driver.statsQuery()).toEqual({ ack: VIRTIO_NET_OK, capabilities: CVQ | RX_BASIC | TX_BASIC });
    expect(bare.driver.statsGet([{ vq: 0, types: RX_CSUM }]).ack).toBe(VIRTIO_NET_ERR);
    expect(bare.driver.statsGet([{ vq: 1, types: TX_GSO }]).ack).toBe(VIRTIO_NET_ERR);
  });

  it('ERR without DEVICE_STATS negotiated or without 8 bytes of room; nothing written', () => {
    const off = openBench(STATS);
    expect(off.driver.has(NetF.DEVICE_STATS)).toBe(false);
    const r = off.driver.controlReply(CtrlClass.STATS, CtrlStats.QUERY, new Uint8Array(0), 8);
    expect(r.ack).toBe(VIRTIO_NET_ERR);
    expect(Array.from(r.result)).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
    const b = openBench(STATS, {}, WANT);
    const short = b.driver.controlReply(CtrlClass.STATS, CtrlStats.QUERY, new Uint8Array(0), 7);
    expect(short.ack).toBe(VIRTIO_NET_ERR);
    expect(Array.from(short.result)).toEqual([0, 0, 0, 0, 0, 0, 0]);
    expect(b.driver.controlReply(CtrlClass.STATS, 2, new Uint8Array(0), 8).ack).toBe(VIRTIO_NET_ERR);
  });
});

describe('STATS_GET', () => {
  it("replies byte for byte from the device's counters, in request order (as Linux's ethtool -S asks)", () => {
    const b = openBench(STATS, {}, WANT);
    const d = b.driver;
    for (let i = 0; i < 3; i++) b.backend.inject(rawFrame(100 + i, DEV_MAC, PEER_MAC, i));
    d.receive(0);
    d.send(rawFrame(70, PEER_MAC, DEV_MAC));
    d.send(new Uint8Array(10)); // malformed: shorter than an Ethernet header
    const s = b.dev.stats();
    const q = s.queues[0]!;
    expect(q.txDropMalformed).toBe(1);
    const commands = s.ctrlCommands;
    const ok = commands - s.ctrlErrors;
    const r = d.statsGet([
      { vq: 0, types: RX_BASIC },
      { vq: 1, types: TX_BASIC },
      { vq: 2, types: CVQ },
    ]);
    expect(r.ack).toBe(VIRTIO_NET_OK);
    expect(Array.from(r.raw)).toEqual([
      ...reply(0, 0, [q.rxKicks, 3, 303, q.rxInterrupts, 0, 0]),
      ...reply(16, 1, [q.txKicks, 1, 70, q.txInterrupts, 1, 1]),
      ...reply(32, 2, [commands + 1, ok + 1]),
    ]);
    expect(r.usedLength).toBe(1 + 56 + 56 + 24);
    expect(q.rxKicks).toBeGreaterThan(0);
    expect(q.txKicks).toBe(2);
    expect(r.replies.map((x) => [x.type, x.vqIndex, x.size])).toEqual([
      [0, 0, 56],
      [16, 1, 56],
      [32, 2, 24],
    ]);
  });

  it('checksum and GSO groups: counted per frame from the headers, byte for byte', () => {
    // HOST_TSO4 left out: a TCPv4 GSO frame is then segmented by the device (3 segments of 1000).
    const b = openBench(STATS, {}, { wanted: WANT.wanted & ~(bit(NetF.HOST_TSO4) | bit(NetF.HOST_ECN)) });
    const d = b.driver;
    const tcp = tcp4Frame({ payload: pattern(3000, 1), csum: 'partial', dst: PEER_MAC, src: DEV_MAC });
    const csum = offload({ flags: NetHdrFlags.NEEDS_CSUM, csumStart: 34, csumOffset: 16 });
    const tso = { ...csum, gsoType: GsoType.TCPV4, hdrLen: 54, gsoSize: 1000 };
    d.send(tcp, { offload: tso }); // segmented: 3 segments
    d.send(tcp, { offload: { ...tso, gsoType: GsoType.TCPV6 } }); // TSO6 negotiated: to the backend whole
    d.send(tcp, { offload: csum });
    d.send(rawFrame(60, PEER_MAC, DEV_MAC));
    const segBytes = b.sent.slice(0, 3).reduce((n, x) => n + x.frame.length, 0);
    expect(b.sent).toHaveLength(6);
    const rxTcp = tcp4Frame({ payload: pattern(2000, 2), csum: 'partial' });
    b.backend.inject(rxTcp, 0, csum);
    b.backend.inject(rxTcp, 0, offload({ flags: NetHdrFlags.DATA_VALID }));
    b.backend.inject(rxTcp, 0, { ...tso, gsoSize: 1400 });
    b.backend.inject(rawFrame(70, DEV_MAC, PEER_MAC));
    expect(d.receive(0)).toHaveLength(4);
    const r = d.statsGet([
      { vq: 0, types: RX_CSUM | RX_GSO },
      { vq: 1, types: TX_CSUM | TX_GSO },
    ]);
    expect(r.ack).toBe(VIRTIO_NET_OK);
    const n = tcp.length;
    expect(Array.from(r.raw)).toEqual([
      ...reply(1, 0, [1, 2, 1, 0]), // valid, needs (csum + gso), none, bad
      ...reply(2, 0, [1, rxTcp.length, 0, 0]),
      ...reply(17, 1, [1, 3]), // none, needs
      ...reply(18, 1, [2, 2 * n, 3, segBytes, 1, n]),
    ]);
  });

  it("Linux's ethtool -S: every advertised type of every queue in use plus the control queue, sized exactly", () => {
    const b = openBench({ ...STATS, mq: true, queues: 3 }, { queues: 3 }, WANT);
    const d = b.driver;
    expect(d.setQueuePairs(2)).toBe(VIRTIO_NET_OK);
    const caps = d.statsQuery().capabilities;
    const rxTypes = caps & 0xffffn;
    const txTypes = caps & 0xffff0000n;
    // virtnet_get_hw_stats: queues 0 .. 2 * curr_queue_pairs - 1, then vq 2 * max_queue_pairs for CVQ.
    const req = [0, 1, 2, 3].map((vq) => ({ vq, types: vq & 1 ? txTypes : rxTypes }));
    req.push({ vq: 6, types: caps & CVQ });
    const r = d.statsGet(req);
    expect(r.ack).toBe(VIRTIO_NET_OK);
    // Linux walks the buffer by hdr->size until res_size: the replies must tile it exactly.
    expect(r.replies.reduce((n, x) => n + x.size, 0)).toBe(r.raw.length);
    expect(r.replies.map((x) => [x.vqIndex, x.type])).toEqual([
      [0, 0],
      [0, 1],
      [0, 2],
      [1, 16],
      [1, 17],
      [1, 18],
      [2, 0],
      [2, 1],
      [2, 2],
      [3, 16],
      [3, 17],
      [3, 18],
      [6, 32],
    ]);
    expect(r.usedLength).toBe(1 + r.raw.length);
  });

  // Not in worker mode: it hands frames to the main thread's device directly (dev.net.receive), which
  // owns no data path while the pairs run on workers; the backlog overrun path runs on a worker there.
  it.skipIf(inWorkerMode())(
    'rx_drop_overruns counts frames dropped for lack of buffers (a full backlog), also in rx_drops',
    () => {
      const b = openBench(STATS, {}, { ...WANT, rxBuffers: 0 });
      // Straight into the device, as a backend that ignores pauses would (the backlog holds 256).
      for (let i = 0; i < 260; i++) b.dev.net.receive(rawFrame(64, DEV_MAC, PEER_MAC, i), 0, null);
      const q = b.dev.stats().queues[0]!;
      expect([q.rxDropOverruns, q.rxDropped]).toEqual([4, 4]);
      const c = b.driver.statsGet([{ vq: 0, types: RX_BASIC }]).replies[0]!.counters;
      expect(c[4]).toBe(BigInt(q.rxDropped));
      expect(c[5]).toBe(BigInt(q.rxDropOverruns));
    },
  );

  it('a short result buffer gets the whole replies that fit, nothing of the next', () => {
    const b = openBench(STATS, {}, WANT);
    const r = b.driver.statsGet(
      [
        { vq: 2, types: CVQ },
        { vq: 0, types: RX_BASIC },
      ],
      24 + 55,
    );
    expect(r.ack).toBe(VIRTIO_NET_OK);
    expect(r.replies.map((x) => x.type)).toEqual([32]);
    expect(Array.from(r.raw.subarray(24))).toEqual(new Array(55).fill(0));
  });

  it('with MQ the control queue is 2 * max pairs and every pair answers', () => {
    const b = openBench({ ...STATS, mq: true, queues: 2 }, { queues: 2 }, WANT);
    const r = b.driver.statsGet([
      { vq: 3, types: TX_BASIC },
      { vq: 4, types: CVQ },
    ]);
    expect(r.ack).toBe(VIRTIO_NET_OK);
    expect(r.replies.map((x) => [x.type, x.vqIndex])).toEqual([
      [16, 3],
      [32, 4],
    ]);
    expect(b.driver.statsGet([{ vq: 2, types: CVQ }]).ack).toBe(VIRTIO_NET_ERR); // rx queue of pair 1
  });

  it('one bad entry fails the whole command: vq out of range, unknown type, wrong queue type, length', () => {
    const b = openBench(STATS, {}, WANT);
    const d = b.driver;
    const bad: { vq: number; types: bigint }[][] = [
      [{ vq: 3, types: TX_BASIC }], // no such queue without MQ
      [{ vq: 0xffff, types: RX_BASIC }],
      [{ vq: 0, types: TX_BASIC }], // a tx type on an rx queue
      [{ vq: 1, types: RX_BASIC }],
      [{ vq: 0, types: CVQ }], // CVQ on a data queue
      [{ vq: 2, types: RX_BASIC }], // a data type on the control queue
      [{ vq: 0, types: 1n << 3n }], // RX_SPEED: not supported
      [{ vq: 0, types: TX_CSUM }], // a tx group on an rx queue
      [{ vq: 1, types: 1n << 19n }], // TX_SPEED: not supported
      [{ vq: 0, types: 1n << 40n }], // unknown
      [{ vq: 2, types: 1n << 63n }],
      [
        { vq: 0, types: RX_BASIC },
        { vq: 1, types: RX_BASIC },
      ],
    ];
    for (const req of bad) {
      const r = d.statsGet(req, 112);
      expect(
        r.ack,
        JSON.stringify(req, (_, v) => (typeof v === 'bigint' ? v.toString() : v)),
      ).toBe(VIRTIO_NET_ERR);
      expect(r.raw.every((x) => x === 0)).toBe(true);
    }
    // Not a whole number of 16-byte entries, or none.
    for (const len of [0, 15, 17]) {
      const r = d.controlReply(CtrlClass.STATS, CtrlStats.GET, new Uint8Array(len), 56);
      expect(r.ack, `length ${len}`).toBe(VIRTIO_NET_ERR);
      expect(r.result).toEqual(new Uint8Array(56));
    }
    // Without DEVICE_STATS negotiated.
    const off = openBench(STATS);
    expect(off.driver.statsGet([{ vq: 0, types: RX_BASIC }]).ack).toBe(VIRTIO_NET_ERR);
  });
});

describe('hostile STATS and NOTF_COAL commands', () => {
  it('random payloads and result sizes: always an ack, nothing thrown, parameters valid u32s', () => {
    const b = openBench(
      { ...STATS, notf_coal: true, vq_notf_coal: true },
      {},
      { wanted: WANT.wanted | bit(NetF.VQ_NOTF_COAL) },
    );
    fc.assert(
      fc.property(
        fc.constantFrom(CtrlClass.STATS, CtrlClass.NOTF_COAL),
        fc.integer({ min: 0, max: 5 }),
        fc.uint8Array({ maxLength: 80 }),
        fc.integer({ min: 0, max: 200 }),
        (cls, cmd, data, room) => {
          const r = b.driver.controlReply(cls, cmd, data, room);
          expect([VIRTIO_NET_OK, VIRTIO_NET_ERR]).toContain(r.ack);
          for (const c of b.dev.net.coalescers) {
            expect(Number.isInteger(c.maxPackets) && c.maxPackets >= 0 && c.maxPackets <= 0xffff_ffff).toBe(
              true,
            );
          }
        },
      ),
      { numRuns: 400, seed: 18 },
    );
    expect(b.driver.pci.status & 0x40).toBe(0); // never DEVICE_NEEDS_RESET
  });
});

describe('DEVICE_STATS counters in snapshots', () => {
  it('travel with the state; a state from before them (earlier /2) restores, the target keeping its own', () => {
    const a = openBench(STATS, {}, WANT);
    a.driver.send(new Uint8Array(10));
    a.driver.send(rawFrame(60, PEER_MAC, DEV_MAC));
    const state = JSON.parse(JSON.stringify(a.dev.snapshot()));
    const q = state.transport.transport.device.stats.queues[0];
    expect([q.txDropMalformed, q.txCsumNone, q.rxKicks > 0]).toEqual([1, 1, true]);
    const b = makeBench(STATS, {}, WANT);
    b.dev.restore(state);
    expect(b.dev.stats().queues[0]).toMatchObject({ txDropMalformed: 1, txCsumNone: 1 });
    for (const k of ['rxKicks', 'rxDropOverruns', 'txDropMalformed', 'txCsumNone', 'txGsoPackets'])
      delete q[k];
    const c = makeBench(STATS, {}, WANT);
    c.dev.restore(state);
    expect(c.dev.stats().queues[0]).toMatchObject({ txDropMalformed: 0, txCsumNone: 0, txPackets: 1 });
  });
});
