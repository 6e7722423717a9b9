/**
 * Batched receive (TapOpenOptions.batchRx, lib/tap/rx-batch.ts) end to end: frames queued in a real tap
 * are read up to 32 per io_uring submission and reach the synthetic guest intact and in order; where
 * io_uring is refused the same traffic arrives with a read per frame; a reset, a queue detach or the
 * link going down in the middle of a batch loses nothing silently and writes no guest memory afterwards.
 * Root and /dev/net/tun only; every test creates and removes its own namespace and tap.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { BackendError } from '../../lib/errors.js';
import { IoUring } from '../../lib/host/io-uring.js';
import { Errno } from '../../lib/host/libc.js';
import type { BackendSink } from '../../lib/net/backend.js';
import { RX_SLOT, RxBatch } from '../../lib/tap/rx-batch.js';
import { LINUX_6_1_FEATURES } from '../../devices/testing/net-driver.js';
import { parseIpv4 } from '../tap/frames.test-support.js';
import {
  type DeviceFixture,
  type DeviceFixtureOptions,
  deviceFixture,
  GUEST_IP,
  GUEST_MAC,
  type GuestFrame,
  unavailable,
} from './fixture.test-support.js';

/** Sends `count` datagrams to dst:port, payload = 4-byte sequence number + a pattern, `size` bytes. */
const PY_SEQ_SEND = `
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
dst, port, size, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
sent = 0
for seq in range(first, first + count):
    p = struct.pack('!I', seq) + bytes((seq + i) & 0xff for i in range(size - 4))
    try:
        s.sendto(p, (dst, port)); sent += 1
    except OSError:
        pass
print(sent, flush=True)
`;

const PORT = 9500;

const fixtures: DeviceFixture[] = [];
afterEach(() => {
  vi.restoreAllMocks();
  for (const f of fixtures.splice(0)) f.dispose();
});

function fixture(options: DeviceFixtureOptions = {}): DeviceFixture {
  const f = deviceFixture(options);
  fixtures.push(f);
  return f;
}

/** The sequence number of a datagram to PORT, or -1. */
function seqOf(f: GuestFrame): number {
  const p = parseIpv4(f.frame);
  if (p?.proto !== 17 || ((p.l4[2]! << 8) | p.l4[3]!) !== PORT) return -1;
  return ((p.l4[8]! << 24) | (p.l4[9]! << 16) | (p.l4[10]! << 8) | p.l4[11]!) >>> 0;
}

/** The payload PY_SEQ_SEND sends for `seq`. */
function payload(seq: number, size: number): Uint8Array {
  const b = new Uint8Array(size);
  new DataView(b.buffer).setUint32(0, seq);
  for (let i = 0; i < size - 4; i++) b[4 + i] = (seq + i) & 0xff;
  return b;
}

/** Queues `count` datagrams in the tap while its reads are paused (the sender has finished on return). */
function queueBurst(fx: DeviceFixture, size: number, first: number, count: number, pair = 0): void {
  fx.tap.pause(pair);
  const sent = Number(
    fx.ns.exec('python3', [
      '-c',
      PY_SEQ_SEND,
      GUEST_IP,
      String(PORT),
      String(size),
      String(first),
      String(count),
    ]),
  );
  expect(sent).toBe(count);
}

/** Every datagram the guest got, checked byte for byte; returns their sequence numbers in arrival order. */
function received(fx: DeviceFixture, size: number): number[] {
  const seqs: number[] = [];
  for (const f of fx.frames) {
    const seq = seqOf(f);
    if (seq < 0) continue;
    const p = parseIpv4(f.frame)!;
    expect(
      Buffer.from(p.l4.subarray(8, 8 + size)).equals(Buffer.from(payload(seq, size))),
      `seq ${seq}`,
    ).toBe(true);
    seqs.push(seq);
  }
  return seqs;
}

const range = (first: number, count: number) => Array.from({ length: count }, (_, i) => first + i);

interface DevCounters {
  rxPackets: number;
  rxDropped: number;
  rxDroppedNotReady: number;
  queues: { rxFiltered: number; rxBacklogDepth: number }[];
}
const counters = (fx: DeviceFixture) => fx.dev.stats() as unknown as DevCounters;

/** Every frame the tap read is in the guest, dropped and counted, filtered, or waiting in a backlog. */
function accounted(fx: DeviceFixture): number {
  const d = counters(fx);
  return d.rxPackets + d.rxDropped + d.queues.reduce((s, q) => s + q.rxFiltered + q.rxBacklogDepth, 0);
}

/** Calls `hook(n)` before the device takes the n-th frame the tap hands over in a batch. */
function onBatchedFrame(fx: DeviceFixture, hook: (n: number) => void): void {
  const sink = (fx.tap as unknown as { sink: BackendSink }).sink;
  const orig = sink.receiveRange!.bind(sink);
  let n = 0;
  sink.receiveRange = (bytes, offset, length, qp, offload) => {
    hook(++n);
    orig(bytes, offset, length, qp, offload);
  };
}

describe.skipIf(unavailable !== null || IoUring.supported() !== null)(
  'virtio-net device on a real tap: batched receive',
  () => {
    for (const size of [64, 1400])
      it(`a burst queued in the tap is read up to 32 frames per io_uring submission and reaches the guest intact and in order (${size} B payloads)`, async () => {
        const fx = fixture();
        const N = 600;
        queueBurst(fx, size, 0, N);
        fx.tap.resume(0);
        await fx.until(() => received(fx, size).length === N, 15_000, `${N} datagrams`);
        expect(received(fx, size)).toEqual(range(0, N));
        const t = fx.tap.stats();
        // The first read after a wake-up is a single one; then batches of 2, 4, … 32.
        expect(t.rxBatches).toBeGreaterThan(0);
        expect(t.rxBatchedFrames).toBeGreaterThanOrEqual(N - 8);
        expect(t.rxBatchedFrames / t.rxBatches).toBeGreaterThan(8);
        expect(t.rxDirect).toBe(0); // batched frames are copied out of the tap's slots
        expect([t.rxErrors, counters(fx).rxDropped]).toEqual([0, 0]);
        expect(fx.tap.lastError).toBeNull();
        expect(accounted(fx)).toBe(t.rxFrames);
      });

    it('completions are checked like any backend input: a length past the slot, a slot never queued, a length short of the header are counted errors, the rest delivered in order', async () => {
      const fx = fixture();
      const N = 100;
      queueBurst(fx, 64, 0, N);
      const real = RxBatch.prototype.read;
      let corrupted = -1;
      vi.spyOn(RxBatch.prototype, 'read').mockImplementation(function (this: RxBatch, fd: number, n: number) {
        const got = real.call(this, fd, n);
        // The first batch of 8 (after the wake-up's single read and batches of 2 and 4): its first three.
        if (n === 8 && corrupted < 0 && got === 8) {
          this.res[0] = RX_SLOT + 1;
          this.slot[1] = n;
          this.res[2] = 5; // shorter than the 12-byte header
          corrupted = got;
        }
        return got;
      });
      fx.tap.resume(0);
      await fx.until(() => received(fx, 64).length === N - 3, 15_000, `${N - 3} datagrams`);
      expect(corrupted).toBe(8);
      const lost = [7, 8, 9]; // 1 single read + 2 + 4 frames came before the batch of 8
      expect(received(fx, 64)).toEqual(range(0, N).filter((s) => !lost.includes(s)));
      const t = fx.tap.stats();
      expect([t.rxErrors, t.rxFrames]).toEqual([3, N - 3]);
      expect(accounted(fx)).toBe(t.rxFrames);
    });

    it('a batch reads no more frames than the guest has buffers for: only a read made with none left backlogs a frame', async () => {
      const fx = fixture(); // the guest posts 64 rx buffers and re-posts every 2 ms
      const N = 1000;
      queueBurst(fx, 64, 0, N);
      const sink = (fx.tap as unknown as { sink: BackendSink }).sink;
      const room = sink.receiveRoom!.bind(sink);
      let lastRoom = -1;
      sink.receiveRoom = (qp) => {
        lastRoom = room(qp);
        return lastRoom;
      };
      const reads: [number, number][] = [];
      const real = RxBatch.prototype.read;
      vi.spyOn(RxBatch.prototype, 'read').mockImplementation(function (this: RxBatch, fd: number, n: number) {
        reads.push([n, lastRoom]);
        lastRoom = -1;
        return real.call(this, fd, n);
      });
      fx.tap.resume(0);
      await fx.until(() => received(fx, 64).length === N, 20_000, `${N} datagrams`);
      expect(received(fx, 64)).toEqual(range(0, N));
      expect(reads.length).toBeGreaterThan(0);
      for (const [n, r] of reads)
        expect(n, `a read of ${n} with room ${r}`).toBeLessThanOrEqual(Math.max(1, r));
      // The ring filled more than once (1000 frames, 64 buffers): capped reads happened.
      expect(reads.some(([n, r]) => r > 0 && r < 64 && n === r)).toBe(true);
      const backlogged = (fx.dev.stats() as unknown as { queues: { rxBacklogged: number }[] }).queues[0]!
        .rxBacklogged;
      expect(backlogged).toBeLessThanOrEqual(reads.filter(([, r]) => r === 0).length);
      expect(accounted(fx)).toBe(fx.tap.stats().rxFrames);
    });

    it('each read burst is one interrupt decision: without EVENT_IDX the guest gets an rx interrupt per burst, not per frame', async () => {
      const fx = fixture({ wanted: LINUX_6_1_FEATURES & ~(1n << 29n) });
      expect(fx.drv.has(29)).toBe(false);
      const N = 600;
      queueBurst(fx, 64, 0, N);
      fx.tap.resume(0);
      await fx.until(() => received(fx, 64).length === N, 15_000, `${N} datagrams`);
      expect(received(fx, 64)).toEqual(range(0, N));
      const q = (fx.dev.stats() as unknown as { queues: { rxInterrupts: number; rxPackets: number }[] })
        .queues[0]!;
      expect(q.rxPackets).toBeGreaterThanOrEqual(N);
      // Frame by frame this was one interrupt per frame (the driver never sets NO_INTERRUPT); a burst is
      // at most the 64 frames the guest has buffers for.
      expect(q.rxInterrupts).toBeGreaterThan(0);
      expect(q.rxInterrupts).toBeLessThan(N / 8);
      expect(accounted(fx)).toBe(fx.tap.stats().rxFrames);
    });

    it('batchRx: false reads one frame per call, as before (and large frames straight into guest buffers)', async () => {
      const fx = fixture({ batchRx: false });
      queueBurst(fx, 1400, 0, 200);
      fx.tap.resume(0);
      await fx.until(() => received(fx, 1400).length === 200, 15_000, '200 datagrams');
      expect(received(fx, 1400)).toEqual(range(0, 200));
      const t = fx.tap.stats();
      expect([t.rxBatches, t.rxBatchedFrames]).toEqual([0, 0]);
      expect(t.rxDirect).toBeGreaterThan(150);
    });

    for (const refusal of ['supported', 'EPERM'] as const)
      it(`io_uring refused (${refusal === 'supported' ? 'IoUring.supported() gives a reason' : 'io_uring_setup fails with EPERM'}): the same burst arrives intact and in order with a read per frame`, async () => {
        if (refusal === 'supported') vi.spyOn(IoUring, 'supported').mockReturnValue('refused for the test');
        else
          vi.spyOn(IoUring, 'create').mockImplementation(() => {
            throw new BackendError(
              'io_uring_setup failed with EPERM: refused for the test',
              Errno.EPERM,
              'EPERM',
            );
          });
        const fx = fixture();
        const N = 300;
        queueBurst(fx, 64, 0, N);
        fx.tap.resume(0);
        await fx.until(() => received(fx, 64).length === N, 15_000, `${N} datagrams`);
        expect(received(fx, 64)).toEqual(range(0, N));
        const t = fx.tap.stats();
        expect([t.rxBatches, t.rxBatchedFrames, t.rxErrors]).toEqual([0, 0, 0]);
        if (refusal === 'EPERM') expect(fx.tap.lastError?.code).toBe('EPERM');
        else expect(fx.tap.lastError).toBeNull();
        expect(accounted(fx)).toBe(t.rxFrames);
      });

    it('the guest resets the device in the middle of a batch: the rest of the batch is counted, no guest memory is written after the reset, and traffic resumes after re-initialisation', async () => {
      const fx = fixture();
      const N = 400;
      queueBurst(fx, 64, 0, N);
      let snapshot: Uint8Array | null = null;
      let atReset = -1;
      const guestRam = fx.drv.memory.view(0, 48 << 20);
      onBatchedFrame(fx, (n) => {
        if (n !== 40) return;
        fx.drv.pci.reset();
        atReset = fx.tap.stats().rxFrames;
        snapshot = guestRam.slice();
      });
      fx.tap.resume(0);
      // No fx.until here: its polling guest would write its own rings after the reset.
      const end = Date.now() + 15_000;
      while (fx.tap.stats().rxFrames < N && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
      // The tap's queue kept draining into the reset device: every frame after the reset is a counted drop.
      expect(fx.tap.stats().rxFrames).toBe(N);
      await new Promise((r) => setTimeout(r, 50));
      expect(Buffer.from(guestRam).equals(Buffer.from(snapshot!))).toBe(true);
      expect(atReset).toBeLessThan(N);
      const t = fx.tap.stats();
      expect(counters(fx).rxDroppedNotReady).toBeGreaterThanOrEqual(N - atReset);
      expect(accounted(fx)).toBe(t.rxFrames);
      // The driver brings the device up again; new frames arrive in order.
      const before = fx.frames.length;
      fx.drv.open();
      queueBurst(fx, 64, 1000, 100);
      fx.tap.resume(0);
      await fx.until(() => received(fx, 64).filter((s) => s >= 1000).length === 100, 15_000, '100 more');
      expect(received(fx, 64).filter((s) => s >= 1000)).toEqual(range(1000, 100));
      expect(fx.frames.length).toBeGreaterThan(before);
      expect(accounted(fx)).toBe(fx.tap.stats().rxFrames);
    });

    it('VQ_PAIRS_SET detaches the second tap queue in the middle of a batch on it: what was read is delivered or counted, pair 0 keeps working', async () => {
      const fx = fixture({ queues: 2 });
      expect(fx.drv.pairs).toBe(2);
      // Both tap queues hold a burst (tun spreads flows by hash; one flow lands on one queue).
      fx.tap.pause(0);
      fx.tap.pause(1);
      for (let f = 0; f < 8; f++)
        fx.ns.exec('python3', [
          '-c',
          PY_SEQ_SEND.replace('s.sendto(p, (dst, port))', `s.sendto(p, (dst, port + ${f}))`),
          GUEST_IP,
          String(PORT),
          '64',
          String(f * 1000),
          '100',
        ]);
      let detached = -1;
      onBatchedFrame(fx, (n) => {
        if (n === 40) detached = fx.drv.setQueuePairs(1);
      });
      fx.tap.resume(0);
      fx.tap.resume(1);
      await fx.until(() => detached !== -1, 15_000, 'the detach');
      expect(detached).toBe(0);
      await new Promise((r) => setTimeout(r, 200));
      fx.poll();
      const t = fx.tap.stats();
      expect(t.rxFrames).toBeGreaterThan(40);
      expect(accounted(fx)).toBe(t.rxFrames);
      expect(fx.tap.lastError).toBeNull();
      // One pair left: a new burst on the remaining tap queue arrives intact and in order.
      const before = received(fx, 64).length;
      queueBurst(fx, 64, 50_000, 100);
      fx.tap.resume(0);
      await fx.until(() => received(fx, 64).filter((s) => s >= 50_000).length === 100, 15_000, '100 more');
      expect(received(fx, 64).filter((s) => s >= 50_000)).toEqual(range(50_000, 100));
      expect(received(fx, 64).length).toBe(before + 100);
      expect(accounted(fx)).toBe(fx.tap.stats().rxFrames);
    });

    it('the tap goes administratively down with a burst queued: nothing throws, every frame read is counted, and batches resume once it is up', async () => {
      const fx = fixture();
      queueBurst(fx, 64, 0, 300);
      fx.ns.ip('link', 'set', 'dev', fx.tap.name, 'down');
      await fx.until(() => !(fx.dev.stats() as { linkUp: boolean }).linkUp, 5_000, 'link down');
      fx.tap.resume(0);
      await new Promise((r) => setTimeout(r, 200));
      fx.poll();
      expect(accounted(fx)).toBe(fx.tap.stats().rxFrames);
      fx.ns.ip('link', 'set', 'dev', fx.tap.name, 'up');
      await fx.until(() => (fx.dev.stats() as { linkUp: boolean }).linkUp, 5_000, 'link up');
      // Taking the link down flushed the neighbour table, permanent entries too.
      fx.ns.ip('neigh', 'replace', GUEST_IP, 'lladdr', GUEST_MAC, 'dev', fx.tap.name, 'nud', 'permanent');
      const batches = fx.tap.stats().rxBatches;
      queueBurst(fx, 64, 5000, 200);
      fx.tap.resume(0);
      await fx.until(() => received(fx, 64).filter((s) => s >= 5000).length === 200, 15_000, '200 more');
      expect(received(fx, 64).filter((s) => s >= 5000)).toEqual(range(5000, 200));
      expect(fx.tap.stats().rxBatches).toBeGreaterThan(batches);
      expect(accounted(fx)).toBe(fx.tap.stats().rxFrames);
      expect(fx.tap.lastError).toBeNull();
    });
  },
);
