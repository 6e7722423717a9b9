// Transmit path through the public object and the synthetic guest: rings and descriptor layouts, sizes,
// offload metadata to a vnet-header backend, software checksum and segmentation without one, bursts,
// malformed chains.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import type { BackendSink, NetBackend } from '../../lib/net/backend.js';
import { MAX_FRAME } from '../../lib/net/backend.js';
import * as fb from '../../lib/net/frames.test-support.js';
import { GsoType, NetHdrFlags } from '../../lib/net/vnet-header.js';
import { BumpAllocator } from '../../virtio/testing/bump-allocator.js';
import { InterruptCollector } from '../../virtio/testing/pci-driver.js';
import { LINUX_6_1_FEATURES, VirtioNetDriver } from '../testing/net-driver.js';
import { createVirtioNetPci, type VirtioNetPci } from '../virtio-net-pci.js';
import {
  DEV_MAC,
  hexOf,
  inetChecksum,
  inWorkerMode,
  MEM_SIZE,
  nextTurn,
  offload,
  openBench,
  PEER_MAC,
  pattern,
  rawFrame,
  tcp4Frame,
  tsoSegments,
  udp4ChecksumOk,
  udp4Frame,
} from './bench.test-support.js';
import { NetF } from './features.js';
import { TX_BURST } from './tx.js';

const bit = (b: number) => 1n << BigInt(b);

function stats(dev: VirtioNetPci) {
  return dev.stats();
}

const TSO_OFF = offload({
  flags: NetHdrFlags.NEEDS_CSUM,
  gsoType: GsoType.TCPV4,
  hdrLen: 54,
  gsoSize: 1000,
  csumStart: 34,
  csumOffset: 16,
});
const CSUM_OFF = offload({ flags: NetHdrFlags.NEEDS_CSUM, csumStart: 34, csumOffset: 16 });

describe('tx data path', () => {
  for (const packed of [false, true]) {
    for (const layout of [{}, { split: true }, { indirect: true }, { split: true, indirect: true }]) {
      it(`${packed ? 'packed' : 'split'} ring, ${JSON.stringify(layout)}: bytes exact, no offload, used len 0`, () => {
        const b = openBench({ packed });
        const sizes = [14, 60, 1514, 4000, 65535, MAX_FRAME];
        const q = b.driver.queue(1);
        const used: number[] = [];
        for (const n of sizes) {
          b.driver.send(rawFrame(n, PEER_MAC, DEV_MAC, n), layout);
          used.push(q.getUsed()?.len ?? -1);
        }
        expect(b.sent.map((x) => hexOf(x.frame))).toEqual(
          sizes.map((n) => hexOf(rawFrame(n, PEER_MAC, DEV_MAC, n))),
        );
        expect(b.sent.every((x) => x.offload === null && x.queuePair === 0)).toBe(true);
        expect(used).toEqual(sizes.map(() => 0));
        const s = stats(b.dev);
        expect([s.txPackets, s.txBytes, s.txDropped]).toEqual([
          sizes.length,
          sizes.reduce((a, n) => a + n, 0),
          0,
        ]);
      });
    }
  }

  it('a frame gathered from many small descriptors (header split across them too)', () => {
    const b = openBench();
    const f = rawFrame(3000, PEER_MAC, DEV_MAC, 9);
    const all = new Uint8Array(12 + f.length);
    all.set(f, 12);
    const parts: Uint8Array[] = [];
    for (let o = 0; o < all.length; o += 97) parts.push(all.slice(o, o + 97));
    b.driver.queue(1).add(parts.slice(0, 30), []);
    b.driver.queue(1).add([all], []);
    b.driver.pci.kick(1);
    expect(b.sent.map((x) => hexOf(x.frame))).toEqual([hexOf(all.subarray(12, 30 * 97)), hexOf(f)]);
  });

  it('frames shorter than 14 bytes or longer than the maximum are dropped, their chains completed', () => {
    const b = openBench();
    const q = b.driver.queue(1);
    for (const f of [new Uint8Array(13), new Uint8Array(0), rawFrame(MAX_FRAME + 1, PEER_MAC, DEV_MAC)]) {
      b.driver.send(f);
      expect(q.getUsed()).not.toBeNull();
    }
    expect(b.sent).toHaveLength(0);
    expect(stats(b.dev).txDropped).toBe(3);
    expect(stats(b.dev).status & 0x40).toBe(0);
  });

  it('a chain shorter than the header is a broken driver: NEEDS_RESET, config interrupt, nothing thrown', () => {
    const b = openBench();
    b.irq.takeVectors();
    b.driver.queue(1).add([new Uint8Array(11)], []);
    expect(() => b.driver.pci.kick(1)).not.toThrow();
    expect(b.driver.pci.status & 0x40).toBe(0x40);
    expect(b.irq.takeVectors()).toContain(0);
    expect(stats(b.dev).lastError).toMatch(/header/);
    // Nothing more is processed until reset, and nothing throws.
    expect(() => b.driver.send(rawFrame(60, PEER_MAC, DEV_MAC))).not.toThrow();
    expect(b.sent).toHaveLength(0);
  });

  it('a tx chain with only device-writable buffers is a broken driver too', () => {
    const b = openBench();
    b.driver.queue(1).add([], [new Uint8Array(100)]);
    b.driver.pci.kick(1);
    expect(b.driver.pci.status & 0x40).toBe(0x40);
  });

  // Not in worker mode: the 40 later chains are posted without a kick, counting on the device's next
  // turn coming after them, as on one thread; a worker's next turn runs in parallel and may come first
  // (then nothing looks at the ring again until a kick). Flaky there under load, so excluded.
  it.skipIf(inWorkerMode())(
    `more than ${TX_BURST} chains in one kick: the rest follow on the next turn of the event loop`,
    async () => {
      const b = openBench({}, {}, {});
      const q = b.driver.queue(1);
      const n = TX_BURST + 40;
      for (let i = 0; i < n; i++) {
        const f = new Uint8Array(12 + 60);
        f.set(rawFrame(60, PEER_MAC, DEV_MAC, i), 12);
        q.add([f], []);
        if (q.numFree === 0) break;
      }
      const posted = 256; // queue size
      b.driver.pci.kick(1);
      expect(b.sent).toHaveLength(Math.min(posted, TX_BURST));
      // The guest posts more while the device yields.
      let extra = 0;
      for (let u = q.getUsed(); u; u = q.getUsed()) extra++;
      for (let i = 0; i < 40; i++) {
        const f = new Uint8Array(12 + 60);
        f.set(rawFrame(60, PEER_MAC, DEV_MAC, 1000 + i), 12);
        q.add([f], []);
      }
      expect(extra).toBe(TX_BURST);
      await nextTurn(b, () => b.sent.length >= posted + 40);
      expect(b.sent).toHaveLength(posted + 40);
      expect(b.sent.at(-1)!.frame).toEqual(rawFrame(60, PEER_MAC, DEV_MAC, 1039));
    },
  );
});

describe('tx offloads', () => {
  const spec = {
    payload: pattern(3500, 7),
    csum: 'partial' as const,
    dst: PEER_MAC,
    src: DEV_MAC,
    id: 0x3000,
    seq: 77,
    flags: 0x19,
  };

  it('vnet-header backend: NEEDS_CSUM / GSO metadata arrive unchanged with the frame', () => {
    const b = openBench();
    expect(b.driver.has(NetF.HOST_TSO4) && b.driver.has(NetF.CSUM)).toBe(true);
    const f = tcp4Frame(spec);
    b.driver.send(f, { offload: TSO_OFF });
    b.driver.send(f, { offload: { ...TSO_OFF, gsoType: GsoType.TCPV4 | GsoType.ECN } });
    b.driver.send(f, { offload: CSUM_OFF, split: true });
    expect(b.sent.map((x) => hexOf(x.frame))).toEqual([hexOf(f), hexOf(f), hexOf(f)]);
    expect(b.sent.map((x) => x.offload)).toEqual([TSO_OFF, { ...TSO_OFF, gsoType: 0x81 }, CSUM_OFF]);
    // DATA_VALID alone is not an offload request: the frame goes without metadata.
    b.driver.send(f, { offload: { flags: NetHdrFlags.DATA_VALID } });
    expect(b.sent.at(-1)!.offload).toBeNull();
  });

  it('no vnet header: checksum completed and TSO segmented in software, byte for byte', () => {
    const b = openBench({}, { vnetHeader: false });
    expect(b.driver.has(NetF.CSUM)).toBe(false);
    b.driver.send(tcp4Frame(spec), { offload: TSO_OFF });
    const want = tsoSegments(spec, 1000);
    expect(want).toHaveLength(4);
    // FIN (0x01) and PSH only on the last segment.
    expect(want.map((w) => w[47])).toEqual([0x10, 0x10, 0x10, 0x19]);
    expect(b.sent.map((x) => hexOf(x.frame))).toEqual(want.map(hexOf));
    expect(b.sent.every((x) => x.offload === null)).toBe(true);
    b.sent.length = 0;
    const one = { ...spec, payload: pattern(801, 2) };
    b.driver.send(tcp4Frame(one), { offload: CSUM_OFF });
    expect(b.sent.map((x) => hexOf(x.frame))).toEqual([hexOf(tcp4Frame({ ...one, csum: 'full' }))]);
    const s = stats(b.dev);
    expect([s.txPackets, s.txDropped]).toEqual([5, 0]);
  });

  it('vnet-header backend but HOST_TSO4 not negotiated: the device segments (guest asked for what it may not)', () => {
    const b = openBench({}, {}, { wanted: LINUX_6_1_FEATURES & ~(bit(NetF.HOST_TSO4) | bit(NetF.HOST_ECN)) });
    b.driver.send(tcp4Frame(spec), { offload: TSO_OFF });
    expect(b.sent.map((x) => hexOf(x.frame))).toEqual(tsoSegments(spec, 1000).map(hexOf));
    // The checksum-only request is still passed through (CSUM negotiated).
    b.driver.send(tcp4Frame(spec), { offload: CSUM_OFF });
    expect(b.sent.at(-1)!.offload).toEqual(CSUM_OFF);
  });

  it('bad offload fields are counted drops, never exceptions', () => {
    const b = openBench({}, { vnetHeader: false });
    const f = tcp4Frame(spec);
    b.driver.send(f, { offload: { ...CSUM_OFF, csumStart: 5000 } });
    b.driver.send(f, { offload: { ...TSO_OFF, gsoSize: 0 } });
    b.driver.send(f, { offload: { ...TSO_OFF, gsoType: GsoType.TCPV6 } });
    b.driver.send(rawFrame(100, PEER_MAC, DEV_MAC), { offload: TSO_OFF });
    b.driver.send(f, { offload: { ...TSO_OFF, gsoType: 0x42 } });
    expect(b.sent).toHaveLength(0);
    expect(stats(b.dev).txDropped).toBe(5);
    expect(b.driver.pci.status & 0x40).toBe(0);
  });

  it('software segmentation stays exact after earlier larger frames (no stale scratch bytes)', () => {
    const b = openBench({}, { vnetHeader: false });
    const big = { ...spec, payload: pattern(9000, 1) };
    b.driver.send(tcp4Frame(big), { offload: { ...TSO_OFF, gsoSize: 8000 } });
    b.sent.length = 0;
    const small = { ...spec, payload: pattern(101, 5) };
    b.driver.send(tcp4Frame(small), { offload: CSUM_OFF });
    b.driver.send(tcp4Frame(spec), { offload: TSO_OFF });
    expect(b.sent.map((x) => hexOf(x.frame))).toEqual([
      hexOf(tcp4Frame({ ...small, csum: 'full' })),
      ...tsoSegments(spec, 1000).map(hexOf),
    ]);
  });
});

describe('software TSO property', () => {
  it('random payloads, MSS and flags: segments equal the Linux reference byte for byte, on tx and on rx', () => {
    const tx = openBench({}, { vnetHeader: false });
    const rx = openBench(
      {},
      {},
      {
        wanted:
          LINUX_6_1_FEATURES &
          ~(
            bit(NetF.GUEST_CSUM) |
            bit(NetF.GUEST_TSO4) |
            bit(NetF.GUEST_TSO6) |
            bit(NetF.GUEST_ECN) |
            bit(NetF.GUEST_UFO)
          ),
      },
    );
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 30000 }),
        fc.integer({ min: 1, max: 9000 }),
        fc.constantFrom(0x10, 0x18, 0x19, 0x11, 0x98, 0x99),
        fc.integer({ min: 0, max: 0xffffffff }),
        fc.integer({ min: 0, max: 0xffff }),
        fc.boolean(),
        (len, mss, flags, seq, id, ecn) => {
          const spec = {
            payload: pattern(len, len & 0xff),
            csum: 'partial' as const,
            dst: PEER_MAC,
            src: DEV_MAC,
            flags,
            seq,
            id,
          };
          const off = { ...TSO_OFF, gsoSize: mss, gsoType: GsoType.TCPV4 | (ecn ? GsoType.ECN : 0) };
          const want = tsoSegments(spec, mss).map(hexOf);
          // Frames over 64 KiB of IP cannot be built; keep to what a guest can send.
          if (54 + len > MAX_FRAME) return;
          tx.sent.length = 0;
          tx.driver.send(tcp4Frame(spec), { offload: off });
          expect(tx.sent.map((x) => hexOf(x.frame))).toEqual(want);
          // On rx every segment needs a buffer at once: the ring has 256 (see the next test for more).
          if (want.length > 256) return;
          const rspec = { ...spec, dst: DEV_MAC, src: PEER_MAC };
          rx.backend.inject(tcp4Frame(rspec), 0, off);
          const got: string[] = [];
          for (let i = 0; i < 30 && got.length < want.length; i++)
            got.push(...rx.driver.receive().map((r) => hexOf(r.frame)));
          expect(got).toEqual(tsoSegments(rspec, mss).map(hexOf));
        },
      ),
      { numRuns: 150, seed: 31 },
    );
    expect(stats(tx.dev).txDropped).toBe(0);
    expect(stats(rx.dev).rxDropped).toBe(0);
  });

  it('rx: segments beyond the posted buffers are counted as dropped (the frame is segmented at once)', () => {
    const rx = openBench(
      {},
      {},
      {
        rxBuffers: 3,
        wanted:
          LINUX_6_1_FEATURES &
          ~(
            bit(NetF.GUEST_CSUM) |
            bit(NetF.GUEST_TSO4) |
            bit(NetF.GUEST_TSO6) |
            bit(NetF.GUEST_ECN) |
            bit(NetF.GUEST_UFO)
          ),
      },
    );
    const spec = { payload: pattern(5000, 1), csum: 'partial' as const };
    rx.backend.inject(tcp4Frame(spec), 0, { ...TSO_OFF, gsoSize: 1000 });
    expect(rx.driver.receive().map((r) => hexOf(r.frame))).toEqual(
      tsoSegments(spec, 1000).slice(0, 3).map(hexOf),
    );
    expect(stats(rx.dev).rxDropped).toBe(2);
  });
});

describe('software UFO and USO (no vnet header)', () => {
  const payload = pattern(3000, 9);

  it('UFO: IPv4 fragments of gso_size rounded to 8, same ID, MF, reassembling to the checksummed datagram', () => {
    const b = openBench({}, { vnetHeader: false });
    const frame = udp4Frame({ payload, dst: PEER_MAC, src: DEV_MAC, csum: 'partial', id: 0x1111 });
    b.driver.send(frame, {
      offload: offload({
        flags: NetHdrFlags.NEEDS_CSUM,
        gsoType: GsoType.UDP,
        gsoSize: 1001,
        hdrLen: 42,
        csumStart: 34,
        csumOffset: 6,
      }),
    });
    const frags = b.sent.map((x) => x.frame);
    expect(frags.map((f) => f.length - 34)).toEqual([1000, 1000, 1000, 8]);
    const datagram = new Uint8Array(8 + payload.length);
    frags.forEach((f, i) => {
      expect(hexOf(f.subarray(0, 14))).toBe(hexOf(frame.subarray(0, 14)));
      expect((f[18]! << 8) | f[19]!).toBe(0x1111);
      const fragField = (f[20]! << 8) | f[21]!;
      expect(fragField & 0x1fff).toBe((i * 1000) / 8);
      expect((fragField & 0x2000) !== 0).toBe(i < 3);
      expect((f[16]! << 8) | f[17]!).toBe(f.length - 14);
      expect(inetChecksum(f, 14, 34)).toBe(0);
      datagram.set(f.subarray(34), i * 1000);
    });
    expect(hexOf(datagram)).toBe(
      hexOf(udp4Frame({ payload, csum: 'full', dst: PEER_MAC, src: DEV_MAC, id: 0x1111 }).subarray(34)),
    );
    expect(udp4ChecksumOk(datagram, frame.subarray(26, 34))).toBe(true);
  });

  it('USO: each segment a UDP datagram of gso_size payload with its own length and checksum', () => {
    const b = openBench({}, { vnetHeader: false });
    const frame = udp4Frame({ payload, dst: PEER_MAC, src: DEV_MAC, csum: 'partial', id: 7 });
    b.driver.send(frame, {
      offload: offload({
        flags: NetHdrFlags.NEEDS_CSUM,
        gsoType: GsoType.UDP_L4,
        gsoSize: 1200,
        hdrLen: 42,
        csumStart: 34,
        csumOffset: 6,
      }),
    });
    const want = [0, 1, 2].map((i) =>
      udp4Frame({
        payload: payload.subarray(i * 1200, (i + 1) * 1200),
        dst: PEER_MAC,
        src: DEV_MAC,
        csum: 'full',
        id: 7 + i,
      }),
    );
    const got = b.sent.map((x) => x.frame);
    expect(got.map((f) => f.length)).toEqual(want.map((f) => f.length));
    // IPv4 ID +1 per segment, as Linux's inet_gso_segment.
    got.forEach((f, i) => {
      expect(inetChecksum(f, 14, 34)).toBe(0);
      expect((f[18]! << 8) | f[19]!).toBe(7 + i);
      expect(hexOf(f)).toBe(hexOf(want[i]!));
      expect(hexOf(f.subarray(34))).toBe(hexOf(want[i]!.subarray(34)));
      expect(udp4ChecksumOk(f.subarray(34), f.subarray(26, 34))).toBe(true);
    });
  });
});

describe('software TSO over IPv6', () => {
  it('TCPV6 segments: payload length per segment, seq, flags, checksums (reference built independently)', () => {
    const b = openBench({}, { vnetHeader: false });
    const payload = pattern(4100, 4);
    const seg = (p: Uint8Array, flags: number, seq: number) =>
      fb.eth(
        0x86dd,
        fb.withL4ChecksumV6(fb.ipv6('2001:db8::1', '2001:db8::2', 6, fb.tcp(443, 50000, p, flags, seq))),
      );
    const frame = seg(payload, 0x19, 100);
    b.driver.send(frame, {
      offload: offload({
        flags: NetHdrFlags.NEEDS_CSUM,
        gsoType: GsoType.TCPV6,
        gsoSize: 1440,
        hdrLen: 74,
        csumStart: 54,
        csumOffset: 16,
      }),
    });
    const want = [0, 1, 2].map((i) =>
      seg(payload.subarray(i * 1440, (i + 1) * 1440), i === 2 ? 0x19 : 0x10, 100 + i * 1440),
    );
    expect(b.sent.map((x) => hexOf(x.frame))).toEqual(want.map(hexOf));
  });
});

describe('a backend that batches writes (NetBackend.flushTransmit)', () => {
  /** Queues frames as (region, offset, length) and reads them only at flush, as io_uring does. */
  class BatchingBackend implements NetBackend {
    readonly capabilities = {
      vnetHeader: true,
      offloads: { csum: true, tso4: true, tso6: true, ecn: true, ufo: true, uso4: true, uso6: true },
      queuePairs: 1,
    };
    queued: { bytes: Uint8Array; offset: number; length: number }[] = [];
    written: string[] = [];
    /** Used idx the guest could see at each flush. */
    usedIdxAtFlush: number[] = [];
    failNext = 0;
    readUsedIdx: () => number = () => -1;
    attach(_sink: BackendSink): void {}
    copied = 0;
    /** A frame the caller owns: written now, after what was queued (TapBackend keeps that order). */
    transmit(frame: Uint8Array): 'sent' {
      this.flushTransmit();
      this.written.push(hexOf(frame));
      this.copied++;
      return 'sent';
    }
    transmitRange(bytes: Uint8Array, offset: number, length: number): 'sent' {
      this.queued.push({ bytes, offset, length });
      return 'sent';
    }
    flushTransmit(): number {
      this.usedIdxAtFlush.push(this.readUsedIdx());
      for (const f of this.queued) this.written.push(hexOf(f.bytes.subarray(f.offset, f.offset + f.length)));
      this.queued = [];
      const failed = this.failNext;
      this.failNext = 0;
      return failed;
    }
    pause(): void {}
    resume(): void {}
    close(): void {}
  }

  function batchingBench(vnetHeader = true) {
    const memory = new GuestMemory([{ address: 0, bytes: new Uint8Array(MEM_SIZE) }]);
    const backend = new BatchingBackend();
    if (!vnetHeader)
      (backend as { capabilities: unknown }).capabilities = { ...backend.capabilities, vnetHeader: false };
    const irq = new InterruptCollector();
    const dev = createVirtioNetPci({ memory, backend, interrupts: irq });
    const driver = new VirtioNetDriver(dev, memory, {
      allocator: new BumpAllocator(0x100000, MEM_SIZE - 0x1000),
      interrupts: irq,
    });
    driver.open();
    return { memory, backend, dev, driver };
  }

  it('frames the device gathers or segments are handed over with transmit (they live in its scratch)', () => {
    const { memory, backend, driver } = batchingBench();
    const frames = Array.from({ length: 6 }, (_, i) => rawFrame(100 + i * 50, PEER_MAC, DEV_MAC, i));
    // Each frame split over two descriptors after the header (Linux's skb frags): the device gathers it.
    const q = driver.queue(1);
    for (const f of frames) {
      const half = f.length >> 1;
      const a = driver.pci.allocator.alloc(12 + half, 64);
      const b = driver.pci.allocator.alloc(f.length - half, 64);
      memory.write(a, new Uint8Array(12));
      memory.write(a + 12, f.subarray(0, half));
      memory.write(b, f.subarray(half));
      q.add(
        [
          { addr: a, len: 12 + half },
          { addr: b, len: f.length - half },
        ],
        [],
      );
    }
    driver.kickTx();
    expect(backend.written).toEqual(frames.map(hexOf));
    expect(backend.copied).toBe(6);
    // Software TSO (a backend without a vnet header): every segment handed over as its own copy.
    const plain = batchingBench(false);
    const spec = { payload: new Uint8Array(4000).map((_, i) => i & 0xff) };
    plain.driver.send(tcp4Frame(spec), { kick: false, offload: TSO_OFF });
    plain.driver.send(rawFrame(80, PEER_MAC, DEV_MAC, 9), { kick: false });
    plain.driver.kickTx();
    expect(plain.backend.written).toEqual(
      [...tsoSegments(spec, 1000), rawFrame(80, PEER_MAC, DEV_MAC, 9)].map(hexOf),
    );
  });

  it('flushes each burst before the guest sees its chains completed; failures become counted drops', () => {
    const { memory, backend, dev, driver } = batchingBench();
    const q = driver.queue(1);
    backend.readUsedIdx = () => memory.readU16(q.config.deviceAddr + 2);
    const frames = Array.from({ length: 40 }, (_, i) => rawFrame(60 + i * 30, PEER_MAC, DEV_MAC, i));
    for (const f of frames) driver.send(f, { kick: false });
    backend.failNext = 3;
    driver.kickTx();
    // One burst, one flush, while the used ring still showed none of it; bytes read at flush time intact.
    expect(backend.usedIdxAtFlush).toEqual([0]);
    expect(backend.written).toEqual(frames.map(hexOf));
    expect(memory.readU16(q.config.deviceAddr + 2)).toBe(40);
    expect(stats(dev).queues[0]).toMatchObject({ txPackets: 37, txDropped: 3 });
    // A backend reporting more failures than it was handed (or nonsense) cannot corrupt the counters.
    for (const bogus of [1000, -5, Number.NaN, 2.5]) {
      backend.failNext = bogus;
      driver.send(frames[0]!);
    }
    expect(stats(dev).queues[0]).toMatchObject({ txPackets: 40, txDropped: 4 });
  });
});
