/**
 * IoUring WRITEV bursts on a real tap (root + /dev/net/tun; io_uring allowed): frames arrive in the
 * kernel intact and in order, and a write to a deleted or detached tap completes with -errno instead of
 * hanging. Each test creates its own namespace and tap and removes both. Every wait is bounded.
 */
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { IoUring } from '../../lib/host/io-uring.js';
import { Errno, libc } from '../../lib/host/libc.js';
import { cleanupNamespaces } from '../../lib/host/netns.js';
import { TUNGETVNETHDRSZ } from '../../lib/tap/tap-fd.js';
import { lines, PY_UDP_RECV, type TapFixture, tapFixture, unavailable } from './fixture.test-support.js';
import { GUEST_IP, KERNEL_IP, udpFrame } from './frames.test-support.js';

const why = unavailable ?? IoUring.supported();
const TWO32 = 4294967296;

const fixtures: TapFixture[] = [];
const rings: IoUring[] = [];
afterEach(() => {
  for (const r of rings.splice(0)) r.close();
  for (const f of fixtures.splice(0)) f.dispose();
});
afterAll(() => cleanupNamespaces());

function ring(entries: number): IoUring {
  const r = IoUring.create(entries);
  rings.push(r);
  return r;
}

function hdrSize(fd: number): number {
  const sz = new Int32Array(1);
  expect(libc().ioctlPtr(fd, TUNGETVNETHDRSZ, sz)).toBe(0);
  return sz[0] as number;
}

/** [vnet header, frame] iovec pairs for `frames`, packed in one array (32 bytes per frame). */
function iovPairs(hdr: Uint8Array, frames: Uint8Array[]): Uint8Array {
  const c = libc();
  const iov = new Uint8Array(32 * frames.length);
  const v = new DataView(iov.buffer);
  const set = (i: number, b: Uint8Array) => {
    const a = c.addressOf(b);
    v.setUint32(i * 16, a >>> 0, true);
    v.setUint32(i * 16 + 4, Math.floor(a / TWO32), true);
    v.setUint32(i * 16 + 8, b.length, true);
  };
  frames.forEach((f, i) => {
    set(2 * i, hdr);
    set(2 * i + 1, f);
  });
  return iov;
}

describe.skipIf(why !== null)(`IoUring on a tap${why ? ` (skipped: ${why})` : ''}`, () => {
  it('delivers bursts of 1, 8 and 32 WRITEVs intact and in order; a bad checksum is dropped by the kernel', async () => {
    const f = tapFixture({}, false);
    fixtures.push(f);
    const fd = f.tap.fds[0] as number;
    const hdr = new Uint8Array(hdrSize(fd)); // all zero: no offload, checksums complete in the frames
    const port = 40_123;
    const rx = f.ns.spawn('python3', ['-c', PY_UDP_RECV, KERNEL_IP, String(port), '41']);
    const out = lines(rx);
    await out.waitFor(/^ready$/);
    // Payloads: sequence number, then a pattern; sizes from 18 B to a full 1472 B datagram.
    const payload = (seq: number) =>
      Uint8Array.from({ length: seq % 5 === 0 ? 1472 : 4 + seq * 3 }, (_, i) =>
        i < 2 ? (seq >> (8 * i)) & 0xff : (i * 7 + seq) & 0xff,
      );
    const bursts = [1, 8, 32];
    const r = ring(64);
    const c = libc();
    const expected: string[] = [];
    let seq = 0;
    const kept: Uint8Array[] = [];
    for (const n of bursts) {
      const frames: Uint8Array[] = [];
      for (let i = 0; i < n; i++) {
        const p = payload(seq);
        frames.push(udpFrame(GUEST_IP, KERNEL_IP, 5000 + seq, port, p));
        expected.push(Buffer.from(p).toString('hex'));
        seq++;
      }
      // In the middle of the last burst, a frame the kernel must drop (wrong UDP checksum).
      if (n === 32)
        frames.splice(16, 0, udpFrame(GUEST_IP, KERNEL_IP, 4999, port, payload(999), { badChecksum: true }));
      const iov = iovPairs(hdr, frames);
      kept.push(iov, ...frames);
      const base = c.addressOf(iov);
      for (let i = 0; i < frames.length; i++)
        expect(r.queueWritev(fd, base + 32 * i, 2, 100 * n + i)).toBe(true);
      // Tap writes complete inside the submitting syscall: all CQEs are there without waiting.
      expect(r.submit()).toBe(frames.length);
      for (let i = 0; i < frames.length; i++) {
        expect(r.userData(i)).toBe(100 * n + i); // inline completion: in submission order
        expect(r.res(i)).toBe(hdr.length + (frames[i] as Uint8Array).length);
      }
      r.advance(frames.length);
    }
    const got: string[] = [];
    for (let i = 0; i < 41; i++) {
      const line = await out.waitFor(
        new RegExp(`^([0-9a-f]+) ${GUEST_IP.replaceAll('.', '\\.')} ${5000 + i}$`),
      );
      got.push(line.split(' ')[0] as string);
    }
    expect(got).toEqual(expected);
    // Arrival order is the order of the receiver's output lines.
    const ports = out.all.filter((l) => l !== 'ready').map((l) => Number(l.split(' ')[2]));
    expect(ports).toEqual(expected.map((_, i) => 5000 + i));
    expect(kept.length).toBe(3 + 41 + 1); // every iovec array and frame referenced until here
  });

  it('completes a write to a deleted tap with a negative res, without hanging', () => {
    const f = tapFixture({}, false);
    fixtures.push(f);
    const fd = f.tap.fds[0] as number;
    const hdr = new Uint8Array(hdrSize(fd));
    const frame = udpFrame(GUEST_IP, KERNEL_IP, 5000, 9, new Uint8Array(20));
    const iov = iovPairs(hdr, [frame]);
    const r = ring(4);
    r.queueWritev(fd, libc().addressOf(iov), 2, 1);
    expect(r.submitAndWait(1)).toBe(1);
    expect(r.res(0)).toBe(hdr.length + frame.length);
    r.advance(1);
    f.ns.ip('link', 'del', 'dev', f.tap.name);
    for (let i = 0; i < 3; i++) r.queueWritev(fd, libc().addressOf(iov), 2, 10 + i);
    expect(r.wait(3, 5000)).toBe(3);
    for (let i = 0; i < 3; i++) {
      expect(r.userData(i)).toBe(10 + i);
      expect(r.res(i)).toBe(-Errno.EBADFD); // tun: the fd's queue has no device any more
    }
    r.advance(3);
    expect(iov.length + frame.length).toBeGreaterThan(0);
  });

  it('completes a write to a detached queue of a multiqueue tap at once: the kernel still takes it', () => {
    // IFF_DETACH_QUEUE keeps the queue's link to the device (tun's __tun_detach without `clean`): the
    // kernel stops steering rx to it but accepts writes. TapBackend drops tx on a disabled queue pair
    // itself; what matters here is that the completion comes, with a result.
    const f = tapFixture({ queues: 2 }, false);
    fixtures.push(f);
    const fd1 = f.tap.fds[1] as number;
    const hdr = new Uint8Array(hdrSize(fd1));
    const frame = udpFrame(GUEST_IP, KERNEL_IP, 5000, 9, new Uint8Array(20));
    const iov = iovPairs(hdr, [frame]);
    f.tap.setQueuePairEnabled(1, false);
    expect(f.tap.stats().ioctlErrors).toBe(0);
    const r = ring(4);
    r.queueWritev(fd1, libc().addressOf(iov), 2, 5);
    r.queueWritev(f.tap.fds[0] as number, libc().addressOf(iov), 2, 6);
    expect(r.wait(2, 5000)).toBe(2);
    expect([r.userData(0), r.res(0)]).toEqual([5, hdr.length + frame.length]);
    expect([r.userData(1), r.res(1)]).toEqual([6, hdr.length + frame.length]);
    r.advance(2);
    expect(iov.length + frame.length).toBeGreaterThan(0);
  });
});
