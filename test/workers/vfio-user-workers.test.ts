/**
 * Queue pairs on worker threads under vfio-user (docs/workers.md, issue #17): the device `serve` builds
 * (virtioNetFromCommandLine, queues=2, so `-o workers=auto` puts each pair on a worker) on a real
 * 2-queue tap, served on a real socket. Guest memory reaches the device only by DMA_MAP of memfds — mmaps
 * the workers view at their native address. The synthetic guest (VirtioNetDriver, synchronous) drives the
 * function through the same VfioUserDevice the server calls, over its own mmaps of the same memfds; what
 * only the socket can show — DMA_MAP / DMA_UNMAP, SET_IRQS — goes through the vfio-user client (as
 * devices/serve/vfio-user-sriov.test.ts). Root and /dev/net/tun only; each test makes its own namespace.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { type VirtioNetVfioUserDevice, virtioNetFromCommandLine } from '../../devices/serve/vfio-user.js';
import { VirtioNetDriver } from '../../devices/testing/net-driver.js';
import type { WorkerPool } from '../../devices/virtio-net/workers/pool.js';
import { NetNamespace, uniqueName } from '../../lib/host/netns.js';
import * as sys from '../../lib/host/socket.js';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { VfioUserClient } from '../../lib/vfio-user/client.js';
import {
  body,
  Command,
  DMA_MAP,
  DMA_UNMAP,
  encodeVersionBody,
  IRQ_SET,
  IrqSetFlag,
  MsgFlag,
  REGION_IO_FDS,
  view,
} from '../../lib/vfio-user/protocol.js';
import { VfioUserServer } from '../../lib/vfio-user/server.js';
import { MODERN_BAR } from '../../virtio/pci/virtio-pci.js';
import { BumpAllocator } from '../../virtio/testing/bump-allocator.js';
import { InterruptCollector } from '../../virtio/testing/pci-driver.js';
import { lines, PY_UDP_RECV, unavailable } from '../tap/fixture.test-support.js';
import {
  GUEST_IP,
  GUEST_MAC,
  KERNEL_IP,
  KERNEL_MAC,
  parseIpv4,
  udpFrame,
} from '../tap/frames.test-support.js';
import { fds, PY_SEQ_SEND, settled, sleep, tasks } from './support.test-support.js';

const MB = 1 << 20;
/** Region A: rings and buffers. Region B: mapped, unmapped and mapped again while frames move. */
const A_SIZE = 32 * MB;
const B_ADDR = 64 * MB;
const B_SIZE = 4 * MB;
/** Region C: the hostile client's map/unmap storm. */
const C_ADDR = 128 * MB;
const MEMFD = 'vfu-workers-test';

const SIZE = 200;
const pattern = Uint8Array.from({ length: SIZE }, (_, i) => (i * 7) & 0xff);
const PORTS = Array.from({ length: 24 }, (_, i) => 9000 + i);
const enc = (s: string) => new TextEncoder().encode(s);
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const isError = (r: { header: { flags: number } }) => (r.header.flags & MsgFlag.ERROR) !== 0;
const memfdMaps = () =>
  readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((l) => l.includes(`memfd:${MEMFD}`)).length;

/** Allocates in A until `b` is set, then in B (buffers posted after B was mapped again). */
class TwoRanges extends BumpAllocator {
  b: BumpAllocator | null = null;
  override alloc(size: number, align = 16): number {
    return this.b ? this.b.alloc(size, align) : super.alloc(size, align);
  }
}

/** A memfd of `size` bytes, and this side's mmap of it (the guest's view). */
function guestRam(size: number) {
  const fd = sys.memfdCreate(MEMFD, size);
  const ptr = sys.mmap(null, size, sys.PROT_READ | sys.PROT_WRITE, sys.MAP_SHARED, fd, 0n);
  return { fd, ptr, size, bytes: new Uint8Array(sys.viewOf(ptr, size)) };
}
type Ram = ReturnType<typeof guestRam>;

const dmaMap = (address: number, size: number) =>
  body(DMA_MAP.SIZE, (o) => {
    o.setUint32(DMA_MAP.argsz, DMA_MAP.SIZE, true);
    o.setUint32(DMA_MAP.flags, 3, true);
    o.setBigUint64(DMA_MAP.offset, 0n, true);
    o.setBigUint64(DMA_MAP.address, BigInt(address), true);
    o.setBigUint64(DMA_MAP.size, BigInt(size), true);
  });
const dmaUnmap = (address: number, size: number) =>
  body(DMA_UNMAP.SIZE, (o) => {
    o.setUint32(DMA_UNMAP.argsz, DMA_UNMAP.SIZE, true);
    o.setBigUint64(DMA_UNMAP.address, BigInt(address), true);
    o.setBigUint64(DMA_UNMAP.size, BigInt(size), true);
  });

/**
 * DEVICE_GET_REGION_IO_FDS for the notify BAR: the eventfd of each queue's doorbell, by queue index (the
 * caller closes them).
 */
async function kickEventfds(fx: Fixture): Promise<number[]> {
  const req = new Uint8Array(REGION_IO_FDS.SIZE);
  const v = view(req);
  v.setUint32(REGION_IO_FDS.argsz, 4096, true);
  v.setUint32(REGION_IO_FDS.index, MODERN_BAR, true);
  const r = await fx.client.request(Command.DEVICE_GET_REGION_IO_FDS, req);
  expect(isError(r)).toBe(false);
  const b = view(r.body);
  const byOffset = new Map<number, number>();
  for (let i = 0; i < b.getUint32(REGION_IO_FDS.count, true); i++) {
    const at = REGION_IO_FDS.subRegions + 40 * i;
    byOffset.set(Number(b.getBigUint64(at, true)), r.fds[b.getUint32(at + 16, true)]!);
  }
  return fx.dev.net.transport.queueNotifyOffsets().map((o) => byOffset.get(o) ?? -1);
}

/** The sequence number of a datagram of PY_SEQ_SEND, after checking its bytes; null for other frames. */
function seqOf(frame: Uint8Array): number | null {
  const p = parseIpv4(frame);
  if (p?.proto !== 17 || !PORTS.includes((p.l4[2]! << 8) | p.l4[3]!)) return null;
  const data = p.l4.subarray(8);
  expect(data.length).toBe(SIZE);
  expect(hex(data.subarray(4))).toBe(hex(pattern.subarray(4)));
  return new DataView(data.buffer, data.byteOffset).getUint32(0);
}

interface Fixture {
  ns: NetNamespace;
  tapName: string;
  dev: VirtioNetVfioUserDevice;
  pool: WorkerPool;
  server: VfioUserServer;
  client: VfioUserClient;
  drv: VirtioNetDriver;
  drvMemory: GuestMemory;
  allocator: TwoRanges;
  rams: Ram[];
  eventfds: number[];
  frames: { frame: Uint8Array; pair: number }[];
  until<T>(probe: () => T | null | undefined | false, timeoutMs?: number, what?: string): Promise<T>;
  dispose(): Promise<void>;
}

async function fixture(dir: string): Promise<Fixture> {
  const ns = NetNamespace.create('vw');
  const tapName = uniqueName('vw');
  const memory = new GuestMemory();
  // serve's own path: -o properties; workers=auto gives a worker per pair for queues=2.
  const dev = virtioNetFromCommandLine({
    memory,
    tap: tapName,
    netns: ns.name,
    options: { mq: 'on', queues: '2', mac: GUEST_MAC },
  });
  ns.exec('sysctl', ['-q', '-w', `net.ipv6.conf.${tapName}.disable_ipv6=1`]);
  ns.configure(tapName, `${KERNEL_IP}/24`, KERNEL_MAC);
  ns.ip('neigh', 'replace', GUEST_IP, 'lladdr', GUEST_MAC, 'dev', tapName, 'nud', 'permanent');
  ns.ip('link', 'set', 'dev', tapName, 'txqueuelen', '10000');
  const pool = dev.net.net.dataPlane as WorkerPool;
  const socketPath = join(dir, 'vfu.sock');
  const server = new VfioUserServer(dev, { socketPath, maxMsgFds: 16 });
  await server.listen();
  const client = VfioUserClient.connect(socketPath);
  const v = await client.request(
    Command.VERSION,
    encodeVersionBody(0, 0, {
      maxMsgFds: 16,
      maxDataXferSize: MB,
      pgsizes: 4096,
      maxDmaMaps: 1024,
      writeMultiple: true,
    }),
  );
  expect(isError(v)).toBe(false);
  const a = guestRam(A_SIZE);
  const b = guestRam(B_SIZE);
  // The server receives its own copy of each descriptor; ours stay for our own mmaps.
  expect(isError(await client.request(Command.DMA_MAP, dmaMap(0, A_SIZE), [a.fd]))).toBe(false);
  expect(isError(await client.request(Command.DMA_MAP, dmaMap(B_ADDR, B_SIZE), [b.fd]))).toBe(false);
  const eventfds = Array.from({ length: dev.msixVectors }, () => sys.eventfd());
  const irq = new Uint8Array(IRQ_SET.SIZE);
  const iv = view(irq);
  iv.setUint32(IRQ_SET.argsz, IRQ_SET.SIZE, true);
  iv.setUint32(IRQ_SET.flags, IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, true);
  iv.setUint32(IRQ_SET.index, 2, true); // MSI-X
  iv.setUint32(IRQ_SET.count, eventfds.length, true);
  expect(isError(await client.request(Command.DEVICE_SET_IRQS, irq, eventfds))).toBe(false);
  const drvMemory = new GuestMemory([
    { address: 0, bytes: a.bytes },
    { address: B_ADDR, bytes: b.bytes },
  ]);
  const allocator = new TwoRanges(0x100000, A_SIZE);
  const drv = new VirtioNetDriver(dev.net, drvMemory, {
    interrupts: new InterruptCollector(),
    rxBuffers: 32,
    allocator,
  });
  drv.open();
  const frames: Fixture['frames'] = [];
  const until = async <T>(
    probe: () => T | null | undefined | false,
    timeoutMs = 10_000,
    what = 'condition',
  ) => {
    const end = Date.now() + timeoutMs;
    for (;;) {
      for (let p = 0; p < drv.maxPairs; p++)
        for (const r of drv.receive(p)) frames.push({ frame: r.frame, pair: p });
      const got = probe();
      if (got) return got;
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await sleep(2);
    }
  };
  const rams = [a, b];
  return {
    ns,
    tapName,
    dev,
    pool,
    server,
    client,
    drv,
    drvMemory,
    allocator,
    rams,
    eventfds,
    frames,
    until,
    async dispose() {
      client.close();
      await server.waitForDisconnect();
      await server.close();
      dev.close();
      for (const r of rams) {
        sys.munmap(r.ptr, r.size);
        sys.close(r.fd);
      }
      for (const e of eventfds) sys.close(e);
      ns.delete();
    },
  };
}

/** guest -> kernel: `n` datagrams per pair, each naming its pair and index, checked byte for byte. */
async function guestToKernel(fx: Fixture, port: number, n: number, tag: string): Promise<void> {
  const child = fx.ns.spawn('python3', ['-c', PY_UDP_RECV, KERNEL_IP, String(port), String(2 * n)]);
  const out = lines(child);
  await out.waitFor(/^ready$/);
  for (let i = 0; i < n; i++)
    for (const pair of [0, 1])
      fx.drv.send(udpFrame(GUEST_IP, KERNEL_IP, 42000 + pair, port, enc(`${tag} ${pair} #${i}`)), { pair });
  for (const pair of [0, 1])
    for (let i = 0; i < n; i++) {
      const payload = hex(enc(`${tag} ${pair} #${i}`));
      expect(await out.waitFor(new RegExp(`^${payload} `))).toBe(`${payload} ${GUEST_IP} ${42000 + pair}`);
    }
}

/** kernel -> guest: `count` datagrams over 24 flows; each arrives once, byte for byte, on both pairs. */
async function kernelToGuest(fx: Fixture, count: number, what: string, pace = '0.002'): Promise<number[]> {
  fx.frames.length = 0;
  fx.ns.exec('python3', ['-c', PY_SEQ_SEND, GUEST_IP, PORTS.join(','), String(SIZE), String(count), pace]);
  const seen = new Set<number>();
  const perPair = [0, 0];
  await fx.until(
    () => {
      for (const f of fx.frames.splice(0)) {
        const s = seqOf(f.frame);
        if (s === null) continue;
        expect(seen.has(s)).toBe(false);
        seen.add(s);
        perPair[f.pair]!++;
      }
      return seen.size >= count;
    },
    20_000,
    what,
  );
  expect(perPair[0]).toBeGreaterThan(0);
  expect(perPair[1]).toBeGreaterThan(0);
  return perPair;
}

if (unavailable !== null && process.env.CI === 'true')
  throw new Error(`vfio-user worker tests cannot run under CI: ${unavailable}`);

describe.skipIf(unavailable !== null)(
  `queue pairs on worker threads under vfio-user${unavailable ? ` (skipped: ${unavailable})` : ''}`,
  () => {
    const dirs: string[] = [];
    const fixtures: Fixture[] = [];
    const make = async () => {
      const dir = mkdtempSync(join(tmpdir(), 'vfu-workers-'));
      dirs.push(dir);
      const fx = await fixture(dir);
      fixtures.push(fx);
      return fx;
    };
    afterEach(async () => {
      for (const f of fixtures.splice(0)) await f.dispose();
      for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
    });

    it('2 pairs on 2 workers over DMA-mapped memfds: frames both ways byte for byte on each pair; interrupts reach the eventfds', async () => {
      const fx = await make();
      expect(fx.pool.workerCount).toBe(2);
      expect(fx.pool.running).toBe(true);
      // Every region reached the workers by a memory request (the pool was made before DMA_MAP).
      expect(fx.dev.net.memory.threadRegions()!.map((r) => [r.address, r.size, 'host' in r])).toEqual([
        [0, A_SIZE, true],
        [B_ADDR, B_SIZE, true],
      ]);
      const requests = fx.pool.handoffs.requests;
      await guestToKernel(fx, 5557, 20, 'pair');
      await kernelToGuest(fx, 600, '600 datagrams');
      const q = (fx.dev.net.stats() as unknown as { queues: { txPackets: number; rxDropped: number }[] })
        .queues;
      expect(q.map((x) => x.txPackets)).toEqual([20, 20]);
      expect(q.map((x) => x.rxDropped)).toEqual([0, 0]);
      // No request per frame; the workers' interrupts went out through the vector eventfds (the driver
      // gives queue i vector i + 1: rx 0 is vector 1, rx 1 vector 3), written by the workers themselves.
      expect(fx.pool.handoffs.requests).toBe(requests);
      const signalled = fx.eventfds.map((e) => Number(sys.eventfdRead(e)));
      expect(signalled[1]).toBeGreaterThan(0);
      expect(signalled[3]).toBeGreaterThan(0);
      fx.pool.refreshStats();
      expect(fx.pool.handoffs.interruptsDirect).toBeGreaterThan(0);
      expect(fx.pool.handoffs.interrupts).toBe(0);
    });

    it('interrupts leave the workers by eventfd; a vector masked by SET_IRQS waits pending; a replaced eventfd is never written again', async () => {
      const fx = await make();
      const setIrqs = async (flags: number, start: number, fds: number[] = []) => {
        const b = new Uint8Array(IRQ_SET.SIZE);
        const v = view(b);
        v.setUint32(IRQ_SET.argsz, IRQ_SET.SIZE, true);
        v.setUint32(IRQ_SET.flags, flags, true);
        v.setUint32(IRQ_SET.index, 2, true); // MSI-X
        v.setUint32(IRQ_SET.start, start, true);
        v.setUint32(IRQ_SET.count, 1, true);
        expect(isError(await fx.client.request(Command.DEVICE_SET_IRQS, b, fds))).toBe(false);
      };
      const h = fx.pool.handoffs;
      // The workers publish their counters every few ms; refreshStats copies them into `handoffs`.
      const direct = () => {
        fx.pool.refreshStats();
        return h.interruptsDirect;
      };
      await kernelToGuest(fx, 300, '300 datagrams');
      expect(direct()).toBeGreaterThan(0);
      expect(h.interrupts).toBe(0); // no queue interrupt through the main thread
      for (const e of fx.eventfds) sys.eventfdRead(e);

      // rx 0's vector masked: its interrupts come back to the main thread and wait in the pending bit.
      const requests = h.requests;
      await setIrqs(IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_MASK, 1);
      expect(h.requests - requests).toBe(2); // the new routes reached both workers before the reply
      const direct0 = direct();
      const perPair = await kernelToGuest(fx, 300, '300 datagrams, vector 1 masked');
      expect(perPair[0]).toBeGreaterThan(0);
      expect(sys.eventfdRead(fx.eventfds[1]!)).toBe(0n);
      expect(h.interrupts).toBeGreaterThan(0);
      expect(sys.eventfdRead(fx.eventfds[3]!)).toBeGreaterThan(0n); // rx 1 still direct
      expect(direct()).toBeGreaterThan(direct0);
      await setIrqs(IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_UNMASK, 1);
      expect(sys.eventfdRead(fx.eventfds[1]!)).toBe(1n); // the pending interrupt, once

      // rx 1's eventfd replaced: the workers drop theirs before the server closes its copy.
      const fresh = sys.eventfd();
      const old = fx.eventfds[3]!;
      await setIrqs(IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, 3, [fresh]);
      fx.eventfds[3] = fresh;
      const bits = h.interrupts;
      await kernelToGuest(fx, 300, '300 datagrams after the replacement');
      expect(sys.eventfdRead(old)).toBe(0n);
      expect(sys.eventfdRead(fresh)).toBeGreaterThan(0n);
      expect(h.interrupts).toBe(bits);
      sys.close(old);
    }, 60_000);

    it('DMA_UNMAP and DMA_MAP of a region while frames move: no frame lost or changed; buffers in the new mapping are used', async () => {
      const fx = await make();
      fx.frames.length = 0;
      const sender = lines(
        fx.ns.spawn('python3', ['-c', PY_SEQ_SEND, GUEST_IP, PORTS.join(','), String(SIZE), '3000', '0.01']),
      );
      const seen = new Set<number>();
      const take = () => {
        for (const f of fx.frames.splice(0)) {
          const s = seqOf(f.frame);
          if (s !== null) seen.add(s);
        }
        return seen.size;
      };
      // Unmap B and map it again from a fresh memfd, 20 times, with frames being delivered in between.
      let b = fx.rams[1]!;
      for (let i = 0; i < 20; i++) {
        expect(isError(await fx.client.request(Command.DMA_UNMAP, dmaUnmap(B_ADDR, B_SIZE)))).toBe(false);
        fx.drvMemory.removeRegion(B_ADDR);
        sys.munmap(b.ptr, b.size);
        sys.close(b.fd);
        b = guestRam(B_SIZE);
        fx.rams[1] = b;
        expect(isError(await fx.client.request(Command.DMA_MAP, dmaMap(B_ADDR, B_SIZE), [b.fd]))).toBe(false);
        fx.drvMemory.addRegion({ address: B_ADDR, bytes: b.bytes });
        await fx.until(() => take() >= 0, 100);
        await sleep(5);
      }
      await sender.waitFor(/^sent$/, 20_000);
      await fx.until(() => take() >= 3000, 20_000, '3000 datagrams across the remaps');
      expect(seen.size).toBe(3000);
      // Rx buffers in the last mapping of B: the workers write frames there, the guest reads them.
      fx.allocator.b = new BumpAllocator(B_ADDR, B_ADDR + B_SIZE);
      for (const p of [0, 1]) expect(fx.drv.postRx(p, 64)).toBe(64);
      await kernelToGuest(fx, 1200, '1200 datagrams into buffers of the new mapping');
      const q = (fx.dev.net.stats() as unknown as { queues: { rxDropped: number }[] }).queues;
      expect(q.map((x) => x.rxDropped)).toEqual([0, 0]);
      expect(fx.dev.net.transport.lastError).toBeNull();
      expect(fx.server.dmaPinned()).toBe(0);
      await guestToKernel(fx, 5558, 5, 'after');
    }, 60_000);

    it('a hostile client: 400 map/unmap pairs stay bounded in time, fds, mappings and requests', async () => {
      const fx = await make();
      const before = {
        fds: fds(),
        maps: memfdMaps(),
        requests: fx.pool.handoffs.requests,
        rss: process.memoryUsage().rss,
      };
      const c = guestRam(MB);
      const t0 = Date.now();
      for (let i = 0; i < 400; i++) {
        expect(isError(await fx.client.request(Command.DMA_MAP, dmaMap(C_ADDR, MB), [c.fd]))).toBe(false);
        expect(isError(await fx.client.request(Command.DMA_UNMAP, dmaUnmap(C_ADDR, MB)))).toBe(false);
      }
      const took = Date.now() - t0;
      // One request per worker per change; nothing waits for a timeout.
      expect(fx.pool.handoffs.requests - before.requests).toBe(400 * 2 * 2);
      expect(took).toBeLessThan(30_000);
      expect(fds()).toBe(before.fds + 1); // c's own memfd
      expect(memfdMaps()).toBe(before.maps + 1); // c's own mmap; the device holds none of C
      expect(fx.server.dmaRegions()).toHaveLength(2);
      expect(fx.server.dmaPinned()).toBe(0);
      // 400 MiB were mapped in all: the device's placeholders hold no memory (only address space).
      expect(process.memoryUsage().rss - before.rss).toBeLessThan(64 * MB);
      sys.munmap(c.ptr, c.size);
      sys.close(c.fd);
      // The device still moves frames on both pairs.
      await kernelToGuest(fx, 200, '200 datagrams after the storm');
    }, 60_000);

    it('a worker that does not answer: the unmap is pinned (never munmapped), a map is refused, and it catches up later', async () => {
      const fx = await make();
      fx.pool.answerMs = 300;
      fx.pool.stallForTest(1, 2000);
      await sleep(20);
      // The unmap is answered (the client's view is gone) but the worker did not confirm: pinned.
      let t0 = Date.now();
      expect(isError(await fx.client.request(Command.DMA_UNMAP, dmaUnmap(B_ADDR, B_SIZE)))).toBe(false);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
      expect(Date.now() - t0).toBeLessThan(1500);
      expect(fx.server.dmaPinned()).toBe(1);
      // A map while the worker still owes its answer is refused at once (not another timeout).
      const b = fx.rams[1]!;
      t0 = Date.now();
      const refused = await fx.client.request(Command.DMA_MAP, dmaMap(B_ADDR, B_SIZE), [b.fd]);
      expect(isError(refused)).toBe(true);
      expect(Date.now() - t0).toBeLessThan(250);
      expect(fx.server.dmaRegions()).toHaveLength(1);
      // The worker wakes up, answers what it owes; the next map reaches both workers.
      await sleep(2200);
      expect(isError(await fx.client.request(Command.DMA_MAP, dmaMap(B_ADDR, B_SIZE), [b.fd]))).toBe(false);
      expect(fx.server.dmaRegions()).toHaveLength(2);
      expect(fx.server.dmaPinned()).toBe(2); // the unmap, and the refused map's chunk
      await guestToKernel(fx, 5559, 5, 'late');
      await kernelToGuest(fx, 200, '200 datagrams after the stall');
    }, 30_000);

    it('kicks by ioeventfd reach the workers directly: the server polls only the eventfds no worker took, and polls them again once the workers let go', async () => {
      const fx = await make();
      const kicks = await kickEventfds(fx);
      const txFd = (pair: number) => kicks[fx.drv.txIndex(pair)]!;
      expect([txFd(0), txFd(1)].every((fd) => fd >= 0)).toBe(true);
      const h = fx.pool.handoffs;
      const direct = () => {
        fx.pool.refreshStats();
        return h.kicksDirect;
      };
      const byServer = () => fx.server.stats().kicksByEventfd;
      const doorbells = h.doorbells;
      // One datagram per pair, queued without a doorbell write; each pair's kick is its eventfd's signal.
      const send = async (port: number, tag: string) => {
        const child = fx.ns.spawn('python3', ['-c', PY_UDP_RECV, KERNEL_IP, String(port), '2']);
        const out = lines(child);
        await out.waitFor(/^ready$/);
        for (const pair of [0, 1]) {
          const frame = udpFrame(GUEST_IP, KERNEL_IP, 42000 + pair, port, enc(`${tag} ${pair}`));
          fx.drv.send(frame, { pair, kick: false });
          sys.eventfdSignal(txFd(pair));
        }
        for (const pair of [0, 1]) {
          const payload = hex(enc(`${tag} ${pair}`));
          expect(await out.waitFor(new RegExp(`^${payload} `))).toBe(
            `${payload} ${GUEST_IP} ${42000 + pair}`,
          );
        }
      };
      await send(5561, 'eventfd');
      // Each worker read its own queue's eventfd: no doorbell rung, the server never woke for them.
      await fx.until(() => direct() === 2, 5000, 'two direct kicks');
      expect(h.doorbells).toBe(doorbells);
      expect(byServer()).toBe(0);
      // RING_RESET of pair 1's transmitq: its eventfd goes back to the server (a kick of a reset queue is
      // read and ignored there); pair 0's stays with its worker. Enabled again, the worker takes it back.
      fx.drv.pci.resetQueue(fx.drv.txIndex(1));
      sys.eventfdSignal(txFd(1));
      await fx.until(() => byServer() === 1, 5000, 'the server reading the reset queue’s kick');
      sys.eventfdSignal(txFd(0));
      await fx.until(() => direct() === 3, 5000, 'pair 0’s kick on its worker');
      fx.drv.pci.setupQueue(fx.drv.txIndex(1));
      await send(5563, 're-enabled');
      await fx.until(() => direct() === 5, 5000, 'both kicks on the workers again');
      expect(byServer()).toBe(1);
      expect(h.doorbells).toBe(doorbells);
      // A device reset stops the workers: the server polls every eventfd again.
      fx.dev.reset();
      expect(fx.pool.running).toBe(false);
      sys.eventfdSignal(txFd(0));
      await fx.until(() => byServer() === 2, 5000, 'the server reading the kick');
      // The driver again: the workers take the eventfds back.
      fx.drv.open();
      expect(fx.pool.running).toBe(true);
      await send(5562, 'again');
      await fx.until(() => direct() === 7, 5000, 'seven direct kicks');
      expect(byServer()).toBe(2);
      for (const fd of kicks) if (fd >= 0) sys.close(fd);
    }, 30_000);

    it('close leaves no thread, fd or guest mapping', async () => {
      await settled();
      const before = { tasks: tasks(), fds: fds(), maps: memfdMaps() };
      const fx = await make();
      expect(tasks()).toBeGreaterThanOrEqual(before.tasks + 2);
      // The workers hold dups of the kick eventfds too (closed here: the client's own copies).
      for (const fd of await kickEventfds(fx)) if (fd >= 0) sys.close(fd);
      expect(fx.pool.handoffs.kicksDirect).toBe(0);
      await guestToKernel(fx, 5560, 3, 'close');
      const pool = fx.pool;
      await fx.dispose();
      fixtures.length = 0;
      await pool.exited();
      const end = Date.now() + 5000;
      while ((tasks() !== before.tasks || fds() !== before.fds) && Date.now() < end) await sleep(20);
      expect({ tasks: tasks(), fds: fds(), maps: memfdMaps() }).toEqual(before);
    }, 30_000);
  },
);
