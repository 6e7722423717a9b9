// The control virtqueue through the public object: acks exactly as QEMU 7.2 for valid, invalid and
// un-negotiated commands, broken chains, GUEST_OFFLOADS_SET, and multiqueue (VQ_PAIRS_SET, independent
// pairs, automatic flow steering).
import { describe, expect, it } from 'vitest';
import { CtrlClass, CtrlMq, VIRTIO_NET_ERR, VIRTIO_NET_OK } from './control-queue.js';
import { ethernet, tcp4, udp4 } from '../testing/frames.js';
import { LINUX_6_1_FEATURES } from '../testing/net-driver.js';
import {
  DEV_MAC,
  hexOf,
  inWorkerMode,
  makeBench,
  openBench,
  PEER_MAC,
  rawFrame,
} from './bench.test-support.js';
import { NetF } from './features.js';
import type { VirtioNetPci } from '../virtio-net-pci.js';
import type { WorkerPool } from './workers/pool.js';

const bit = (b: number) => 1n << BigInt(b);
const le16 = (n: number) => Uint8Array.of(n & 0xff, n >> 8);

function stats(dev: VirtioNetPci) {
  return dev.stats();
}

describe('acks like QEMU 7.2', () => {
  it('unknown classes and commands are ERR', () => {
    const b = openBench({ mq: true, queues: 2 }, { queues: 2 });
    for (const cls of [6, 7, 8, 9, 0x80, 0xff])
      expect(b.driver.control(cls, 0, new Uint8Array(16)), `class ${cls}`).toBe(VIRTIO_NET_ERR);
    expect(b.driver.control(CtrlClass.MQ, 3, le16(1))).toBe(VIRTIO_NET_ERR);
    expect(b.driver.control(CtrlClass.GUEST_OFFLOADS, 1, new Uint8Array(8))).toBe(VIRTIO_NET_ERR);
    expect(b.driver.control(CtrlClass.MAC, 2, new Uint8Array(6))).toBe(VIRTIO_NET_ERR);
    const s = stats(b.dev);
    expect(s.ctrlErrors).toBe(9);
    expect(s.status & 0x40).toBe(0);
  });

  it('un-negotiated commands are ERR: VQ_PAIRS_SET without MQ, RSS_CONFIG without RSS, HASH_CONFIG without HASH_REPORT', () => {
    const b = openBench();
    expect(b.driver.has(NetF.MQ)).toBe(false);
    expect(b.driver.control(CtrlClass.MQ, CtrlMq.VQ_PAIRS_SET, le16(1))).toBe(VIRTIO_NET_ERR);
    expect(b.driver.setRss({ hashTypes: 1, table: [0], key: new Uint8Array(40), maxTxVq: 1 })).toBe(
      VIRTIO_NET_ERR,
    );
    expect(b.driver.setHashConfig(1, new Uint8Array(40))).toBe(VIRTIO_NET_ERR);
    // MQ offered but not accepted by the driver.
    const c = openBench(
      { mq: true, rss: true, hash: true, queues: 2 },
      { queues: 2 },
      {
        wanted: LINUX_6_1_FEATURES & ~(bit(NetF.MQ) | bit(NetF.RSS) | bit(NetF.HASH_REPORT)),
      },
    );
    expect(c.driver.control(CtrlClass.MQ, CtrlMq.VQ_PAIRS_SET, le16(1))).toBe(VIRTIO_NET_ERR);
    expect(c.driver.setRss({ hashTypes: 1, table: [0], key: new Uint8Array(40), maxTxVq: 1 })).toBe(
      VIRTIO_NET_ERR,
    );
    expect(c.driver.setHashConfig(1, new Uint8Array(40))).toBe(VIRTIO_NET_ERR);
  });

  it('GUEST_OFFLOADS_SET: ERR without CTRL_GUEST_OFFLOADS, for un-negotiated bits, short payload, no vnet header', () => {
    const a = openBench({}, {}, { wanted: LINUX_6_1_FEATURES & ~bit(NetF.CTRL_GUEST_OFFLOADS) });
    expect(a.driver.setGuestOffloads(0n)).toBe(VIRTIO_NET_ERR);
    expect(a.backend.offloadCalls).toHaveLength(1); // from DRIVER_OK only
    const b = openBench();
    const calls = b.backend.offloadCalls.length;
    expect(b.driver.setGuestOffloads(bit(NetF.GUEST_USO4))).toBe(VIRTIO_NET_ERR); // not negotiated (Linux 6.1)
    expect(b.driver.setGuestOffloads(bit(NetF.HOST_TSO4))).toBe(VIRTIO_NET_ERR); // not a guest offload
    expect(b.driver.control(CtrlClass.GUEST_OFFLOADS, 0, new Uint8Array(7))).toBe(VIRTIO_NET_ERR);
    expect(b.backend.offloadCalls).toHaveLength(calls);
    // RSC_EXT is stripped before the check (QEMU).
    expect(b.driver.setGuestOffloads(bit(NetF.RSC_EXT) | bit(NetF.GUEST_CSUM) | bit(NetF.GUEST_TSO6))).toBe(
      VIRTIO_NET_OK,
    );
    expect(b.backend.offloadCalls.at(-1)).toEqual({
      csum: true,
      tso4: false,
      tso6: true,
      ecn: false,
      ufo: false,
      uso4: false,
      uso6: false,
      tunnel: false,
      tunnelCsum: false,
    });
    // Extra payload bytes are ignored (QEMU reads 8).
    expect(b.driver.control(CtrlClass.GUEST_OFFLOADS, 0, new Uint8Array(9))).toBe(VIRTIO_NET_OK);
    const c = openBench({}, { vnetHeader: false });
    expect(c.driver.has(NetF.CTRL_GUEST_OFFLOADS)).toBe(true);
    expect(c.driver.setGuestOffloads(0n)).toBe(VIRTIO_NET_ERR);
    expect(c.backend.offloadCalls).toHaveLength(0);
  });

  it('RX, MAC and VLAN commands are not checked against CTRL_RX / CTRL_RX_EXTRA / CTRL_MAC_ADDR / CTRL_VLAN (QEMU)', () => {
    const b = openBench(
      {},
      {},
      {
        wanted: LINUX_6_1_FEATURES & ~(bit(NetF.CTRL_RX) | bit(NetF.CTRL_VLAN) | bit(NetF.CTRL_MAC_ADDR)),
      },
    );
    expect(b.driver.rxMode(0, false)).toBe(VIRTIO_NET_OK); // PROMISC off (needs CTRL_RX per spec)
    expect(b.driver.rxMode(5, true)).toBe(VIRTIO_NET_OK); // NOBCAST (needs CTRL_RX_EXTRA per spec)
    b.backend.inject(rawFrame(60, 'ff:ff:ff:ff:ff:ff'));
    expect(b.driver.receive()).toHaveLength(0);
    // Without CTRL_VLAN every VID passes until one is deleted.
    expect(b.driver.vlan(false, 9)).toBe(VIRTIO_NET_OK);
    expect(b.driver.setMac('02:00:00:00:00:42')).toBe(VIRTIO_NET_OK);
    expect(b.driver.mac()).toBe('02:00:00:00:00:42');
  });

  it('a command larger than 64 KiB is answered ERR without being applied', () => {
    const b = openBench();
    const n = 11000; // 8 + 6 * n > 65536
    const data = new Uint8Array(8 + 6 * n);
    new DataView(data.buffer).setUint32(0, n, true);
    expect(b.driver.control(CtrlClass.MAC, 0, data)).toBe(VIRTIO_NET_ERR);
    b.backend.inject(rawFrame(60, '00:00:00:00:00:00'));
    expect(b.driver.receive()).toHaveLength(0);
    expect(b.driver.pci.status & 0x40).toBe(0);
  });

  it('command split over several descriptors (Linux: header, data, ack) and a long writable part', () => {
    const b = openBench();
    const q = b.driver.queue(2);
    const mem = b.memory;
    const ack = b.driver.pci.allocator.alloc(16, 16);
    mem.write(ack, new Uint8Array(16).fill(0xee));
    q.add([Uint8Array.of(CtrlClass.RX), Uint8Array.of(0), Uint8Array.of(1)], [{ addr: ack, len: 16 }]);
    b.driver.pci.kick(2);
    const u = q.getUsed();
    expect(u?.len).toBe(1);
    expect(mem.read(ack, 3)).toEqual(Uint8Array.of(VIRTIO_NET_OK, 0xee, 0xee));
    b.backend.inject(rawFrame(60, '52:54:00:99:99:99'));
    expect(b.driver.receive()).toHaveLength(1); // promiscuous now
  });

  for (const [name, readable, writable] of [
    ['no ack byte', [Uint8Array.of(0, 0, 1)], []],
    ['one header byte', [Uint8Array.of(0)], [new Uint8Array(1)]],
    ['only writable', [], [new Uint8Array(4)]],
  ] as const) {
    it(`a control chain with ${name}: DEVICE_NEEDS_RESET, nothing thrown`, () => {
      const b = openBench();
      const q = b.driver.queue(2);
      q.add(readable as unknown as Uint8Array[], writable as unknown as Uint8Array[]);
      expect(() => b.driver.pci.kick(2)).not.toThrow();
      expect(b.driver.pci.status & 0x40).toBe(0x40);
      expect(stats(b.dev).lastError).toMatch(/ctrl|header|writable|readable/);
      expect(b.driver.control(0, 0, Uint8Array.of(1))).toBe(-1);
      // Reset and a new open make it usable again.
      b.driver.open();
      expect(b.driver.rxMode(0, true)).toBe(VIRTIO_NET_OK);
    });
  }
});

describe('multiqueue', () => {
  it('VQ_PAIRS_SET: 1..max OK, 0 / max+1 / 0x8001 / short ERR; backend queue pairs follow', () => {
    const b = openBench({ mq: true, queues: 4 }, { queues: 4 }, { pairs: 1 });
    expect(stats(b.dev).queuePairs).toBe(1);
    for (const [n, want] of [
      [0, VIRTIO_NET_ERR],
      [5, VIRTIO_NET_ERR],
      [0x8001, VIRTIO_NET_ERR],
      [2, VIRTIO_NET_OK],
      [4, VIRTIO_NET_OK],
      [1, VIRTIO_NET_OK],
      [3, VIRTIO_NET_OK],
    ] as const) {
      expect(b.driver.setQueuePairs(n), `pairs ${n}`).toBe(want);
    }
    expect(stats(b.dev).queuePairs).toBe(3);
    expect(b.backend.queuePairEnabledCalls.slice(-4)).toEqual([
      { queuePair: 0, enabled: true },
      { queuePair: 1, enabled: true },
      { queuePair: 2, enabled: true },
      { queuePair: 3, enabled: false },
    ]);
    expect(b.driver.control(CtrlClass.MQ, CtrlMq.VQ_PAIRS_SET, Uint8Array.of(2))).toBe(VIRTIO_NET_ERR);
    expect(stats(b.dev).queuePairs).toBe(3);
  });

  it('traffic on each pair is independent in both directions', () => {
    const b = openBench({ mq: true, queues: 4 }, { queues: 4 });
    expect(b.driver.pairs).toBe(4);
    for (let p = 0; p < 4; p++) b.driver.send(rawFrame(60 + p, PEER_MAC, DEV_MAC, p), { pair: p });
    expect(b.sent.map((x) => [x.queuePair, x.frame.length])).toEqual([
      [0, 60],
      [1, 61],
      [2, 62],
      [3, 63],
    ]);
    // Non-IP frames from backend queue q go to rx queue q.
    for (let q = 0; q < 4; q++) b.backend.inject(rawFrame(100 + q, DEV_MAC, PEER_MAC, q), q);
    for (let p = 0; p < 4; p++) expect(b.driver.receive(p).map((r) => r.frame.length)).toEqual([100 + p]);
    // Each queue signals its own MSI-X vector (index + 1 as the driver programmed them).
    b.irq.takeVectors();
    b.backend.inject(rawFrame(100, DEV_MAC, PEER_MAC, 9), 2);
    expect(b.irq.takeVectors()).toEqual([5]);
    b.driver.send(rawFrame(60, PEER_MAC, DEV_MAC), { pair: 3 });
    expect(b.irq.takeVectors()).toEqual([8]);
    b.driver.receive(2);
    b.backend.inject(rawFrame(101, DEV_MAC, PEER_MAC, 9), 2);
    expect(b.irq.takeVectors()).toEqual([5]);
    b.driver.receive(2);
    const s = stats(b.dev);
    expect(s.queues.map((q) => [q.rxPackets, q.txPackets])).toEqual([
      [1, 1],
      [1, 1],
      [3, 1],
      [1, 2],
    ]);
    // Fewer pairs in use: frames from backend queue 3 land on pair 3 % 2.
    expect(b.driver.setQueuePairs(2)).toBe(VIRTIO_NET_OK);
    b.backend.inject(rawFrame(77, DEV_MAC, PEER_MAC), 3);
    expect(b.driver.receive(1).map((r) => r.frame.length)).toEqual([77]);
  });

  // Linux 6.1 after `ethtool -L` (a stale max_tx_vq) keeps transmitting on pairs beyond the ones in use.
  // In worker mode pair 1 runs on another worker than pair 0, whose backend queue takes the frames.
  it('tx on a pair beyond the pairs in use leaves through an attached backend queue, byte for byte', () => {
    const b = openBench({ mq: true, queues: 2 }, { queues: 2 });
    expect(b.driver.setQueuePairs(1)).toBe(VIRTIO_NET_OK);
    const plain = rawFrame(1514, PEER_MAC, DEV_MAC, 5);
    const csum = ethernet(
      PEER_MAC,
      DEV_MAC,
      0x0800,
      udp4('10.0.0.2', '10.0.0.9', 5000, 53, new Uint8Array(300).fill(7)),
    );
    const csumOffload = { flags: 1, csumStart: 34, csumOffset: 6 };
    b.driver.send(plain, { pair: 1 });
    b.driver.send(csum, { pair: 1, offload: csumOffload, split: true });
    b.driver.send(rawFrame(60, PEER_MAC, DEV_MAC, 9), { pair: 0 });
    expect(b.sent.map((x) => [x.queuePair, hexOf(x.frame)])).toEqual([
      [0, hexOf(plain)],
      [0, hexOf(csum)],
      [0, hexOf(rawFrame(60, PEER_MAC, DEV_MAC, 9))],
    ]);
    expect(b.sent[1]!.offload).toMatchObject(csumOffload);
    // Every chain went back to the guest (send reclaims the ones before it), none counted dropped.
    b.driver.reclaimTx(1);
    b.driver.reclaimTx(0);
    for (const i of [1, 3]) expect(b.driver.queue(i).numFree, `queue ${i}`).toBe(b.driver.queue(i).size);
    const s = stats(b.dev);
    expect(s.queues.map((q) => [q.txPackets, q.txDropped])).toEqual([
      [1, 0],
      [2, 0],
    ]);
    expect(b.backend.stats().txDropped).toBe(0);
  });

  // Worker mode only: 4 pairs dealt over 2 workers ({0, 2} and {1, 3}); with 1 pair in use pair 2's
  // frames stay on their worker (pair 0's queue is its own), pairs 1 and 3 cross to it.
  it.runIf(inWorkerMode())(
    'tx on pairs beyond the pairs in use, 4 pairs on 2 workers: every frame on backend queue 0',
    () => {
      const b = openBench({ mq: true, queues: 4, workers: 2 }, { queues: 4 });
      expect(b.driver.setQueuePairs(1)).toBe(VIRTIO_NET_OK);
      const want: string[] = [];
      for (let i = 0; i < 3; i++)
        for (const pair of [1, 2, 3]) {
          const f = rawFrame(100 + i, PEER_MAC, DEV_MAC, 10 * pair + i);
          b.driver.send(f, { pair });
          want.push(hexOf(f));
        }
      expect(b.sent.map((x) => x.queuePair)).toEqual(want.map(() => 0));
      expect(b.sent.map((x) => hexOf(x.frame))).toEqual(want);
      expect(stats(b.dev).queues.map((q) => [q.txPackets, q.txDropped])).toEqual([
        [0, 0],
        [3, 0],
        [3, 0],
        [3, 0],
      ]);
    },
  );

  // Worker mode only: while this thread (the MemoryBackend's host) takes no frames, pair 0's tx ring and
  // the ring from pair 1's worker to pair 0's fill; pair 1's later chains wait in the guest's ring.
  it.runIf(inWorkerMode())(
    'tx on a pair beyond the pairs in use waits for room on the other worker, none dropped',
    async () => {
      const b = openBench({ mq: true, queues: 2 }, { queues: 2, settle: false, ringBytes: 1 << 18 });
      expect(b.driver.setQueuePairs(1)).toBe(VIRTIO_NET_OK);
      const n = 64; // 3.8 MB, beyond both rings
      const frames = Array.from({ length: n }, (_, i) => rawFrame(60000, PEER_MAC, DEV_MAC, i));
      for (const f of frames) b.driver.send(f, { pair: 1, kick: false });
      b.driver.kickTx(1);
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 300);
      expect(b.sent).toHaveLength(0);
      let used = b.driver.reclaimTx(1);
      expect(used).toBeLessThan(n);
      for (const end = Date.now() + 10_000; b.sent.length < n && Date.now() < end; )
        await new Promise((r) => setTimeout(r, 5));
      expect(b.sent.map((x) => [x.queuePair, hexOf(x.frame)])).toEqual(frames.map((f) => [0, hexOf(f)]));
      used += b.driver.reclaimTx(1);
      expect(used).toBe(n);
      const s = stats(b.dev);
      expect(s.queues.map((q) => [q.txPackets, q.txDropped])).toEqual([
        [0, 0],
        [n, 0],
      ]);
      expect(b.backend.stats().txDropped).toBe(0);
    },
  );

  // A TCP flow the guest opens (SYN) and the peer's reply (SYN-ACK).
  const out = ethernet(
    PEER_MAC,
    DEV_MAC,
    0x0800,
    tcp4('10.0.0.2', '10.0.0.9', 40001, 443, 1, 0x02, new Uint8Array(0)),
  );
  const reply = ethernet(
    DEV_MAC,
    PEER_MAC,
    0x0800,
    tcp4('10.0.0.9', '10.0.0.2', 443, 40001, 9, 0x12, new Uint8Array(0)),
  );

  it('a backend that steers flows itself (a multiqueue tap) keeps its choice', () => {
    const steering = openBench({ mq: true, queues: 4 }, { queues: 4, steersFlows: true });
    steering.driver.send(out, { pair: 2 });
    steering.backend.inject(reply, 0);
    expect(steering.driver.receive(0).map((r) => hexOf(r.frame))).toEqual([hexOf(reply)]);
    expect(steering.backend.stats().deliveredDirect).toBe(1);
  });

  it('a backend that steers flows itself with fewer queues than pairs: the device steers', () => {
    // Two backend queues for four pairs: the backend cannot have chosen among all four, the device steers.
    const fewer = openBench({ mq: true, queues: 4 }, { queues: 2, steersFlows: true });
    fewer.driver.send(out, { pair: 2 });
    fewer.backend.inject(reply, 0);
    expect(fewer.driver.receive(2).map((r) => hexOf(r.frame))).toEqual([hexOf(reply)]);
  });

  it('automatic flow steering: a reply arrives on the pair the guest sent the flow on', () => {
    const b = openBench({ mq: true, queues: 4 }, { queues: 4 });
    const udpOut = ethernet(
      PEER_MAC,
      DEV_MAC,
      0x0800,
      udp4('10.0.0.2', '10.0.0.9', 5000, 53, new Uint8Array(20)),
    );
    const udpReply = ethernet(
      DEV_MAC,
      PEER_MAC,
      0x0800,
      udp4('10.0.0.9', '10.0.0.2', 53, 5000, new Uint8Array(40)),
    );
    b.driver.send(out, { pair: 2 });
    b.driver.send(udpOut, { pair: 3 });
    b.backend.inject(reply, 0);
    b.backend.inject(udpReply, 1);
    expect(b.driver.receive(0)).toHaveLength(0);
    expect(b.driver.receive(1)).toHaveLength(0);
    expect(b.driver.receive(2).map((r) => hexOf(r.frame))).toEqual([hexOf(reply)]);
    expect(b.driver.receive(3).map((r) => hexOf(r.frame))).toEqual([hexOf(udpReply)]);
    // The guest moves the flow to pair 1: replies follow.
    b.driver.send(out, { pair: 1 });
    b.backend.inject(reply, 0);
    expect(b.driver.receive(1).map((r) => hexOf(r.frame))).toEqual([hexOf(reply)]);
    // An unknown flow stays on the backend queue it came from.
    const other = ethernet(
      DEV_MAC,
      PEER_MAC,
      0x0800,
      tcp4('10.0.0.9', '10.0.0.2', 443, 40002, 9, 0x12, new Uint8Array(0)),
    );
    b.backend.inject(other, 3);
    expect(b.driver.receive(3).map((r) => hexOf(r.frame))).toEqual([hexOf(other)]);
    // VQ_PAIRS_SET forgets the flows.
    expect(b.driver.setQueuePairs(4)).toBe(VIRTIO_NET_OK);
    b.backend.inject(reply, 0);
    expect(b.driver.receive(0).map((r) => hexOf(r.frame))).toEqual([hexOf(reply)]);
  });

  // The flow table is the device's, shared by its workers: a flow recorded by the worker that transmits
  // it steers the replies another worker reads, which then cross to the pair's worker (forward.ts).
  it.runIf(inWorkerMode())(
    'workers: a flow sent on pair 1 (worker 1) steers its reply read by worker 0 to pair 1',
    () => {
      const b = openBench({ mq: true, queues: 2 }, { queues: 2 });
      const pool = b.dev.net.dataPlane as WorkerPool;
      expect(pool.workerCount).toBe(2);
      expect(b.driver.setQueuePairs(2)).toBe(VIRTIO_NET_OK);
      b.driver.send(out, { pair: 1 });
      b.backend.inject(reply, 0);
      const unknown = ethernet(
        DEV_MAC,
        PEER_MAC,
        0x0800,
        tcp4('10.0.0.9', '10.0.0.2', 443, 40002, 9, 0x12, new Uint8Array(0)),
      );
      b.backend.inject(unknown, 0);
      expect(b.driver.receive(1).map((r) => hexOf(r.frame))).toEqual([hexOf(reply)]);
      expect(b.driver.receive(0).map((r) => hexOf(r.frame))).toEqual([hexOf(unknown)]);
      pool.refreshStats();
      expect([pool.handoffs.crossPairForwards, pool.handoffs.crossPairDrops]).toEqual([1, 0]);
    },
  );

  it('without MQ negotiated there is one pair and the control queue is queue 2', () => {
    const b = makeBench(
      { mq: true, queues: 4 },
      { queues: 4 },
      { wanted: LINUX_6_1_FEATURES & ~bit(NetF.MQ) },
    );
    b.driver.open();
    expect(b.driver.pci.numQueues()).toBe(3);
    expect(b.driver.ctrlIndex).toBe(2);
    expect(b.driver.rxMode(0, true)).toBe(VIRTIO_NET_OK);
    b.backend.inject(rawFrame(90), 3);
    expect(b.driver.receive(0)).toHaveLength(1);
  });
});

describe('control queue under a guest that never stops adding commands', () => {
  it('answers at most one burst per kick and the rest on later event-loop turns, all of them', async () => {
    const b = openBench();
    const { driver, memory, dev } = b;
    const index = driver.ctrlIndex;
    const q = driver.queue(index);
    const availIdx = q.config.driverAddr + 2;
    const cmdAddr = driver.pci.allocator.alloc(8, 8);
    memory.write(cmdAddr, Uint8Array.of(CtrlClass.RX, 0, 0)); // PROMISC off: always OK
    const acks = driver.pci.allocator.alloc(400, 8);
    memory.write(acks, new Uint8Array(400).fill(0xff));
    const before = (dev.stats() as { ctrlCommands: number }).ctrlCommands;
    // Every time the device looks at the avail idx, the "other vCPU" has reclaimed what was answered and
    // added another command, until 300 were posted.
    let posted = 0;
    const post = () => {
      while (q.getUsed()) {}
      if (posted < 300 && q.numFree >= 2) {
        q.add([{ addr: cmdAddr, len: 3 }], [{ addr: acks + posted, len: 1 }]);
        posted++;
      }
    };
    const real = memory.readU16.bind(memory);
    memory.readU16 = (a: number | bigint) => {
      if (Number(a) === availIdx) post();
      return real(a);
    };
    post();
    driver.pci.kick(index);
    const afterKick = (dev.stats() as { ctrlCommands: number }).ctrlCommands - before;
    expect(afterKick).toBe(64); // one burst, then the kick returned to the VMM
    for (let i = 0; i < 20 && (dev.stats() as { ctrlCommands: number }).ctrlCommands - before < 300; i++) {
      await new Promise((r) => setImmediate(r));
    }
    memory.readU16 = real;
    expect((dev.stats() as { ctrlCommands: number }).ctrlCommands - before).toBe(300);
    expect([...memory.read(acks, 300)].every((x) => x === VIRTIO_NET_OK)).toBe(true);
  });
});
