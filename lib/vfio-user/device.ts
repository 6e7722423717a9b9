/** The PCI function a vfio-user server exposes, and where it signals interrupts (lib/vfio-user/server.ts). */
import type { DmaMemory } from './dma.js';

/** One BAR as the device declares it (null: no such BAR, or the upper half of a 64-bit BAR). */
export interface VfioUserBar {
  size: number;
  type: 'mem32' | 'mem64' | 'io';
}

/** Where the device signals interrupts when a vfio-user client emulates the MSI-X table. */
export interface VfioUserInterruptSink {
  /** MSI-X vector `n` fired (coalesces like an edge: several signals before delivery may arrive as one). */
  vector(n: number): void;
  /** INTx level changed. */
  intx?(asserted: boolean): void;
}

/**
 * The PCI function the server exposes. Accesses arrive in naturally aligned pieces of 1, 2, 4 (config) or
 * 1, 2, 4, 8 bytes (BARs), offsets relative to the region. Must not throw for guest-chosen values.
 */
export interface VfioUserDevice {
  configRead(offset: number, size: 1 | 2 | 4): number;
  configWrite(offset: number, size: 1 | 2 | 4, value: number): void;
  barRead(bar: number, offset: number, size: 1 | 2 | 4 | 8): number | bigint;
  barWrite(bar: number, offset: number, size: 1 | 2 | 4 | 8, value: number | bigint): void;
  /** Six entries, BAR0..BAR5. */
  readonly bars: readonly (VfioUserBar | null)[];
  readonly msixVectors: number;
  /** Guest memory: DMA_MAP regions are added here and removed on DMA_UNMAP / disconnect. */
  readonly memory: DmaMemory;
  setInterruptSink(sink: VfioUserInterruptSink): void;
  /** Function-level reset (DEVICE_RESET, and when the client disconnects). */
  reset(): void;
}
