/**
 * TapBackend throughput against a raw koffi loop on the same tap, in the same run (root only).
 *
 *   npx tsx bench/tap.bench.ts            # prints a markdown table (docs/performance.md, "Tap backend")
 *
 * guest -> tap: `transmit` of N frames addressed to a MAC nobody owns (the kernel takes each frame,
 * then drops it at L2), against `write(fd, [vnet hdr + frame])` in a tight loop.
 * tap -> guest: N UDP datagrams are queued in the tap (the backend paused, txqueuelen > N) by a sender
 * inside the namespace, then drained: by `resume` + the shared poller + a counting sink, against
 * `read(fd)` in a tight loop until EAGAIN. The backend's time includes its poll wake-ups.
 * Raw and backend rounds alternate; the ratio is the median of each adjacent pair's ratio (the machine
 * is shared, so load drifts between rounds would skew a ratio of separate bests), fps are medians.
 * "zero copy" rows: guest -> tap through `transmitRange` + `flushTransmit` per 128 frames (one io_uring
 * submission of writev entries pointing into a 4 MiB "guest memory" region),
 * tap -> guest with a sink that lends a buffer in that region per frame (readv straight into it, for
 * frames averaging at least zeroCopyRxMinBytes; smaller ones are read into the backend's buffer).
 */
import { read as fsRead, writeSync } from 'node:fs';
import { libc } from '../lib/host/libc.js';
import type { BackendSink, ReceiveTarget } from '../lib/net/backend.js';
import { NetNamespace, netnsUnavailableReason, uniqueName } from '../lib/host/netns.js';
import { TapBackend } from '../lib/tap/tap-backend.js';

const TX_ROUNDS = 21;
const RX_ROUNDS = 8;
const TX_FRAMES = 40_000;
const RX_FRAMES = 30_000;
const KERNEL_IP = '10.79.0.1';
const GUEST_IP = '10.79.0.2';
const GUEST_MAC = '02:00:00:00:00:02';

const SENDER = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
payload = bytes(int(sys.argv[2]))
n = int(sys.argv[3])
dst = (sys.argv[1], 9)
sent = 0
for i in range(n):
    try:
        s.sendto(payload, dst); sent += 1
    except OSError:
        pass
print(sent)
`;

export interface TapBenchRow {
  direction: 'guest->tap' | 'tap->guest';
  zeroCopy: boolean;
  size: number;
  rawFps: number;
  backendFps: number;
  ratio: number;
}

interface Paired {
  raw: number;
  backend: number;
  ratio: number;
}

function frameOf(size: number): Uint8Array {
  const f = new Uint8Array(size);
  f.set([0x02, 0, 0, 0, 0, 0x99, 0x02, 0, 0, 0, 0, 0x02, 0x08, 0x00], 0); // to a MAC nobody owns
  return f;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1] as number;
}

function paired(raw: number[], be: number[]): Paired {
  return { raw: median(raw), backend: median(be), ratio: median(be.map((b, i) => b / (raw[i] as number))) };
}

function fps(frames: number, t0: bigint, t1 = process.hrtime.bigint()): number {
  return frames / (Number(t1 - t0) / 1e9);
}

function benchTx(tap: TapBackend, size: number, zeroCopy: boolean): Paired {
  const c = libc();
  const fd = tap.fds[0] as number;
  const frame = frameOf(size);
  const region = new Uint8Array(4 << 20);
  const at = 1 << 20;
  region.set(frame, at);
  const withHdr = new Uint8Array(10 + size);
  withHdr.set(frame, 10);
  const raw: number[] = [];
  const be: number[] = [];
  for (let r = 0; r < TX_ROUNDS; r++) {
    let t0 = process.hrtime.bigint();
    for (let i = 0; i < TX_FRAMES; i++) c.write(fd, withHdr, withHdr.length);
    raw.push(fps(TX_FRAMES, t0));
    t0 = process.hrtime.bigint();
    if (zeroCopy) {
      // As the device does: a burst of transmitRange, then flushTransmit (io_uring batches of 128).
      for (let i = 0; i < TX_FRAMES; i++) {
        tap.transmitRange(region, at, size, 0, null);
        if ((i & 127) === 127) tap.flushTransmit(0);
      }
      tap.flushTransmit(0);
    } else for (let i = 0; i < TX_FRAMES; i++) tap.transmit(frame, 0, null);
    be.push(fps(TX_FRAMES, t0));
  }
  return paired(raw, be);
}

/** koffi write vs fs.writeSync on the same fd (64 B frames). */
function compareFsWrite(tap: TapBackend): Paired {
  const c = libc();
  const fd = tap.fds[0] as number;
  const buf = new Uint8Array(10 + 64);
  buf.set(frameOf(64), 10);
  const k: number[] = [];
  const f: number[] = [];
  for (let r = 0; r < TX_ROUNDS; r++) {
    let t0 = process.hrtime.bigint();
    for (let i = 0; i < TX_FRAMES; i++) c.write(fd, buf, buf.length);
    k.push(fps(TX_FRAMES, t0));
    t0 = process.hrtime.bigint();
    for (let i = 0; i < TX_FRAMES; i++) writeSync(fd, buf, 0, buf.length);
    f.push(fps(TX_FRAMES, t0));
  }
  return paired(k, f); // raw = koffi, backend = fs
}

function fill(ns: NetNamespace, size: number): number {
  // UDP payload so that the Ethernet frame is `size` bytes (14 + 20 + 8 of headers).
  return Number(
    ns
      .exec('python3', ['-c', SENDER, GUEST_IP, String(size - 42), String(RX_FRAMES)], { timeoutMs: 120_000 })
      .trim(),
  );
}

async function benchRx(
  ns: NetNamespace,
  tap: TapBackend,
  counter: { n: number; last: bigint },
  size: number,
) {
  const c = libc();
  const fd = tap.fds[0] as number;
  const buf = new Uint8Array(70_000);
  const raw: number[] = [];
  const be: number[] = [];
  const rawRound = async () => {
    fill(ns, size);
    let n = 0;
    const t0 = process.hrtime.bigint();
    while (c.read(fd, buf, buf.length) > 0) n++;
    raw.push(fps(n, t0));
    if (n !== RX_FRAMES)
      throw new Error(`${n} of ${RX_FRAMES} frames were queued in the tap (raise txqueuelen)`);
  };
  const backendRound = async () => {
    fill(ns, size);
    counter.n = 0;
    const t1 = process.hrtime.bigint();
    tap.resume(0);
    let seen = -1;
    while (counter.n !== seen && counter.n < RX_FRAMES) {
      seen = counter.n;
      await new Promise((res) => setTimeout(res, 100)); // stalled for 100 ms: the fill was short
    }
    if (counter.n < RX_FRAMES) throw new Error(`the backend got ${counter.n} of ${RX_FRAMES} queued frames`);
    be.push(fps(counter.n, t1, counter.last));
    tap.pause(0);
    await new Promise((res) => setTimeout(res, 20)); // let the poller drop the fd
  };
  tap.pause(0);
  await new Promise((res) => setTimeout(res, 20));
  for (let r = 0; r < RX_ROUNDS; r++) {
    // Alternate the order (ABBA) so that whatever favours the first drain after a fill cancels out.
    if (r & 1) {
      await backendRound();
      await rawRound();
    } else {
      await rawRound();
      await backendRound();
    }
  }
  return paired(raw, be);
}

/**
 * The alternative rx mechanism: `fs.read` on the (non-blocking) fd, one libuv threadpool round trip per
 * frame, until EAGAIN. Frames per second over one full drain of RX_FRAMES 64 B frames.
 */
async function benchFsReadDrain(ns: NetNamespace, tap: TapBackend): Promise<number> {
  const fd = tap.fds[0] as number;
  const buf = new Uint8Array(70_000);
  const rates: number[] = [];
  for (let r = 0; r < 3; r++) {
    tap.pause(0);
    await new Promise((res) => setTimeout(res, 20));
    fill(ns, 64);
    const t0 = process.hrtime.bigint();
    const n = await new Promise<number>((resolve) => {
      let count = 0;
      const next = () =>
        fsRead(fd, buf, 0, buf.length, null, (err, bytes) => {
          if (err || bytes <= 0) return resolve(count);
          count++;
          next();
        });
      next();
    });
    rates.push(fps(n, t0));
  }
  return median(rates);
}

export async function runTapBench(): Promise<{
  rows: TapBenchRow[];
  fsWrite: Paired;
  fsReadDrain: number;
}> {
  const why = netnsUnavailableReason();
  if (why) throw new Error(`tap bench ${why}`);
  const ns = NetNamespace.create('vbench');
  const tap = TapBackend.open({ name: uniqueName('vbn') });
  try {
    ns.adopt(tap.name);
    ns.exec('sysctl', ['-q', '-w', `net.ipv6.conf.${tap.name}.disable_ipv6=1`]);
    ns.ip('link', 'set', 'dev', tap.name, 'txqueuelen', String(RX_FRAMES + 1000));
    ns.configure(tap.name, `${KERNEL_IP}/24`);
    ns.ip('neigh', 'replace', GUEST_IP, 'lladdr', GUEST_MAC, 'dev', tap.name, 'nud', 'permanent');
    const counter = { n: 0, last: 0n };
    const count = () => {
      // Only the last frame is timed: hrtime.bigint() per frame would charge the bench to the backend.
      if (++counter.n === RX_FRAMES) counter.last = process.hrtime.bigint();
    };
    const sink: BackendSink = { receive: count };
    // Zero copy: one 2 KiB "guest buffer" lent per frame, as the device lends a mergeable buffer.
    const guest = new Uint8Array(4 << 20);
    const directSink = {
      lendReceive(_qp: number, _hs: number, t: ReceiveTarget) {
        t.bytes[0] = guest;
        t.offsets[0] = 1 << 20;
        t.lengths[0] = 2048;
        t.count = 1;
        t.capacity = 2048;
        return true;
      },
      completeReceive: count,
      cancelReceive() {},
    };
    tap.attach(sink);
    const rows: TapBenchRow[] = [];
    for (const zeroCopy of [false, true]) {
      for (const size of [64, 1514]) {
        const tx = benchTx(tap, size, zeroCopy);
        rows.push({
          direction: 'guest->tap',
          zeroCopy,
          size,
          rawFps: tx.raw,
          backendFps: tx.backend,
          ratio: tx.ratio,
        });
      }
    }
    for (const zeroCopy of [false, true]) {
      // The backend looks the sink's methods up per drained batch: switching modes is adding them.
      if (zeroCopy) Object.assign(sink, directSink);
      for (const size of [64, 1514]) {
        const rx = await benchRx(ns, tap, counter, size);
        rows.push({
          direction: 'tap->guest',
          zeroCopy,
          size,
          rawFps: rx.raw,
          backendFps: rx.backend,
          ratio: rx.ratio,
        });
      }
    }
    // Default threshold (zeroCopyRxMinBytes 512): 64 B frames are read into our buffer, 1514 B ones in
    // place once the running average crosses it (a handful of frames).
    const direct = tap.stats().rxDirect;
    // (a few more: the namespace's own ARP/ND frames arrive during those rounds too)
    if (Math.abs(direct - RX_ROUNDS * RX_FRAMES) > 64)
      throw new Error(`${direct} frames read zero copy, expected the ${RX_ROUNDS * RX_FRAMES} 1514 B ones`);
    const fsWrite = compareFsWrite(tap);
    const fsReadDrain = await benchFsReadDrain(ns, tap);
    return { rows, fsWrite, fsReadDrain };
  } finally {
    tap.close();
    ns.delete();
  }
}

const k = (x: number) => `${(x / 1000).toFixed(0)} k`;

if (import.meta.url === `file://${process.argv[1]}`) {
  const { rows, fsWrite, fsReadDrain } = await runTapBench();
  console.log('| direction | frame | zero copy | raw koffi loop | TapBackend | ratio |');
  console.log('|---|---|---|---|---|---|');
  for (const r of rows)
    console.log(
      `| ${r.direction} | ${r.size} B | ${r.zeroCopy ? 'yes' : 'no'} | ${k(r.rawFps)} fps | ${k(r.backendFps)} fps | ${r.ratio.toFixed(2)} |`,
    );
  console.log(
    `\nwrite of 64 B frames: koffi ${k(fsWrite.raw)} fps, fs.writeSync ${k(fsWrite.backend)} fps (fs/koffi median pair ratio ${fsWrite.ratio.toFixed(2)})`,
  );
  const raw64 = rows.find((r) => r.direction === 'tap->guest' && r.size === 64)?.rawFps ?? 1;
  console.log(
    `tap->guest 64 B via fs.read callbacks (threadpool round trip per frame): ${k(fsReadDrain)} fps (${(fsReadDrain / raw64).toFixed(2)} of raw)`,
  );
}
