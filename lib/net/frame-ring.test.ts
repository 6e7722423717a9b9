// The shared-memory frame ring: frames and offload metadata byte for byte across wrap-around, a full
// ring refusing (and writing nothing), and two rings over one buffer seeing the same records.
import { describe, expect, it } from 'vitest';
import { FrameRing } from './frame-ring.js';

const frame = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 13 + seed) & 0xff);

describe('FrameRing', () => {
  it('writeTagged: the payload is [a u32le][b u32le][frame], the record length counts the tag', () => {
    const buf = FrameRing.allocate(256);
    const prod = new FrameRing(buf);
    const cons = new FrameRing(buf);
    const f = frame(30, 7);
    expect(prod.writeTagged(0x00030002, 0xdeadbeef, f, 0, 30, null)).toBe(true);
    expect(cons.next()).toBe(true);
    expect(cons.frameLength).toBe(38);
    expect(cons.hasOffload).toBe(false);
    const p = Buffer.from(cons.bytes.subarray(cons.frameOffset, cons.frameOffset + 38));
    expect(p.subarray(0, 8).toString('hex')).toBe('02000300efbeadde');
    expect(p.subarray(8)).toEqual(Buffer.from(f));
    cons.consume();
    expect(cons.next()).toBe(false);
    // A tagged record that does not fit is refused whole, like any other.
    expect(prod.fits(248)).toBe(false);
    expect(prod.writeTagged(1, 2, frame(240, 1), 0, 240, null)).toBe(false);
  });

  it('carries frames and offloads in order across many wrap-arounds', () => {
    const buf = FrameRing.allocate(1024);
    const prod = new FrameRing(buf);
    const cons = new FrameRing(buf);
    expect(prod.capacity).toBe(1024);
    let w = 0;
    let r = 0;
    for (let round = 0; round < 400; round++) {
      // Sizes chosen so that records land at every position modulo the capacity.
      while (prod.fits((w * 37) % 301)) {
        const n = (w * 37) % 301;
        const off =
          w % 3 === 0
            ? null
            : {
                flags: 1,
                gsoType: 0x21,
                hdrLen: w & 0xff,
                gsoSize: 1400,
                csumStart: 34,
                csumOffset: 6,
                outerThOffset: w % 3 === 2 ? 34 : undefined,
                innerNhOffset: w % 3 === 2 ? 64 : undefined,
              };
        expect(prod.write(frame(n + 8, w), 4, n, off)).toBe(true);
        w++;
      }
      for (let k = 0; k < 2 && cons.next(); k++) {
        const n = (r * 37) % 301;
        expect(cons.frameLength).toBe(n);
        expect(Buffer.from(cons.bytes.subarray(cons.frameOffset, cons.frameOffset + n))).toEqual(
          Buffer.from(frame(n + 8, r).subarray(4, 4 + n)),
        );
        expect(cons.hasOffload).toBe(r % 3 !== 0);
        if (r % 3 !== 0)
          expect(cons.offload).toEqual({
            flags: 1,
            gsoType: 0x21,
            hdrLen: r & 0xff,
            gsoSize: 1400,
            csumStart: 34,
            csumOffset: 6,
            outerThOffset: r % 3 === 2 ? 34 : undefined,
            innerNhOffset: r % 3 === 2 ? 64 : undefined,
          });
        cons.consume();
        r++;
      }
    }
    expect(w).toBeGreaterThan(800);
    expect(r).toBe(800);
    expect(cons.discard()).toBe(w - r);
    expect(prod.used).toBe(0);
  });

  it('a full ring refuses a frame and keeps what it holds', () => {
    const ring = new FrameRing(FrameRing.allocate(256));
    let n = 0;
    while (ring.write(frame(40, n), 0, 40, null)) n++;
    expect(n).toBe(Math.floor(256 / FrameRing.recordBytes(40)));
    const used = ring.used;
    expect(ring.write(frame(1, 0), 0, 1, null)).toBe(false);
    expect(ring.used).toBe(used);
    expect(ring.next()).toBe(true);
    expect(Buffer.from(ring.bytes.subarray(ring.frameOffset, ring.frameOffset + 40))).toEqual(
      Buffer.from(frame(40, 0)),
    );
    ring.consume();
    // Room at the start again only once the record at the end is free too: a wrap needs both.
    expect(ring.fits(40)).toBe(true);
    expect(ring.fits(256)).toBe(false);
    expect(ring.discard()).toBe(n - 1);
  });

  it('a zero-length frame; a record as large as the ring fits only from position 0 (records are contiguous)', () => {
    const ring = new FrameRing(FrameRing.allocate(128));
    expect(ring.write(new Uint8Array(0), 0, 0, null)).toBe(true);
    expect(ring.next()).toBe(true);
    expect(ring.frameLength).toBe(0);
    ring.consume();
    expect(ring.used).toBe(0);
    expect(ring.write(frame(108, 1), 0, 108, null)).toBe(false);
    const fresh = new FrameRing(FrameRing.allocate(128));
    expect(fresh.write(frame(108, 1), 0, 108, null)).toBe(true);
    expect(fresh.used).toBe(128);
    expect(fresh.next()).toBe(true);
    expect(fresh.frameLength).toBe(108);
    expect(fresh.frameOffset).toBe(8 + 20);
    expect(Buffer.from(fresh.bytes.subarray(28, 28 + 108))).toEqual(Buffer.from(frame(108, 1)));
    fresh.consume();
    expect(fresh.next()).toBe(false);
    expect(fresh.write(frame(60, 2), 0, 60, null)).toBe(true);
  });
});
