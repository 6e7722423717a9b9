/**
 * Which batched tap read works best on this kernel (issue #17: "provided buffers / multishot reads where
 * tun supports them — measure which works"). Frames queued in a real tap are drained three ways, rounds
 * interleaved, the same frames each round:
 *   read loop  — one `read(2)` per frame (the baseline);
 *   NOWAIT     — what TapBackend does (lib/tap/rx-batch.ts): 64 IORING_OP_READ + RWF_NOWAIT per enter;
 *   multishot  — IORING_OP_READ_MULTISHOT with provided buffers (IORING_OP_PROVIDE_BUFFERS, 64 or 256
 *                per round): the kernel reads frames into the buffers until they run out (ENOBUFS ends
 *                the request), then the buffers are given back and the read re-armed in one enter.
 *   SQPOLL       — 64 IORING_OP_READ + RWF_NOWAIT kept in flight on a ring with IORING_SETUP_SQPOLL: the
 *                kernel's poll thread reads on the other CPU while this thread takes completions and
 *                re-queues their slots, with no syscall while the thread is awake.
 * No device: this measures the kernel's side only. Root; its own namespace and tap, removed after.
 *
 *   node --import tsx bench/tap-rx-multishot.bench.ts [64|1514]
 */

import { IoUring, RWF_NOWAIT } from '../lib/host/io-uring.js';
import { libc } from '../lib/host/libc.js';
import { NetNamespace, netnsUnavailableReason, uniqueName } from '../lib/host/netns.js';
import { RX_BATCH, RxBatch } from '../lib/tap/rx-batch.js';
import { TapBackend } from '../lib/tap/tap-backend.js';

const FRAMES = 20_000;
const ROUNDS = 4;
const KERNEL_IP = '10.79.0.1';
const GUEST_IP = '10.79.0.2';
const GUEST_MAC = '02:00:00:00:00:02';
const IORING_OP_PROVIDE_BUFFERS = 31;
const IORING_OP_READ_MULTISHOT = 49;
const IOSQE_BUFFER_SELECT = 1 << 5;
const IORING_CQE_F_MORE = 1 << 1;
const ENOBUFS = 105;
const IORING_OP_ASYNC_CANCEL = 14;
const IORING_OP_REMOVE_BUFFERS = 32;
const IORING_ENTER_GETEVENTS = 1;
const ECANCELED = 125;
const BGID = 7;
const UD_READ = 1;
const UD_PROVIDE = 2;
const UD_CANCEL = 3;

const SENDER = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
payload = bytes(int(sys.argv[2]))
sent = 0
for i in range(int(sys.argv[3])):
    try:
        s.sendto(payload, (sys.argv[1], 9)); sent += 1
    except OSError:
        pass
print(sent)
`;

/** The private parts of IoUring this experiment needs to write SQEs the class has no method for. */
interface RingInternals {
  sqes: DataView;
  cqes: DataView;
  sqTail: number;
  sqMask: number;
  cqHead: number;
  cqMask: number;
  cqesOff: number;
  enter(minComplete: number, flags: number, arg: number, argSize: number): void;
}

function sqe(
  r: RingInternals,
  opcode: number,
  fd: number,
  addr: number,
  len: number,
  off: number,
  flags: number,
  group: number,
  userData: number,
) {
  const v = r.sqes;
  const at = (r.sqTail & r.sqMask) * 64;
  for (let i = 0; i < 64; i += 4) v.setUint32(at + i, 0, true);
  v.setUint8(at, opcode);
  v.setUint8(at + 1, flags);
  v.setInt32(at + 4, fd, true);
  v.setBigUint64(at + 8, BigInt(off), true);
  v.setBigUint64(at + 16, BigInt(addr), true);
  v.setUint32(at + 24, len, true);
  v.setBigUint64(at + 32, BigInt(userData), true);
  v.setUint16(at + 40, group, true);
  r.sqTail = (r.sqTail + 1) >>> 0;
}

const median = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1]!;

async function main() {
  const why = netnsUnavailableReason() ?? IoUring.supported();
  if (why) {
    console.error(`tap-rx-multishot bench: ${why}; skipped`);
    return;
  }
  const size = Number(process.argv[2] ?? 64);
  const c = libc();
  const ns = NetNamespace.create('vmsb');
  const tap = TapBackend.open({ name: uniqueName('vms'), vnetHeader: false });
  const fill = () => {
    const n = Number(ns.exec('python3', ['-c', SENDER, GUEST_IP, String(size - 42), String(FRAMES)]).trim());
    if (n !== FRAMES) throw new Error(`sent ${n} of ${FRAMES}`);
  };
  try {
    ns.adopt(tap.name);
    ns.exec('sysctl', ['-q', '-w', `net.ipv6.conf.${tap.name}.disable_ipv6=1`]);
    ns.ip('link', 'set', 'dev', tap.name, 'txqueuelen', String(FRAMES + 1000));
    ns.configure(tap.name, `${KERNEL_IP}/24`);
    ns.ip('neigh', 'replace', GUEST_IP, 'lladdr', GUEST_MAC, 'dev', tap.name, 'nud', 'permanent');
    tap.pause(0);
    const fd = tap.fds[0]!;
    const buf = new Uint8Array(70_000);
    const batch = RxBatch.create(c, (e) => console.error(e.message))!;
    const rates: Record<string, number[]> = {};
    const rings: IoUring[] = [];
    const pools: Uint8Array[] = [];
    const add = (k: string, n: number, t0: bigint) => {
      if (n !== FRAMES) throw new Error(`${k}: read ${n} of ${FRAMES}`);
      rates[k] ??= [];
      rates[k].push(n / (Number(process.hrtime.bigint() - t0) / 1e9));
    };
    const slotBytes = 2048 * Math.ceil((size + 64) / 2048);
    const methods: [string, () => void][] = [
      [
        'read loop',
        () => {
          let n = 0;
          const t0 = process.hrtime.bigint();
          while (c.read(fd, buf, buf.length) > 0) n++;
          add('read loop', n, t0);
        },
      ],
      [
        `NOWAIT x${RX_BATCH}`,
        () => {
          let n = 0;
          const t0 = process.hrtime.bigint();
          for (;;) {
            const got = batch.read(fd, RX_BATCH);
            let f = 0;
            for (let i = 0; i < got; i++) if (batch.res[i]! > 0) f++;
            n += f;
            if (f < RX_BATCH) break;
          }
          add(`NOWAIT x${RX_BATCH}`, n, t0);
        },
      ],
    ];
    {
      const K = RX_BATCH;
      const ring = IoUring.create(2 * K, { sqPollIdleMs: 50 });
      rings.push(ring);
      const pool = new Uint8Array(K * slotBytes);
      pools.push(pool);
      const base = c.addressOf(pool);
      const again = new Int32Array(K);
      const name = `SQPOLL x${K}`;
      methods.push([
        name,
        () => {
          let n = 0;
          const t0 = process.hrtime.bigint();
          for (let i = 0; i < K; i++) ring.queueRead(fd, base + i * slotBytes, slotBytes, i, RWF_NOWAIT);
          ring.submit();
          // Each slot's read is re-queued when it brings a frame; -EAGAIN (tap empty) retires it.
          for (let live = K; live > 0; ) {
            const ready = ring.ready();
            let m = 0;
            for (let j = 0; j < ready; j++) {
              if (ring.res(j) > 0) {
                n++;
                again[m++] = ring.userData(j);
              } else live--;
            }
            ring.advance(ready);
            for (let j = 0; j < m; j++)
              ring.queueRead(fd, base + again[j]! * slotBytes, slotBytes, again[j]!, RWF_NOWAIT);
            if (m > 0) ring.submit();
          }
          add(name, n, t0);
        },
      ]);
    }
    let multishotWorks: string | null = null;
    for (const nbufs of [64, 256]) {
      const ring = IoUring.create(Math.max(nbufs * 2, 8));
      rings.push(ring);
      const r = ring as unknown as RingInternals;
      const pool = new Uint8Array(nbufs * slotBytes);
      pools.push(pool); // the kernel writes into it: keep it alive as long as the ring
      const base = c.addressOf(pool);
      const name = `multishot x${nbufs}`;
      /** Consumes every ready completion: frames the read got; whether the read ended; saw the cancel. */
      const drain = () => {
        let frames = 0;
        let readEnded = false;
        let cancelled = false;
        const ready = ring.ready();
        for (let i = 0; i < ready; i++) {
          const at = r.cqesOff + (((r.cqHead + i) & r.cqMask) >>> 0) * 16;
          const ud = Number(r.cqes.getBigUint64(at, true));
          const res = r.cqes.getInt32(at + 8, true);
          const flags = r.cqes.getUint32(at + 12, true);
          if (ud === UD_READ) {
            if (res > 0) frames++;
            else if (res !== -ENOBUFS && res !== -ECANCELED)
              multishotWorks ??= `the read completed with -${-res}`;
            if ((flags & IORING_CQE_F_MORE) === 0) readEnded = true;
          } else if (ud === UD_CANCEL) cancelled = true;
          else if (res < 0 && ud === UD_PROVIDE) multishotWorks ??= `PROVIDE_BUFFERS failed with -${-res}`;
        }
        ring.advance(ready);
        return { frames, readEnded, cancelled };
      };
      methods.push([
        name,
        () => {
          let n = 0;
          const t0 = process.hrtime.bigint();
          for (;;) {
            // Give every buffer back and arm the read: it reads inline until the buffers or the frames run out.
            sqe(r, IORING_OP_PROVIDE_BUFFERS, nbufs, base, slotBytes, 0, 0, BGID, UD_PROVIDE);
            sqe(r, IORING_OP_READ_MULTISHOT, fd, 0, 0, 0, IOSQE_BUFFER_SELECT, BGID, UD_READ);
            r.enter(2, IORING_ENTER_GETEVENTS, 0, 0);
            const d = drain();
            n += d.frames;
            if (d.readEnded) {
              if (multishotWorks !== null) break;
              continue; // ENOBUFS: every buffer used, frames are probably left
            }
            // The tap ran dry with the read still armed: cancel it (and drop unused buffers) so that it
            // cannot take the next round's frames, and count what it read meanwhile.
            sqe(r, IORING_OP_ASYNC_CANCEL, -1, UD_READ, 0, 0, 0, 0, UD_CANCEL);
            sqe(r, IORING_OP_REMOVE_BUFFERS, 65535, 0, 0, 0, 0, BGID, UD_PROVIDE);
            let ended = false;
            let cancelled = false;
            while (!(ended && cancelled)) {
              r.enter(1, IORING_ENTER_GETEVENTS, 0, 0);
              const e = drain();
              n += e.frames;
              ended ||= e.readEnded;
              cancelled ||= e.cancelled;
            }
            break;
          }
          add(name, n, t0);
        },
      ]);
    }
    for (let round = 0; round < ROUNDS; round++)
      for (const [, run] of round & 1 ? [...methods].reverse() : methods) {
        fill();
        run();
      }
    const raw = median(rates['read loop']!);
    console.log(
      `| method (${size} B frames, ${FRAMES} per round, ${ROUNDS} rounds) | frames/s (median) | vs read loop |`,
    );
    console.log('|---|---|---|');
    for (const [k] of methods) {
      const m = median(rates[k]!);
      console.log(`| ${k} | ${(m / 1000).toFixed(0)} k | ${(m / raw).toFixed(2)} |`);
    }
    if (multishotWorks) console.log(`multishot: ${multishotWorks}`);
    for (const ring of rings) ring.close();
    batch.close();
  } finally {
    tap.close();
    ns.delete();
  }
}
await main();
process.exit();
