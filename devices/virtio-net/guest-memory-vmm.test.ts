// The device over guest memory as a JavaScript VMM with a JIT has it (v86): a WebAssembly.Memory that
// grows while frames flow, and a write hook that must see every byte the device writes, exactly.
import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { BumpAllocator } from '../../virtio/testing/bump-allocator.js';
import type { SplitDriverQueue } from '../../virtio/testing/split-driver.js';
import { makeBench, rawFrame } from './bench.test-support.js';

const SIZE = 8 << 20;
const PAGE = 65536;

interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
const Wasm = (
  globalThis as unknown as {
    WebAssembly: { Memory: new (d: { initial: number; maximum?: number }) => WasmMemory };
  }
).WebAssembly;

/** Sorted, merged [start, end) intervals. */
function merge(ranges: [number, number][]): [number, number][] {
  const s = ranges.map(([a, n]) => [a, a + n] as [number, number]).sort((x, y) => x[0] - y[0]);
  const out: [number, number][] = [];
  for (const r of s) {
    const last = out[out.length - 1];
    if (last && r[0] <= last[1]) last[1] = Math.max(last[1], r[1]);
    else out.push([...r]);
  }
  return out;
}

function setup(receive: 'direct' | 'copy') {
  const wasm = new Wasm.Memory({ initial: SIZE / PAGE, maximum: SIZE / PAGE + 64 });
  const calls: [number, number][] = [];
  const memory = new GuestMemory([{ address: 0, buffer: wasm, offset: 0, size: SIZE }], {
    onWrite: (a, n) => calls.push([a, n]),
  });
  const bench = makeBench(
    {},
    { receive },
    { allocator: new BumpAllocator(0x1000, SIZE - 0x1000), rxBuffers: 64 },
    memory,
  );
  bench.driver.open();
  return { wasm, calls, ...bench };
}

describe.each(['direct', 'copy'] as const)(
  'virtio-net over a growing WebAssembly.Memory (%s receive)',
  (receive) => {
    it('reports exactly the rx buffer bytes and the used-ring entries it writes, and nothing it does not', () => {
      const { wasm, calls, backend, driver } = setup(receive);
      const rxq = driver.queue(driver.rxIndex(0)) as SplitDriverQueue;
      const { descAddr, deviceAddr: used, size } = rxq.config;
      const hdr = driver.hdrSize;
      for (let i = 0; i < 12; i++) {
        const before = new Uint8Array(wasm.buffer).slice();
        calls.length = 0;
        const frame = rawFrame(60 + i * 97, undefined, undefined, i);
        backend.inject(frame);
        const now = new Uint8Array(wasm.buffer);
        // The used entry the device just published names the buffer and the bytes written into it.
        const dv = new DataView(wasm.buffer);
        const idx = dv.getUint16(used + 2, true);
        const slot = (idx - 1) % size;
        const id = dv.getUint32(used + 4 + 8 * slot, true);
        const len = dv.getUint32(used + 8 + 8 * slot, true);
        expect(len).toBe(hdr + frame.length);
        const bufAddr = Number(dv.getBigUint64(descAddr + 16 * id, true));
        const ringEnd = used + 6 + 8 * size;
        const inRing = calls.filter(([a, n]) => a >= used && a + n <= ringEnd);
        const outside = calls.filter(([a, n]) => !(a >= used && a + n <= ringEnd));
        // Exactly the header and frame, as one interval.
        expect(merge(outside)).toEqual([[bufAddr, bufAddr + hdr + frame.length]]);
        // The used element (id, len) and the used index, each as written.
        expect(inRing).toContainEqual([used + 4 + 8 * slot, 4]);
        expect(inRing).toContainEqual([used + 8 + 8 * slot, 4]);
        expect(inRing).toContainEqual([used + 2, 2]);
        // Complete: every byte that changed lies in a reported range.
        const reported = merge(calls);
        for (let a = 0; a < SIZE; a++) {
          if (before[a] === now[a]) continue;
          expect(
            reported.some(([s, e]) => a >= s && a < e),
            `byte 0x${a.toString(16)} changed unreported`,
          ).toBe(true);
        }
        expect(driver.receive(0).map((r) => Buffer.from(r.frame).toString('hex'))).toEqual([
          Buffer.from(frame).toString('hex'),
        ]);
      }
    });

    it('keeps receiving and transmitting while the memory grows between frames (old buffers detached)', () => {
      const { wasm, memory, backend, driver, sent } = setup(receive);
      let grows = 0;
      for (let i = 0; i < 200; i++) {
        if (i % 7 === 3) {
          const old = wasm.buffer;
          wasm.grow(1);
          expect(old.byteLength).toBe(0);
          grows++;
        }
        const frame = rawFrame(64 + (i % 1400), undefined, undefined, i);
        backend.inject(frame);
        const got = driver.receive(0);
        expect(got.length).toBe(1);
        expect(Buffer.from(got[0]!.frame).equals(Buffer.from(frame))).toBe(true);
        if (i % 7 === 5) {
          wasm.grow(1);
          grows++;
        }
        const out = rawFrame(80 + (i % 700), '52:54:00:ab:cd:ef', '52:54:00:12:34:56', i);
        driver.send(out);
        driver.kickTx(0);
        expect(Buffer.from(sent[sent.length - 1]!.frame).equals(Buffer.from(out))).toBe(true);
      }
      expect(sent.length).toBe(200);
      expect(grows).toBe(57);
      // Each growth was noticed once (driver and device share the memory object here).
      expect(memory.remaps).toBe(grows);
      expect(backend.stats().rxDropped).toBe(0);
    });
  },
);
