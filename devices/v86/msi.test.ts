/**
 * LapicMsi against a stand-in for v86's CPU: what reaches the APIC (ICR writes), when, and that the
 * guest's own ICR survives. v86's ICR write enters the interrupt at once, so nothing may reach it inside
 * the call that raised the message (a guest MMIO write, for a kick); test/v86 runs the real thing.
 */
import { describe, expect, it } from 'vitest';
import { LapicMsi } from './msi.js';
import type { V86Cpu } from './v86-types.js';

const APIC_AT = 64;

function fakeCpu(acpi = 1) {
  const buffer = new ArrayBuffer(256);
  const apic = new Int32Array(buffer, APIC_AT, 16);
  const writes: [number, number][] = [];
  const cpu = {
    wasm_memory: { buffer },
    acpi_enabled: [acpi],
    get_apic_addr: () => APIC_AT,
    write32(addr: number, value: number) {
      writes.push([addr >>> 0, value >>> 0]);
      // v86's apic write32 stores what was written into icr0 / icr1.
      if (addr === 0xfee00300) apic[14] = value;
      if (addr === 0xfee00310) apic[15] = value;
    },
  } as unknown as V86Cpu;
  return { cpu, apic, writes };
}

const tick = () => new Promise<void>((r) => queueMicrotask(r));

describe('LapicMsi', () => {
  it('sends a message only after the raising call returns, as ICR high then low, and puts the guest ICR back', async () => {
    const { cpu, apic, writes } = fakeCpu();
    apic[14] = 0x4041;
    apic[15] = 0x0300_0000;
    const msi = new LapicMsi(cpu);
    // Destination 2, logical mode (bit 2), vector 0x31, fixed, edge; bits above 0xc7ff are not ICR bits.
    msi.deliver(0xfee0_2004n, 0x1_0031);
    expect(writes).toEqual([]);
    expect(msi.counters.msiDelivered).toBe(0);
    await tick();
    expect(writes).toEqual([
      [0xfee00310, 0x0200_0000],
      [0xfee00300, 0x0031 | (1 << 11)],
    ]);
    expect([apic[14], apic[15]]).toEqual([0x4041, 0x0300_0000]);
    expect(msi.counters).toEqual({ msiDelivered: 1, msiDropped: 0, msiMerged: 0 });
  });

  it('keeps the order of distinct messages and merges one equal to a message still waiting', async () => {
    const { cpu, writes } = fakeCpu();
    const msi = new LapicMsi(cpu);
    msi.deliver(0xfee0_0000n, 0x41);
    msi.deliver(0xfee0_0000n, 0x42);
    msi.deliver(0xfee0_0000n, 0x41);
    await tick();
    expect(writes.filter(([a]) => a === 0xfee00300).map(([, v]) => v)).toEqual([0x41, 0x42]);
    expect(msi.counters).toEqual({ msiDelivered: 2, msiDropped: 0, msiMerged: 1 });
    // Once sent, the same message goes again (the guest may have taken the first by now).
    msi.deliver(0xfee0_0000n, 0x41);
    await tick();
    expect(writes.filter(([a]) => a === 0xfee00300).map(([, v]) => v)).toEqual([0x41, 0x42, 0x41]);
  });

  it('drops messages outside the APIC window, above 4 GiB, or with the APIC off', async () => {
    const { cpu, writes } = fakeCpu();
    const msi = new LapicMsi(cpu);
    msi.deliver(0xfed0_0000n, 0x41);
    msi.deliver(0x1_fee0_0000n, 0x41);
    await tick();
    expect(writes).toEqual([]);
    expect(msi.counters.msiDropped).toBe(2);
    const off = fakeCpu(0);
    const m2 = new LapicMsi(off.cpu);
    m2.deliver(0xfee0_0000n, 0x41);
    await tick();
    expect(off.writes).toEqual([]);
    expect(m2.counters).toEqual({ msiDelivered: 0, msiDropped: 1, msiMerged: 0 });
  });

  it('cancel() drops what waits and what comes later (detach)', async () => {
    const { cpu, writes } = fakeCpu();
    const msi = new LapicMsi(cpu);
    msi.deliver(0xfee0_0000n, 0x41);
    msi.cancel();
    msi.deliver(0xfee0_0000n, 0x42);
    await tick();
    expect(writes).toEqual([]);
  });
});
