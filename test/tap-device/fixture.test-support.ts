/**
 * The device end to end against a real tap (root only): a fresh namespace holding a tap whose kernel side
 * is KERNEL_IP/KERNEL_MAC, a virtio-net-pci device on it with GUEST_MAC, and the synthetic guest
 * (VirtioNetDriver) brought up through the PCI transport. Tap replies arrive asynchronously (the tap's
 * poller runs on the event loop), so the guest side polls the rx rings with small awaits.
 */

import { VirtioNetDriver } from '../../devices/testing/net-driver.js';
import type { VirtioNetPciOptions } from '../../devices/virtio-net/options.js';
import { createVirtioNetPci, type VirtioNetPci } from '../../devices/virtio-net-pci.js';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import type { NetOffload } from '../../lib/net/backend.js';
import { NetNamespace, uniqueName } from '../../lib/host/netns.js';
import { TapBackend } from '../../lib/tap/tap-backend.js';
import { InterruptCollector } from '../../virtio/testing/pci-driver.js';
import { GUEST_IP, GUEST_MAC, KERNEL_IP, KERNEL_MAC } from '../tap/frames.test-support.js';

export { unavailable } from '../tap/fixture.test-support.js';

/** A frame the guest took from an rx queue (copied). */
export interface GuestFrame {
  frame: Uint8Array;
  offload: NetOffload;
  pair: number;
  /** Mergeable rx buffers the frame spanned. */
  numBuffers: number;
  /** Hash report fields (0 without a 20-byte header). */
  hashValue?: number;
  hashReport?: number;
}

export interface DeviceFixture {
  ns: NetNamespace;
  tap: TapBackend;
  dev: VirtioNetPci;
  drv: VirtioNetDriver;
  irq: InterruptCollector;
  /** Everything the guest received so far, in order. */
  frames: GuestFrame[];
  /** Takes what the device delivered on every pair into `frames`; returns how many were new. */
  poll(): number;
  /** Polls (2 ms awaits) until a received frame matches; rejects after `timeoutMs`. */
  waitFor(pred: (f: GuestFrame) => boolean, timeoutMs?: number, what?: string): Promise<GuestFrame>;
  /** Polls until `probe()` is truthy. */
  until<T>(probe: () => T | null | undefined | false, timeoutMs?: number, what?: string): Promise<T>;
  /** Reads a counter of the tap from the kernel (/sys/class/net/<tap>/statistics/<name>). */
  kernelStat(name: string): number;
  dispose(): void;
}

export interface DeviceFixtureOptions {
  /** Tap queues = device queue pairs (mq on when > 1). */
  queues?: number;
  /** Device options on top of the fixture's (QEMU names). */
  device?: Partial<VirtioNetPciOptions>;
  /** Features the synthetic guest accepts (default: Linux 6.1's). */
  wanted?: bigint;
  /** TapOpenOptions.zeroCopy (default true). */
  zeroCopy?: boolean;
  /** TapOpenOptions.rssSteering (default true). */
  rssSteering?: boolean;
  /** TapOpenOptions.batchTx (default true). */
  batchTx?: boolean;
  /** TapOpenOptions.batchRx (default true). */
  batchRx?: boolean;
  /** TapOpenOptions.zeroCopyRxMinBytes (default 512; 0: read every frame into guest buffers). */
  zeroCopyRxMinBytes?: number;
  /** Guest memory over a SharedArrayBuffer (needed by `workers`). */
  sharedMemory?: boolean;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function deviceFixture(options: DeviceFixtureOptions = {}): DeviceFixture {
  const queues = options.queues ?? 1;
  const ns = NetNamespace.create('vd');
  let tap: TapBackend | undefined;
  let dev: VirtioNetPci | undefined;
  try {
    tap = TapBackend.open({
      name: uniqueName('vd'),
      queues,
      zeroCopy: options.zeroCopy,
      rssSteering: options.rssSteering,
      batchTx: options.batchTx,
      batchRx: options.batchRx,
      zeroCopyRxMinBytes: options.zeroCopyRxMinBytes,
    });
    ns.adopt(tap.name);
    // No IPv6 chatter (router solicitations, MLD) on the tap: tests look at specific frames and counters.
    ns.exec('sysctl', ['-q', '-w', `net.ipv6.conf.${tap.name}.disable_ipv6=1`]);
    ns.configure(tap.name, `${KERNEL_IP}/24`, KERNEL_MAC);
    ns.ip('neigh', 'replace', GUEST_IP, 'lladdr', GUEST_MAC, 'dev', tap.name, 'nud', 'permanent');
    const ram = options.sharedMemory ? new SharedArrayBuffer(48 << 20) : new ArrayBuffer(48 << 20);
    const memory = new GuestMemory([{ address: 0, bytes: new Uint8Array(ram) }]);
    const irq = new InterruptCollector();
    dev = createVirtioNetPci({
      memory,
      backend: tap,
      interrupts: irq,
      mac: GUEST_MAC,
      queues,
      mq: queues > 1,
      ...options.device,
    });
    const drv = new VirtioNetDriver(dev, memory, { interrupts: irq, rxBuffers: 64, wanted: options.wanted });
    drv.open();
    const frames: GuestFrame[] = [];
    const poll = () => {
      let n = 0;
      for (let p = 0; p < drv.maxPairs; p++) {
        for (const r of drv.receive(p)) {
          frames.push({
            frame: r.frame,
            offload: { ...r.offload },
            pair: p,
            numBuffers: r.numBuffers,
            hashValue: r.hashValue,
            hashReport: r.hashReport,
          });
          n++;
        }
      }
      return n;
    };
    const until = async <T>(
      probe: () => T | null | undefined | false,
      timeoutMs = 10_000,
      what = 'condition',
    ) => {
      const end = Date.now() + timeoutMs;
      for (;;) {
        poll();
        const v = probe();
        if (v) return v;
        if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
        await sleep(2);
      }
    };
    const t = tap;
    const d = dev;
    return {
      ns,
      tap: t,
      dev: d,
      drv,
      irq,
      frames,
      poll,
      until,
      waitFor: (pred, timeoutMs, what = 'frame') => until(() => frames.find(pred), timeoutMs, what),
      kernelStat: (name) => Number(ns.exec('cat', [`/sys/class/net/${t.name}/statistics/${name}`]).trim()),
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

/**
 * The kernel's view of the tap's offloads, read with the legacy ethtool ioctls (no ethtool binary
 * needed): tx checksumming and TSO towards the tap, i.e. what TUNSETOFFLOAD enabled.
 */
export const PY_ETHTOOL = `
import socket, fcntl, struct, ctypes, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
def get(cmd):
    buf = ctypes.create_string_buffer(struct.pack('II', cmd, 0), 8)
    ifr = struct.pack('16sP', sys.argv[1].encode(), ctypes.addressof(buf)) + bytes(16)
    fcntl.ioctl(s.fileno(), 0x8946, ifr)
    return struct.unpack('II', buf.raw)[1]
print('txcsum', get(0x16), 'tso', get(0x1e))
`;

export function kernelOffloads(ns: NetNamespace, tap: string): { txcsum: number; tso: number } {
  const m = /txcsum (\d+) tso (\d+)/.exec(ns.exec('python3', ['-c', PY_ETHTOOL, tap]));
  if (!m) throw new Error('ethtool ioctl gave no answer');
  return { txcsum: Number(m[1]), tso: Number(m[2]) };
}

/** Sends one ICMP echo request from the namespace (raw socket) and prints `reply <seq>` if answered. */
export const PY_PING = `
import socket, struct, sys, time
dst, ident, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(3)
def csum(b):
    if len(b) % 2: b += b'\\0'
    t = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while t >> 16: t = (t & 0xffff) + (t >> 16)
    return ~t & 0xffff
for seq in range(1, count + 1):
    body = struct.pack('!BBHHH', 8, 0, 0, ident, seq) + b'kernel-ping-%d' % seq
    body = body[:2] + struct.pack('!H', csum(body)) + body[4:]
    s.sendto(body, (dst, 0))
    end = time.time() + 3
    while time.time() < end:
        try:
            d, a = s.recvfrom(2048)
        except socket.timeout:
            break
        ihl = (d[0] & 15) * 4
        t, _, _, i, q = struct.unpack('!BBHHH', d[ihl:ihl + 8])
        if t == 0 and i == ident and q == seq:
            print('reply', seq, flush=True)
            break
`;

export { GUEST_IP, GUEST_MAC, KERNEL_IP, KERNEL_MAC };
