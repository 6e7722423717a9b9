// VIRTIO_NET_CTRL_NOTF_COAL through the public object and the synthetic guest (VIRTIO 1.3
// "Notifications Coalescing"): TX_SET / RX_SET / VQ_SET / VQ_GET acks and reply bytes, the spec's
// six-command example, every malformed form answered ERR with the state unchanged, and the interrupts a
// guest sees (fake timers): held until max_packets or max_usecs, reset and queue reset, close, snapshot.
// ctrl-notf-coal.workers.test.ts reruns the commands with the pairs on workers, where fake timers do not
// reach the coalescers: it tests the interrupts again there with real timers.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { SplitDriverQueue } from '../../virtio/testing/split-driver.js';
import { LINUX_6_1_FEATURES } from '../testing/net-driver.js';
import type { VirtioNetPci } from '../virtio-net-pci.js';
import { DEV_MAC, inWorkerMode, makeBench, openBench, PEER_MAC, rawFrame } from './bench.test-support.js';
import { CtrlClass, CtrlNotfCoal, VIRTIO_NET_ERR, VIRTIO_NET_OK } from './control-queue.js';
import { NetF } from './features.js';

const bit = (b: number) => 1n << BigInt(b);
const COAL = { notf_coal: true, vq_notf_coal: true };
const WANT = { wanted: LINUX_6_1_FEATURES | bit(NetF.VQ_NOTF_COAL) };

/** The device's parameters per data virtqueue, [max_packets, max_usecs]. */
function params(dev: VirtioNetPci): [number, number][] {
  return dev.net.coalescers.map((c) => [c.maxPackets, c.maxUsecs]);
}

function vqSet(vq: number, p: number, u: number, len = 12): Uint8Array {
  const b = new Uint8Array(len);
  const dv = new DataView(b.buffer);
  dv.setUint16(0, vq, true);
  dv.setUint16(2, 0xbeef, true); // reserved: ignored
  if (len >= 8) dv.setUint32(4, p, true);
  if (len >= 12) dv.setUint32(8, u, true);
  return b;
}

// Not in worker mode: the pool's own waits need real timers there.
beforeEach(() => {
  if (!inWorkerMode())
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setImmediate', 'clearImmediate'] });
});
afterEach(() => {
  vi.useRealTimers();
});

describe('NOTF_COAL commands', () => {
  it('offered only with the options; they need CTRL_VQ', () => {
    const plain = openBench();
    expect(plain.driver.has(NetF.NOTF_COAL)).toBe(false);
    expect(plain.dev.net.offered & (bit(NetF.NOTF_COAL) | bit(NetF.VQ_NOTF_COAL))).toBe(0n);
    const on = makeBench(COAL);
    expect(on.dev.net.offered & (bit(NetF.NOTF_COAL) | bit(NetF.VQ_NOTF_COAL))).toBe(
      bit(NetF.NOTF_COAL) | bit(NetF.VQ_NOTF_COAL),
    );
    const noCtrl = makeBench({
      ...COAL,
      ctrl_vq: false,
      ctrl_rx: false,
      ctrl_vlan: false,
      ctrl_rx_extra: false,
    });
    expect(noCtrl.dev.net.offered & (bit(NetF.NOTF_COAL) | bit(NetF.VQ_NOTF_COAL))).toBe(0n);
  });

  it("the spec's example: RX_SET, VQ_SET, VQ_GET, VQ_SET, TX_SET, VQ_GET over two pairs", () => {
    const b = openBench({ ...COAL, mq: true, queues: 2 }, { queues: 2 }, WANT);
    const d = b.driver;
    expect(d.setRxCoalescing(15, 10)).toBe(VIRTIO_NET_OK); // command 1: vqs 0 and 2
    expect(params(b.dev)).toEqual([
      [15, 10],
      [0, 0],
      [15, 10],
      [0, 0],
    ]);
    expect(d.setVqCoalescing(0, 7, 3)).toBe(VIRTIO_NET_OK); // command 2
    expect(d.getVqCoalescing(0)).toEqual({ ack: VIRTIO_NET_OK, maxPackets: 7, maxUsecs: 3 }); // command 3
    expect(d.getVqCoalescing(2)).toEqual({ ack: VIRTIO_NET_OK, maxPackets: 15, maxUsecs: 10 });
    expect(d.setVqCoalescing(1, 5, 6)).toBe(VIRTIO_NET_OK); // command 4
    expect(d.setTxCoalescing(32, 64)).toBe(VIRTIO_NET_OK); // command 5 overrides command 4
    expect(d.getVqCoalescing(1)).toEqual({ ack: VIRTIO_NET_OK, maxPackets: 32, maxUsecs: 64 }); // command 6
    expect(params(b.dev)).toEqual([
      [7, 3],
      [32, 64],
      [15, 10],
      [32, 64],
    ]);
  });

  it('VQ_GET reply bytes: the ack, then le32 max_packets, le32 max_usecs (struct virtio_net_ctrl)', () => {
    const b = openBench(COAL, {}, WANT);
    expect(b.driver.setVqCoalescing(1, 0x01020304, 0x0a0b0c0d)).toBe(VIRTIO_NET_OK);
    const r = b.driver.controlReply(CtrlClass.NOTF_COAL, CtrlNotfCoal.VQ_GET, Uint8Array.of(1, 0, 0, 0), 8);
    expect(r.ack).toBe(VIRTIO_NET_OK);
    expect(Array.from(r.result)).toEqual([0x04, 0x03, 0x02, 0x01, 0x0d, 0x0c, 0x0b, 0x0a]);
    expect(r.usedLength).toBe(9);
    // Ack and result in one writable descriptor: byte 0 is the ack.
    const mem = b.memory;
    const at = b.driver.pci.allocator.alloc(16, 64);
    mem.write(at, Uint8Array.of(CtrlClass.NOTF_COAL, CtrlNotfCoal.VQ_GET, 1, 0, 0, 0));
    mem.write(at + 8, new Uint8Array(8).fill(0xee));
    const q = b.driver.queue(b.driver.ctrlIndex);
    q.add([{ addr: at, len: 6 }], [{ addr: at + 7, len: 9 }]);
    b.driver.pci.kick(b.driver.ctrlIndex);
    expect(q.getUsed()?.len).toBe(9);
    expect(Array.from(mem.read(at + 7, 9))).toEqual([0, 0x04, 0x03, 0x02, 0x01, 0x0d, 0x0c, 0x0b, 0x0a]);
    // Linux's probe sends vq_index alone (2 bytes, no reserved): answered the same.
    const linux = b.driver.controlReply(CtrlClass.NOTF_COAL, CtrlNotfCoal.VQ_GET, Uint8Array.of(1, 0), 8);
    expect(linux.ack).toBe(VIRTIO_NET_OK);
    expect(Array.from(linux.result)).toEqual([0x04, 0x03, 0x02, 0x01, 0x0d, 0x0c, 0x0b, 0x0a]);
    // A larger result buffer: the struct at its start, the rest untouched.
    const big = b.driver.controlReply(
      CtrlClass.NOTF_COAL,
      CtrlNotfCoal.VQ_GET,
      Uint8Array.of(1, 0, 0, 0),
      12,
    );
    expect(big.ack).toBe(VIRTIO_NET_OK);
    expect(Array.from(big.result)).toEqual([0x04, 0x03, 0x02, 0x01, 0x0d, 0x0c, 0x0b, 0x0a, 0, 0, 0, 0]);
  });

  it('malformed and un-negotiated commands are ERR and change nothing', () => {
    const b = openBench(COAL, {}, WANT);
    const d = b.driver;
    expect(d.setRxCoalescing(4, 40)).toBe(VIRTIO_NET_OK);
    const before = params(b.dev);
    const errs = b.dev.stats().ctrlErrors;
    const cases: [number, Uint8Array][] = [
      [CtrlNotfCoal.RX_SET, new Uint8Array(7)], // short
      [CtrlNotfCoal.TX_SET, new Uint8Array(0)],
      [CtrlNotfCoal.VQ_SET, vqSet(0, 1, 1, 11)], // short
      [CtrlNotfCoal.VQ_SET, vqSet(2, 1, 1)], // the control queue (no MQ: index 2)
      [CtrlNotfCoal.VQ_SET, vqSet(3, 1, 1)], // no such queue
      [CtrlNotfCoal.VQ_SET, vqSet(0xffff, 1, 1)],
      [CtrlNotfCoal.VQ_GET, Uint8Array.of(2, 0, 0, 0)],
      [CtrlNotfCoal.VQ_GET, Uint8Array.of(0)], // short
      [4, vqSet(0, 1, 1)], // unknown command
    ];
    for (const [cmd, data] of cases) {
      const r = d.controlReply(CtrlClass.NOTF_COAL, cmd, data, 8);
      expect(r.ack, `cmd ${cmd} len ${data.length}`).toBe(VIRTIO_NET_ERR);
      expect(Array.from(r.result)).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
      expect(r.usedLength).toBe(1);
    }
    // VQ_GET with no room for the struct.
    expect(d.controlReply(CtrlClass.NOTF_COAL, CtrlNotfCoal.VQ_GET, Uint8Array.of(0, 0, 0, 0), 7).ack).toBe(
      VIRTIO_NET_ERR,
    );
    expect(params(b.dev)).toEqual(before);
    expect(b.dev.stats().ctrlErrors).toBe(errs + cases.length + 1);
    // NOTF_COAL negotiated without VQ_NOTF_COAL (Linux 6.1): VQ_SET / VQ_GET are ERR, RX_SET works.
    const six = openBench(COAL);
    expect(six.driver.has(NetF.VQ_NOTF_COAL)).toBe(false);
    expect(six.driver.setVqCoalescing(0, 1, 1)).toBe(VIRTIO_NET_ERR);
    expect(six.driver.getVqCoalescing(0).ack).toBe(VIRTIO_NET_ERR);
    expect(six.driver.setRxCoalescing(1, 1)).toBe(VIRTIO_NET_OK);
    // VQ_NOTF_COAL alone: TX_SET / RX_SET are ERR.
    const vqOnly = openBench(
      COAL,
      {},
      { wanted: (LINUX_6_1_FEATURES & ~bit(NetF.NOTF_COAL)) | bit(NetF.VQ_NOTF_COAL) },
    );
    expect(vqOnly.driver.setTxCoalescing(1, 1)).toBe(VIRTIO_NET_ERR);
    expect(vqOnly.driver.setVqCoalescing(1, 2, 3)).toBe(VIRTIO_NET_OK);
  });
});

// Fake timers: one thread only (ctrl-notf-coal.workers.test.ts has the worker-mode version).
describe.skipIf(inWorkerMode())('coalesced interrupts as the guest sees them', () => {
  const rxVector = 1; // queue index + 1, as the driver programs MSI-X
  const txVector = 2;
  const frame = (i: number) => rawFrame(80, DEV_MAC, PEER_MAC, i);

  it('rx: held until max_packets frames, or max_usecs after it was wanted; 0/0 signals every frame', () => {
    const b = openBench(COAL, {}, WANT);
    const v = () => b.irq.takeVectors().filter((x) => x === rxVector).length;
    b.irq.takeVectors();
    b.backend.inject(frame(0));
    expect(v()).toBe(1); // no coalescing yet
    b.driver.receive(0);
    expect(b.driver.setRxCoalescing(4, 3000)).toBe(VIRTIO_NET_OK);
    for (let i = 0; i < 3; i++) b.backend.inject(frame(i));
    expect(v()).toBe(0);
    b.backend.inject(frame(3));
    expect(v()).toBe(1); // the 4th frame
    expect(b.driver.receive(0)).toHaveLength(4);
    b.backend.inject(frame(4));
    vi.advanceTimersByTime(2);
    expect(v()).toBe(0);
    vi.advanceTimersByTime(1);
    expect(v()).toBe(1); // 3 ms after it was held
    b.driver.receive(0);
    expect(b.driver.setRxCoalescing(0, 0)).toBe(VIRTIO_NET_OK);
    b.backend.inject(frame(5));
    expect(v()).toBe(1);
    expect(b.dev.stats().queues[0]!.rxInterrupts).toBe(4);
  });

  for (const [name, packed, eventIdx] of [
    ['split ring, event index', false, true],
    ['split ring, NO_INTERRUPT flag', false, false],
    ['packed ring, event suppression with descriptor index', true, true],
    ['packed ring, event suppression flags', true, false],
  ] as const)
    for (const receive of ['direct', 'copy'] as const) {
      it(`${name}, ${receive} receive: held and released by count and timer; nothing while the guest suppresses`, () => {
        const wanted = eventIdx ? WANT.wanted : WANT.wanted & ~bit(29);
        const b = openBench({ ...COAL, packed }, { receive }, { wanted });
        expect(b.driver.has(29)).toBe(eventIdx);
        expect(b.driver.has(34)).toBe(packed);
        const v = () => b.irq.takeVectors().filter((x) => x === rxVector).length;
        expect(b.driver.setRxCoalescing(3, 5000)).toBe(VIRTIO_NET_OK);
        b.irq.takeVectors();
        b.backend.inject(frame(0));
        b.backend.inject(frame(1));
        expect(v()).toBe(0);
        b.backend.inject(frame(2));
        expect(v()).toBe(1);
        expect(b.driver.receive(0)).toHaveLength(3);
        // The guest polls (interrupts off): nothing is sent and no timer runs, however many frames come.
        const q = b.driver.queue(0);
        q.disableInterrupts();
        // A split ring with EVENT_IDX ignores the flag: a used_event left behind (entry 1 of the 3 used)
        // is how the driver says "no more", as Linux's stale used_event does while it polls.
        if (eventIdx && !packed) (q as SplitDriverQueue).setUsedEvent(1);
        // Suppressed frames still count: 7 of them close two windows of 3 and leave 1 counted.
        for (let i = 0; i < 7; i++) b.backend.inject(frame(10 + i));
        expect(vi.getTimerCount()).toBe(0);
        vi.advanceTimersByTime(10);
        expect(v()).toBe(0);
        expect(b.driver.receive(0)).toHaveLength(7); // re-enables interrupts, as NAPI completion does
        b.backend.inject(frame(20)); // 2 counted: held, the timer runs
        expect(v()).toBe(0);
        vi.advanceTimersByTime(4);
        expect(v()).toBe(0);
        vi.advanceTimersByTime(1);
        expect(v()).toBe(1);
        b.driver.receive(0);
        b.backend.inject(frame(21));
        b.backend.inject(frame(22));
        b.backend.inject(frame(23));
        expect(v()).toBe(1); // the 3rd of a fresh window, at once
        expect(b.backend.stats().deliveredDirect > 0).toBe(receive === 'direct');
      });
    }

  it('tx: completions of a burst signal once at max_packets', () => {
    const b = openBench(COAL, {}, WANT);
    expect(b.driver.setTxCoalescing(3, 100_000)).toBe(VIRTIO_NET_OK);
    b.irq.takeVectors();
    for (let i = 0; i < 2; i++) b.driver.send(rawFrame(60, PEER_MAC, DEV_MAC, i));
    expect(b.irq.takeVectors().filter((x) => x === txVector)).toEqual([]);
    b.driver.send(rawFrame(60, PEER_MAC, DEV_MAC, 2));
    expect(b.irq.takeVectors().filter((x) => x === txVector)).toEqual([txVector]);
    expect(b.sent).toHaveLength(3);
  });

  it('suppressed by the guest (interrupts disabled): nothing is sent, no timer runs', () => {
    const b = openBench(COAL, {}, WANT);
    expect(b.driver.setRxCoalescing(2, 5000)).toBe(VIRTIO_NET_OK);
    b.backend.inject(frame(0));
    b.backend.inject(frame(1));
    expect(b.irq.takeVectors().filter((x) => x === rxVector)).toHaveLength(1);
    // Not consumed: the event index still names the first entry, so the guest wants no more.
    b.backend.inject(frame(2));
    expect(vi.getTimerCount()).toBe(0);
    vi.advanceTimersByTime(10);
    expect(b.irq.takeVectors().filter((x) => x === rxVector)).toHaveLength(0);
  });

  it('device reset: parameters to 0 and no timer left; close leaves no timer', () => {
    const b = openBench(COAL, {}, WANT);
    expect(b.driver.setRxCoalescing(100, 50_000)).toBe(VIRTIO_NET_OK);
    b.backend.inject(frame(0));
    expect(vi.getTimerCount()).toBe(1);
    b.dev.reset();
    expect(vi.getTimerCount()).toBe(0);
    expect(params(b.dev)).toEqual([
      [0, 0],
      [0, 0],
    ]);
    const c = openBench(COAL, {}, WANT);
    expect(c.driver.setRxCoalescing(100, 50_000)).toBe(VIRTIO_NET_OK);
    c.backend.inject(frame(0));
    expect(vi.getTimerCount()).toBe(1);
    c.dev.close();
    expect(vi.getTimerCount()).toBe(0);
  });

  it('queue reset (RING_RESET): the queue returns to the RX_SET / TX_SET parameters, its hold dropped', () => {
    const b = openBench(COAL, {}, WANT);
    const d = b.driver;
    expect(d.setRxCoalescing(9, 90_000)).toBe(VIRTIO_NET_OK);
    expect(d.setVqCoalescing(0, 2, 20_000)).toBe(VIRTIO_NET_OK);
    expect(d.setVqCoalescing(1, 3, 30_000)).toBe(VIRTIO_NET_OK);
    b.backend.inject(frame(0));
    expect(vi.getTimerCount()).toBe(1);
    d.pci.resetQueue(0);
    d.pci.resetQueue(1);
    expect(vi.getTimerCount()).toBe(0);
    expect(params(b.dev)).toEqual([
      [9, 90_000],
      [0, 0], // TX_SET never sent: 0
    ]);
  });

  it('snapshot and restore carry the parameters; a held notification is sent within max_usecs', () => {
    const a = openBench(COAL, {}, WANT);
    expect(a.driver.setRxCoalescing(50, 2000)).toBe(VIRTIO_NET_OK);
    expect(a.driver.setVqCoalescing(1, 6, 7000)).toBe(VIRTIO_NET_OK);
    a.backend.inject(frame(0));
    const state = JSON.parse(JSON.stringify(a.dev.snapshot()));
    const dev = state.transport.transport.device;
    expect(dev.coalesce).toEqual({
      rx: [50, 2000],
      tx: [0, 0],
      queues: [
        [50, 2000, true],
        [6, 7000, false],
      ],
    });
    const b = makeBench(COAL, {}, WANT);
    b.dev.restore(state);
    expect(params(b.dev)).toEqual([
      [50, 2000],
      [6, 7000],
    ]);
    b.irq.takeVectors();
    vi.advanceTimersByTime(2);
    expect(b.irq.takeVectors().filter((x) => x === rxVector)).toHaveLength(1);
    // A state without coalescing (taken before it existed) restores as none.
    delete dev.coalesce;
    const c = makeBench(COAL, {}, WANT);
    c.dev.restore(state);
    expect(params(c.dev)).toEqual([
      [0, 0],
      [0, 0],
    ]);
    // Out-of-range values are refused naming the field.
    const bad = JSON.parse(JSON.stringify(a.dev.snapshot()));
    bad.transport.transport.device.coalesce.queues = [[1, 1, false]];
    expect(() => makeBench(COAL, {}, WANT).dev.restore(bad)).toThrow(/coalesce\.queues/);
  });
});
