/**
 * Every place the adapter replaces a v86 function or writes v86's own tables, in one file. Each was
 * checked against v86 0.5.462 (src/pci.js, src/io.js, src/cpu.js; the npm build keeps these names), and
 * each returns the function that puts back exactly what was there. Everything is per instance: v86's
 * prototypes are never touched, so other emulators in the same process are unaffected. The clean
 * alternatives proposed to v86's maintainers are in docs/v86.md.
 */
import type { V86Cpu, V86Io, V86Pci, V86PortEntry } from './v86-types.js';

/** Config space accessors of one PCI function (bus 0). */
export interface ConfigHooks {
  read32(offset: number): number;
  write(offset: number, size: 1 | 2 | 4, value: number): void;
}

/**
 * Replaces `PCI.pci_query` and `PCI.pci_write8/16/32` on this instance for device `bdf`: v86 answers
 * config reads from a 256-byte copy taken at `register_device`, treats memory BARs as immovable and has
 * no hook for config accesses, while our function's config space is live (BAR sizing and placement,
 * MSI-X enable, the virtio PCI_CFG window). Other devices go to v86's own functions.
 */
export function patchConfigSpace(pci: V86Pci, bdf: number, hooks: ConfigHooks): () => void {
  const own = Object.getOwnPropertyDescriptors(pci);
  const query = pci.pci_query;
  const w8 = pci.pci_write8;
  const w16 = pci.pci_write16;
  const w32 = pci.pci_write32;
  // pci_query (v86 0.5.462): runs when the guest writes the last byte of 0xCF8 and latches the dword
  // that reads of 0xCFC..0xCFF return. Ours latches our function's live dword.
  pci.pci_query = function (this: V86Pci) {
    const a = this.pci_addr;
    if (((a[2]! << 8) | a[1]!) !== bdf) return query.call(this);
    this.pci_status32[0] = 0x80000000 | 0;
    this.pci_response32[0] = hooks.read32(a[0]! & 0xfc) | 0;
  };
  // pci_write8/16/32 (v86 0.5.462): `address` is the 0xCF8 dword plus the byte lane of 0xCFC..0xCFF.
  pci.pci_write8 = function (this: V86Pci, address: number, value: number) {
    if (((address >> 8) & 0xffff) !== bdf) return w8.call(this, address, value);
    hooks.write(address & 0xff, 1, value & 0xff);
  };
  pci.pci_write16 = function (this: V86Pci, address: number, value: number) {
    if (((address >> 8) & 0xffff) !== bdf) return w16.call(this, address, value);
    hooks.write(address & 0xff, 2, value & 0xffff);
  };
  pci.pci_write32 = function (this: V86Pci, address: number, value: number) {
    if (((address >> 8) & 0xffff) !== bdf) return w32.call(this, address, value);
    hooks.write(address & 0xff, 4, value >>> 0);
  };
  return () => {
    for (const k of ['pci_query', 'pci_write8', 'pci_write16', 'pci_write32'] as const) {
      const d = own[k];
      if (d) Object.defineProperty(pci, k, d);
      else delete (pci as unknown as Record<string, unknown>)[k];
    }
  };
}

/**
 * Replaces `CPU.mmap_write16` on this instance: v86 0.5.462 splits a 16-bit MMIO write into two 8-bit
 * writes of the block's handler, but virtio's 16-bit registers (queue_select, queue_size, …) take one
 * 16-bit access. The wasm import calls `cpu.mmap_write16`, so the instance property wins.
 */
export function patchMmioWrite16(
  cpu: V86Cpu,
  owns: (addr: number) => boolean,
  write16: (addr: number, value: number) => void,
): () => void {
  const own = Object.getOwnPropertyDescriptor(cpu, 'mmap_write16');
  const original = cpu.mmap_write16;
  cpu.mmap_write16 = function (this: V86Cpu, addr: number, value: number) {
    const a = addr >>> 0;
    if (owns(a)) write16(a, value & 0xffff);
    else original.call(this, addr, value);
  };
  return () => {
    if (own) Object.defineProperty(cpu, 'mmap_write16', own);
    else delete (cpu as unknown as Record<string, unknown>).mmap_write16;
  };
}

/** MMIO handlers for the addresses `owns` accepts; everything else goes to what the block had. */
export interface MmioHooks {
  owns(addr: number): boolean;
  read8(addr: number): number;
  write8(addr: number, value: number): void;
  read32(addr: number): number;
  write32(addr: number, value: number): void;
}

/** v86's MMIO granularity (src/const.js MMAP_BLOCK_BITS). */
export const MMAP_BLOCK_BITS = 17;

/**
 * Installs handlers on one 128 KiB MMIO block through v86's `IO.mmap_register`, chaining to the block's
 * previous handlers for addresses outside our BARs (SeaBIOS packs BARs of several devices into one
 * block). v86 has no unregister, so the restore writes the saved handlers back into `CPU.memory_map_*`.
 * v86 passes addresses as signed int32; they are made unsigned here.
 */
export function hookMmioBlock(cpu: V86Cpu, block: number, h: MmioHooks): () => void {
  const r8 = cpu.memory_map_read8;
  const w8 = cpu.memory_map_write8;
  const r32 = cpu.memory_map_read32;
  const w32 = cpu.memory_map_write32;
  const prev = [r8[block], w8[block], r32[block], w32[block]] as const;
  const [p8, pw8, p32, pw32] = prev;
  cpu.io.mmap_register(
    block << MMAP_BLOCK_BITS,
    1 << MMAP_BLOCK_BITS,
    (addr) => (h.owns(addr >>> 0) ? h.read8(addr >>> 0) : p8 ? p8.call(r8, addr) : 0xff),
    (addr, v) => (h.owns(addr >>> 0) ? h.write8(addr >>> 0, v) : pw8?.call(w8, addr, v)),
    (addr) => (h.owns(addr >>> 0) ? h.read32(addr >>> 0) | 0 : p32 ? p32.call(r32, addr) : -1),
    (addr, v) => (h.owns(addr >>> 0) ? h.write32(addr >>> 0, v >>> 0) : pw32?.call(w32, addr, v)),
  );
  return () => {
    if (p8) r8[block] = p8;
    if (pw8) w8[block] = pw8;
    if (p32) r32[block] = p32;
    if (pw32) w32[block] = pw32;
  };
}

/**
 * Puts our handlers into `IO.ports[base .. base + size)` (v86's `register_read/write` would edit the
 * shared entry objects in place; whole entries are swapped here, as v86's own `set_io_bars` does, so
 * they can be put back). `port` is the absolute port.
 */
export function hookPorts(
  io: V86Io,
  base: number,
  size: number,
  read: (port: number, size: 1 | 2 | 4) => number,
  write: (port: number, size: 1 | 2 | 4, value: number) => void,
): () => void {
  const saved: V86PortEntry[] = [];
  for (let i = 0; i < size; i++) {
    const port = base + i;
    saved.push(io.ports[port]!);
    io.ports[port] = {
      read8: () => read(port, 1) & 0xff,
      read16: () => read(port, 2) & 0xffff,
      read32: () => read(port, 4) | 0,
      write8: (v) => write(port, 1, v & 0xff),
      write16: (v) => write(port, 2, v & 0xffff),
      write32: (v) => write(port, 4, v >>> 0),
      device: hookPorts,
    };
  }
  return () => {
    for (let i = 0; i < size; i++) io.ports[base + i] = saved[i]!;
  };
}

/** Whether `port` has no device in v86 (its entry still reads the empty-port default). */
export function portIsFree(io: V86Io, port: number): boolean {
  return io.ports[port]?.read8 === io.empty_port_read8;
}

/** Takes our function out of v86's PCI tables (`register_device` has no counterpart). */
export function unregisterPciDevice(pci: V86Pci, bdf: number): void {
  pci.devices[bdf] = undefined;
  pci.device_spaces[bdf] = undefined;
}
