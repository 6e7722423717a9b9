/**
 * The parts of v86's internals (npm `v86`, checked against 0.5.462) the adapter reaches, typed by hand:
 * v86 ships types for its public `V86` class only (v86.d.ts), not for `emulator.v86.cpu` and the PCI and
 * I/O buses under it. The shipped build keeps these property names (they are quoted exports or methods
 * on prototypes), so they are stable across the minified and debug builds of one version.
 */

/** An I/O port entry of v86's `IO.ports` (src/io.js create_empty_entry). */
export interface V86PortEntry {
  read8: (port: number) => number;
  read16: (port: number) => number;
  read32: (port: number) => number;
  write8: (value: number) => void;
  write16: (value: number) => void;
  write32: (value: number) => void;
  device: unknown;
}

/** src/io.js `IO`. */
export interface V86Io {
  ports: V86PortEntry[];
  empty_port_read8: (port: number) => number;
  mmap_register(
    addr: number,
    size: number,
    r8: (addr: number) => number,
    w8: (addr: number, value: number) => void,
    r32?: (addr: number) => number,
    w32?: (addr: number, value: number) => void,
  ): void;
}

/** What src/pci.js `register_device` takes. */
export interface V86PciDevice {
  pci_id: number;
  pci_space: number[];
  pci_bars: unknown[];
  name: string;
}

/** src/pci.js `PCI`. */
export interface V86Pci {
  pci_addr: Uint8Array;
  pci_response32: Int32Array;
  pci_status32: Int32Array;
  device_spaces: (Int32Array | undefined)[];
  devices: (V86PciDevice | undefined)[];
  register_device(device: V86PciDevice): Int32Array;
  pci_query(): void;
  pci_write8(address: number, value: number): void;
  pci_write16(address: number, value: number): void;
  pci_write32(address: number, value: number): void;
  raise_irq(pciId: number): void;
  lower_irq(pciId: number): void;
}

/** src/cpu.js `CPU` (JS side and the wasm exports it holds). */
export interface V86Cpu {
  /** The wasm instance's memory; guest RAM lives inside it and it grows (detaching its buffer). */
  wasm_memory: { readonly buffer: ArrayBuffer };
  /** A Proxy that views `wasm_memory.buffer` on every access; byteOffset is where guest RAM starts. */
  mem8: { readonly byteOffset: number };
  memory_size: Uint32Array | { readonly [i: number]: number };
  acpi_enabled: Uint8Array | { readonly [i: number]: number };
  io: V86Io;
  devices: { pci?: V86Pci };
  memory_map_read8: ((addr: number) => number)[];
  memory_map_write8: ((addr: number, value: number) => void)[];
  memory_map_read32: ((addr: number) => number)[];
  memory_map_write32: ((addr: number, value: number) => void)[];
  mmap_write16(addr: number, value: number): void;
  /** wasm exports: physical memory accesses (APIC MMIO included), JIT invalidation, the APIC state. */
  write32(addr: number, value: number): void;
  jit_dirty_cache(start: number, end: number): void;
  get_apic_addr(): number;
}

/** The `V86` object of v86's public API; `v86.cpu` exists once "emulator-loaded" has fired. */
export interface V86Emulator {
  v86?: { cpu?: V86Cpu };
  add_listener(event: string, listener: (...args: never[]) => void): void;
  remove_listener(event: string, listener: (...args: never[]) => void): void;
}
