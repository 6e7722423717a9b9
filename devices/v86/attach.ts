/**
 * virtio-net-ts as a NIC of v86 (npm `v86`, checked against 0.5.462): `attachToV86` puts a
 * `createVirtioNetPci` function on v86's PCI bus 0 and wires it the way a VMM wires any embedder of the
 * device: config space, BARs (I/O ports and MMIO), guest memory (v86's wasm memory, which grows), MSI-X
 * messages (through v86's local APIC) and INTx (through v86's PCI IRQ routing). Where v86 has no public
 * hook the adapter replaces a function on the instance; all of those live in patches.ts. See docs/v86.md.
 */
import { OptionsError } from '../../lib/errors.js';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import type { NetBackend } from '../../lib/net/backend.js';
import type { BarMapping } from '../../pci/pci-function.js';
import type { VirtioNetPciOptions } from '../virtio-net/options.js';
import { createVirtioNetPci, type VirtioNetPci } from '../virtio-net-pci.js';
import { LapicMsi } from './msi.js';
import {
  hookMmioBlock,
  hookPorts,
  MMAP_BLOCK_BITS,
  patchConfigSpace,
  patchMmioWrite16,
  portIsFree,
  unregisterPciDevice,
} from './patches.js';
import type { V86Cpu, V86Emulator } from './v86-types.js';
import { wideReadRanges, type WideRange } from './wide-reads.js';

export type V86AttachOptions = Omit<VirtioNetPciOptions, 'memory' | 'interrupts' | 'backend' | 'bus'> & {
  backend: NetBackend;
  /** PCI slot on bus 0 (function 0); default 8. Must be free in v86. */
  slot?: number;
  /** Tell v86's JIT about every guest byte the device writes (`jit_dirty_cache`); default true. */
  invalidateJit?: boolean;
  /**
   * Make the ACPI PCI hotplug ports 0xAE00–0xAE0F read 0 where v86 leaves them unmapped (they read all
   * ones, which SeaBIOS's DSDT takes as "eject every slot"); default true. Only matters with `acpi: true`.
   */
  acpiHotplugPorts?: boolean;
};

export interface V86AttachmentStats {
  slot: number;
  msiDelivered: number;
  msiDropped: number;
  /** Messages merged into an equal one not yet sent (LapicMsi: sent after the raising call returns). */
  msiMerged: number;
  intxAsserts: number;
  /** BARs the guest placed where v86 cannot decode them (above 4 GiB, ports above 0xFFFF). */
  unmappableBars: number;
  /** How often guest memory was re-viewed because v86's wasm memory grew. */
  memoryRemaps: number;
  /** The BARs as currently decoded: [bar, type, address]. */
  bars: [number, string, number][];
}

export interface V86Attachment {
  /** The device (stats, link state, snapshot …); its memory is v86's guest RAM. */
  readonly device: VirtioNetPci;
  readonly memory: GuestMemory;
  stats(): V86AttachmentStats;
  /**
   * Takes the device off v86's buses, restores every replaced v86 function, and closes the device (and
   * so its backend). Call it with the emulator stopped: a running guest sees a surprise removal.
   */
  detach(): void;
}

interface Decoded {
  bar: number;
  io: boolean;
  start: number;
  end: number;
  unhook: (() => void) | null;
}

/** The emulator's CPU once v86 has loaded; OptionsError before that. */
function cpuOf(emulator: V86Emulator): V86Cpu {
  const cpu = emulator?.v86?.cpu;
  if (!cpu?.devices?.pci || !cpu.io || !cpu.wasm_memory) {
    throw new OptionsError(
      'attachToV86: the emulator has no CPU and PCI bus yet; attach on its "emulator-loaded" event, before it runs',
    );
  }
  return cpu;
}

/** Registers a virtio-net-ts function on v86's PCI bus; see docs/v86.md. */
export function attachToV86(emulator: V86Emulator, options: V86AttachOptions): V86Attachment {
  const cpu = cpuOf(emulator);
  const pci = cpu.devices.pci!;
  const { backend, slot = 8, invalidateJit = true, acpiHotplugPorts = true, ...deviceOptions } = options;
  if (!Number.isInteger(slot) || slot < 1 || slot > 31)
    throw new OptionsError(`attachToV86: slot ${slot} is not 1..31`);
  const bdf = slot << 3;
  if (pci.devices[bdf] !== undefined) {
    throw new OptionsError(`attachToV86: slot ${slot} is taken by v86's ${pci.devices[bdf]!.name}`);
  }
  const memory = new GuestMemory(
    [{ address: 0, buffer: cpu.wasm_memory, offset: cpu.mem8.byteOffset, size: cpu.memory_size[0]! }],
    invalidateJit ? { onWrite: (a, n) => cpu.jit_dirty_cache(a, a + n) } : {},
  );
  const msi = new LapicMsi(cpu);
  let intxAsserts = 0;
  // v86 enters an interrupt the moment a line rises (device_raise_irq → handle_irqs), also from inside the
  // guest's MMIO access that made the device raise it (a kick, for instance): a JIT-compiled block then goes
  // on in the interrupt's context and the 8259 keeps the IRQ in service without the guest's EOI (modern
  // virtio-pci on INTx stalled). So the line rises after the access, once the JS stack has unwound (v86's
  // main loop yields between slices); it falls at once (an ISR read, with interrupts off).
  let intxWanted = false;
  let intxRaised = false;
  let intxQueued = false;
  const raiseIntx = () => {
    intxQueued = false;
    if (detached || !intxWanted || intxRaised) return;
    intxRaised = true;
    intxAsserts++;
    pci.raise_irq(bdf);
  };
  let detached = false;
  const device = createVirtioNetPci({
    ...deviceOptions,
    // v86 reaches config space through 0xCF8/0xCFC only: 256 bytes, conventional PCI.
    bus: 'pci',
    backend,
    memory,
    interrupts: {
      msi: (address, data) => {
        if (!detached) msi.deliver(address, data);
      },
      intx: (asserted) => {
        if (detached) return;
        intxWanted = asserted;
        if (asserted) {
          if (!intxQueued) {
            intxQueued = true;
            queueMicrotask(raiseIntx);
          }
        } else if (intxRaised) {
          intxRaised = false;
          pci.lower_irq(bdf);
        }
      },
    },
  } as VirtioNetPciOptions);

  const restore: (() => void)[] = [];
  try {
    // v86 keeps its own copy of the header; raise_irq reads the interrupt pin from it.
    const space: number[] = [];
    for (let i = 0; i < 256; i++) space.push(device.configRead(i, 1));
    pci.register_device({ pci_id: bdf, pci_space: space, pci_bars: [], name: 'virtio-net-ts' });
    restore.push(() => unregisterPciDevice(pci, bdf));
    restore.push(
      patchConfigSpace(pci, bdf, {
        read32: (offset) => device.configRead(offset, 4),
        write: (offset, size, value) => device.configWrite(offset, size, value),
      }),
    );
  } catch (e) {
    for (const r of restore.reverse()) r();
    device.close();
    throw e;
  }

  // ---- BAR decode ------------------------------------------------------------------------------------
  const decoded: Decoded[] = [];
  const blocks = new Map<number, () => void>();
  let unmappable = 0;
  const wide: WideRange[] = wideReadRanges(device);
  // A 16-bit MMIO read reaches JS as two 8-bit reads (v86's wasm read16); the first is widened to 16
  // bits where that is what a byte read means (virtio's 16-bit registers, byte-array device config) and
  // the second is answered from it.
  let pendAddr = -1;
  let pendByte = 0;
  let hit: Decoded | null = null;

  const owns = (a: number): boolean => {
    for (const d of decoded) {
      if (!d.io && a >= d.start && a < d.end) {
        hit = d;
        return true;
      }
    }
    pendAddr = -1;
    return false;
  };
  const read = (bar: number, off: number, size: 1 | 2 | 4): number => Number(device.barRead(bar, off, size));
  const mmio = {
    owns,
    read8: (a: number): number => {
      if (a === pendAddr) {
        pendAddr = -1;
        return pendByte;
      }
      const d = hit!;
      const off = a - d.start;
      if ((off & 1) === 0 && off + 2 <= d.end - d.start && isWide(wide, d.bar, off)) {
        const v = read(d.bar, off, 2);
        pendAddr = a + 1;
        pendByte = (v >>> 8) & 0xff;
        return v & 0xff;
      }
      pendAddr = -1;
      return read(d.bar, off, 1) & 0xff;
    },
    write8: (a: number, v: number): void => {
      pendAddr = -1;
      device.barWrite(hit!.bar, a - hit!.start, 1, v);
    },
    read32: (a: number): number => {
      pendAddr = -1;
      return read(hit!.bar, a - hit!.start, 4);
    },
    write32: (a: number, v: number): void => {
      pendAddr = -1;
      device.barWrite(hit!.bar, a - hit!.start, 4, v);
    },
  };

  const syncBlocks = (): void => {
    const want = new Set<number>();
    for (const d of decoded) {
      if (d.io) continue;
      for (let b = d.start >>> MMAP_BLOCK_BITS; b <= (d.end - 1) >>> MMAP_BLOCK_BITS; b++) want.add(b);
    }
    for (const [b, unhook] of blocks) {
      if (!want.has(b)) {
        unhook();
        blocks.delete(b);
      }
    }
    for (const b of want) if (!blocks.has(b)) blocks.set(b, hookMmioBlock(cpu, b, mmio));
  };

  const onMapping = (m: BarMapping): void => {
    if (detached) return;
    const i = decoded.findIndex((d) => d.bar === m.bar);
    if (i >= 0) {
      decoded[i]!.unhook?.();
      decoded.splice(i, 1);
    }
    if (m.enabled) {
      const io = m.type === 'io';
      const start = Number(m.address);
      const end = start + m.size;
      if (end > (io ? 0x10000 : 0x1_0000_0000)) {
        unmappable++;
      } else {
        const d: Decoded = { bar: m.bar, io, start, end, unhook: null };
        if (io) {
          d.unhook = hookPorts(
            cpu.io,
            start,
            m.size,
            (port, size) => read(m.bar, port - start, size),
            (port, size, value) => device.barWrite(m.bar, port - start, size, value),
          );
        }
        decoded.push(d);
      }
    }
    syncBlocks();
  };
  device.onBarMappingChange(onMapping);
  restore.push(() => {
    for (const d of decoded) d.unhook?.();
    decoded.length = 0;
    syncBlocks();
  });
  restore.push(
    patchMmioWrite16(cpu, owns, (a, v) => {
      pendAddr = -1;
      device.barWrite(hit!.bar, a - hit!.start, 2, v);
    }),
  );

  if (acpiHotplugPorts) {
    for (let p = 0xae00; p < 0xae10; p++) {
      if (portIsFree(cpu.io, p)) {
        restore.push(
          hookPorts(
            cpu.io,
            p,
            1,
            () => 0,
            () => {},
          ),
        );
      }
    }
  }

  return {
    device,
    memory,
    stats: () => ({
      slot,
      msiDelivered: msi.counters.msiDelivered,
      msiDropped: msi.counters.msiDropped,
      msiMerged: msi.counters.msiMerged,
      intxAsserts,
      unmappableBars: unmappable,
      memoryRemaps: memory.remaps,
      bars: decoded.map((d) => [d.bar, d.io ? 'io' : 'mem', d.start] as [number, string, number]),
    }),
    detach: () => {
      if (detached) return;
      detached = true;
      msi.cancel();
      for (const r of restore.reverse()) r();
      device.close();
    },
  };
}

function isWide(wide: readonly WideRange[], bar: number, off: number): boolean {
  for (const w of wide) {
    if (w.bar === bar && off >= w.start && off < w.end && off !== w.byteRegister) return true;
  }
  return false;
}
