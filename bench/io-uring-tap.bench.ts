/**
 * guest -> tap: one koffi `writev(fd, [hdr, frame])` per frame against io_uring bursts of n WRITEV SQEs
 * and one `io_uring_enter` (submit n, wait for n), on the same tap in the same run (root only).
 *
 *   npx tsx bench/io-uring-tap.bench.ts      # prints a markdown table (docs/performance.md, "io_uring for tap writes")
 *
 * Setup as bench/tap.bench.ts: a tap in its own namespace, frames addressed to a MAC nobody owns (the
 * kernel takes each frame, then drops it at L2). Frames lie in a 4 MiB "guest memory" region, 2 KiB
 * apart, the 10-byte vnet header in a buffer of ours, as TapBackend.transmitRange sends them. Both sides
 * build each frame's iovec pair in the timed loop (as the device would per chain). Variants rotate their
 * order every round; fps are medians, the ratio is the median of the per-round ratios to the writev loop.
 */
import { IoUring } from '../lib/host/io-uring.js';
import { libc } from '../lib/host/libc.js';
import { NetNamespace, netnsUnavailableReason, uniqueName } from '../lib/host/netns.js';
import { TapBackend } from '../lib/tap/tap-backend.js';

const ROUNDS = 15;
const FRAMES = 32_768;
const BURSTS = [1, 2, 4, 8, 32, 128] as const;
const SIZES = [64, 1514] as const;
const SLOTS = 256;
const HDR = 10;
const TWO32 = 4294967296;

export interface UringBenchRow {
  size: number;
  /** 0: the writev loop; else the io_uring burst size. */
  burst: number;
  fps: number;
  /** Median per-round ratio to the writev loop (1 for the loop itself). */
  ratio: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1] as number;
}

function setIov(iov: Uint32Array, i: number, address: number, length: number): void {
  iov[i * 4] = address >>> 0;
  iov[i * 4 + 1] = Math.floor(address / TWO32);
  iov[i * 4 + 2] = length;
  iov[i * 4 + 3] = 0;
}

export function runUringTapBench(): { rows: UringBenchRow[]; errors: number } {
  const why = netnsUnavailableReason() ?? IoUring.supported();
  if (why) throw new Error(`io_uring tap bench: ${why}`);
  const c = libc();
  const ns = NetNamespace.create('vbur');
  const tap = TapBackend.open({ name: uniqueName('vbu'), watchLink: false });
  const ring = IoUring.create(128);
  try {
    ns.adopt(tap.name);
    ns.exec('sysctl', ['-q', '-w', `net.ipv6.conf.${tap.name}.disable_ipv6=1`]);
    ns.configure(tap.name, '10.79.1.1/24');
    const fd = tap.fds[0] as number;
    // Everything the kernel reads through an address stays referenced from here to the end.
    const region = new Uint8Array(4 << 20);
    const regionAddress = c.addressOf(region);
    const hdr = new Uint8Array(HDR);
    const hdrAddress = c.addressOf(hdr);
    const loopIov = new Uint32Array(8);
    const burstIov = new Uint32Array(128 * 2 * 4);
    const burstIovAddress = c.addressOf(new Uint8Array(burstIov.buffer));
    let errors = 0;

    const writevLoop = (size: number): number => {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < FRAMES; i++) {
        setIov(loopIov, 0, hdrAddress, HDR);
        setIov(loopIov, 1, regionAddress + (i & (SLOTS - 1)) * 2048, size);
        if (c.writev(fd, loopIov, 2) !== HDR + size) errors++;
      }
      return FRAMES / (Number(process.hrtime.bigint() - t0) / 1e9);
    };

    const uring = (size: number, burst: number): number => {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < FRAMES; i += burst) {
        for (let j = 0; j < burst; j++) {
          setIov(burstIov, j * 2, hdrAddress, HDR);
          setIov(burstIov, j * 2 + 1, regionAddress + ((i + j) & (SLOTS - 1)) * 2048, size);
          ring.queueWritev(fd, burstIovAddress + j * 32, 2, j);
        }
        const ready = ring.submitAndWait(burst);
        for (let j = 0; j < ready; j++) if (ring.res(j) !== HDR + size) errors++;
        ring.advance(ready);
        if (ready !== burst) errors += burst - ready;
      }
      return FRAMES / (Number(process.hrtime.bigint() - t0) / 1e9);
    };

    const rows: UringBenchRow[] = [];
    for (const size of SIZES) {
      for (let s = 0; s < SLOTS; s++)
        region.set([0x02, 0, 0, 0, 0, 0x99, 0x02, 0, 0, 0, 0, 0x02, 0x08, 0x00], s * 2048); // MAC nobody owns
      const variants = [0, ...BURSTS];
      const fps = variants.map(() => [] as number[]);
      const ratios = variants.map(() => [] as number[]);
      // Warm-up (JIT, tap queue): one untimed pass of each.
      writevLoop(size);
      for (const b of BURSTS) uring(size, b);
      for (let r = 0; r < ROUNDS; r++) {
        const got = new Array<number>(variants.length);
        for (let k = 0; k < variants.length; k++) {
          const v = (k + r) % variants.length;
          const b = variants[v] as number;
          got[v] = b === 0 ? writevLoop(size) : uring(size, b);
        }
        for (let v = 0; v < variants.length; v++) {
          fps[v]?.push(got[v] as number);
          ratios[v]?.push((got[v] as number) / (got[0] as number));
        }
      }
      for (let v = 0; v < variants.length; v++)
        rows.push({
          size,
          burst: variants[v] as number,
          fps: median(fps[v] as number[]),
          ratio: median(ratios[v] as number[]),
        });
    }
    return { rows, errors };
  } finally {
    ring.close();
    tap.close();
    ns.delete();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { rows, errors } = runUringTapBench();
  const k = (x: number) => `${(x / 1000).toFixed(0)} k`;
  const ns = (x: number) => `${(1e9 / x).toFixed(0)} ns`;
  console.log('| frame | mechanism | frames/s | per frame | ratio to writev loop |');
  console.log('|---|---|---|---|---|');
  for (const r of rows)
    console.log(
      `| ${r.size} B | ${r.burst === 0 ? 'writev per frame' : `io_uring, bursts of ${r.burst}`} | ${k(r.fps)} | ${ns(r.fps)} | ${r.ratio.toFixed(2)} |`,
    );
  console.log(`\nframes not written in full: ${errors}`);
  if (errors !== 0) process.exitCode = 1;
}
