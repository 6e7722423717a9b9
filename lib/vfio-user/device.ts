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
  /**
   * The eventfd that signals vector `n` now (assigned, not masked), or null: a device's worker thread may
   * write it instead of calling `vector(n)`. Valid until the server calls `interruptRoutesChanged`.
   */
  vectorFd?(n: number): number | null;
}

/**
 * A doorbell the server may hand to the client as an ioeventfd (DEVICE_GET_REGION_IO_FDS), so that a guest
 * write there reaches the server as an eventfd signal instead of a REGION_WRITE message.
 */
export interface VfioUserDoorbell {
  /** BAR index (0..5). */
  bar: number;
  offset: number;
  /** Width of the writes that ring it; 0: any width (their value is then not known to the server). */
  size: 0 | 1 | 2 | 4 | 8;
  /** Only writes of this value ring it (KVM_IOEVENTFD_FLAG_DATAMATCH); needs a non-zero size. */
  datamatch?: bigint;
  /** The barWrite the server makes at `offset` when the eventfd fires (coalesced signals make one). */
  replay: { size: 1 | 2 | 4 | 8; value: number | bigint };
}

/**
 * The server's eventfds for the device's doorbells (DEVICE_GET_REGION_IO_FDS), named by their position in
 * `VfioUserDevice.doorbells()`. A device that runs a queue on another thread may hold a doorbell: the
 * server stops polling its eventfd and that thread reads it and makes the doorbell's write itself, so a
 * kick never passes the server's thread.
 */
export interface VfioUserDoorbellEventfds {
  /**
   * The eventfd the client signals for doorbell `i`, or null (not handed out). Valid until the server
   * calls `interruptRoutesChanged`; a thread that keeps it should hold a dup of its own.
   */
  fd(i: number): number | null;
  /**
   * Held: the server stops polling doorbell `i`'s eventfd. Released: it polls it again, and serves a
   * signal that arrived meanwhile. The server's own polling starts released.
   */
  hold(i: number, held: boolean): void;
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
  /**
   * The answers of the sink's `vectorFd` or of the doorbell eventfds' `fd` changed (SET_IRQS: eventfds,
   * masks; GET_REGION_IO_FDS: new eventfds; disconnect). Called before an eventfd they named is closed
   * and before the client's reply.
   */
  interruptRoutesChanged?(): void;
  /** Writes that may be served as ioeventfds; without it, GET_REGION_IO_FDS answers no sub-regions. */
  doorbells?(): readonly VfioUserDoorbell[];
  /** Where the device finds its doorbells' eventfds (given once, when the server is created). */
  setDoorbellEventfds?(fds: VfioUserDoorbellEventfds): void;
  /** Function-level reset (DEVICE_RESET, and when the client disconnects). */
  reset(): void;
}
