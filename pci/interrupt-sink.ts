/**
 * The VMM-provided interrupt target of a PCI function: MSI-X messages (PCI Local Bus 3.0 §6.8.2) and the
 * INTx pin. Its own file so that pci-function.ts (INTx) and msix.ts (messages) both use it without
 * importing each other.
 */

/** Where a function's interrupts go (provided by the embedding VMM). */
export interface InterruptSink {
  /** Deliver an MSI-X message: a 32-bit write of `data` to `address`. */
  msi?(address: bigint, data: number): void;
  /**
   * For VMMs that emulate the MSI-X table themselves (e.g. QEMU's vfio-user client): used when `msi`
   * is absent; notify(n) then calls vector(n) directly, without consulting this table.
   */
  vector?(n: number): void;
  /**
   * With `vector`: the eventfd that signals vector `n` right now (unmasked, assigned), which a queue
   * worker may write itself instead of calling `vector(n)`; null when there is none. The embedder tells
   * the device (`interruptRoutesChanged`) before an answer changes and before an fd it named is closed.
   */
  vectorFd?(n: number): number | null;
  /** INTx pin level. */
  intx?(asserted: boolean): void;
}
