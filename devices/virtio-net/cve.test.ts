// Regression tests for the virtio-net / virtio-core CVE classes of other device models (QEMU, vhost,
// DPDK, Firecracker, ...), through the public API: each test is named after its class and asserts the
// answer docs/security.md gives (NEEDS_RESET, an error ack, a counted drop, nothing written outside
// the buffers). Classes the ring or transport tests already cover are listed there, not repeated here.
import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { MemoryBackend } from '../../lib/net/memory-backend.js';
import { VIRTQ_DESC_F_AVAIL } from '../../virtio/queue/packed-ring.js';
import {
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
} from '../../virtio/queue/split-ring.js';
import { BumpAllocator } from '../../virtio/testing/bump-allocator.js';
import { InterruptCollector, VirtioPciDriver } from '../../virtio/testing/pci-driver.js';
import { LINUX_6_1_FEATURES } from '../testing/net-driver.js';
import { createVirtioNetPci, type VirtioNetPci } from '../virtio-net-pci.js';
import {
  type Bench,
  DEV_MAC,
  hexOf,
  makeBench,
  offload,
  PEER_MAC,
  pattern,
  rawFrame,
  tcp4Frame,
} from './bench.test-support.js';
import { CtrlClass, CtrlMac, VIRTIO_NET_ERR, VIRTIO_NET_OK } from './control-queue.js';
import { NetF } from './features.js';
import { GsoType, NetHdrFlags } from '../../lib/net/vnet-header.js';

const NEEDS_RESET = 0x40;
const MEM = 0x1000000; // 16 MiB of guest RAM
const bit = (b: number) => 1n << BigInt(b);

/** A device on 16 MiB of guest RAM at 0, opened by the synthetic Linux driver. */
function bench(
  options: Record<string, unknown> = {},
  backend: Record<string, unknown> = {},
  driver: Record<string, unknown> = {},
): Bench {
  const memory = new GuestMemory([{ address: 0, bytes: new Uint8Array(MEM) }]);
  const b = makeBench(
    options,
    backend,
    { allocator: new BumpAllocator(0x10000, MEM - 0x1000), rxBuffers: 8, ...driver },
    memory,
  );
  b.driver.open();
  return b;
}

const broken = (b: Bench) => (b.driver.pci.status & NEEDS_RESET) !== 0;

/** After NEEDS_RESET: a reset and a new open give a working NIC again. */
function recovers(b: Bench): void {
  b.driver.open();
  expect(broken(b)).toBe(false);
  const f = rawFrame(100, PEER_MAC, DEV_MAC, 9);
  const before = b.sent.length;
  b.driver.send(f);
  expect(b.sent.slice(before).map((s) => hexOf(s.frame))).toEqual([hexOf(f)]);
}

/** A tx buffer in guest memory holding a valid header (all zero) and a frame. */
function txBuffer(b: Bench, frameLength = 100): { addr: number; len: number } {
  const hdr = b.driver.hdrSize;
  const addr = b.driver.pci.allocator.alloc(hdr + frameLength, 64);
  b.memory.write(addr, new Uint8Array(hdr));
  b.memory.write(addr + hdr, rawFrame(frameLength, PEER_MAC, DEV_MAC, 1));
  return { addr, len: hdr + frameLength };
}

/** Raw writes into a split ring the guest owns (as a hostile driver would make them). */
function splitRing(b: Bench, index: number) {
  const { descAddr, driverAddr, size } = b.driver.queue(index).config;
  const m = b.memory;
  const desc = (table: number, i: number, addr: number | bigint, len: number, flags: number, next = 0) => {
    const o = table + 16 * i;
    m.writeU64(o, BigInt(addr));
    m.writeU32(o + 8, len >>> 0);
    m.writeU16(o + 12, flags);
    m.writeU16(o + 14, next);
  };
  const post = (head: number) => {
    const idx = m.readU16(driverAddr + 2);
    m.writeU16(driverAddr + 4 + 2 * (idx % size), head);
    m.writeU16(driverAddr + 2, (idx + 1) & 0xffff);
  };
  const table = (entries: number) => b.driver.pci.allocator.alloc(16 * entries, 16);
  return { desc, post, table, size, descAddr, driverAddr };
}

/** Raw writes into a packed ring (first lap: AVAIL set, USED clear). */
function packedRing(b: Bench, index: number) {
  const { descAddr, size } = b.driver.queue(index).config;
  const m = b.memory;
  const put = (slot: number, addr: number | bigint, len: number, id: number, flags: number) => {
    const o = descAddr + 16 * slot;
    m.writeU64(o, BigInt(addr));
    m.writeU32(o + 8, len >>> 0);
    m.writeU16(o + 12, id);
    m.writeU16(o + 14, flags | VIRTQ_DESC_F_AVAIL);
  };
  const table = (entries: number) => b.driver.pci.allocator.alloc(16 * entries, 16);
  return { put, table, size, descAddr };
}

type Split = ReturnType<typeof splitRing>;
const { NEXT, WRITE, INDIRECT } = {
  NEXT: VIRTQ_DESC_F_NEXT,
  WRITE: VIRTQ_DESC_F_WRITE,
  INDIRECT: VIRTQ_DESC_F_INDIRECT,
};

describe('malformed descriptor chains reach the device: DEVICE_NEEDS_RESET, never a throw or a hang', () => {
  // Each builder writes a chain at head 0 of the tx queue (buffer `buf` holds a valid header + frame).
  const split: [string, (r: Split, buf: { addr: number; len: number }, b: Bench) => void][] = [
    [
      'descriptor loop (next points back)',
      (r, buf) => {
        r.desc(r.descAddr, 0, buf.addr, buf.len, NEXT, 1);
        r.desc(r.descAddr, 1, buf.addr, buf.len, NEXT, 0);
      },
    ],
    ['descriptor loop (self)', (r, buf) => r.desc(r.descAddr, 0, buf.addr, buf.len, NEXT, 0)],
    [
      'descriptor loop inside an indirect table',
      (r, buf) => {
        const t = r.table(2);
        r.desc(r.descAddr, 0, t, 32, INDIRECT);
        r.desc(t, 0, buf.addr, buf.len, NEXT, 1);
        r.desc(t, 1, buf.addr, buf.len, NEXT, 0);
      },
    ],
    [
      'indirect table longer than the queue',
      (r, buf) => {
        const n = r.size + 1;
        const t = r.table(n);
        r.desc(r.descAddr, 0, t, 16 * n, INDIRECT);
        for (let i = 0; i < n; i++) r.desc(t, i, buf.addr, 1, i < n - 1 ? NEXT : 0, i + 1);
      },
    ],
    [
      'nested indirect table',
      (r, buf) => {
        const t = r.table(1);
        const inner = r.table(1);
        r.desc(r.descAddr, 0, t, 16, INDIRECT);
        r.desc(t, 0, inner, 16, INDIRECT);
        r.desc(inner, 0, buf.addr, buf.len, 0);
      },
    ],
    [
      'indirect table length not a multiple of 16',
      (r, buf) => {
        const t = r.table(2);
        r.desc(r.descAddr, 0, t, 24, INDIRECT);
        r.desc(t, 0, buf.addr, buf.len, 0);
      },
    ],
    ['indirect table length 0', (r) => r.desc(r.descAddr, 0, r.table(1), 0, INDIRECT)],
    [
      'INDIRECT together with NEXT',
      (r, buf) => {
        const t = r.table(1);
        r.desc(r.descAddr, 0, t, 16, INDIRECT | NEXT, 1);
        r.desc(t, 0, buf.addr, buf.len, 0);
        r.desc(r.descAddr, 1, buf.addr, buf.len, 0);
      },
    ],
    ['next index beyond the queue size', (r, buf) => r.desc(r.descAddr, 0, buf.addr, buf.len, NEXT, r.size)],
    [
      'next index beyond an indirect table',
      (r, buf) => {
        const t = r.table(2);
        r.desc(r.descAddr, 0, t, 32, INDIRECT);
        r.desc(t, 0, buf.addr, buf.len, NEXT, 2);
      },
    ],
    [
      'zero-length descriptors only (no room for the header)',
      (r, buf) => r.desc(r.descAddr, 0, buf.addr, 0, 0),
    ],
    ['a 4 GiB - 1 byte descriptor', (r, buf) => r.desc(r.descAddr, 0, buf.addr, 0xffffffff, 0)],
    ['a descriptor crossing the end of guest RAM', (r) => r.desc(r.descAddr, 0, MEM - 50, 100, 0)],
    ['a descriptor at 2^64 - 16', (r) => r.desc(r.descAddr, 0, 2n ** 64n - 16n, 100, 0)],
    ['an indirect table outside guest RAM', (r) => r.desc(r.descAddr, 0, MEM + 0x1000, 32, INDIRECT)],
    [
      'readable after writable',
      (r, buf) => {
        r.desc(r.descAddr, 0, buf.addr, buf.len, NEXT | WRITE, 1);
        r.desc(r.descAddr, 1, buf.addr, buf.len, 0);
      },
    ],
  ];

  for (const [name, build] of split) {
    it(`split tx: ${name}`, () => {
      const b = bench();
      const r = splitRing(b, 1);
      build(r, txBuffer(b), b);
      r.post(0);
      expect(() => b.driver.pci.kick(1)).not.toThrow();
      expect(broken(b)).toBe(true);
      expect(b.sent).toHaveLength(0);
      expect(b.dev.stats().guestErrors).toBe(1);
      recovers(b);
    });
  }

  it('split tx: head index beyond the queue size', () => {
    const b = bench();
    const r = splitRing(b, 1);
    r.post(r.size);
    expect(() => b.driver.pci.kick(1)).not.toThrow();
    expect(broken(b)).toBe(true);
    recovers(b);
  });

  /** Entry `i` of a packed indirect table (the ring-slot layout; only WRITE counts inside). */
  const entry = (b: Bench, table: number, i: number, addr: number, len: number, flags: number) => {
    b.memory.writeU64(table + 16 * i, BigInt(addr));
    b.memory.writeU32(table + 16 * i + 8, len);
    b.memory.writeU16(table + 16 * i + 14, flags);
  };
  type Packed = ReturnType<typeof packedRing>;
  const packed: [string, (r: Packed, buf: { addr: number; len: number }, b: Bench) => void][] = [
    [
      'every slot says NEXT (a chain longer than the ring)',
      (r, buf) => {
        for (let i = 0; i < r.size; i++) r.put(i, buf.addr, buf.len, 0, NEXT);
      },
    ],
    [
      'nested indirect table',
      (r, buf, b) => {
        const t = r.table(1);
        const inner = r.table(1);
        r.put(0, t, 16, 0, INDIRECT);
        entry(b, t, 0, inner, 16, INDIRECT);
        entry(b, inner, 0, buf.addr, buf.len, 0);
      },
    ],
    ['indirect table length not a multiple of 16', (r) => r.put(0, r.table(2), 24, 0, INDIRECT)],
    [
      'indirect table longer than the queue',
      (r) => r.put(0, r.table(r.size + 1), 16 * (r.size + 1), 0, INDIRECT),
    ],
    ['buffer id beyond the queue size', (r, buf) => r.put(0, buf.addr, buf.len, r.size, 0)],
    ['a descriptor crossing the end of guest RAM', (r) => r.put(0, MEM - 50, 100, 0, 0)],
  ];

  for (const [name, build] of packed) {
    it(`packed tx: ${name}`, () => {
      const b = bench({ packed: true });
      build(packedRing(b, 1), txBuffer(b), b);
      expect(() => b.driver.pci.kick(1)).not.toThrow();
      expect(broken(b)).toBe(true);
      expect(b.sent).toHaveLength(0);
      recovers(b);
    });
  }
});

describe('avail index more than the queue size ahead (QEMU "Virtqueue size exceeded", CVE-2016-5403)', () => {
  for (const index of [1, 2]) {
    it(`${index === 1 ? 'tx' : 'control'} queue kicked with avail idx = last + size + 1: NEEDS_RESET, nothing processed`, () => {
      const b = bench();
      const r = splitRing(b, index);
      const idx = b.memory.readU16(r.driverAddr + 2);
      b.memory.writeU16(r.driverAddr + 2, (idx + r.size + 1) & 0xffff);
      const commands = b.dev.stats().ctrlCommands;
      expect(() => b.driver.pci.kick(index)).not.toThrow();
      expect(broken(b)).toBe(true);
      expect(b.sent).toHaveLength(0);
      expect(b.dev.stats().ctrlCommands).toBe(commands);
      recovers(b);
    });
  }

  it('rx queue: a frame arriving on a ring with avail idx = last + size + 1 is not delivered; the backend sees no throw', () => {
    const b = bench({}, { receive: 'copy' });
    const r = splitRing(b, 0);
    const idx = b.memory.readU16(r.driverAddr + 2);
    b.memory.writeU16(r.driverAddr + 2, (idx + r.size + 1) & 0xffff);
    expect(() => b.backend.inject(rawFrame(100))).not.toThrow();
    expect(broken(b)).toBe(true);
    expect(() => b.backend.inject(rawFrame(100))).not.toThrow();
    expect(b.dev.stats().rxDropped).toBeGreaterThanOrEqual(1); // the frame after NEEDS_RESET, counted
    recovers(b);
  });
});

describe('bad queue index in a notification (CVE-2011-2512)', () => {
  it('modern notify area: kicks of queues that do not exist are ignored, any width and value', () => {
    const b = bench();
    const { bar, offset } = notifyCap(b);
    for (const q of [3, 7, 100, 1023])
      for (const [size, v] of [
        [2, 0xffff],
        [4, 0xffffffff],
        [2, q],
        [1, 0xff],
      ] as const)
        expect(() => b.dev.barWrite(bar, offset + 4 * q, size, v)).not.toThrow();
    expect(b.driver.pci.status).toBe(0x0f);
    recovers(b);
  });

  it('legacy VIRTIO_PCI_QUEUE_NOTIFY with 0xffff, 0x8000 and indices past the queues: ignored', () => {
    const memory = new GuestMemory([{ address: 0, bytes: new Uint8Array(MEM) }]);
    const backend = new MemoryBackend();
    const sent: Uint8Array[] = [];
    backend.onFrame((f) => sent.push(f));
    const dev = createVirtioNetPci({
      memory,
      backend,
      interrupts: new InterruptCollector(),
      bus: 'pci',
      'disable-legacy': false,
    });
    const pci = new VirtioPciDriver(dev, memory, { allocator: new BumpAllocator(0x10000, MEM) });
    pci.probe();
    pci.assignBars(); // decodes BAR0 (I/O space enable)
    const r = (o: number, s: 1 | 2 | 4) => Number(dev.barRead(0, o, s));
    const w = (o: number, s: 1 | 2 | 4, v: number) => dev.barWrite(0, o, s, v);
    // Legacy bring-up (VIRTIO_PCI_* registers): no features, the tx queue at PFN 0x100, DRIVER_OK.
    w(18, 1, 3);
    w(4, 4, 0);
    w(14, 2, 1);
    const size = r(12, 2);
    w(8, 4, 0x100);
    w(18, 1, 7);
    for (const v of [0xffff, 0x8000, 0x7fff, 1024, 3, 2])
      for (const s of [2, 4] as const) expect(() => w(16, s, v)).not.toThrow();
    expect(r(18, 1)).toBe(7);
    // Still a working device: a 10-byte header + frame on the tx ring (legacy layout at 0x100000).
    const base = 0x100000;
    const frame = rawFrame(60, PEER_MAC, DEV_MAC, 4);
    memory.write(0x200000, new Uint8Array(10));
    memory.write(0x20000a, frame);
    memory.writeU64(base, 0x200000n);
    memory.writeU32(base + 8, 70);
    memory.writeU16(base + 16 * size + 4, 0);
    memory.writeU16(base + 16 * size + 2, 1);
    w(16, 2, 1);
    expect(sent.map(hexOf)).toEqual([hexOf(frame)]);
  });
});

/** The modern notify capability (cfg_type 2): its BAR and offset. */
function notifyCap(b: Bench): { bar: number; offset: number } {
  const cap = b.driver.pci.caps.find((c) => c.cfgType === 2)!;
  return { bar: cap.bar, offset: cap.offset };
}

describe('MAC table entry counts that overflow 32-bit arithmetic (CVE-2014-0150)', () => {
  const le32 = (v: number) => Uint8Array.of(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24);
  const cat = (...parts: Uint8Array[]) => Uint8Array.from(parts.flatMap((p) => Array.from(p)));
  // 6 * 0x2AAAAAAB = 2^32 + 2: a 32-bit multiply sees 2 bytes of MACs.
  const cases: [string, Uint8Array][] = [
    ['unicast 0x2AAAAAAB', cat(le32(0x2aaaaaab), new Uint8Array(2), le32(0))],
    ['multicast 0x2AAAAAAB', cat(le32(0), le32(0x2aaaaaab), new Uint8Array(2))],
    ['unicast 0xFFFFFFFF', cat(le32(0xffffffff), new Uint8Array(6 * 4), le32(0))],
    ['multicast 0xFFFFFFFF', cat(le32(1), new Uint8Array(6), le32(0xffffffff), new Uint8Array(12))],
    ['65 unicast entries, one MAC short', cat(le32(65), new Uint8Array(6 * 64), le32(0))],
  ];
  for (const [name, data] of cases) {
    it(`MAC_TABLE_SET with ${name}: VIRTIO_NET_ERR, table unchanged, no NEEDS_RESET`, () => {
      const b = bench();
      expect(b.driver.setMacTable(['02:00:00:00:00:01'], ['01:00:5e:00:00:01'])).toBe(VIRTIO_NET_OK);
      const before = JSON.stringify(b.dev.net.rxFilter.state());
      expect(b.driver.control(CtrlClass.MAC, CtrlMac.TABLE_SET, data)).toBe(VIRTIO_NET_ERR);
      expect(JSON.stringify(b.dev.net.rxFilter.state())).toBe(before);
      expect(broken(b)).toBe(false);
      b.backend.inject(rawFrame(60, '02:00:00:00:00:01'));
      b.backend.inject(rawFrame(60, '02:00:00:00:00:02'));
      expect(b.driver.receive().map((f) => hexOf(f.frame))).toEqual([
        hexOf(rawFrame(60, '02:00:00:00:00:01')),
      ]);
    });
  }
});

describe('20-byte HASH_REPORT header on tx (CVE-2023-6693)', () => {
  // (Hash report needs a vnet-header backend: without one the device does not offer it.)
  it('every header layout is read into a 20-byte header: frames exact, nothing leaked', () => {
    const b = bench({ hash: true });
    expect(b.driver.has(NetF.HASH_REPORT) && b.driver.has(NetF.MRG_RXBUF)).toBe(true);
    expect(b.driver.hdrSize).toBe(20);
    const q = b.driver.queue(1);
    const frames = [60, 61, 1514, 9000].map((n, i) => rawFrame(n, PEER_MAC, DEV_MAC, i));
    // A header whose hash_value / hash_report / padding / num_buffers bytes are all ones.
    const header = new Uint8Array(20);
    header.fill(0xff, 10);
    const bytes = (...parts: Uint8Array[]) => Uint8Array.from(parts.flatMap((p) => Array.from(p)));
    for (const f of frames) {
      b.driver.send(f); // header and frame in one descriptor (zero copy)
      b.driver.send(f, { split: true });
      b.driver.send(f, { split: true, indirect: true });
      // Header in 20 one-byte descriptors, the frame in three pieces.
      const pieces = [
        ...Array.from(header, (x) => Uint8Array.of(x)),
        f.slice(0, 5),
        f.slice(5, 40),
        f.slice(40),
      ];
      q.add(pieces, []);
      b.driver.pci.kick(1);
      q.add([bytes(header, f)], [], { indirect: true });
      b.driver.pci.kick(1);
    }
    expect(broken(b)).toBe(false);
    expect(b.sent.map((s) => hexOf(s.frame))).toEqual(frames.flatMap((f) => Array(5).fill(hexOf(f))));
    expect(b.sent.every((s) => s.offload === null)).toBe(true);
    // 20 bytes: a header and no frame is a counted drop; 19 bytes cannot hold the header: NEEDS_RESET.
    q.add([header], []);
    b.driver.pci.kick(1);
    expect(b.dev.stats().txDropped).toBe(1);
    q.add([header.subarray(0, 19)], []);
    b.driver.pci.kick(1);
    expect(broken(b)).toBe(true);
  });
});

/** Posts `n` rx buffers of `len` bytes, each between 64-byte guards of 0xa5, the buffers filled with 0x5a. */
function guardedRxBuffers(b: Bench, n: number, len: number) {
  const stride = len + 64;
  const base = b.driver.pci.allocator.alloc(64 + n * stride, 64);
  b.memory.write(base, new Uint8Array(64 + n * stride).fill(0xa5));
  const q = b.driver.queue(0);
  const bufs: { id: number; addr: number }[] = [];
  for (let i = 0; i < n; i++) {
    const addr = base + 64 + i * stride;
    b.memory.write(addr, new Uint8Array(len).fill(0x5a));
    bufs.push({ id: q.add([], [{ addr, len }]), addr });
  }
  b.driver.pci.kick(0);
  const guardsIntact = () => {
    for (let i = 0; i <= n; i++) {
      const g = b.memory.read(base + i * stride, 64);
      if (!g.every((x) => x === 0xa5)) return false;
    }
    return true;
  };
  return { bufs, guardsIntact };
}

function takeUsed(b: Bench): { id: number; len: number }[] {
  const q = b.driver.queue(0);
  const out: { id: number; len: number }[] = [];
  for (let u = q.getUsed(); u; u = q.getUsed()) out.push({ id: u.id, len: u.len });
  return out;
}

describe('mergeable rx buffers (CVE-2021-3748, CVE-2022-26353; vhost-net CVE-2014-0055, CVE-2014-0077)', () => {
  for (const receive of ['copy', 'direct'] as const)
    for (const packed of [false, true])
      it(`num_buffers is written into the first buffer of the frame, nothing outside the used lengths (${receive}, ${packed ? 'packed' : 'split'})`, () => {
        const b = bench({ packed }, { receive }, { rxBuffers: 0 });
        const { bufs, guardsIntact } = guardedRxBuffers(b, 6, 256);
        const f = rawFrame(1000, DEV_MAC, PEER_MAC, 5);
        b.backend.inject(f);
        const used = takeUsed(b);
        expect(used).toEqual([
          { id: bufs[0]!.id, len: 256 },
          { id: bufs[1]!.id, len: 256 },
          { id: bufs[2]!.id, len: 256 },
          { id: bufs[3]!.id, len: 1012 - 3 * 256 },
        ]);
        const stream = Uint8Array.from(
          used.flatMap((u, i) => Array.from(b.memory.read(bufs[i]!.addr, u.len))),
        );
        expect(stream[10]! | (stream[11]! << 8)).toBe(4);
        expect(hexOf(stream.subarray(12))).toBe(hexOf(f));
        expect(guardsIntact()).toBe(true);
        // The last buffer past its used length, and the buffers the frame did not need, are untouched.
        expect(b.memory.read(bufs[3]!.addr + 244, 12).every((x) => x === 0x5a)).toBe(true);
        for (const k of [4, 5]) expect(b.memory.read(bufs[k]!.addr, 256).every((x) => x === 0x5a)).toBe(true);
      });

  it('too few buffers for a frame: every popped buffer goes back, in order, and is used by the next frames', () => {
    const b = bench({}, { receive: 'copy' }, { rxBuffers: 0 });
    const first = guardedRxBuffers(b, 3, 256);
    const f = rawFrame(1500, DEV_MAC, PEER_MAC, 6);
    b.backend.inject(f); // needs 6 buffers: waits
    expect(takeUsed(b)).toEqual([]);
    const more = guardedRxBuffers(b, 4, 256); // the kick delivers it
    const used = takeUsed(b);
    expect(used.map((u) => u.id)).toEqual([...first.bufs, ...more.bufs.slice(0, 3)].map((x) => x.id));
    expect(used.reduce((n, u) => n + u.len, 0)).toBe(1512);
    b.backend.inject(rawFrame(60));
    expect(takeUsed(b).map((u) => u.id)).toEqual([more.bufs[3]!.id]);
    expect(first.guardsIntact() && more.guardsIntact()).toBe(true);
    expect(broken(b)).toBe(false);
  });

  // Was a bug: with too few bytes posted for a mergeable frame the device re-polled the ring on every
  // event-loop turn; now it waits for the kick its pops armed (QEMU virtio_net_has_buffers).
  it('too few bytes for a mergeable frame: the device waits for the next kick instead of polling the ring', async () => {
    const b = bench({}, { receive: 'copy' }, { rxBuffers: 0 });
    guardedRxBuffers(b, 2, 256);
    const real = globalThis.setImmediate;
    let scheduled = 0;
    globalThis.setImmediate = ((fn: (...a: unknown[]) => void, ...a: unknown[]) => {
      scheduled++;
      return real(fn, ...a);
    }) as typeof setImmediate;
    try {
      b.backend.inject(rawFrame(1500));
      // 50 turns of the event loop (counted in turns, not time: a loaded machine runs fewer per ms).
      for (let i = 0; i < 50; i++) await new Promise((r) => real(r));
    } finally {
      globalThis.setImmediate = real;
      guardedRxBuffers(b, 8, 256); // lets the frame go (and any polling stop)
    }
    expect(scheduled).toBeLessThan(5);
  });

  it('a chain without writable buffers in the middle of a frame: NEEDS_RESET, no partial frame written', () => {
    const b = bench({}, { receive: 'copy' }, { rxBuffers: 0 });
    const { bufs, guardsIntact } = guardedRxBuffers(b, 1, 256);
    b.driver.queue(0).add([new Uint8Array(64)], []);
    b.driver.pci.kick(0);
    expect(() => b.backend.inject(rawFrame(1000))).not.toThrow();
    expect(broken(b)).toBe(true);
    expect(b.memory.read(bufs[0]!.addr, 256).every((x) => x === 0x5a)).toBe(true);
    expect(guardsIntact()).toBe(true);
    recovers(b);
  });

  it('without MRG_RXBUF: a frame larger than the buffer, or a zero-length buffer, is a counted drop', () => {
    const noMrg = LINUX_6_1_FEATURES & ~bit(NetF.MRG_RXBUF);
    for (const len of [0, 1000]) {
      const b = bench({}, { receive: 'copy' }, { wanted: noMrg, rxBuffers: 0 });
      const { bufs, guardsIntact } = guardedRxBuffers(b, 1, len);
      expect(() => b.backend.inject(rawFrame(1500))).not.toThrow();
      expect(b.dev.stats().rxDropped).toBe(1);
      expect(takeUsed(b)).toEqual([]);
      expect(b.memory.read(bufs[0]!.addr, len).every((x) => x === 0x5a)).toBe(true);
      expect(guardsIntact()).toBe(true);
      expect(broken(b)).toBe(false);
    }
  });

  it('device-readable descriptors before the writable ones are never written', () => {
    const b = bench({}, { receive: 'copy' }, { rxBuffers: 0 });
    const ro = b.driver.pci.allocator.alloc(64, 64);
    const rw = b.driver.pci.allocator.alloc(2048, 64);
    b.memory.write(ro, new Uint8Array(64).fill(0x77));
    b.driver.queue(0).add([{ addr: ro, len: 64 }], [{ addr: rw, len: 2048 }]);
    b.driver.pci.kick(0);
    const f = rawFrame(100, DEV_MAC, PEER_MAC, 7);
    b.backend.inject(f);
    expect(takeUsed(b)).toHaveLength(1);
    expect(b.memory.read(ro, 64).every((x) => x === 0x77)).toBe(true);
    expect(hexOf(b.memory.read(rw + 12, 100))).toBe(hexOf(f));
  });
});

describe('checksum offsets out of bounds (DPDK CVE-2024-11614)', () => {
  const spec = { payload: pattern(200, 2), csum: 'partial' as const, dst: PEER_MAC, src: DEV_MAC };
  const f = tcp4Frame(spec);
  const n = f.length;
  const bad: [number, number][] = [
    [n, 0],
    [n - 1, 0],
    [0, n - 1],
    [34, n - 35],
    [0xffff, 0xffff],
    [34, 0xffff],
  ];

  it('tx, checksum completed in software: each bad csum_start / csum_offset is a counted drop', () => {
    const b = bench({}, { vnetHeader: false });
    for (const [csumStart, csumOffset] of bad)
      b.driver.send(f, { offload: { flags: NetHdrFlags.NEEDS_CSUM, csumStart, csumOffset } });
    expect(b.sent).toHaveLength(0);
    expect(b.dev.stats().txDropped).toBe(bad.length);
    b.driver.send(f, { offload: { flags: NetHdrFlags.NEEDS_CSUM, csumStart: 34, csumOffset: 16 } });
    expect(b.sent.map((s) => hexOf(s.frame))).toEqual([hexOf(tcp4Frame({ ...spec, csum: 'full' }))]);
    expect(broken(b)).toBe(false);
  });

  for (const receive of ['copy', 'direct'] as const)
    it(`rx from the backend to a guest without GUEST_CSUM: bad offsets and GSO fields are counted drops (${receive})`, () => {
      const wanted =
        LINUX_6_1_FEATURES &
        ~(
          bit(NetF.GUEST_CSUM) |
          bit(NetF.GUEST_TSO4) |
          bit(NetF.GUEST_TSO6) |
          bit(NetF.GUEST_ECN) |
          bit(NetF.GUEST_UFO)
        );
      const b = bench({}, { receive }, { wanted });
      const rx = tcp4Frame({ ...spec, dst: DEV_MAC, src: PEER_MAC });
      const offloads = [
        ...bad.map(([csumStart, csumOffset]) =>
          offload({ flags: NetHdrFlags.NEEDS_CSUM, csumStart, csumOffset }),
        ),
        offload({ gsoType: GsoType.TCPV4, gsoSize: 0, hdrLen: 54 }),
        offload({ gsoType: GsoType.TCPV4, gsoSize: 100, hdrLen: 0xffff }),
      ];
      for (const o of offloads) expect(() => b.backend.inject(rx, 0, o)).not.toThrow();
      expect(b.driver.receive()).toEqual([]);
      expect(b.dev.stats().rxDropped).toBe(offloads.length);
      expect(broken(b)).toBe(false);
    });
});

/** The JSON snapshot of `b` and a fresh device on the same guest memory to restore it into. */
function restorable(b: Bench, options: Record<string, unknown> = {}) {
  const snap = JSON.parse(JSON.stringify(b.dev.snapshot()));
  const backend = new MemoryBackend();
  const dev: VirtioNetPci = createVirtioNetPci({
    memory: b.memory,
    backend,
    interrupts: new InterruptCollector(),
    ...options,
  });
  const { bar, offset } = notifyCap(b);
  const kick = (q: number) => dev.barWrite(bar, offset + 4 * q, 2, q);
  return {
    snap,
    net: snap.transport.transport.device,
    transport: snap.transport.transport,
    dev,
    backend,
    kick,
  };
}

/** After restoring: frames from the backend never throw, and each is delivered or counted. */
function framesFlow(dev: VirtioNetPci, backend: MemoryBackend): void {
  const before = dev.stats();
  for (const f of [rawFrame(60), tcp4Frame({ payload: pattern(100) })])
    expect(() => backend.inject(f)).not.toThrow();
  const after = dev.stats();
  expect(after.rxPackets + after.rxDropped + after.queues.reduce((n, q) => n + q.rxFiltered, 0)).toBe(
    before.rxPackets + before.rxDropped + before.queues.reduce((n, q) => n + q.rxFiltered, 0) + 2,
  );
}

describe('state load: a snapshot is checked like a migration stream (CVE-2013-4148/4149/4150/4151, CVE-2013-6399)', () => {
  const macs = (n: number, first: number) =>
    Array.from(
      { length: n },
      (_, i) =>
        `${first.toString(16).padStart(2, '0')}:00:00:00:${((i >> 8) & 0xff).toString(16).padStart(2, '0')}:${(i & 0xff).toString(16).padStart(2, '0')}`,
    );

  it('a MAC table of 1000 + 1000 entries is not taken: empty with both overflow flags, as QEMU loads it; frames keep flowing', () => {
    const b = bench();
    const r = restorable(b);
    r.net.rxFilter.unicast = macs(1000, 0x02);
    r.net.rxFilter.multicast = macs(1000, 0x01);
    r.net.rxFilter.promisc = false;
    expect(() => r.dev.restore(r.snap)).not.toThrow();
    const st = r.dev.net.rxFilter.state();
    expect(st.unicast.length + st.multicast.length).toBe(0);
    expect(st.uniOverflow && st.multiOverflow).toBe(true);
    framesFlow(r.dev, r.backend);
  });

  it('curQueuePairs beyond max_virtqueue_pairs (or below 1) is refused by name, as QEMU fails the load', () => {
    for (const pairs of [1000, 0, -5]) {
      const b = bench({ mq: true, queues: 2 });
      const r = restorable(b, { mq: true, queues: 2 });
      r.net.curQueuePairs = pairs;
      expect(() => r.dev.restore(r.snap)).toThrow(/field "curQueuePairs": expected 1..2/);
      expect(r.dev.stats().queuePairs).toBeGreaterThanOrEqual(1);
      expect(r.dev.stats().queuePairs).toBeLessThanOrEqual(2);
      framesFlow(r.dev, r.backend);
    }
  });

  // Was a bug: a missing curQueuePairs became NaN and every received frame threw; restore now validates
  // the whole state first (devices/virtio-net/persist.ts).
  it('a snapshot without curQueuePairs is rejected at restore or restores a working device', () => {
    const b = bench({ mq: true, queues: 2 });
    const r = restorable(b, { mq: true, queues: 2 });
    delete r.net.curQueuePairs;
    let threw = false;
    try {
      r.dev.restore(r.snap);
    } catch {
      threw = true;
    }
    if (!threw) framesFlow(r.dev, r.backend);
  });

  // Was a bug (the CVE-2024-6505 class on load): queues past max_virtqueue_pairs were restored and every
  // frame threw; restore now refuses them as RSS_CONFIG does.
  it('RSS indirection table / unclassified queue past max_virtqueue_pairs in a snapshot (CVE-2024-6505 on load)', () => {
    const b = bench({ mq: true, rss: true, queues: 2 });
    b.driver.rxMode(0, true);
    expect(
      b.driver.setRss({ hashTypes: 0x3f, table: [0, 1], maxTxVq: 2, key: new Uint8Array(40).fill(7) }),
    ).toBe(VIRTIO_NET_OK);
    const r = restorable(b, { mq: true, rss: true, queues: 2 });
    r.net.rss.table = [7, 9];
    r.net.rss.unclassified = 5;
    let threw = false;
    try {
      r.dev.restore(r.snap);
    } catch {
      threw = true;
    }
    if (!threw) framesFlow(r.dev, r.backend);
  });

  // Was a bug: a restored key of any length built ~1 KiB of tables per byte; restore now caps it at 40.
  it('an RSS key longer than rss_max_key_size (40) in a snapshot is rejected or cut', () => {
    const b = bench({ mq: true, rss: true, queues: 2 });
    expect(
      b.driver.setRss({ hashTypes: 0x3f, table: [0, 1], maxTxVq: 2, key: new Uint8Array(40).fill(7) }),
    ).toBe(VIRTIO_NET_OK);
    const r = restorable(b, { mq: true, rss: true, queues: 2 });
    r.net.rss.key = Array.from({ length: 4096 }, (_, i) => i & 0xff);
    let threw = false;
    try {
      r.dev.restore(r.snap);
    } catch {
      threw = true;
    }
    if (!threw) expect(r.dev.net.rss.keyCopy().length).toBeLessThanOrEqual(40);
  });

  it('more queues than the device has: refused by name before anything is written; queue_select 0xffff reads 0', () => {
    const b = bench();
    const r = restorable(b);
    const good = JSON.stringify(r.snap);
    const q0 = r.transport.queues[0];
    r.transport.queues = Array.from({ length: 2000 }, (_, i) =>
      i < 3 ? r.transport.queues[i] : { ...q0, enabled: false },
    );
    const before = JSON.stringify(r.dev.snapshot());
    expect(() => r.dev.restore(r.snap)).toThrow(/field "transport\.transport\.queues"/);
    expect(JSON.stringify(r.dev.snapshot())).toBe(before);
    const ok = JSON.parse(good);
    ok.transport.transport.queueSelect = 0xffff;
    expect(() => r.dev.restore(ok)).not.toThrow();
    const common = b.driver.pci.caps.find((c) => c.cfgType === 1)!;
    for (const o of [0x16, 0x18, 0x1a, 0x1c, 0x1e, 0x20])
      expect(() => r.dev.barRead(common.bar, common.offset + o, 2)).not.toThrow();
    expect(r.dev.stats().status & NEEDS_RESET).toBe(0);
    for (const q of [0, 1, 2, 3, 999, 1023]) expect(() => r.kick(q)).not.toThrow();
    framesFlow(r.dev, r.backend);
  });

  it("a ring index inconsistent with the guest's avail idx: restore succeeds, the first kick sets NEEDS_RESET", () => {
    const b = bench();
    const r = restorable(b);
    const ring = r.transport.queues[1].ring;
    ring.nextAvail = (ring.nextAvail + 1000) & 0xffff;
    r.dev.restore(r.snap);
    expect(() => r.kick(1)).not.toThrow();
    expect(r.dev.stats().status & NEEDS_RESET).toBe(NEEDS_RESET);
  });

  it('ring addresses outside guest memory in a snapshot: restore throws instead of accepting them', () => {
    const b = bench();
    const r = restorable(b);
    r.transport.queues[1].desc = [0, 0x10]; // 64 GiB, past the 16 MiB of RAM
    expect(() => r.dev.restore(r.snap)).toThrow();
  });
});

describe('a backend that loops frames straight back (re-entrant receive inside transmit)', () => {
  it('tx frames echoed from inside transmit are received, counted, and never recurse', () => {
    const b = bench({}, {}, { rxBuffers: 64 });
    let depth = 0;
    let maxDepth = 0;
    b.backend.onFrame((frame) => {
      depth++;
      maxDepth = Math.max(maxDepth, depth);
      const back = frame.slice();
      back.set(frame.subarray(6, 12), 0);
      back.set(frame.subarray(0, 6), 6);
      b.backend.inject(back);
      depth--;
    });
    const frames = Array.from({ length: 40 }, (_, i) => rawFrame(200 + i, PEER_MAC, DEV_MAC, i));
    for (const f of frames) b.driver.send(f);
    expect(maxDepth).toBe(1);
    expect(b.driver.receive()).toHaveLength(40);
    expect(b.dev.stats().txPackets).toBe(40);
    expect(broken(b)).toBe(false);
  });
});
