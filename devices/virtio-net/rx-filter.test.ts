import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { formatMac, parseMac, RxFilter, RxMode } from './rx-filter.js';

const OWN = '52:54:00:12:34:56';
function frame(dst: string, tag?: number): Uint8Array {
  const f = new Uint8Array(64);
  f.set(parseMac(dst), 0);
  f.set(parseMac('02:00:00:00:00:01'), 6);
  if (tag === undefined) {
    f[12] = 0x08;
  } else {
    f[12] = 0x81;
    f[13] = 0x00;
    f[14] = (tag >> 8) & 0x0f;
    f[15] = tag & 0xff;
    f[16] = 0x08;
  }
  return f;
}

function filter(ctrlVlan = true): RxFilter {
  const f = new RxFilter();
  f.reset(ctrlVlan);
  f.mac.set(parseMac(OWN));
  f.setMode(RxMode.PROMISC, false);
  return f;
}

describe('RxFilter (QEMU receive_filter semantics)', () => {
  it('starts promiscuous after reset, like QEMU', () => {
    const f = new RxFilter();
    f.reset(true);
    expect(f.promisc).toBe(true);
    expect(f.accepts(frame('02:99:99:99:99:99'))).toBe(true);
  });

  it('accepts own unicast and broadcast, rejects other unicast and unknown multicast', () => {
    const f = filter();
    expect(f.accepts(frame(OWN))).toBe(true);
    expect(f.accepts(frame('ff:ff:ff:ff:ff:ff'))).toBe(true);
    expect(f.accepts(frame('02:99:99:99:99:99'))).toBe(false);
    expect(f.accepts(frame('01:00:5e:00:00:01'))).toBe(false);
  });

  it('implements every rx mode', () => {
    const f = filter();
    f.setMode(RxMode.ALLMULTI, true);
    expect(f.accepts(frame('01:00:5e:00:00:01'))).toBe(true);
    f.setMode(RxMode.NOMULTI, true);
    expect(f.accepts(frame('01:00:5e:00:00:01'))).toBe(false);
    expect(f.accepts(frame('ff:ff:ff:ff:ff:ff'))).toBe(true); // broadcast is not "multi" for NOMULTI
    f.setMode(RxMode.NOBCAST, true);
    expect(f.accepts(frame('ff:ff:ff:ff:ff:ff'))).toBe(false);
    f.setMode(RxMode.ALLUNI, true);
    expect(f.accepts(frame('02:99:99:99:99:99'))).toBe(true);
    f.setMode(RxMode.NOUNI, true);
    expect(f.accepts(frame(OWN))).toBe(false);
    f.setMode(RxMode.PROMISC, true);
    expect(f.accepts(frame(OWN))).toBe(true);
    expect(f.setMode(6, true)).toBe(false);
  });

  it('matches unicast and multicast table entries separately', () => {
    const f = filter();
    f.macs.set(parseMac('02:aa:aa:aa:aa:aa'), 0);
    f.macs.set(parseMac('01:00:5e:00:00:fb'), 6);
    f.inUse = 2;
    f.firstMulti = 1;
    expect(f.accepts(frame('02:aa:aa:aa:aa:aa'))).toBe(true);
    expect(f.accepts(frame('01:00:5e:00:00:fb'))).toBe(true);
    expect(f.accepts(frame('01:00:5e:00:00:fc'))).toBe(false);
    f.multiOverflow = true;
    expect(f.accepts(frame('01:00:5e:00:00:fc'))).toBe(true);
    f.uniOverflow = true;
    expect(f.accepts(frame('02:bb:bb:bb:bb:bb'))).toBe(true);
  });

  it('drops tagged frames whose VID is not in the table when CTRL_VLAN is negotiated', () => {
    const f = filter(true);
    expect(f.accepts(frame(OWN, 100))).toBe(false);
    f.vlanAdd(100);
    expect(f.accepts(frame(OWN, 100))).toBe(true);
    expect(f.accepts(frame(OWN, 101))).toBe(false);
    f.vlanDel(100);
    expect(f.accepts(frame(OWN, 100))).toBe(false);
    const open = filter(false);
    expect(open.accepts(frame(OWN, 4095))).toBe(true);
  });

  it('rejects runt frames when not promiscuous and never reads past them', () => {
    const f = filter();
    expect(f.accepts(new Uint8Array(10))).toBe(false);
    const tagged = frame(OWN, 5).subarray(0, 15);
    expect(f.accepts(tagged)).toBe(false);
  });

  it('decides a frame inside a larger buffer exactly as the frame alone (property)', () => {
    const macs = fc.constantFrom(
      OWN,
      'ff:ff:ff:ff:ff:ff',
      '01:00:5e:00:00:fb',
      '02:aa:aa:aa:aa:aa',
      '02:bb:00:00:00:01',
    );
    fc.assert(
      fc.property(
        macs,
        fc.option(fc.integer({ min: 0, max: 4095 }), { nil: undefined }),
        fc.integer({ min: 0, max: 64 }),
        fc.uint8Array({ minLength: 0, maxLength: 20 }),
        fc.integer({ min: 0, max: 63 }),
        fc.boolean(),
        (dst, tag, cut, pad, mode, vlan) => {
          const f = filter(vlan);
          f.macs.set(parseMac('02:aa:aa:aa:aa:aa'), 0);
          f.macs.set(parseMac('01:00:5e:00:00:fb'), 6);
          f.inUse = 2;
          f.firstMulti = 1;
          f.vlanAdd(7);
          for (const m of [
            RxMode.PROMISC,
            RxMode.ALLMULTI,
            RxMode.ALLUNI,
            RxMode.NOMULTI,
            RxMode.NOUNI,
            RxMode.NOBCAST,
          ])
            f.setMode(m, (mode & (1 << m)) !== 0);
          const alone = frame(dst, tag).subarray(0, cut);
          const buf = new Uint8Array(pad.length + 64 + 8).fill(0xff);
          buf.set(pad, 0);
          buf.set(alone, pad.length);
          expect(f.acceptsAt(buf, pad.length, cut)).toBe(f.accepts(alone));
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('round-trips its state', () => {
    const f = filter();
    f.macs.set(parseMac('02:aa:aa:aa:aa:aa'), 0);
    f.inUse = 1;
    f.firstMulti = 1;
    f.vlanAdd(7);
    const g = new RxFilter();
    g.restore(JSON.parse(JSON.stringify(f.state())));
    expect(g.state()).toEqual(f.state());
    expect(formatMac(parseMac(OWN))).toBe(OWN);
  });
});
