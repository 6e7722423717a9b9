// MemoryBackend in worker mode (docs/workers.md): `ringBytes` validated; a full rx ring is a counted
// drop (taken = delivered + dropped); a full tx ring holds the guest's chains back until the host took
// frames, then every frame arrives, byte for byte and in order.
import { describe, expect, it } from 'vitest';
import { OptionsError } from '../../lib/errors.js';
import { MemoryBackend } from '../../lib/net/memory-backend.js';
import {
  DEV_MAC,
  hexOf,
  nextTurn,
  openBench,
  PEER_MAC,
  rawFrame,
  setWorkerMode,
} from './bench.test-support.js';

setWorkerMode(true);

describe('MemoryBackend on workers', () => {
  it('ringBytes out of range is an OptionsError naming it', () => {
    expect(() => new MemoryBackend({ ringBytes: 1000 })).toThrow(OptionsError);
    expect(() => new MemoryBackend({ ringBytes: 1000 })).toThrow(/ringBytes/);
    expect(() => new MemoryBackend({ ringBytes: 2 ** 31 })).toThrow(/ringBytes/);
    expect(() => new MemoryBackend({ ringBytes: 1 << 18 })).not.toThrow();
  });

  it('a full rx ring drops (counted); what fits is delivered in order', () => {
    // No rx buffers: the device backlogs one frame and pauses; the rest wait in the 256 KiB ring.
    const b = openBench({}, { ringBytes: 1 << 18 }, { rxBuffers: 0 });
    const frames = Array.from({ length: 40 }, (_, i) => rawFrame(9000, DEV_MAC, PEER_MAC, i));
    for (const f of frames) b.backend.inject(f);
    const st = b.backend.stats();
    expect(st.injected).toBe(40);
    expect(st.rxDropped).toBeGreaterThan(0);
    const kept = 40 - st.rxDropped;
    b.driver.postRx(0, 64);
    let got: string[] = [];
    for (let i = 0; i < 20; i++) got = got.concat(b.driver.receive().map((r) => hexOf(r.frame)));
    expect(got).toEqual(frames.slice(0, kept).map(hexOf));
    expect(b.backend.stats().delivered).toBe(kept);
    expect(b.dev.stats().rxPackets).toBe(kept);
  });

  it('a full tx ring is back-pressure: chains wait, then every frame arrives in order', async () => {
    const b = openBench({}, { ringBytes: 1 << 18 }, { txBuffers: 64 } as object);
    const frames = Array.from({ length: 24 }, (_, i) => rawFrame(60000, PEER_MAC, DEV_MAC, i));
    for (const f of frames) b.driver.send(f, { kick: false });
    b.driver.pci.kick(1);
    // 256 KiB holds at most 4 such frames: the worker stopped taking chains before the end.
    expect(b.sent.length).toBeLessThan(24);
    await nextTurn(b, () => b.sent.length >= 24);
    expect(b.sent.map((s) => hexOf(s.frame))).toEqual(frames.map(hexOf));
    const s = b.dev.stats();
    expect([s.txPackets, s.txDropped]).toEqual([24, 0]);
    expect(b.backend.stats().txDropped).toBe(0);
  });
});
