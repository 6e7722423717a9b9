// The stand-in function's config space as the guest harness and the vfio-user tests rely on it.
import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { STAND_IN_BAR_MAGIC, STAND_IN_MAGIC, StandInDevice, StandInReg } from './stand-in-device.js';

const make = () => new StandInDevice({ memory: new GuestMemory(), msixVectors: 4 });

describe('StandInDevice config space', () => {
  it('identifies as 1b36:7e57, class ff0000, INTA, with the capability chain 0x40 PCIe -> 0x80 MSI-X', () => {
    const d = make();
    expect(d.configRead(0, 4)).toBe(0x7e571b36);
    expect(d.configRead(0x08, 4)).toBe(0xff000001);
    expect(d.configRead(0x2c, 4)).toBe(0x11001b36);
    expect(d.configRead(0x3d, 1)).toBe(1);
    expect(d.configRead(0x06, 2) & 0x10).toBe(0x10);
    expect(d.configRead(0x34, 1)).toBe(0x40);
    expect(d.configRead(0x40, 4)).toBe(0x00028010); // PCIe v2 endpoint, next 0x80
    expect(d.configRead(0x44, 4)).toBe(0x10008000); // DevCap: RBER, FLR
    expect(d.configRead(0x52, 2)).toBe(0x0011); // LnkSta 2.5 GT/s x1
    expect(d.configRead(0x80, 4)).toBe(0x00030011); // MSI-X, next 0, 4 vectors
    expect(d.configRead(0x84, 4)).toBe(0x00000001); // table BAR1 + 0
    expect(d.configRead(0x88, 4)).toBe(0x00000801); // PBA BAR1 + 0x800
    expect(d.configRead(0x100, 4)).toBe(0x0001000b); // vendor-specific, v1, last
    expect(d.configRead(0x104, 4)).toBe(0x01817e57);
    expect(d.configRead(StandInReg.MAGIC, 4)).toBe(STAND_IN_MAGIC);
  });

  it('sizes its BARs: 4 KiB mem32, 4 KiB mem32 (MSI-X), 16 KiB mem64 prefetchable', () => {
    const d = make();
    const size = (off: number) => {
      d.configWrite(off, 4, 0xffffffff);
      return d.configRead(off, 4);
    };
    expect(size(0x10)).toBe(0xfffff000);
    expect(size(0x14)).toBe(0xfffff000);
    expect(size(0x18)).toBe(0xffffc00c);
    expect(size(0x1c)).toBe(0xffffffff);
    expect(size(0x20)).toBe(0);
    expect(d.barRead(0, 0, 4)).toBe(STAND_IN_BAR_MAGIC);
  });

  it('test registers: scratch and doorbell writable, magic and hits not; reset restores them', () => {
    const d = make();
    const vectors: number[] = [];
    d.setInterruptSink({ vector: (n) => vectors.push(n) });
    d.configWrite(StandInReg.SCRATCH, 4, 0x5a5aa5a5);
    d.configWrite(StandInReg.MAGIC, 4, 0);
    d.configWrite(StandInReg.HITS, 4, 7);
    expect(d.configRead(StandInReg.SCRATCH, 4)).toBe(0x5a5aa5a5);
    expect(d.configRead(StandInReg.MAGIC, 4)).toBe(STAND_IN_MAGIC);
    expect(d.configRead(StandInReg.HITS, 4)).toBe(0);
    d.configWrite(StandInReg.DOORBELL, 4, 2 | (3 << 8));
    d.configWrite(StandInReg.DOORBELL, 4, 2 | (9 << 8)); // out of range: the server counts the drop
    expect(vectors).toEqual([3, 9]);
    d.configWrite(0x04, 2, 0x0006);
    d.configWrite(0x82, 2, 0x8000);
    d.reset();
    expect(d.configRead(StandInReg.SCRATCH, 4)).toBe(0);
    expect(d.configRead(StandInReg.DOORBELL, 4)).toBe(0);
    expect(d.configRead(0x04, 2)).toBe(0);
    expect(d.configRead(0x82, 2)).toBe(3);
    expect(d.counts.resets).toBe(1);
  });
});
