/**
 * Queue pairs on worker threads (`workers: true`, docs/workers.md) against a real multiqueue tap: the
 * synthetic guest on SharedArrayBuffer memory drives the device through the PCI transport on this
 * thread; each pair's rx/tx virtqueues and tap queue fd are served by a worker of its own. Root and
 * /dev/net/tun only; every test creates and removes its own namespace and tap.
 */
import { readFile } from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { VirtioNetDriver } from '../../devices/testing/net-driver.js';
import type { WorkerPool } from '../../devices/virtio-net/workers/pool.js';
import { BumpAllocator } from '../../virtio/testing/bump-allocator.js';
import { InterruptCollector } from '../../virtio/testing/pci-driver.js';
import { lines, PY_UDP_RECV } from '../tap/fixture.test-support.js';
import { parseIpv4, udpFrame } from '../tap/frames.test-support.js';
import {
  type DeviceFixture,
  type DeviceFixtureOptions,
  deviceFixture,
  GUEST_IP,
  type GuestFrame,
  KERNEL_IP,
  unavailable,
} from '../tap-device/fixture.test-support.js';
import { fds, PY_SEQ_SEND, settled, sleep, tasks } from './support.test-support.js';

const SIZE = 200;
const pattern = Uint8Array.from({ length: SIZE }, (_, i) => (i * 7) & 0xff);
const enc = (s: string) => new TextEncoder().encode(s);
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

/** The sequence number of a datagram of PY_SEQ_SEND to one of `ports`, after checking its bytes. */
function seqOf(f: GuestFrame, ports: readonly number[]): number | null {
  const p = parseIpv4(f.frame);
  if (p?.proto !== 17 || !ports.includes((p.l4[2]! << 8) | p.l4[3]!)) return null;
  const data = p.l4.subarray(8);
  expect(data.length).toBe(SIZE);
  expect(hex(data.subarray(4))).toBe(hex(pattern.subarray(4)));
  return new DataView(data.buffer, data.byteOffset).getUint32(0);
}

type Q = { rxPackets: number; rxDropped: number; rxFiltered: number; txPackets: number; txDropped: number };
/**
 * Sends `count` datagrams spread over `ports` from the namespace and waits until the guest has them;
 * returns how many arrived on each pair (both must get some: the tap's flow steering spreads the ports).
 */
async function burstOverPairs(fx: DeviceFixture, ports: readonly number[], count: number, what: string) {
  fx.ns.exec('python3', ['-c', PY_SEQ_SEND, GUEST_IP, ports.join(','), String(SIZE), String(count), '0']);
  const got = [0, 0];
  await fx.until(
    () => {
      for (const f of fx.frames.splice(0)) if (seqOf(f, ports) !== null) got[f.pair]!++;
      return got[0]! + got[1]! >= count;
    },
    10_000,
    what,
  );
  expect(got[0]).toBeGreaterThan(0);
  expect(got[1]).toBeGreaterThan(0);
  return got;
}

const queues = (fx: DeviceFixture) => (fx.dev.stats() as unknown as { queues: Q[] }).queues;
const poolOf = (fx: DeviceFixture) => fx.dev.net.dataPlane as WorkerPool;

// Under CI these must run: a missing tun or root there is a broken runner, not a reason to skip.
if (unavailable !== null && process.env.CI === 'true')
  throw new Error(`queue-pair worker tests cannot run under CI: ${unavailable}`);

describe.skipIf(unavailable !== null)('queue pairs on worker threads, real multiqueue tap', () => {
  const fixtures: DeviceFixture[] = [];
  const fixture = (o: DeviceFixtureOptions = {}) => {
    const f = deviceFixture({ queues: 2, sharedMemory: true, ...o, device: { workers: true, ...o.device } });
    fixtures.push(f);
    // Room for the bursts these tests queue in the kernel.
    f.ns.ip('link', 'set', 'dev', f.tap.name, 'txqueuelen', '10000');
    return f;
  };
  afterEach(() => {
    for (const f of fixtures.splice(0)) f.dispose();
  });

  it('refuses memory that is not SharedArrayBuffer-backed, naming the option', () => {
    expect(() => deviceFixture({ queues: 2, device: { workers: true } })).toThrow(/workers: guest memory/);
  });

  it('2 pairs, each on its own worker: frames both ways byte for byte on each pair; taken = delivered + dropped per queue; no message per frame', async () => {
    const fx = fixture();
    const { drv, ns } = fx;
    const pool = poolOf(fx);
    expect(pool.running).toBe(true);
    expect(pool.workerCount).toBe(2);
    const requestsAfterOpen = pool.handoffs.requests;

    // guest -> kernel: 20 datagrams per pair, each payload naming its pair and index.
    const child = ns.spawn('python3', ['-c', PY_UDP_RECV, KERNEL_IP, '5557', '40']);
    const out = lines(child);
    await out.waitFor(/^ready$/);
    for (let i = 0; i < 20; i++)
      for (const pair of [0, 1])
        drv.send(udpFrame(GUEST_IP, KERNEL_IP, 42000 + pair, 5557, enc(`pair ${pair} #${i}`)), { pair });
    for (const pair of [0, 1])
      for (let i = 0; i < 20; i++)
        expect(await out.waitFor(new RegExp(`^${hex(enc(`pair ${pair} #${i}`))} `))).toBe(
          `${hex(enc(`pair ${pair} #${i}`))} ${GUEST_IP} ${42000 + pair}`,
        );
    await fx.until(() => queues(fx).every((q) => q.txPackets === 20), 5000, 'tx counters');
    expect(queues(fx).map((q) => [q.txPackets, q.txDropped])).toEqual([
      [20, 0],
      [20, 0],
    ]);

    // kernel -> guest: 600 datagrams over 24 flows; tun's automq spreads them over both queues.
    const ports = Array.from({ length: 24 }, (_, i) => 9000 + i);
    ns.exec('python3', ['-c', PY_SEQ_SEND, GUEST_IP, ports.join(','), String(SIZE), '600', '0.002']);
    const seen = new Set<number>();
    await fx.until(
      () => {
        for (const f of fx.frames.splice(0)) {
          const s = seqOf(f, ports);
          if (s !== null) seen.add(s * 2 + f.pair);
        }
        return seen.size >= 600;
      },
      20_000,
      '600 datagrams',
    );
    const perPair = [0, 0];
    for (const k of seen) perPair[k & 1]!++;
    expect(perPair[0]! + perPair[1]!).toBe(600);
    expect(perPair[0]).toBeGreaterThan(0);
    expect(perPair[1]).toBeGreaterThan(0);

    // Per queue: what its worker's tap queue read = delivered + dropped + filtered (nothing else).
    await sleep(20);
    const w = pool.workerCounters();
    const q = queues(fx);
    for (const [p, c] of w.entries()) {
      expect(c.pairs).toEqual([p]);
      expect(c.tapRx).toBe(q[p]!.rxPackets + q[p]!.rxDropped + q[p]!.rxFiltered);
      expect(c.tapTx).toBe(q[p]!.txPackets);
    }
    expect(q.map((x) => x.rxDropped)).toEqual([0, 0]);
    expect(q[0]!.rxPackets).toBeGreaterThanOrEqual(perPair[0]!);
    expect(q[1]!.rxPackets).toBeGreaterThanOrEqual(perPair[1]!);
    // The data path sent no message: kicks were doorbells, interrupts bits; requests only for control.
    expect(pool.handoffs.requests).toBe(requestsAfterOpen);
    expect(pool.handoffs.crossPairDrops).toBe(0);
    expect(pool.handoffs.interrupts).toBeGreaterThan(0);
  });

  it('workers: 1 deals both pairs onto one thread: each pair still gets its own frames, both ways', async () => {
    const fx = fixture({ device: { workers: 1 } });
    const { drv, ns } = fx;
    const pool = poolOf(fx);
    expect(pool.workerCount).toBe(1);
    expect(pool.workerCounters()[0]!.pairs).toEqual([0, 1]);
    const child = ns.spawn('python3', ['-c', PY_UDP_RECV, KERNEL_IP, '5559', '2']);
    const out = lines(child);
    await out.waitFor(/^ready$/);
    for (const pair of [0, 1])
      drv.send(udpFrame(GUEST_IP, KERNEL_IP, 44000 + pair, 5559, enc(`one thread, pair ${pair}`)), { pair });
    for (const pair of [0, 1])
      expect(await out.waitFor(new RegExp(` ${44000 + pair}$`))).toBe(
        `${hex(enc(`one thread, pair ${pair}`))} ${GUEST_IP} ${44000 + pair}`,
      );
    const ports = Array.from({ length: 24 }, (_, i) => 9500 + i);
    await burstOverPairs(fx, ports, 200, '200 datagrams');
    await sleep(20);
    const q = queues(fx);
    expect(q.map((x) => x.txPackets)).toEqual([1, 1]);
    expect(pool.workerCounters()[0]!.tapRx).toBe(
      q.reduce((a, x) => a + x.rxPackets + x.rxDropped + x.rxFiltered, 0),
    );
  });

  it('RSS changes mid-traffic (kernel steering rewritten under a running stream): every datagram arrives once, on the pair the table in force names', async () => {
    const fx = fixture({ device: { rss: true } });
    const { drv, ns, tap } = fx;
    const key = Uint8Array.from({ length: 40 }, (_, i) => (i * 29 + 3) & 0xff);
    const toPair = (pair: number) => Array.from({ length: 16 }, () => pair);
    expect(drv.setRss({ hashTypes: 0x3f, table: toPair(0), key, unclassified: 0 })).toBe(0);
    expect(tap.rssSteeringActive).toBe(true);
    const ports = Array.from({ length: 16 }, (_, i) => 7000 + i);
    const sender = ns.spawn('python3', [
      '-c',
      PY_SEQ_SEND,
      GUEST_IP,
      ports.join(','),
      String(SIZE),
      '3000',
      '0.004',
    ]);
    const done = lines(sender).waitFor(/^sent$/, 60_000);
    const seqs = new Map<number, number>();
    const take = () => {
      for (const f of fx.frames.splice(0)) {
        const s = seqOf(f, ports);
        if (s === null) continue;
        expect(seqs.has(s), `datagram ${s} twice`).toBe(false);
        seqs.set(s, f.pair);
      }
    };
    await fx.until(
      () => {
        take();
        return seqs.size >= 300;
      },
      20_000,
      'the stream',
    );
    // Everything to pair 1, then back to both, while datagrams keep coming.
    expect(drv.setRss({ hashTypes: 0x3f, table: toPair(1), key, unclassified: 1 })).toBe(0);
    await fx.until(
      () => {
        take();
        return seqs.size >= 1200;
      },
      20_000,
      'more of the stream',
    );
    const spread = Array.from({ length: 16 }, (_, i) => i & 1);
    expect(drv.setRss({ hashTypes: 0x3f, table: spread, key, unclassified: 0 })).toBe(0);
    await done;
    await fx.until(
      () => {
        take();
        return seqs.size >= 3000;
      },
      30_000,
      'all 3000 datagrams',
    );
    expect(seqs.size).toBe(3000);
    const pairsUsed = [0, 0];
    for (const p of seqs.values()) pairsUsed[p]!++;
    expect(pairsUsed[0]).toBeGreaterThan(0);
    expect(pairsUsed[1]).toBeGreaterThan(0);
    expect(queues(fx).map((q) => q.rxDropped)).toEqual([0, 0]);
    expect(poolOf(fx).handoffs.crossPairDrops).toBe(0);
  });

  it('VQ_PAIRS_SET reaches the tap through the owning worker (TUNSETQUEUE on its fd); both pairs carry traffic after', async () => {
    const fx = fixture();
    const { drv, ns, tap } = fx;
    const realQueues = () =>
      ns
        .exec('ls', [`/sys/class/net/${tap.name}/queues`])
        .split(/\s+/)
        .filter((q) => q.startsWith('tx-'))
        .sort();
    expect(realQueues()).toEqual(['tx-0', 'tx-1']);
    expect(drv.setQueuePairs(1)).toBe(0);
    expect(realQueues()).toEqual(['tx-0']);
    expect(drv.setQueuePairs(2)).toBe(0);
    expect(realQueues()).toEqual(['tx-0', 'tx-1']);
    const ports = Array.from({ length: 24 }, (_, i) => 9100 + i);
    await burstOverPairs(fx, ports, 200, '200 datagrams');
  });

  it("tx on pair 1 after VQ_PAIRS_SET 1 (Linux 6.1's stale max_tx_vq): its worker's fd is detached, pair 0's worker writes the frames, none dropped", async () => {
    const fx = fixture();
    const { drv, ns } = fx;
    expect(drv.setQueuePairs(1)).toBe(0);
    const child = ns.spawn('python3', ['-c', PY_UDP_RECV, KERNEL_IP, '5558', '21']);
    const out = lines(child);
    await out.waitFor(/^ready$/);
    for (let i = 0; i < 20; i++)
      drv.send(udpFrame(GUEST_IP, KERNEL_IP, 43000, 5558, enc(`stale #${i}`)), { pair: 1 });
    // The checksum offload crosses too: the kernel completes it, the socket takes the datagram.
    drv.send(udpFrame(GUEST_IP, KERNEL_IP, 43001, 5558, enc('stale csum'), { partial: true }), {
      pair: 1,
      offload: { flags: 1, csumStart: 34, csumOffset: 6 },
    });
    for (let i = 0; i < 20; i++)
      expect(await out.waitFor(new RegExp(`^${hex(enc(`stale #${i}`))} `))).toBe(
        `${hex(enc(`stale #${i}`))} ${GUEST_IP} 43000`,
      );
    expect(await out.waitFor(/ 43001$/)).toBe(`${hex(enc('stale csum'))} ${GUEST_IP} 43001`);
    await fx.until(() => queues(fx)[1]!.txPackets === 21, 5000, 'tx counters');
    expect(queues(fx).map((q) => [q.txPackets, q.txDropped])).toEqual([
      [0, 0],
      [21, 0],
    ]);
    // Pair 0's worker wrote them on its tap queue; every chain went back to the guest.
    expect(
      poolOf(fx)
        .workerCounters()
        .map((c) => c.tapTx),
    ).toEqual([21, 0]);
    drv.reclaimTx(1);
    expect(drv.queue(3).numFree).toBe(drv.queue(3).size);
  });

  it('snapshot while traffic runs: the workers give ring positions and counters back from one quiesced moment, then carry on without a loss', async () => {
    const fx = fixture();
    const { drv, ns, memory } = { ...fx, memory: fx.drv.memory };
    const ports = Array.from({ length: 16 }, (_, i) => 7100 + i);
    const sender = ns.spawn('python3', [
      '-c',
      PY_SEQ_SEND,
      GUEST_IP,
      ports.join(','),
      String(SIZE),
      '2000',
      '0.003',
    ]);
    const done = lines(sender).waitFor(/^sent$/, 60_000);
    const seqs = new Set<number>();
    const take = () => {
      for (const f of fx.frames.splice(0)) {
        const s = seqOf(f, ports);
        if (s !== null) seqs.add(s);
      }
    };
    let snapshots = 0;
    while (seqs.size < 1500) {
      await fx.until(
        () => {
          take();
          return seqs.size >= 300 * (snapshots + 1);
        },
        20_000,
        'traffic',
      );
      const before = [0, 1].map((p) => memory.readU16(drv.queue(2 * p).config.deviceAddr + 2));
      const snap = fx.dev.snapshot() as unknown as {
        transport: {
          transport: {
            queues: { ring: { nextUsed: number } | null }[];
            device: { stats: { queues: { rxPackets: number }[] } };
          };
        };
      };
      const t = snap.transport.transport;
      for (const p of [0, 1]) {
        // Taken at one quiesced moment: one used entry per delivered frame (small frames, one buffer
        // each), and not behind what the guest already saw.
        const nextUsed = t.queues[2 * p]!.ring!.nextUsed;
        expect(nextUsed).toBe(t.device.stats.queues[p]!.rxPackets & 0xffff);
        expect(nextUsed).toBeGreaterThanOrEqual(before[p]!);
      }
      snapshots++;
    }
    await done;
    await fx.until(
      () => {
        take();
        return seqs.size >= 2000;
      },
      30_000,
      'all 2000 datagrams',
    );
    expect(seqs.size).toBe(2000);
    expect(queues(fx).map((q) => q.rxDropped)).toEqual([0, 0]);
  });

  it('device reset while traffic runs: the workers stop, a new driver brings the device up again, both pairs carry traffic', async () => {
    const fx = fixture();
    const { ns, dev } = fx;
    const ports = Array.from({ length: 16 }, (_, i) => 7200 + i);
    const sender = ns.spawn('python3', [
      '-c',
      PY_SEQ_SEND,
      GUEST_IP,
      ports.join(','),
      String(SIZE),
      '1500',
      '0.003',
    ]);
    const done = lines(sender).waitFor(/^sent$/, 60_000);
    let got = 0;
    await fx.until(
      () => {
        for (const f of fx.frames.splice(0)) if (seqOf(f, ports) !== null) got++;
        return got >= 200;
      },
      20_000,
      'traffic',
    );
    fx.drv.pci.reset();
    expect(poolOf(fx).running).toBe(false);
    // A new driver instance in the other half of guest memory (as after a guest reboot).
    const irq = new InterruptCollector();
    const drv2 = new VirtioNetDriver(dev, fx.drv.memory, {
      interrupts: irq,
      rxBuffers: 64,
      allocator: new BumpAllocator(24 << 20, 44 << 20),
    });
    (fx.dev as unknown as { setInterrupts(i: unknown): void }).setInterrupts(irq);
    drv2.open();
    expect(poolOf(fx).running).toBe(true);
    await done;
    const after = [0, 0];
    const ports2 = Array.from({ length: 24 }, (_, i) => 9200 + i);
    ns.exec('python3', ['-c', PY_SEQ_SEND, GUEST_IP, ports2.join(','), String(SIZE), '200', '0']);
    const end = Date.now() + 10_000;
    while (after[0]! + after[1]! < 200 && Date.now() < end) {
      for (let p = 0; p < 2; p++)
        for (const r of drv2.receive(p)) {
          const s = seqOf({ frame: r.frame, pair: p } as GuestFrame, ports2);
          if (s !== null) after[p]!++;
        }
      await sleep(2);
    }
    expect(after[0]! + after[1]!).toBe(200);
    expect(after[0]).toBeGreaterThan(0);
    expect(after[1]).toBeGreaterThan(0);
    const child = ns.spawn('python3', ['-c', PY_UDP_RECV, KERNEL_IP, '5558', '2']);
    const out = lines(child);
    await out.waitFor(/^ready$/);
    for (const pair of [0, 1])
      drv2.send(udpFrame(GUEST_IP, KERNEL_IP, 43000 + pair, 5558, enc(`p${pair}`)), { pair });
    expect(await out.waitFor(/ 43000$/)).toContain(hex(enc('p0')));
    expect(await out.waitFor(/ 43001$/)).toContain(hex(enc('p1')));
  });

  it("queue reset (RING_RESET) of pair 1's rx queue: pair 0 keeps running on its worker; re-enabled, both pairs receive again", async () => {
    const fx = fixture();
    const { drv, ns } = fx;
    expect(drv.has(40)).toBe(true);
    const pool = poolOf(fx);
    drv.pci.resetQueue(drv.rxIndex(1));
    expect(pool.running).toBe(true);
    const ports = Array.from({ length: 24 }, (_, i) => 9300 + i);
    ns.exec('python3', ['-c', PY_SEQ_SEND, GUEST_IP, ports.join(','), String(SIZE), '200', '0']);
    const got = [0, 0];
    // Only pair 0 is polled (the driver has no queue 2 now). The frames tun steers to queue 1 meet a
    // queue that is not enabled: dropped (§5.1.6.5.7.2), counted.
    const end = Date.now() + 10_000;
    while (Date.now() < end && !(got[0]! > 0 && got[0]! + queues(fx)[1]!.rxDropped >= 200)) {
      for (const r of drv.receive(0))
        if (seqOf({ frame: r.frame, pair: 0 } as GuestFrame, ports) !== null) got[0]!++;
      await sleep(2);
    }
    expect(got[0]! + queues(fx)[1]!.rxDropped).toBe(200);
    expect(got[0]).toBeGreaterThan(0);
    drv.pci.setupQueue(drv.rxIndex(1));
    drv.postRx(1);
    const ports2 = Array.from({ length: 24 }, (_, i) => 9400 + i);
    await burstOverPairs(fx, ports2, 200, '200 datagrams after re-enable');
  });

  it('a guest that breaks a ring served by a worker gets DEVICE_NEEDS_RESET (counted once); the device reset then completes with the workers stopped', async () => {
    const fx = fixture();
    const { drv } = fx;
    const memory = drv.memory;
    // Pair 1's tx ring: an avail entry naming a descriptor past the table, then a kick.
    const q = drv.queue(drv.txIndex(1)).config;
    const idx = memory.readU16(q.driverAddr + 2);
    memory.writeU16(q.driverAddr + 4 + 2 * (idx % q.size), q.size + 7);
    memory.writeU16(q.driverAddr + 2, (idx + 1) & 0xffff);
    drv.pci.kick(drv.txIndex(1));
    await fx.until(() => (drv.pci.status & 0x40) !== 0, 5000, 'DEVICE_NEEDS_RESET');
    const s = fx.dev.stats() as unknown as { guestErrors: number };
    expect(s.guestErrors).toBe(1);
    drv.pci.reset();
    expect(poolOf(fx).running).toBe(false);
    expect(drv.pci.status).toBe(0);
  });

  it('6 pairs on 6 workers: the libuv threadpool stays free (no thread held per tap queue) and every pair receives', async () => {
    // Tap readiness is a uv_poll handle on each worker's own loop. It used to be a koffi async poll(2)
    // on the process-wide threadpool (4 threads): 4 workers held all of it, fs calls never returned, and
    // the queues of workers 5 and 6 were never read.
    const fx = fixture({ queues: 6 });
    const pool = poolOf(fx);
    expect(pool.workerCount).toBe(6);
    await sleep(200); // every worker has armed its tap queue
    const read = await Promise.race([
      readFile('/proc/self/stat').then(() => 'answered'),
      sleep(3000).then(() => 'no answer in 3 s'),
    ]);
    expect(read).toBe('answered');
    const ports = Array.from({ length: 48 }, (_, i) => 9100 + i);
    fx.ns.exec('python3', ['-c', PY_SEQ_SEND, GUEST_IP, ports.join(','), String(SIZE), '600', '0.001']);
    const seen = new Set<number>();
    const perPair = [0, 0, 0, 0, 0, 0];
    await fx.until(
      () => {
        for (const f of fx.frames.splice(0)) {
          const s = seqOf(f, ports);
          if (s !== null && !seen.has(s)) {
            seen.add(s);
            perPair[f.pair]!++;
          }
        }
        return seen.size >= 600;
      },
      20_000,
      '600 datagrams over 6 pairs',
    );
    expect(seen.size).toBe(600);
    // tun spreads 48 flows over the 6 queues: at least 5 of them carried some.
    expect(perPair.filter((n) => n > 0).length).toBeGreaterThanOrEqual(5);
  });

  it('close leaves no thread and no fd behind (/proc/self/task, /proc/self/fd)', async () => {
    // Warm up what stays for the process's life (libuv's thread pool, koffi), then count.
    deviceFixture({ queues: 2, sharedMemory: true }).dispose();
    await settled();
    const before = { tasks: tasks(), fds: fds() };
    const fx = deviceFixture({ queues: 2, sharedMemory: true, device: { workers: true } });
    const pool = poolOf(fx);
    expect(tasks()).toBeGreaterThanOrEqual(before.tasks + 2);
    fx.drv.send(udpFrame(GUEST_IP, KERNEL_IP, 42000, 5557, enc('x')), { pair: 1 });
    await fx.until(() => queues(fx)[1]!.txPackets === 1, 5000, 'a frame through worker 1');
    fx.dispose();
    await pool.exited();
    const end = Date.now() + 5000;
    while ((tasks() !== before.tasks || fds() !== before.fds) && Date.now() < end) await sleep(20);
    expect({ tasks: tasks(), fds: fds() }).toEqual(before);
  });
});
