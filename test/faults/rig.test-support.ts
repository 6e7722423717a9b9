/**
 * Real-component fault rig (root + /dev/net/tun): a multiqueue tap in a namespace this process creates, the
 * device on it through a counting wrapper, and the synthetic guest. The wrapper counts, per backend queue,
 * every frame the tap handed the device (receive, or a lent buffer completed), so a test can check the
 * accounting rule of docs/security.md: per queue, taken = delivered + dropped (+ filtered), with frames
 * still waiting in the device's backlog (at most 256 per pair) the only difference while traffic flows.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { VirtioNetDriver } from '../../devices/testing/net-driver.js';
import type { VirtioNetPciOptions } from '../../devices/virtio-net/options.js';
import { createVirtioNetPci, type VirtioNetPci } from '../../devices/virtio-net-pci.js';
import { NetNamespace, uniqueName } from '../../lib/host/netns.js';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import type {
  BackendOffloads,
  BackendRssConfig,
  BackendSink,
  NetBackend,
  NetOffload,
  ReceiveTarget,
} from '../../lib/net/backend.js';
import type { TapOpenOptions } from '../../lib/tap/options.js';
import { TapBackend } from '../../lib/tap/tap-backend.js';
import { InterruptCollector } from '../../virtio/testing/pci-driver.js';
import { GUEST_IP, GUEST_MAC, KERNEL_IP, KERNEL_MAC } from '../tap/frames.test-support.js';

export { unavailable } from '../tap/fixture.test-support.js';
export { GUEST_IP, GUEST_MAC, KERNEL_IP, KERNEL_MAC };

/** The device's backlog bound per queue pair (devices/virtio-net/rx.ts RX_BACKLOG). */
export const BACKLOG = 256;

/** A NetBackend that forwards to `inner` and counts what it hands the device, per backend queue. */
export class CountingBackend implements NetBackend {
  readonly taken: number[];
  private lent = -1;
  constructor(readonly inner: TapBackend) {
    this.taken = new Array<number>(inner.capabilities.queuePairs).fill(0);
  }
  get capabilities() {
    return this.inner.capabilities;
  }
  attach(sink: BackendSink): void {
    const taken = this.taken;
    const wrapped: BackendSink = {
      receive: (frame, q, off) => {
        taken[q] = (taken[q] ?? 0) + 1;
        sink.receive(frame, q, off);
      },
      linkChanged: sink.linkChanged && ((up) => sink.linkChanged?.(up)),
      transmitReady: sink.transmitReady && ((q) => sink.transmitReady?.(q)),
    };
    if (sink.lendReceive && sink.completeReceive && sink.cancelReceive) {
      wrapped.lendReceive = (q: number, h: number, t: ReceiveTarget) => {
        const ok = sink.lendReceive?.(q, h, t) ?? false;
        if (ok) this.lent = q;
        return ok;
      };
      wrapped.completeReceive = (len: number, overflow: Uint8Array) => {
        taken[this.lent] = (taken[this.lent] ?? 0) + 1;
        sink.completeReceive?.(len, overflow);
      };
      wrapped.cancelReceive = () => sink.cancelReceive?.();
    }
    this.inner.attach(wrapped);
  }
  transmit(frame: Uint8Array, q: number, off: NetOffload | null) {
    return this.inner.transmit(frame, q, off);
  }
  transmitRange(bytes: Uint8Array, offset: number, length: number, q: number, off: NetOffload | null) {
    return this.inner.transmitRange(bytes, offset, length, q, off);
  }
  flushTransmit(q: number): number {
    return this.inner.flushTransmit(q);
  }
  pause(q: number): void {
    this.inner.pause(q);
  }
  resume(q: number): void {
    this.inner.resume(q);
  }
  setOffloads(o: BackendOffloads): void {
    this.inner.setOffloads(o);
  }
  setVnetHeaderSize(size: number): void {
    this.inner.setVnetHeaderSize(size);
  }
  setQueuePairEnabled(q: number, on: boolean): void {
    this.inner.setQueuePairEnabled(q, on);
  }
  setCarrier(up: boolean): void {
    this.inner.setCarrier(up);
  }
  setRssSteering(c: BackendRssConfig | null): boolean {
    return this.inner.setRssSteering(c);
  }
  close(): void {
    this.inner.close();
  }
}

export interface FaultRig {
  ns: NetNamespace;
  tap: TapBackend;
  counting: CountingBackend;
  dev: VirtioNetPci;
  drv: VirtioNetDriver;
  irq: InterruptCollector;
  queues: number;
  /** Takes what the device delivered on every pair (reposting the buffers); returns how many. */
  drain(): number;
  /** Per queue: taken - (delivered + dropped + filtered); and frames dropped before a queue was chosen. */
  account(): { unaccounted: number[]; notReady: number };
  dispose(): void;
}

export interface FaultRigOptions {
  queues?: number;
  device?: Partial<VirtioNetPciOptions>;
  rxBuffers?: number;
  /** Guest memory (default: 80 MiB at 0). */
  memory?: GuestMemory;
  /** Tap options besides name and queues (e.g. `batchRx: false` to keep every read a lent one). */
  tap?: Omit<TapOpenOptions, 'name' | 'queues'>;
  /** Interrupt callback run after the collector saw it (e.g. a VMM resetting the device from it). */
  onInterrupt?: () => void;
}

export function faultRig(o: FaultRigOptions = {}): FaultRig {
  const queues = o.queues ?? 4;
  const ns = NetNamespace.create('vf');
  let tap: TapBackend | undefined;
  let dev: VirtioNetPci | undefined;
  try {
    tap = TapBackend.open({ ...o.tap, name: uniqueName('vf'), queues });
    ns.adopt(tap.name);
    ns.exec('sysctl', ['-q', '-w', `net.ipv6.conf.${tap.name}.disable_ipv6=1`]);
    ns.configure(tap.name, `${KERNEL_IP}/24`, KERNEL_MAC);
    ns.ip('neigh', 'replace', GUEST_IP, 'lladdr', GUEST_MAC, 'dev', tap.name, 'nud', 'permanent');
    const memory = o.memory ?? new GuestMemory([{ address: 0, bytes: new Uint8Array(80 << 20) }]);
    const irq = new InterruptCollector();
    const counting = new CountingBackend(tap);
    const hook = o.onInterrupt;
    const interrupts = hook
      ? {
          msi: (a: bigint, d: number) => {
            irq.msi(a, d);
            hook();
          },
          intx: (l: boolean) => irq.intx(l),
        }
      : irq;
    dev = createVirtioNetPci({
      memory,
      backend: counting,
      interrupts,
      mac: GUEST_MAC,
      queues,
      mq: queues > 1,
      ...o.device,
    });
    const drv = new VirtioNetDriver(dev, memory, { interrupts: irq, rxBuffers: o.rxBuffers ?? 64 });
    drv.open();
    const d = dev;
    const t = tap;
    return {
      ns,
      tap: t,
      counting,
      dev: d,
      drv,
      irq,
      queues,
      drain() {
        let n = 0;
        for (let p = 0; p < drv.maxPairs; p++) n += drv.receive(p).length;
        return n;
      },
      account() {
        const s = d.stats();
        return {
          unaccounted: counting.taken.map((t, q) => {
            const qs = s.queues[q];
            return qs ? t - qs.rxPackets - qs.rxDropped - qs.rxFiltered : t;
          }),
          notReady: s.rxDroppedNotReady,
        };
      },
      dispose() {
        d.close();
        ns.delete();
      },
    };
  } catch (err) {
    if (dev) dev.close();
    else tap?.close();
    ns.delete();
    throw err;
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export const fdCount = () => readdirSync('/proc/self/fd').length;

/** The open fd count once it stopped changing (pipes of exited children close a moment later). */
export async function settledFdCount(): Promise<number> {
  let last = fdCount();
  for (let stable = 0, i = 0; stable < 5 && i < 200; i++) {
    await sleep(20);
    const n = fdCount();
    stable = n === last ? stable + 1 : 0;
    last = n;
  }
  return last;
}

let gcFn: (() => void) | undefined;
/** Heap used + external + array buffers after two full collections. */
export function heapAfterGc(): number {
  if (!gcFn) {
    setFlagsFromString('--expose-gc');
    gcFn = runInNewContext('gc') as () => void;
  }
  gcFn();
  gcFn();
  const m = process.memoryUsage();
  return m.heapUsed + m.external + m.arrayBuffers;
}

export const vmRss = () =>
  Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? 0) * 1024;

/** UDP flood from the namespace: `count` datagrams of `size` bytes to GUEST_IP, ports round-robin (many flows). */
export const PY_FLOOD = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
dst, base, flows, size, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
payload = bytes(size)
for i in range(count):
    try:
        s.sendto(payload, (dst, base + i % flows))
    except OSError:
        pass
print('sent', flush=True)
`;
