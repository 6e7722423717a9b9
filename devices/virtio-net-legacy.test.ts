// The 10-byte header through the legacy interface (`disable-legacy: false`, I/O BAR0): a minimal
// legacy driver (Linux virtio_pci_legacy: features word 0, PFN-placed rings, INTx + ISR) exchanging
// frames with and without offload metadata, and the 12-byte legacy header with MRG_RXBUF.
import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../lib/memory/guest-memory.js';
import { MemoryBackend } from '../lib/net/memory-backend.js';
import { LEGACY, legacyRingLayout } from '../virtio/pci/legacy.js';
import { BumpAllocator } from '../virtio/testing/bump-allocator.js';
import { InterruptCollector, VirtioPciDriver } from '../virtio/testing/pci-driver.js';
import { SplitDriverQueue } from '../virtio/testing/split-driver.js';
import { GsoType, NetHdrFlags, readVnetHeader } from '../lib/net/vnet-header.js';
import {
  DEV_MAC,
  hexOf,
  offload,
  PEER_MAC,
  pattern,
  rawFrame,
  tcp4Frame,
} from './virtio-net/bench.test-support.js';
import { NetF } from './virtio-net/features.js';
import { createVirtioNetPci } from './virtio-net-pci.js';

const bit = (b: number) => 1 << b;

function legacyBench(wanted: number) {
  const memory = new GuestMemory([{ address: 0, bytes: new Uint8Array(0x2000000) }]);
  const irq = new InterruptCollector();
  const backend = new MemoryBackend();
  const sent: { frame: Uint8Array; offload: unknown }[] = [];
  backend.onFrame((frame, _q, off) => sent.push({ frame, offload: off }));
  const dev = createVirtioNetPci({ memory, backend, interrupts: irq, bus: 'pci', 'disable-legacy': false });
  const alloc = new BumpAllocator(0x100000, 0x2000000);
  const pci = new VirtioPciDriver(dev, memory, { allocator: alloc, interrupts: irq });
  pci.probe();
  const bars = pci.assignBars();
  const io = bars.find((b) => b.io && b.index === 0);
  expect(io, 'legacy I/O BAR0').toBeDefined();
  const r = (o: number, s: 1 | 2 | 4) => Number(dev.barRead(0, o, s));
  const w = (o: number, s: 1 | 2 | 4, v: number) => dev.barWrite(0, o, s, v);
  w(LEGACY.status, 1, 0);
  w(LEGACY.status, 1, 1);
  w(LEGACY.status, 1, 3);
  const host = r(LEGACY.hostFeatures, 4) >>> 0;
  const features = (host & wanted) >>> 0;
  w(LEGACY.guestFeatures, 4, features);
  const queues: SplitDriverQueue[] = [];
  for (const index of [0, 1]) {
    w(LEGACY.queueSel, 2, index);
    const size = r(LEGACY.queueNum, 2);
    const base = alloc.alloc(0x10000, 4096);
    const lay = legacyRingLayout(base, size);
    queues.push(
      new SplitDriverQueue(memory, {
        size,
        descAddr: lay.desc,
        availAddr: lay.avail,
        usedAddr: lay.used,
        allocator: alloc,
        index,
      }),
    );
    w(LEGACY.queuePfn, 4, base / 4096);
  }
  w(LEGACY.status, 1, 7);
  const hdr = features & bit(NetF.MRG_RXBUF) ? 12 : 10;
  const kick = (i: number) => w(LEGACY.queueNotify, 2, i);
  const rxBufs = new Map<number, number>();
  const postRx = (n: number, size = 2048) => {
    for (let i = 0; i < n; i++) {
      const a = alloc.alloc(size, 64);
      rxBufs.set(queues[0]!.add([], [{ addr: a, len: size }]), a);
    }
    kick(0);
  };
  const receive = () => {
    const out: { frame: Uint8Array; header: Uint8Array }[] = [];
    for (let u = queues[0]!.getUsed(); u; u = queues[0]!.getUsed()) {
      const bytes = memory.read(rxBufs.get(u.id)!, u.len);
      out.push({ header: bytes.slice(0, hdr), frame: bytes.slice(hdr) });
    }
    return out;
  };
  const send = (frame: Uint8Array, header = new Uint8Array(hdr), split = true) => {
    const all = new Uint8Array(hdr + frame.length);
    all.set(header.subarray(0, hdr));
    all.set(frame, hdr);
    queues[1]!.add(split ? [all.slice(0, hdr), all.slice(hdr)] : [all], []);
    kick(1);
  };
  return { dev, backend, sent, r, w, features, hdr, postRx, receive, send, irq, configOff: 20 };
}

describe('legacy interface: 10-byte header', () => {
  const WANT =
    bit(NetF.CSUM) |
    bit(NetF.GUEST_CSUM) |
    bit(NetF.MAC) |
    bit(NetF.STATUS) |
    bit(NetF.HOST_TSO4) |
    bit(NetF.GUEST_TSO4);

  it('negotiates without VERSION_1 and MRG_RXBUF; MAC and status at offset 20', () => {
    const b = legacyBench(WANT);
    expect(b.features).toBe(WANT);
    expect(b.hdr).toBe(10);
    const mac = Array.from({ length: 6 }, (_, i) =>
      b
        .r(b.configOff + i, 1)
        .toString(16)
        .padStart(2, '0'),
    ).join(':');
    expect(mac).toBe(DEV_MAC);
    expect(b.r(b.configOff + 6, 2)).toBe(1);
    expect(b.backend.vnetHeaderSizeCalls.at(-1)).toBe(10);
  });

  it('rx: frames after a 10-byte header, offload fields in it; tx: header split or not, offload metadata passed', () => {
    const b = legacyBench(WANT);
    b.postRx(8, 65562);
    const f = rawFrame(1000, DEV_MAC, PEER_MAC, 4);
    b.backend.inject(f);
    const off = offload({
      flags: NetHdrFlags.NEEDS_CSUM,
      gsoType: GsoType.TCPV4,
      hdrLen: 54,
      gsoSize: 1400,
      csumStart: 34,
      csumOffset: 16,
    });
    const t = tcp4Frame({ payload: pattern(3000), csum: 'partial' });
    b.backend.inject(t, 0, off);
    const got = b.receive();
    expect(got.map((g) => hexOf(g.frame))).toEqual([hexOf(f), hexOf(t)]);
    expect(got.map((g) => g.header.length)).toEqual([10, 10]);
    expect(hexOf(got[0]!.header)).toBe('00'.repeat(10));
    expect(readVnetHeader(got[1]!.header, 0, offload())).toEqual(off);
    const out = rawFrame(300, PEER_MAC, DEV_MAC, 8);
    b.send(out);
    b.send(out, new Uint8Array(10), false);
    const h = new Uint8Array(10);
    h[0] = 1;
    h[6] = 34;
    h[8] = 16;
    b.send(t, h);
    expect(b.sent.map((s) => hexOf(s.frame))).toEqual([hexOf(out), hexOf(out), hexOf(t)]);
    expect(b.sent.map((s) => s.offload)).toEqual([
      null,
      null,
      offload({ flags: 1, csumStart: 34, csumOffset: 16 }),
    ]);
  });

  it('a legacy driver without CTRL_MAC_ADDR may write the MAC into config space', () => {
    const b = legacyBench(WANT);
    const mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
    mac.forEach((x, i) => {
      b.w(b.configOff + i, 1, x);
    });
    const read = Array.from({ length: 6 }, (_, i) => b.r(b.configOff + i, 1));
    expect(read).toEqual(mac);
  });

  it('legacy with MRG_RXBUF: 12-byte header with num_buffers', () => {
    const b = legacyBench(WANT | bit(NetF.MRG_RXBUF));
    expect(b.hdr).toBe(12);
    b.postRx(4, 1024);
    const f = rawFrame(2500, DEV_MAC, PEER_MAC, 1);
    b.backend.inject(f);
    const got = b.receive();
    expect(got).toHaveLength(3);
    expect(got[0]!.header[10]).toBe(3);
  });
});
