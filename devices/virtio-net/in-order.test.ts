// VIRTIO_F_IN_ORDER and VIRTIO_F_NOTIFICATION_DATA through the device and the PCI transport, with the
// synthetic guest reading used entries as Linux 7.2 does: tx bursts and mergeable rx frames batched,
// hints from 32-bit kicks taken, lying or malformed ones costing nothing.
import { describe, expect, it } from 'vitest';
import { encodeNotification } from '../../virtio/pci/notify.js';
import { LINUX_6_1_FEATURES } from '../testing/net-driver.js';
import { DEV_MAC, hexOf, openBench, PEER_MAC, rawFrame } from './bench.test-support.js';

const WANT = LINUX_6_1_FEATURES | (1n << 35n) | (1n << 38n);
const open = (packed: boolean, wanted = WANT) =>
  openBench({ packed, in_order: true, notification_data: true }, {}, { wanted });

describe('IN_ORDER through the device', () => {
  for (const packed of [false, true]) {
    const ring = packed ? 'packed' : 'split';

    it(`${ring}: a tx burst of 16 frames in one kick completes as one used entry, frames intact`, () => {
      const b = open(packed);
      expect([b.driver.has(35), b.driver.has(38)]).toEqual([true, true]);
      const frames = Array.from({ length: 16 }, (_, i) => rawFrame(60 + 90 * i, PEER_MAC, DEV_MAC, i));
      for (const f of frames) b.driver.send(f, { kick: false });
      b.driver.kickTx();
      expect(b.sent.map((s) => hexOf(s.frame))).toEqual(frames.map(hexOf));
      const tx = b.dev.transport.queueCounters(1)!;
      expect([tx.batchEntries, tx.foldedBuffers]).toEqual([1, 15]);
      expect(b.dev.stats().queues[0]!.txUsedFolded).toBe(15);
      expect(b.driver.reclaimTx()).toBe(16);
      expect(b.driver.queue(1).numFree).toBe(b.driver.queue(1).size);
    });

    it(`${ring}: mergeable rx, a 9000-byte frame over 6 buffers: the 5 full ones are folded`, () => {
      const b = open(packed);
      const big = rawFrame(9000, DEV_MAC, PEER_MAC, 3);
      b.backend.inject(big);
      const got = b.driver.receive();
      expect(got.map((r) => [r.numBuffers, hexOf(r.frame)])).toEqual([[6, hexOf(big)]]);
      expect(b.dev.stats().queues[0]!.rxUsedFolded).toBe(5);
      // Small frames only partly fill their buffer: an entry each, nothing more folded.
      const small = [60, 61, 62].map((n) => rawFrame(n, DEV_MAC, PEER_MAC, n));
      for (const f of small) b.backend.inject(f);
      expect(b.driver.receive().map((r) => hexOf(r.frame))).toEqual(small.map(hexOf));
      expect(b.dev.stats().queues[0]!.rxUsedFolded).toBe(5);
      expect(b.dev.transport.queueCounters(0)!.batchEntries).toBe(4);
    });

    it(`${ring}: kicks with correct, lying, foreign or 16-bit notification data lose no frame`, () => {
      const b = open(packed);
      const pci = b.driver.pci;
      const tx = 1;
      const q = b.driver.queue(tx);
      const frames: Uint8Array[] = [];
      const queueSome = (n: number) => {
        for (let i = 0; i < n; i++) {
          const f = rawFrame(60 + frames.length, PEER_MAC, DEV_MAC, frames.length);
          frames.push(f);
          b.driver.send(f, { kick: false });
        }
      };
      const position = () => {
        if ('availPosition' in q) return [q.availPosition.offset, q.availPosition.wrap] as const;
        return [q.availIndex & 0x7fff, (q.availIndex & 0x8000) !== 0] as const;
      };
      // Correct.
      queueSome(3);
      pci.notifyRaw(tx, 4, encodeNotification(tx, ...position()));
      // Lying low: claims the position before these 3.
      const before = position();
      queueSome(3);
      pci.notifyRaw(tx, 4, encodeNotification(tx, ...before));
      // Lying high: 5 past the end.
      queueSome(2);
      const [off, wrap] = position();
      pci.notifyRaw(tx, 4, encodeNotification(tx, (off + 5) % q.size, wrap));
      // Another queue's number in the data: a kick of this queue, the hint ignored.
      queueSome(2);
      pci.notifyRaw(tx, 4, encodeNotification(0, ...position()));
      // A 16-bit write: a plain kick.
      queueSome(2);
      pci.notifyRaw(tx, 2, tx);
      expect(b.sent.map((s) => hexOf(s.frame))).toEqual(frames.map(hexOf));
      const c = b.dev.transport.queueCounters(tx)!;
      expect([c.hintsAccepted, c.hintsRejected]).toEqual([3, 1]);
      expect(c.hintReadsSaved).toBeGreaterThan(0);
      expect(b.dev.stats().status & 0x40).toBe(0); // no DEVICE_NEEDS_RESET
      b.driver.reclaimTx();
      expect(q.numFree).toBe(q.size);
    });
  }

  it('without IN_ORDER negotiated (offered only) every tx buffer keeps its entry', () => {
    const b = openBench({ in_order: true });
    expect(b.driver.has(35)).toBe(false);
    for (let i = 0; i < 4; i++) b.driver.send(rawFrame(60, PEER_MAC, DEV_MAC, i), { kick: false });
    b.driver.kickTx();
    expect(b.sent).toHaveLength(4);
    expect(b.dev.stats().queues[0]!.txUsedFolded).toBe(0);
    expect(b.dev.transport.queueCounters(1)!.batchEntries).toBe(0);
  });

  it('a packed IN_ORDER guest reusing a buffer id in flight gets DEVICE_NEEDS_RESET, not an exception', () => {
    const b = open(true);
    // Rx buffers are posted at open, ids = first slots 0, 1, ...; the second one now claims id 0.
    const q = b.driver.queue(0) as unknown as { config: { descAddr: number } };
    b.memory.writeU16(q.config.descAddr + 16 + 12, 0);
    // A frame that needs two buffers: both are popped before either is used.
    expect(() => b.backend.inject(rawFrame(3000, DEV_MAC, PEER_MAC, 1))).not.toThrow();
    expect(b.dev.stats().status & 0x40).toBe(0x40);
    expect(b.dev.stats().guestErrors).toBe(1);
  });
});
