/**
 * Soak (root + /dev/net/tun): a 4-queue kernel tap in a namespace this process creates, an SR-IOV virtio-net
 * PF with RSS and hash reports on it, the synthetic guest driving it. For the whole run the kernel sends UDP
 * to the guest over 64 flows while the guest transmits on every pair; every 2 s the guest reconfigures RSS
 * through the control queue (new key, table, hash types), every 3 s the link flaps (alternately the host's
 * `ip link set down/up` and the VMM's setLinkUp), every 4 s the guest toggles VF Enable (VFs on memory
 * backends, each opened and sending once). Samples heap after GC, open fds and VmRSS.
 *
 * Fails when (tolerances): the heap after GC of the last third of the samples exceeds the first third's by
 * more than 8 MiB; the most fds of the last third exceed the first third's; the device needed a reset or saw
 * a guest error; or, at the end (the flood stopped, the guest drained), a frame the tap handed the device is
 * neither delivered nor counted dropped or filtered (per queue no frame missing; the device counts frames
 * that arrive while the link is down before choosing a queue, so those balance in total).
 * `npm run soak -- --minutes 10`.
 */
import { MemoryBackend } from '../../lib/net/memory-backend.js';
import { PCI_SRIOV_BAR, PCI_SRIOV_CTRL, PCI_SRIOV_NUM_VF } from '../../pci/sriov.js';
import { VirtioNetDriver } from '../../devices/testing/net-driver.js';
import { BumpAllocator } from '../../virtio/testing/bump-allocator.js';
import { udpFrame } from '../tap/frames.test-support.js';
import {
  type FaultRig,
  faultRig,
  fdCount,
  GUEST_IP,
  GUEST_MAC,
  heapAfterGc,
  KERNEL_IP,
  sleep,
  vmRss,
} from '../faults/rig.test-support.js';

export const HEAP_TOLERANCE = 8 << 20;
const SR = 0x100;
const NEEDS_RESET = 0x40;
/** IPv4, TCPv4, UDPv4 (VIRTIO 1.3 §5.1.6.4.3.1). */
const HASH_TYPES = [0x1 | 0x2 | 0x8, 0x1 | 0x2, 0x1 | 0x8, 0x1];

/** Paced UDP from the kernel side for `seconds`: bursts over 64 flows, about 4000 frames/s. */
const PY_PACED = `
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
dst, seconds = sys.argv[1], float(sys.argv[2])
end = time.time() + seconds
payload = bytes(300)
i = 0
while time.time() < end:
    for _ in range(20):
        try:
            s.sendto(payload, (dst, 7000 + i % 64))
        except OSError:
            pass
        i += 1
    time.sleep(0.005)
`;

export interface SoakSample {
  t: number;
  heap: number;
  fds: number;
  rss: number;
}

export interface SoakResult {
  seconds: number;
  samples: SoakSample[];
  heapGrowth: number;
  fdGrowth: number;
  rssGrowth: number;
  rxPackets: number;
  txPackets: number;
  rxDropped: number;
  tapTaken: number;
  rssUpdates: number;
  flaps: number;
  vfToggles: number;
  perQueueChecked: boolean;
  unaccounted: number[];
  notReady: number;
  failures: string[];
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);

export async function runSoak(o: { seconds: number; log?: (line: string) => void }): Promise<SoakResult> {
  const log = o.log ?? (() => {});
  const rig: FaultRig = faultRig({
    queues: 4,
    device: { rss: true, hash: true, sriov: { totalVfs: 2, vfBackend: () => new MemoryBackend() } },
  });
  const { dev, drv, ns, tap } = rig;
  const failures: string[] = [];
  const samples: SoakSample[] = [];
  let rssUpdates = 0;
  let flaps = 0;
  let vfToggles = 0;
  let kernelSteered = true;
  let vfs: VirtioNetDriver[] = [];
  const flood = ns.spawn('python3', ['-c', PY_PACED, GUEST_IP, String(o.seconds)]);
  try {
    const t0 = Date.now();
    const end = t0 + o.seconds * 1000;
    const sampleEvery = Math.max(1000, (o.seconds * 1000) / 30);
    let nextSample = t0 + sampleEvery / 2;
    let nextRss = t0 + 500;
    let nextFlap = t0 + 1500;
    let nextVf = t0 + 1000;
    let sent = 0;
    let seed = 12345;
    const rnd = () => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return seed >>> 8;
    };
    while (Date.now() < end) {
      for (let p = 0; p < drv.pairs; p++) {
        for (let i = 0; i < 8; i++)
          drv.send(
            udpFrame(GUEST_IP, KERNEL_IP, 40000 + (sent % 64), 9, new Uint8Array(64 + (sent++ % 900))),
            {
              kick: false,
              pair: p,
            },
          );
        drv.kickTx(p);
        drv.reclaimTx(p);
      }
      rig.drain();
      for (const v of vfs) v.receive(0);
      const now = Date.now();
      if (now >= nextRss) {
        nextRss = now + 2000;
        const key = new Uint8Array(40).map(() => rnd() & 0xff);
        const table = Array.from({ length: 128 }, () => rnd() % 4);
        const ack = drv.setRss({ hashTypes: HASH_TYPES[rssUpdates % HASH_TYPES.length]!, table, key });
        if (ack !== 0) failures.push(`RSS_CONFIG #${rssUpdates} answered ${ack}`);
        if (!tap.rssSteeringActive) kernelSteered = false;
        rssUpdates++;
      }
      if (now >= nextFlap) {
        nextFlap = now + 3000;
        if (flaps % 2 === 0) {
          ns.ip('link', 'set', 'dev', tap.name, 'down');
          await sleep(50);
          ns.ip('link', 'set', 'dev', tap.name, 'up');
          // Link down flushed the neighbour table, permanent entries included.
          ns.ip('neigh', 'replace', GUEST_IP, 'lladdr', GUEST_MAC, 'dev', tap.name, 'nud', 'permanent');
        } else {
          dev.setLinkUp(false);
          await sleep(50);
          dev.setLinkUp(true);
        }
        flaps++;
      }
      if (now >= nextVf) {
        nextVf = now + 4000;
        if (dev.vfs.length === 0) {
          dev.configWrite(SR + PCI_SRIOV_NUM_VF, 2, 2);
          dev.configWrite(SR + PCI_SRIOV_BAR + 4 * 1, 4, 0xd000_0000);
          dev.configWrite(SR + PCI_SRIOV_CTRL, 2, 0x1 | 0x8 | 0x10);
          vfs = dev.vfs.map((vf, i) => {
            const d = new VirtioNetDriver(vf, dev.memory, {
              allocator: new BumpAllocator(0x4200000 + i * (6 << 20), 0x4200000 + (i + 1) * (6 << 20)),
              rxBuffers: 16,
            });
            d.open();
            d.send(udpFrame(`10.77.0.${20 + i}`, KERNEL_IP, 41000, 9, new Uint8Array(100)));
            return d;
          });
          if (vfs.length !== 2) failures.push(`VF Enable gave ${vfs.length} VFs`);
        } else {
          dev.configWrite(SR + PCI_SRIOV_CTRL, 2, 0);
          vfs = [];
          if (dev.vfs.length !== 0) failures.push('VF Enable cleared but VFs remain');
        }
        vfToggles++;
      }
      if (now >= nextSample) {
        nextSample = now + sampleEvery;
        // The test kit's InterruptCollector records every MSI (about one per frame here): memory of the
        // test, not of the device, so it is emptied before each sample.
        rig.irq.messages.length = 0;
        rig.irq.takeVectors();
        const s: SoakSample = { t: (now - t0) / 1000, heap: heapAfterGc(), fds: fdCount(), rss: vmRss() };
        samples.push(s);
        log(
          `t=${s.t.toFixed(0)}s heap=${(s.heap / 2 ** 20).toFixed(2)}MiB fds=${s.fds} rss=${(s.rss / 2 ** 20).toFixed(1)}MiB rx=${dev.stats().rxPackets} tx=${dev.stats().txPackets}`,
        );
      }
      await sleep(5);
    }
    flood.kill('SIGKILL');
    // Drain: the guest takes everything until the tap has nothing more.
    let quiet = Date.now();
    let last = tap.stats().rxFrames;
    while (Date.now() - quiet < 300) {
      const n = rig.drain();
      const r = tap.stats().rxFrames;
      if (n > 0 || r !== last) quiet = Date.now();
      last = r;
      await sleep(5);
    }
    const s = dev.stats();
    if (s.status & NEEDS_RESET) failures.push(`NEEDS_RESET: ${s.lastError}`);
    if (s.guestErrors) failures.push(`${s.guestErrors} guest errors: ${s.lastError}`);
    const a = rig.account();
    const total = a.unaccounted.reduce((x, y) => x + y, 0);
    // Frames that arrive while the link is down or the device is not ready are counted device-wide
    // (rxDroppedNotReady), before a queue is chosen: per queue the rest must balance exactly.
    if (a.unaccounted.some((u) => u < 0) || total !== a.notReady)
      failures.push(`taken ≠ delivered + dropped + filtered (+ not-ready drops): ${JSON.stringify(a)}`);
    if (!kernelSteered) log('RSS left the kernel at some point: per-queue counts include software steering');
    const third = Math.max(1, Math.floor(samples.length / 3));
    const first = samples.slice(0, third);
    const lastThird = samples.slice(-third);
    const heapGrowth = mean(lastThird.map((x) => x.heap)) - mean(first.map((x) => x.heap));
    const fdGrowth = Math.max(...lastThird.map((x) => x.fds)) - Math.max(...first.map((x) => x.fds));
    const rssGrowth = mean(lastThird.map((x) => x.rss)) - mean(first.map((x) => x.rss));
    if (samples.length < 3) failures.push(`only ${samples.length} samples`);
    if (heapGrowth > HEAP_TOLERANCE)
      failures.push(`heap after GC grew ${(heapGrowth / 2 ** 20).toFixed(2)} MiB`);
    if (fdGrowth > 0) failures.push(`open fds grew by ${fdGrowth}`);
    if (s.rxPackets === 0 || s.txPackets === 0) failures.push('no traffic');
    return {
      seconds: o.seconds,
      samples,
      heapGrowth,
      fdGrowth,
      rssGrowth,
      rxPackets: s.rxPackets,
      txPackets: s.txPackets,
      rxDropped: s.rxDropped,
      tapTaken: rig.counting.taken.reduce((x, y) => x + y, 0),
      rssUpdates,
      flaps,
      vfToggles,
      perQueueChecked: kernelSteered,
      unaccounted: a.unaccounted,
      notReady: a.notReady,
      failures,
    };
  } finally {
    flood.kill('SIGKILL');
    rig.dispose();
  }
}

/** `npm run soak -- --minutes N` (default 10): prints the samples and a summary; exit 1 on a failure. */
async function main(): Promise<void> {
  const i = process.argv.indexOf('--minutes');
  const minutes = i >= 0 ? Number(process.argv[i + 1]) : 10;
  if (!(minutes > 0)) throw new Error('--minutes must be a positive number');
  const r = await runSoak({ seconds: minutes * 60, log: (l) => console.log(l) });
  const { samples: _s, ...summary } = r;
  console.log(JSON.stringify(summary, null, 1));
  console.log(r.failures.length === 0 ? 'soak: PASS' : `soak: FAIL\n${r.failures.join('\n')}`);
  process.exitCode = r.failures.length === 0 ? 0 : 1;
}

if (process.argv[1] && /soak\.ts$/.test(process.argv[1])) void main();
