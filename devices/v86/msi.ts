/**
 * MSI delivery for v86, which has no MSI: a message (address 0xFEExxxxx, data) becomes an interrupt
 * command sent through v86's own local APIC. The APIC's ICR is written with the wasm `write32` export
 * (v86 routes 0xFEE00300 to `apic::write32`, which delivers and then runs `handle_irqs`), with the
 * message's vector, delivery mode, trigger bits and destination. The guest's own ICR contents are put
 * back afterwards, straight into the APIC state (`get_apic_addr`, words 14 and 15 as in v86's
 * `get_state_apic`), since a second ICR write would send a second interrupt. v86 0.5.462 routes every
 * interrupt to its one CPU, so the destination is carried but not needed.
 */
import type { V86Cpu } from './v86-types.js';

const ICR_LOW = 0xfee00300;
const ICR_HIGH = 0xfee00310;
/** Word offsets of icr0 / icr1 in v86's Apic struct (src/rust/cpu/apic.rs asserts them). */
const ICR0_WORD = 14;
const ICR1_WORD = 15;
/** MSI data bits that mean the same in the ICR: vector, delivery mode, level, trigger mode. */
const DATA_TO_ICR = 0xc7ff;

export interface MsiCounters {
  msiDelivered: number;
  /** Messages that were not to the local APIC window (0xFEE00000–0xFEEFFFFF), or with the APIC off. */
  msiDropped: number;
}

export class LapicMsi {
  private apic: Int32Array;
  readonly counters: MsiCounters = { msiDelivered: 0, msiDropped: 0 };

  constructor(private readonly cpu: V86Cpu) {
    this.apic = this.view();
  }

  /** Delivers one MSI message (PCI Local Bus 3.0 §6.8; Intel SDM vol. 3 §11.11 for the layout). */
  deliver(address: bigint, data: number): void {
    const lo = Number(address & 0xffffffffn);
    if (address >> 32n !== 0n || lo >>> 20 !== 0xfee || !this.cpu.acpi_enabled[0]) {
      this.counters.msiDropped++;
      return;
    }
    let apic = this.apic;
    // The wasm memory grows: a detached view has length 0.
    if (apic.length === 0) apic = this.apic = this.view();
    const icr0 = apic[ICR0_WORD]!;
    const icr1 = apic[ICR1_WORD]!;
    const destination = (lo >>> 12) & 0xff;
    const logical = (lo >>> 2) & 1;
    this.cpu.write32(ICR_HIGH, destination << 24);
    this.cpu.write32(ICR_LOW, (data & DATA_TO_ICR) | (logical << 11));
    if (apic.length === 0) apic = this.apic = this.view();
    apic[ICR0_WORD] = icr0;
    apic[ICR1_WORD] = icr1;
    this.counters.msiDelivered++;
  }

  private view(): Int32Array {
    return new Int32Array(this.cpu.wasm_memory.buffer, this.cpu.get_apic_addr(), 16);
  }
}
