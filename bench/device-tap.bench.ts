/**
 * The virtio-net device driving a real tap, against a raw koffi loop on the same tap fd, in the same run
 * (root only; creates its own network namespace and tap and removes them).
 *
 *   node --import tsx bench/device-tap.bench.ts     # prints a markdown table (docs/performance.md)
 *
 * guest -> tap: the synthetic guest posts 128-chain batches (header + frame in one descriptor) and kicks
 * once per batch; the device pops them and the TapBackend writes each frame, addressed to a MAC nobody
 * owns (the kernel takes it, then drops it at L2). Raw: `write(fd, hdr + frame)` in a tight loop.
 * tap -> guest: N UDP datagrams are queued in the tap (its reads paused) by a sender in the namespace,
 * then drained into the guest: the tap's poller reads, the device fills rx buffers (backlogging and
 * pausing the tap when the ring is full), and the guest re-posts what it consumed and kicks, polling from
 * setImmediate. Raw: `read(fd)` until EAGAIN. Rounds alternate (ABBA for rx); ratios are medians of
 * adjacent pairs, fps are medians. Each row runs in one of the TapBackend's modes: the default (guest->tap:
 * zero copy with each kick's frames written in one io_uring submission; tap->guest: up to 64 reads per
 * io_uring submission into the backend's slots, the device copying), zero copy with a writev/readv per
 * frame (readv into lent guest buffers on rx), and copies through the backend's own buffers.
 * DEVICE_TAP_BENCH_ONLY="tap->guest 64" runs the rows whose "direction size mode" contains it.
 */

import { VirtioNetDriver } from '../devices/testing/net-driver.js';
import { createVirtioNetPci, type VirtioNetPci } from '../devices/virtio-net-pci.js';
import { GuestMemory } from '../lib/memory/guest-memory.js';
import { libc } from '../lib/host/libc.js';
import { NetNamespace, netnsUnavailableReason, uniqueName } from '../lib/host/netns.js';
import { TapBackend } from '../lib/tap/tap-backend.js';
import { InterruptCollector } from '../virtio/testing/pci-driver.js';

const BATCH = 128;
const TX_ROUNDS = 15;
const TX_BATCHES = 250; // 32 000 frames per round
const RX_ROUNDS = 6;
const RX_FRAMES = 20_000;
const KERNEL_IP = '10.78.0.1';
const GUEST_IP = '10.78.0.2';
const GUEST_MAC = '02:00:00:00:00:02';

const SENDER = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
payload = bytes(int(sys.argv[2]))
sent = 0
for i in range(int(sys.argv[3])):
    try:
        s.sendto(payload, (sys.argv[1], 9)); sent += 1
    except OSError:
        pass
print(sent)
`;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
const fps = (frames: number, t0: bigint, t1 = process.hrtime.bigint()) => frames / (Number(t1 - t0) / 1e9);
const tick = () => new Promise<void>((r) => setImmediate(r));
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

interface Paired {
  raw: number;
  device: number;
  ratio: number;
}
const paired = (raw: number[], dev: number[]): Paired => ({
  raw: median(raw),
  device: median(dev),
  ratio: median(dev.map((d, i) => d / raw[i]!)),
});

/** The guest's view of one queue: avail slots repeat the first batch's heads, so re-posting is an idx store. */
class RingHandle {
  readonly dv: DataView;
  availIdx: number;
  lastUsed: number;
  constructor(
    readonly ram: Uint8Array,
    readonly driverAddr: number,
    readonly deviceAddr: number,
    readonly notify: () => void,
  ) {
    this.dv = new DataView(ram.buffer);
    this.availIdx = this.dv.getUint16(driverAddr + 2, true);
    this.lastUsed = this.dv.getUint16(deviceAddr + 2, true);
  }
  /** Used entries since the last call (and re-arms the used event there). */
  takeUsed(): number {
    const u = this.dv.getUint16(this.deviceAddr + 2, true);
    const n = (u - this.lastUsed) & 0xffff;
    this.lastUsed = u;
    this.dv.setUint16(this.driverAddr + 4 + 2 * 256, u, true); // used_event (queue size 256)
    return n;
  }
  post(n: number): void {
    this.availIdx = (this.availIdx + n) & 0xffff;
    this.dv.setUint16(this.driverAddr + 2, this.availIdx, true);
  }
}

function bringUp(tap: TapBackend) {
  const ram = new Uint8Array(48 << 20);
  const memory = new GuestMemory([{ address: 0, bytes: ram }]);
  const dev = createVirtioNetPci({ memory, backend: tap, interrupts: { msi: () => {} }, mac: GUEST_MAC });
  const drv = new VirtioNetDriver(dev, memory, { interrupts: new InterruptCollector() });
  drv.open(); // posts 256 rx buffers
  return { dev, drv, ram, memory };
}

function ringOf(dev: VirtioNetPci, drv: VirtioNetDriver, ram: Uint8Array, index: number): RingHandle {
  const q = drv.queue(index);
  const bar = (drv.pci as unknown as { notify: { bar: number } }).notify.bar;
  const off = drv.pci.notifyOffset(index);
  return new RingHandle(ram, q.config.driverAddr, q.config.deviceAddr, () =>
    dev.barWrite(bar, off, 2, index),
  );
}

function benchTx(tap: TapBackend, size: number): Paired {
  const { dev, drv, ram, memory } = bringUp(tap);
  const frame = new Uint8Array(size);
  frame.set([0x02, 0, 0, 0, 0, 0x99, 0x02, 0, 0, 0, 0, 0x02, 0x08, 0x00]); // to a MAC nobody owns
  // The driver lays out one batch; afterwards avail slots repeat those heads.
  for (let i = 0; i < BATCH; i++) drv.send(frame);
  drv.reclaimTx(0);
  const tx = ringOf(dev, drv, ram, drv.txIndex(0));
  const size256 = 256;
  const heads: number[] = [];
  for (let i = 0; i < BATCH; i++)
    heads.push(memory.readU16(tx.driverAddr + 4 + 2 * ((tx.availIdx - BATCH + i) & (size256 - 1))));
  for (let s = 0; s < size256; s++) memory.writeU16(tx.driverAddr + 4 + 2 * s, heads[s % BATCH]!);
  const c = libc();
  const fd = tap.fds[0]!;
  const withHdr = new Uint8Array(12 + size);
  withHdr.set(frame, 12);
  const raw: number[] = [];
  const devRates: number[] = [];
  const n = TX_BATCHES * BATCH;
  const sentBefore = tap.stats().txFrames;
  for (let r = 0; r < TX_ROUNDS; r++) {
    let t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) c.write(fd, withHdr, withHdr.length);
    raw.push(fps(n, t0));
    t0 = process.hrtime.bigint();
    for (let b = 0; b < TX_BATCHES; b++) {
      tx.takeUsed();
      tx.post(BATCH);
      tx.notify();
    }
    devRates.push(fps(n, t0));
  }
  const sent = tap.stats().txFrames - sentBefore;
  if (sent !== TX_ROUNDS * n) throw new Error(`tx: the tap wrote ${sent} of ${TX_ROUNDS * n} frames`);
  if ((tap.stats().txDirect === tap.stats().txFrames) !== tap.zeroCopy)
    throw new Error(
      `tx: ${tap.stats().txDirect} of ${tap.stats().txFrames} frames zero copy (zeroCopy ${tap.zeroCopy})`,
    );
  return paired(raw, devRates);
}

function fill(ns: NetNamespace, size: number): number {
  return Number(
    ns
      .exec('python3', ['-c', SENDER, GUEST_IP, String(size - 42), String(RX_FRAMES)], { timeoutMs: 120_000 })
      .trim(),
  );
}

async function benchRx(ns: NetNamespace, tap: TapBackend, size: number): Promise<Paired> {
  const { dev, drv, ram } = bringUp(tap);
  const rx = ringOf(dev, drv, ram, drv.rxIndex(0));
  const c = libc();
  const fd = tap.fds[0]!;
  const buf = new Uint8Array(70_000);
  const raw: number[] = [];
  const devRates: number[] = [];
  const rawRound = () => {
    tap.pause(0);
    if (fill(ns, size) !== RX_FRAMES) throw new Error('the sender could not queue every datagram');
    let n = 0;
    const t0 = process.hrtime.bigint();
    while (c.read(fd, buf, buf.length) > 0) n++;
    raw.push(fps(n, t0));
    if (n !== RX_FRAMES)
      throw new Error(`${n} of ${RX_FRAMES} frames were queued in the tap (raise txqueuelen)`);
  };
  const deviceRound = async () => {
    tap.pause(0);
    await sleep(20); // let the poller drop the fd
    if (fill(ns, size) !== RX_FRAMES) throw new Error('the sender could not queue every datagram');
    let got = 0;
    const t0 = process.hrtime.bigint();
    tap.resume(0);
    let idle = 0;
    while (got < RX_FRAMES && idle < 20_000) {
      await tick();
      const n = rx.takeUsed(); // NAPI: consume, re-post the same buffers, kick
      if (n === 0) {
        idle++;
        continue;
      }
      idle = 0;
      got += n;
      rx.post(n);
      rx.notify();
    }
    const t1 = process.hrtime.bigint();
    if (got !== RX_FRAMES) throw new Error(`rx: the guest got ${got} of ${RX_FRAMES} frames`);
    devRates.push(fps(got, t0, t1));
  };
  for (let r = 0; r < RX_ROUNDS; r++) {
    if (r & 1) {
      await deviceRound();
      rawRound();
    } else {
      rawRound();
      await deviceRound();
    }
  }
  tap.pause(0);
  const s = dev.stats() as { rxDropped: number; rxPackets: number };
  if (s.rxDropped !== 0) throw new Error(`rx: the device dropped ${s.rxDropped} frames`);
  // Zero copy reads frames in place once they average zeroCopyRxMinBytes (512 B by default); batched
  // reads (under 8 KiB) copy.
  const expectDirect = tap.zeroCopy && !tap.batchRx && size >= tap.zeroCopyRxMinBytes;
  if (tap.stats().rxBatches > 0 !== tap.batchRx)
    throw new Error(`rx: ${tap.stats().rxBatches} io_uring batches with batchRx ${tap.batchRx}`);
  // With batches only a wake-up's first (single) read may lend.
  if (tap.batchRx && tap.stats().rxBatchedFrames < 0.95 * tap.stats().rxFrames)
    throw new Error(
      `rx: only ${tap.stats().rxBatchedFrames} of ${tap.stats().rxFrames} frames came in batches`,
    );
  if (!tap.batchRx && tap.stats().rxDirect > 0 !== expectDirect)
    throw new Error(`rx: ${tap.stats().rxDirect} frames read into guest buffers (expected ${expectDirect})`);
  return paired(raw, devRates);
}

async function main(): Promise<void> {
  const why = netnsUnavailableReason();
  if (why) {
    console.error(`device-tap bench ${why}; skipped`);
    return;
  }
  const rows: { direction: string; size: number; mode: string; p: Paired; direct: string }[] = [];
  // Tap modes: zero copy with io_uring batches of each kick's frames (the default), zero copy with a
  // writev per frame, and copies through the backend's buffers. Batching only concerns guest->tap.
  const modes = [
    {
      mode: 'zero copy + io_uring batch',
      zeroCopy: true,
      batchTx: true,
      batchRx: false,
      tx: true,
      rx: false,
    },
    {
      mode: 'io_uring batched reads (default)',
      zeroCopy: true,
      batchTx: true,
      batchRx: true,
      tx: false,
      rx: true,
    },
    { mode: 'zero copy', zeroCopy: true, batchTx: false, batchRx: false, tx: true, rx: true },
    { mode: 'copy', zeroCopy: false, batchTx: false, batchRx: false, tx: true, rx: true },
  ];
  const only = process.env.DEVICE_TAP_BENCH_ONLY;
  for (const direction of ['guest->tap', 'tap->guest'] as const) {
    for (const size of [64, 1514])
      for (const { mode, zeroCopy, batchTx, batchRx, tx, rx } of modes) {
        if (direction === 'tap->guest' ? !rx : !tx) continue;
        if (only && !`${direction} ${size} ${mode}`.includes(only)) continue;
        // A fresh namespace, tap and device per row (a device attaches to its backend once).
        const ns = NetNamespace.create('vdtb');
        const tap = TapBackend.open({ name: uniqueName('vdt'), zeroCopy, batchTx, batchRx });
        try {
          ns.adopt(tap.name);
          ns.exec('sysctl', ['-q', '-w', `net.ipv6.conf.${tap.name}.disable_ipv6=1`]);
          ns.ip('link', 'set', 'dev', tap.name, 'txqueuelen', String(RX_FRAMES + 1000));
          ns.configure(tap.name, `${KERNEL_IP}/24`);
          ns.ip('neigh', 'replace', GUEST_IP, 'lladdr', GUEST_MAC, 'dev', tap.name, 'nud', 'permanent');
          const p = direction === 'guest->tap' ? benchTx(tap, size) : await benchRx(ns, tap, size);
          const t = tap.stats();
          const direct =
            direction === 'guest->tap'
              ? `${t.txDirect}/${t.txFrames}, ${t.txBatchedFrames} in ${t.txBatches} batches`
              : `${t.rxDirect}/${t.rxFrames}${t.rxBatches > 0 ? `, ${t.rxBatchedFrames} in ${t.rxBatches} batches` : ''}`;
          if (direction === 'guest->tap' && t.txBatches > 0 !== batchTx)
            throw new Error(`tx: ${t.txBatches} io_uring batches with batchTx ${batchTx}`);
          rows.push({ direction, size, mode, p, direct });
        } finally {
          tap.close();
          ns.delete();
        }
      }
  }
  const k = (x: number) => `${(x / 1000).toFixed(0)} k`;
  console.log(
    '| direction | frame | tap mode | frames zero copy | raw koffi loop | device + TapBackend | ratio |',
  );
  console.log('|---|---|---|---|---|---|---|');
  for (const { direction, size, mode, p, direct } of rows)
    console.log(
      `| ${direction} | ${size} B | ${mode} | ${direct} | ${k(p.raw)} fps | ${k(p.device)} fps | ${p.ratio.toFixed(2)} |`,
    );
}

await main();
process.exit();
