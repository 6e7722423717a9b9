/**
 * What a guest kick costs when the queue runs on a worker (issue 17, docs/workers.md "Kick by eventfd"):
 * a kick → interrupt ping-pong through the real virtio-net function under our vfio-user server, 2 queue
 * pairs over a MemoryBackend, guest RAM DMA-mapped from a memfd. Each round the synthetic guest queues
 * one 64-byte frame on pair 0's transmitq, kicks, and waits for the tx queue's MSI-X eventfd (EVENT_IDX
 * off, so every used buffer interrupts). Rows, alternating, best of the rounds:
 *   - workers, kick by posted REGION_WRITE: the main thread reads the message and rings the worker's
 *     doorbell (what QEMU 11.1 does: it never asks for ioeventfds);
 *   - workers, kick by ioeventfd: the worker polls the eventfd itself, no main thread;
 *   - one thread, kick by ioeventfd: the server's eventfd wakes the main thread, which runs the queue.
 * Interrupts leave by eventfd in every row (the workers write them). The ratios are against the first
 * row, measured in the same run. No kernel device, no privileges.
 *
 *   node --import tsx bench/worker-kick.bench.ts   (KICK_ROUNDS per row, default 5000; BENCH_REPEAT, default 3)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { virtioNetVfioUserDevice } from '../devices/serve/vfio-user.js';
import { LINUX_6_1_FEATURES, VirtioNetDriver } from '../devices/testing/net-driver.js';
import type { WorkerPool } from '../devices/virtio-net/workers/pool.js';
import * as sys from '../lib/host/socket.js';
import { GuestMemory } from '../lib/memory/guest-memory.js';
import { MemoryBackend } from '../lib/net/memory-backend.js';
import { VfioUserClient } from '../lib/vfio-user/client.js';
import {
  body,
  Command,
  DMA_MAP,
  encodeVersionBody,
  IRQ_SET,
  IrqSetFlag,
  REGION_IO_FDS,
  REGION_RW,
  view,
} from '../lib/vfio-user/protocol.js';
import { VfioUserServer } from '../lib/vfio-user/server.js';
import { MODERN_BAR } from '../virtio/pci/virtio-pci.js';
import { BumpAllocator } from '../virtio/testing/bump-allocator.js';

const ROUNDS = Number(process.env.KICK_ROUNDS ?? 5000);
const REPEAT = Number(process.env.BENCH_REPEAT ?? 3);
const RAM = 32 << 20;
const EVENT_IDX = 29n;
/** Pair 0's transmitq, and the vector the driver gives it (queue i → vector i + 1). */
const TXQ = 1;
const TX_VECTOR = 2;
const frame = Uint8Array.from({ length: 64 }, (_, i) => (i < 12 ? 0x02 : i & 0xff));

async function rig(workers: boolean) {
  const dir = mkdtempSync(join(tmpdir(), 'worker-kick-'));
  const backend = new MemoryBackend({ queues: 2 });
  const dev = virtioNetVfioUserDevice({ memory: new GuestMemory(), backend, mq: true, queues: 2, workers });
  const server = new VfioUserServer(dev, { socketPath: join(dir, 's') });
  await server.listen();
  const client = VfioUserClient.connect(join(dir, 's'));
  const caps = { maxMsgFds: 16, maxDataXferSize: 4096, pgsizes: 4096, maxDmaMaps: 4, writeMultiple: false };
  await client.request(Command.VERSION, encodeVersionBody(0, 0, caps));
  const fd = sys.memfdCreate('worker-kick', RAM);
  const ptr = sys.mmap(null, RAM, sys.PROT_READ | sys.PROT_WRITE, sys.MAP_SHARED, fd, 0n);
  const map = body(DMA_MAP.SIZE, (o) => {
    o.setUint32(DMA_MAP.argsz, DMA_MAP.SIZE, true);
    o.setUint32(DMA_MAP.flags, 3, true);
    o.setBigUint64(DMA_MAP.size, BigInt(RAM), true);
  });
  await client.request(Command.DMA_MAP, map, [fd]);
  const vectors = Array.from({ length: dev.msixVectors }, () => sys.eventfd());
  const irq = body(IRQ_SET.SIZE, (o) => {
    o.setUint32(IRQ_SET.argsz, IRQ_SET.SIZE, true);
    o.setUint32(IRQ_SET.flags, IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, true);
    o.setUint32(IRQ_SET.index, 2, true); // MSI-X
    o.setUint32(IRQ_SET.count, vectors.length, true);
  });
  await client.request(Command.DEVICE_SET_IRQS, irq, vectors);
  const ioFds = body(REGION_IO_FDS.SIZE, (o) => {
    o.setUint32(REGION_IO_FDS.argsz, 4096, true);
    o.setUint32(REGION_IO_FDS.index, MODERN_BAR, true);
  });
  const r = await client.request(Command.DEVICE_GET_REGION_IO_FDS, ioFds);
  // Sub-region i is doorbell i, queue i's notify slot.
  const kickFd = r.fds[TXQ]!;
  const memory = new GuestMemory([{ address: 0, bytes: new Uint8Array(sys.viewOf(ptr, RAM)) }]);
  const driver = new VirtioNetDriver(dev.net, memory, {
    allocator: new BumpAllocator(0x100000, RAM),
    wanted: LINUX_6_1_FEATURES & ~(1n << EVENT_IDX),
    rxBuffers: 16,
  });
  driver.open();
  const write = new Uint8Array(REGION_RW.SIZE + 2);
  view(write).setBigUint64(REGION_RW.offset, BigInt(dev.net.transport.queueNotifyOffsets()[TXQ]!), true);
  view(write).setUint32(REGION_RW.region, MODERN_BAR, true);
  view(write).setUint32(REGION_RW.count, 2, true);
  view(write).setUint16(REGION_RW.SIZE, TXQ, true);
  return {
    dev,
    server,
    driver,
    backend,
    pool: workers ? (dev.net.net.dataPlane as WorkerPool) : null,
    irqFd: vectors[TX_VECTOR]!,
    byMessage: () => client.post(Command.REGION_WRITE, write),
    byEventfd: () => {
      sys.eventfdSignal(kickFd);
    },
    async close() {
      client.close();
      await server.waitForDisconnect();
      await server.close();
      dev.close();
      for (const v of vectors) sys.close(v);
      for (const f of r.fds) sys.close(f);
      sys.munmap(ptr, RAM);
      sys.close(fd);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
type Rig = Awaited<ReturnType<typeof rig>>;

/** `rounds` kick → interrupt round trips; resolves with µs per round trip. */
function pingPong(r: Rig, kick: () => void, rounds: number): Promise<number> {
  return new Promise((resolve) => {
    let left = rounds;
    const round = () => {
      r.driver.reclaimTx(0);
      r.driver.send(frame, { pair: 0, kick: false });
      kick();
    };
    const t0 = process.hrtime.bigint();
    const poll = sys.pollFd(r.irqFd, (ev) => {
      if (!ev.readable || sys.eventfdRead(r.irqFd) === 0n) return;
      if (--left === 0) {
        poll.close();
        resolve(Number(process.hrtime.bigint() - t0) / rounds / 1000);
      } else round();
    });
    poll.start({ readable: true, disconnect: false });
    round();
  });
}

const onWorkers = await rig(true);
const oneThread = await rig(false);
const rows: [string, Rig, () => void][] = [
  ['workers, kick by posted REGION_WRITE (main thread → doorbell)', onWorkers, onWorkers.byMessage],
  ['workers, kick by ioeventfd (the worker polls it)', onWorkers, onWorkers.byEventfd],
  ['one thread, kick by ioeventfd (the server polls it)', oneThread, oneThread.byEventfd],
];
const best = rows.map(() => Number.POSITIVE_INFINITY);
for (const [, r, kick] of rows) await pingPong(r, kick, Math.ceil(ROUNDS / 10)); // warm-up
const handoffs0 = { ...onWorkers.pool!.handoffs };
for (let rep = 0; rep < REPEAT; rep++)
  for (const [i, [, r, kick]] of rows.entries())
    best[i] = Math.min(best[i]!, await pingPong(r, kick, ROUNDS));
onWorkers.pool!.refreshStats();
const h = onWorkers.pool!.handoffs;
console.log('| kick path | µs per kick → interrupt (best of rounds) | vs REGION_WRITE on workers |');
console.log('|---|---|---|');
for (const [i, [name]] of rows.entries())
  console.log(`| ${name} | ${best[i]!.toFixed(1)} | ${(best[0]! / best[i]!).toFixed(2)}x |`);
const st = onWorkers.server.stats();
console.log(
  `workers: ${ROUNDS * REPEAT * 2} kicks measured; doorbells rung ${h.doorbells - handoffs0.doorbells}, eventfd wake-ups on the workers ${h.kicksDirect - handoffs0.kicksDirect} (a chain the worker finds before the signal makes two signals one wake-up), on the server ${st.kicksByEventfd}; interrupts written by the workers ${h.interruptsDirect - handoffs0.interruptsDirect}, handed to the main thread ${h.interrupts - handoffs0.interrupts}; tx drops ${onWorkers.dev.net.stats().queues[0]!.txDropped}`,
);
await onWorkers.close();
await oneThread.close();
