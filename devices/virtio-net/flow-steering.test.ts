import { describe, expect, it } from 'vitest';
import { ParsedPacket, parsePacket } from '../../lib/net/packet-parser.js';
import { FlowSteering, flowHash } from './flow-steering.js';

function tcp4(src: number[], dst: number[], sport: number, dport: number): Uint8Array {
  const f = new Uint8Array(14 + 20 + 20);
  f[12] = 0x08;
  f[14] = 0x45;
  f[17] = 40;
  f[23] = 6;
  f.set(src, 26);
  f.set(dst, 30);
  f[34] = sport >> 8;
  f[35] = sport & 0xff;
  f[36] = dport >> 8;
  f[37] = dport & 0xff;
  f[46] = 0x50;
  return f;
}

describe('FlowSteering (automatic receive steering)', () => {
  const pkt = new ParsedPacket();
  it('hashes both directions of a flow alike and different flows apart', () => {
    const a = tcp4([10, 0, 0, 1], [10, 0, 0, 2], 40000, 80);
    const b = tcp4([10, 0, 0, 2], [10, 0, 0, 1], 80, 40000);
    const c = tcp4([10, 0, 0, 1], [10, 0, 0, 2], 40001, 80);
    expect(flowHash(a, parsePacket(a, pkt))).toBe(flowHash(b, parsePacket(b, pkt)));
    expect(flowHash(a, parsePacket(a, pkt))).not.toBe(flowHash(c, parsePacket(c, pkt)));
  });

  it('steers the reverse direction to the pair the guest sent on, until the entry expires', () => {
    let now = 0;
    const fs = new FlowSteering(256, 3000, () => now);
    const out = tcp4([10, 0, 0, 1], [10, 0, 0, 2], 40000, 80);
    const back = tcp4([10, 0, 0, 2], [10, 0, 0, 1], 80, 40000);
    expect(fs.lookupRx(back, parsePacket(back, pkt))).toBe(-1);
    fs.recordTx(out, parsePacket(out, pkt), 3);
    expect(fs.lookupRx(back, parsePacket(back, pkt))).toBe(3);
    now = 3001;
    expect(fs.lookupRx(back, parsePacket(back, pkt))).toBe(-1);
  });

  it('stays bounded: many flows overwrite slots without growing', () => {
    const fs = new FlowSteering(16, 3000, () => 0);
    for (let p = 0; p < 10000; p++) {
      const f = tcp4([10, 0, 0, 1], [10, 0, 0, 2], p, 80);
      fs.recordTx(f, parsePacket(f, pkt), p % 4);
    }
    expect(fs.size).toBe(16);
    const last = tcp4([10, 0, 0, 2], [10, 0, 0, 1], 80, 9999);
    expect(fs.lookupRx(last, parsePacket(last, pkt))).toBe(9999 % 4);
  });

  it('share(): entries move to a SharedArrayBuffer; a view over it (another worker) reads and writes the same table', () => {
    const main = new FlowSteering(64, 3000, () => 0);
    const out = tcp4([10, 0, 0, 1], [10, 0, 0, 2], 40000, 80);
    const back = tcp4([10, 0, 0, 2], [10, 0, 0, 1], 80, 40000);
    const out2 = tcp4([10, 0, 0, 1], [10, 0, 0, 2], 40001, 80);
    const back2 = tcp4([10, 0, 0, 2], [10, 0, 0, 1], 80, 40001);
    main.recordTx(out, parsePacket(out, pkt), 2);
    const sab = main.share();
    expect(sab).toBeInstanceOf(SharedArrayBuffer);
    expect(main.share()).toBe(sab);
    const worker = FlowSteering.over(sab, 3000, () => 0);
    expect(worker.size).toBe(64);
    expect(worker.lookupRx(back, parsePacket(back, pkt))).toBe(2);
    worker.recordTx(out2, parsePacket(out2, pkt), 1);
    expect(main.lookupRx(back2, parsePacket(back2, pkt))).toBe(1);
    expect(worker.snapshot()).toEqual(main.snapshot());
    main.clear();
    expect(worker.lookupRx(back, parsePacket(back, pkt))).toBe(-1);
    expect(() => new FlowSteering(32, 3000, () => 0, sab)).toThrow(RangeError);
  });

  it('a stamp that is not a number (torn) counts as expired', () => {
    const fs = new FlowSteering(16, 3000, () => 0);
    const out = tcp4([10, 0, 0, 1], [10, 0, 0, 2], 40000, 80);
    fs.recordTx(out, parsePacket(out, pkt), 1);
    const sab = fs.share();
    new Float64Array(sab, 0, 16).fill(Number.NaN);
    expect(fs.lookupRx(out, parsePacket(out, pkt))).toBe(-1);
  });

  it('ignores non-IP frames', () => {
    const f = new Uint8Array(60);
    f[12] = 0x08;
    f[13] = 0x06; // ARP
    expect(flowHash(f, parsePacket(f, pkt))).toBe(0);
  });
});
