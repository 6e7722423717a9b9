// A hostile guest: random control commands, random control and tx chains, garbage rings and random
// register writes never make the device's accessors or the backend's calls into it throw, and every
// tx chain the device takes is completed to the used ring and counted.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BumpAllocator } from '../../virtio/testing/bump-allocator.js';
import { VIRTIO_NET_ERR, VIRTIO_NET_OK } from './control-queue.js';
import {
  type Bench,
  benchMemory,
  DEV_MAC,
  makeBench,
  PEER_MAC,
  rawFrame,
  release,
  runs,
} from './bench.test-support.js';
import type { VirtioNetPci } from '../virtio-net-pci.js';

const SMALL = 0x1000000; // 16 MiB of guest RAM per run

function smallBench(options: Record<string, unknown> = {}, queues = 1): Bench {
  const memory = benchMemory(SMALL);
  const b = makeBench(
    options,
    { queues },
    { allocator: new BumpAllocator(0x10000, SMALL - 0x1000), rxBuffers: 8 },
    memory,
  );
  b.driver.open();
  return b;
}

function stats(dev: VirtioNetPci) {
  return dev.stats();
}
const NEEDS_RESET = 0x40;

/** A readable or writable segment: bytes inside guest RAM, or a raw (possibly wild) address range. */
const segment = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 0, max: 300 }).map((n) => ({ kind: 'bytes' as const, n })) },
  {
    weight: 1,
    arbitrary: fc
      .tuple(
        fc.constantFrom(0, SMALL - 8, SMALL, 0xffff_f000, 2 ** 40, 2 ** 52),
        fc.integer({ min: 0, max: 0x20000 }),
      )
      .map(([addr, len]) => ({ kind: 'raw' as const, addr, len })),
  },
);
type Seg = { kind: 'bytes'; n: number } | { kind: 'raw'; addr: number; len: number };
const toBuf = (s: Seg, seed: number) =>
  s.kind === 'bytes'
    ? Uint8Array.from({ length: s.n }, (_, i) => (i * 13 + seed) & 0xff)
    : { addr: s.addr, len: s.len };

describe('hostile guest', () => {
  it('random control commands: always acked OK or ERR, never NEEDS_RESET, counted', () => {
    const b = smallBench({ mq: true, rss: true, hash: true, queues: 4 }, 4);
    let n = stats(b.dev).ctrlCommands;
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 10 }),
        fc.integer({ min: 0, max: 8 }),
        fc.uint8Array({ maxLength: 80 }),
        (cls, cmd, data) => {
          const ack = b.driver.control(cls, cmd, data);
          expect([VIRTIO_NET_OK, VIRTIO_NET_ERR]).toContain(ack);
          expect(stats(b.dev).ctrlCommands).toBe(++n);
          expect(b.driver.pci.status & NEEDS_RESET).toBe(0);
        },
      ),
      { numRuns: 600, seed: 1 },
    );
    // Still a working NIC afterwards.
    b.driver.rxMode(0, true);
    b.backend.inject(rawFrame(60));
    let got = 0;
    for (let p = 0; p < 4; p++) got += b.driver.receive(p).length;
    expect(got).toBe(1);
  });

  it('random control chains: an ack when there is room for header and ack, else NEEDS_RESET; nothing throws', () => {
    fc.assert(
      fc.property(
        fc.array(segment, { maxLength: 5 }),
        fc.array(segment, { maxLength: 3 }),
        fc.integer({ min: 0, max: 255 }),
        (readable, writable, seed) => {
          const b = smallBench();
          const q = b.driver.queue(2);
          if (readable.length + writable.length === 0) return release(b);
          q.add(
            readable.map((s) => toBuf(s, seed)),
            writable.map((s) => toBuf(s, seed)),
          );
          expect(() => b.driver.pci.kick(2)).not.toThrow();
          const used = q.getUsed();
          const broken = (b.driver.pci.status & NEEDS_RESET) !== 0;
          expect(used !== null || broken).toBe(true);
          if (used) expect(used.len).toBe(1);
          expect(() => b.dev.stats()).not.toThrow();
          release(b);
        },
      ),
      { numRuns: runs(150), seed: 2 },
    );
  });

  it('random tx chains: every chain completed and counted (or the device needs reset), nothing throws', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.tuple(fc.array(segment, { minLength: 0, maxLength: 4 }), fc.array(segment, { maxLength: 2 })),
          { minLength: 1, maxLength: 12 },
        ),
        fc.boolean(),
        fc.boolean(),
        (chains, packed, indirect) => {
          const b = smallBench({ packed });
          const q = b.driver.queue(1);
          let posted = 0;
          chains.forEach(([r, w], i) => {
            if (r.length + w.length === 0) return;
            q.add(
              r.map((s) => toBuf(s, i)),
              w.map((s) => toBuf(s, i)),
              { indirect },
            );
            posted++;
          });
          expect(() => b.driver.pci.kick(1)).not.toThrow();
          let used = 0;
          while (q.getUsed()) used++;
          const s = stats(b.dev);
          const broken = (b.driver.pci.status & NEEDS_RESET) !== 0;
          if (!broken) {
            expect(used).toBe(posted);
            expect(s.txPackets + s.txDropped).toBe(posted);
            expect(b.sent).toHaveLength(s.txPackets);
          } else {
            // Chains handled before the broken one were completed and counted.
            expect(s.txPackets + s.txDropped).toBe(used);
          }
          release(b);
        },
      ),
      { numRuns: runs(150), seed: 3 },
    );
  });

  it('garbage in descriptor tables and rings: kicks and injected frames never throw', () => {
    fc.assert(
      fc.property(
        fc.boolean(),
        fc.constantFrom(0, 1, 2),
        fc.uint8Array({ minLength: 64, maxLength: 4096 }),
        fc.uint8Array({ minLength: 4, maxLength: 600 }),
        (packed, index, desc, ring) => {
          const b = smallBench({ packed });
          const q = b.driver.queue(index);
          b.memory.write(q.config.descAddr, desc);
          b.memory.write(q.config.driverAddr, ring);
          expect(() => {
            b.driver.pci.kick(index);
            b.backend.inject(rawFrame(200));
            b.backend.inject(rawFrame(3000));
            b.driver.pci.kick(0);
            b.driver.pci.kick(1);
            b.driver.pci.kick(2);
            b.dev.stats();
          }).not.toThrow();
          release(b);
        },
      ),
      { numRuns: runs(150), seed: 4 },
    );
  });

  it('random register writes (common config, notify, device config, ISR) and config-space writes never throw', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.tuple(
            fc.integer({ min: 0, max: 0x3fff }),
            fc.constantFrom(1, 2, 4, 8) as fc.Arbitrary<1 | 2 | 4 | 8>,
            fc.integer({ min: 0, max: 0xffffffff }),
            fc.boolean(),
          ),
          { maxLength: 40 },
        ),
        (writes) => {
          const b = smallBench({ mq: true, queues: 2 }, 2);
          const bar = b.driver.pci.caps.find((c) => c.cfgType === 1)!.bar;
          expect(() => {
            for (const [off, size, v, cfg] of writes) {
              if (cfg) b.dev.configWrite(off & 0xfff, size === 8 ? 4 : size, v);
              else b.dev.barWrite(bar, off, size, size === 8 ? BigInt(v) * 0x10001n : v);
              b.dev.barRead(bar, off, size);
            }
            b.backend.inject(rawFrame(100, DEV_MAC, PEER_MAC));
            b.dev.stats();
            b.dev.snapshot();
          }).not.toThrow();
          release(b);
        },
      ),
      { numRuns: runs(100), seed: 5 },
    );
  });
});
