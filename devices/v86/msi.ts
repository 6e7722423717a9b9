/**
 * MSI delivery for v86, which has no MSI: a message (address 0xFEExxxxx, data) becomes an interrupt
 * command sent through v86's own local APIC. The APIC's ICR is written with the wasm `write32` export
 * (v86 routes 0xFEE00300 to `apic::write32`, which delivers and then runs `handle_irqs`), with the
 * message's vector, delivery mode, trigger bits and destination. The guest's own ICR contents are put
 * back afterwards, straight into the APIC state (`get_apic_addr`, words 14 and 15 as in v86's
 * `get_state_apic`), since a second ICR write would send a second interrupt. v86 0.5.462 routes every
 * interrupt to its one CPU, so the destination is carried but not needed.
 *
 * Messages are sent once the JS stack has unwound (a microtask), never inside the call that raised them:
 * that call may be the guest's own MMIO write (a kick), and v86 takes an interrupt at once from an ICR
 * write (`mmap_write32` → `handle_irqs`), so a JIT-compiled block would go on in the interrupt's context
 * (the same hazard attach.ts avoids for INTx; the guest's TCP stalled in about one CI run in twenty).
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
  /**
   * Messages equal to one still waiting to be sent, merged into it (the APIC would merge them too: a
   * vector already pending in IRR is not raised twice).
   */
  msiMerged: number;
}

export class LapicMsi {
  private apic: Int32Array;
  readonly counters: MsiCounters = { msiDelivered: 0, msiDropped: 0, msiMerged: 0 };
  /** Messages waiting for the microtask: address low word and data, in pairs (reused, no allocation). */
  private readonly pending: number[] = [];
  private scheduled = false;
  private cancelled = false;
  private readonly flush = () => this.send();

  constructor(private readonly cpu: V86Cpu) {
    this.apic = this.view();
  }

  /**
   * Queues one MSI message (PCI Local Bus 3.0 §6.8; Intel SDM vol. 3 §11.11 for the layout); it reaches
   * the APIC after the current call returns.
   */
  deliver(address: bigint, data: number): void {
    if (this.cancelled) return;
    const lo = Number(address & 0xffffffffn);
    if (address >> 32n !== 0n || lo >>> 20 !== 0xfee) {
      this.counters.msiDropped++;
      return;
    }
    const p = this.pending;
    for (let i = 0; i < p.length; i += 2) {
      if (p[i] === lo && p[i + 1] === data) {
        this.counters.msiMerged++;
        return;
      }
    }
    p.push(lo, data);
    if (!this.scheduled) {
      this.scheduled = true;
      queueMicrotask(this.flush);
    }
  }

  /** Drops what is queued and ignores later messages (the device is being detached). */
  cancel(): void {
    this.cancelled = true;
    this.pending.length = 0;
  }

  private send(): void {
    this.scheduled = false;
    const p = this.pending;
    if (p.length === 0) return;
    if (!this.cpu.acpi_enabled[0]) {
      this.counters.msiDropped += p.length / 2;
      p.length = 0;
      return;
    }
    let apic = this.apic;
    // The wasm memory grows: a detached view has length 0.
    if (apic.length === 0) apic = this.apic = this.view();
    const icr0 = apic[ICR0_WORD]!;
    const icr1 = apic[ICR1_WORD]!;
    for (let i = 0; i < p.length; i += 2) {
      const lo = p[i]!;
      const data = p[i + 1]!;
      const destination = (lo >>> 12) & 0xff;
      const logical = (lo >>> 2) & 1;
      this.cpu.write32(ICR_HIGH, destination << 24);
      this.cpu.write32(ICR_LOW, (data & DATA_TO_ICR) | (logical << 11));
      this.counters.msiDelivered++;
    }
    p.length = 0;
    if (apic.length === 0) apic = this.apic = this.view();
    apic[ICR0_WORD] = icr0;
    apic[ICR1_WORD] = icr1;
  }

  private view(): Int32Array {
    return new Int32Array(this.cpu.wasm_memory.buffer, this.cpu.get_apic_addr(), 16);
  }
}
