/**
 * An SR-IOV virtio-net device served as separate vfio-user functions (docs/vfio-user.md, "SR-IOV: one
 * socket per function"): the PF and each VF the host enabled, each with a server of its own, all sharing
 * one embedded switch in this process. QEMU 11.1 cannot compose SR-IOV with vfio-user functions (it hides
 * the SR-IOV capability from the guest), so the host enables the VFs itself, as an administrator does for
 * a hardware NIC whose VFs are assigned to VMs, and each VF is attached as a function of its own.
 *
 * Each function gets its own guest memory (filled by its own client's DMA_MAP) and its own interrupt sink
 * (its own client's eventfds). A VF's config space is presented as Linux's vfio-pci presents a VF's: the
 * Vendor and Device IDs (which read 0xffff on a VF, PCIe SR-IOV §9.3.4.1) and the BAR type bits (VF BARs
 * read 0; QEMU learns a BAR's type from its register) are filled in.
 */
import { OptionsError } from '../../lib/errors.js';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import type { VfioUserBar, VfioUserDevice, VfioUserInterruptSink } from '../../lib/vfio-user/server.js';
import {
  PCI_EXT_CAP_ID_SRIOV,
  PCI_SRIOV_CTRL,
  PCI_SRIOV_CTRL_MSE,
  PCI_SRIOV_CTRL_VFE,
  PCI_SRIOV_NUM_VF,
  PCI_SRIOV_TOTAL_VF,
  PCI_SRIOV_VF_DID,
} from '../../pci/sriov.js';
import type { VfPolicy } from '../eswitch/policy.js';
import type { VirtioNetPciOptions } from '../virtio-net/options.js';
import { createVirtioNetPci, type VirtioNetPci } from '../virtio-net-pci.js';

/** The PF as a vfio-user device, with the controls a VMM process needs (as `VirtioNetVfioUserDevice`). */
export interface SriovPfFunction extends VfioUserDevice {
  readonly net: VirtioNetPci;
  /** VIRTIO_NET_S_LINK_UP of the PF as the guest sees it (a VF's link follows its `linkState` policy). */
  setLinkUp(up: boolean): void;
  close(): void;
}

/** The PF and its enabled VFs as vfio-user devices, over one `VirtioNetPci`. */
export interface VirtioNetSriovFunctions {
  /** The device underneath (stats with the switch's per-port counters, setVf, vfInfo, ...). */
  readonly net: VirtioNetPci;
  /** The PF: served on the main socket; its backend is the switch's uplink. */
  readonly pf: SriovPfFunction;
  /** VF n, in VF order: each served on a socket of its own. */
  readonly vfs: readonly VfioUserDevice[];
  /** Releases the backends (the uplink). */
  close(): void;
}

export interface VirtioNetSriovVfioUserOptions {
  /** Device options without `interrupts` and `sriov` (the PF's `memory` is its client's). */
  options: Omit<VirtioNetPciOptions, 'interrupts' | 'sriov'>;
  /** VFs the host enables (1..255). */
  vfs: number;
  /** TotalVFs (default: `vfs`). */
  totalVfs?: number;
  /** Per-VF policy set before the VFs are enabled (`setVf`), by VF index. */
  policies?: Record<number, VfPolicy>;
}

/**
 * Creates the SR-IOV device, enables `vfs` VFs from the host (NumVFs, then VF Enable and VF MSE in the
 * PF's SR-IOV capability) and returns one vfio-user device per function. Throws `OptionsError` for a
 * bad count or policy.
 */
export function virtioNetSriovVfioUser(o: VirtioNetSriovVfioUserOptions): VirtioNetSriovFunctions {
  const total = o.totalVfs ?? o.vfs;
  if (!Number.isInteger(o.vfs) || o.vfs < 1 || o.vfs > 255)
    throw new OptionsError(`vfs: expected 1..255, got ${o.vfs}`);
  if (!Number.isInteger(total) || total < o.vfs || total > 255)
    throw new OptionsError(`totalVfs: expected ${o.vfs}..255, got ${total}`);
  const memories = Array.from({ length: total }, () => new GuestMemory());
  let pfSink: VfioUserInterruptSink | null = null;
  const vfSinks: (VfioUserInterruptSink | null)[] = new Array(total).fill(null);
  const net = createVirtioNetPci({
    ...o.options,
    sriov: { totalVfs: total, vfMemory: (i) => memories[i] as GuestMemory },
    // A VF signals with its index: each function's vectors go to its own client's eventfds.
    interrupts: {
      vector: (n, vf) => (vf === undefined ? pfSink : vfSinks[vf])?.vector(n),
      intx: (a) => pfSink?.intx?.(a),
    },
  });
  try {
    for (const [i, p] of Object.entries(o.policies ?? {})) net.setVf(Number(i), p);
    const sriov = net.function.findExtendedCapability(PCI_EXT_CAP_ID_SRIOV);
    const enable = () => {
      net.configWrite(sriov + PCI_SRIOV_NUM_VF, 2, o.vfs);
      net.configWrite(sriov + PCI_SRIOV_CTRL, 2, PCI_SRIOV_CTRL_VFE | PCI_SRIOV_CTRL_MSE);
    };
    enable();
    if (net.vfs.length !== o.vfs) throw new Error(`enabling ${o.vfs} VFs created ${net.vfs.length}`);
    const ids = net.configRead(0, 4);
    const vfDeviceId = net.configRead(sriov + PCI_SRIOV_VF_DID, 2);
    if (net.configRead(sriov + PCI_SRIOV_TOTAL_VF, 2) !== total) throw new Error('TotalVFs mismatch');
    const pf: SriovPfFunction = {
      net,
      configRead: (off, s) => net.configRead(off, s),
      configWrite: (off, s, v) => net.configWrite(off, s, v),
      barRead: (b, off, s) => net.barRead(b, off, s),
      barWrite: (b, off, s, v) => net.barWrite(b, off, s, v),
      bars: net.bars,
      msixVectors: net.msixVectors,
      memory: net.memory,
      setInterruptSink: (s) => {
        pfSink = s;
      },
      // A PF reset clears VF Enable (its SR-IOV capability resets); the host's VFs come back at once, with
      // their policies, as new functions: the VFs' drivers see a reset device, as after a PF FLR.
      reset: () => {
        net.reset();
        enable();
      },
      setLinkUp: (up) => net.setLinkUp(up),
      close: () => net.close(),
    };
    const vfs = Array.from({ length: o.vfs }, (_, i) =>
      vfFunction(net, i, memories[i] as GuestMemory, ids, vfDeviceId, (s) => {
        vfSinks[i] = s;
      }),
    );
    return { net, pf, vfs, close: () => net.close() };
  } catch (e) {
    net.close();
    throw e;
  }
}

const PCI_COMMAND = 0x04;
const PCI_COMMAND_MEMORY = 0x2;
const PCI_BASE_ADDRESS_0 = 0x10;

/** VF `index` as a vfio-user device; it follows the VF object across VF Enable cycles (PF resets). */
function vfFunction(
  net: VirtioNetPci,
  index: number,
  memory: GuestMemory,
  pfIds: number,
  vfDeviceId: number,
  setSink: (s: VfioUserInterruptSink) => void,
): VfioUserDevice {
  const first = net.vfs[index] as VirtioNetPci;
  const bars: (VfioUserBar | null)[] = first.bars.map((b) => (b ? { size: b.size, type: b.type } : null));
  // The BAR registers, emulated as Linux's vfio-pci emulates a VF's (a VF's own read 0): type bits and a
  // sizable address, so that a client learns each BAR's type and size from config space as from a PF.
  const typeBits = first.bars.map((b) =>
    !b ? 0 : b.type === 'io' ? 1 : (b.type === 'mem64' ? 0x4 : 0) | (b.prefetchable ? 0x8 : 0),
  );
  const barRegs = [0, 0, 0, 0, 0, 0];
  const resetBars = () => {
    for (let k = 0; k < 6; k++) barRegs[k] = typeBits[k] ?? 0;
  };
  resetBars();
  const writeBar = (k: number, value: number) => {
    const b = first.bars[k];
    const lower = first.bars[k - 1];
    if (b) {
      const low = b.type === 'io' ? 0xfffffffc : 0xfffffff0;
      barRegs[k] = ((value & low & ~(b.size - 1)) | (typeBits[k] ?? 0)) >>> 0;
    } else if (lower?.type === 'mem64') {
      // The upper half of a 64-bit BAR: every bit writable below 4 GiB sizes.
      const sizeHigh = Math.floor((lower.size - 1) / 2 ** 32);
      barRegs[k] = (value & ~sizeHigh) >>> 0;
    }
  };
  const vf = () => net.vfs[index];
  const virtual = (dword: number): number | null => {
    if (dword === 0) return ((vfDeviceId << 16) | (pfIds & 0xffff)) >>> 0;
    const bar = (dword - PCI_BASE_ADDRESS_0) / 4;
    if (Number.isInteger(bar) && bar >= 0 && bar < 6) return barRegs[bar] ?? 0;
    return null;
  };
  return {
    configRead(offset, size) {
      const f = vf();
      if (!f) return size === 4 ? 0xffffffff : (1 << (8 * size)) - 1;
      const dword = offset & ~3;
      let v = virtual(dword);
      if (v === null) {
        if (dword !== PCI_COMMAND) return f.configRead(offset, size);
        // Memory Space Enable is RO 0 on a VF (its PF's VF MSE rules); show it set, as vfio-pci does.
        v = f.configRead(dword, 4) | PCI_COMMAND_MEMORY;
      }
      const shift = 8 * (offset & 3);
      return size === 4 ? v >>> 0 : (v >>> shift) & ((1 << (8 * size)) - 1);
    },
    configWrite(offset, size, value) {
      const dword = offset & ~3;
      const old = virtual(dword);
      if (old === null) return vf()?.configWrite(offset, size, value);
      if (dword === 0) return;
      // Merge a partial write into the emulated BAR dword.
      const shift = 8 * (offset & 3);
      const mask = size === 4 ? 0xffffffff : ((1 << (8 * size)) - 1) << shift;
      writeBar((dword - PCI_BASE_ADDRESS_0) / 4, ((old & ~mask) | ((value << shift) & mask)) >>> 0);
    },
    barRead: (b, off, s) => vf()?.barRead(b, off, s) ?? (s === 8 ? 0xffffffffffffffffn : 0xffffffff),
    barWrite: (b, off, s, v) => vf()?.barWrite(b, off, s, v),
    bars,
    msixVectors: first.msixVectors,
    memory,
    setInterruptSink: setSink,
    // A VF's function-level reset.
    reset: () => {
      resetBars();
      vf()?.reset();
    },
  };
}

const VF_FLAG_KEYS = 'mac, vlan, qos, spoofchk, trust, state, max_tx_rate';

/**
 * Parses a `--vf N,key=value,...` command-line flag in `ip link set DEV vf N …` vocabulary (mac, vlan,
 * qos, spoofchk on|off, trust on|off, state auto|enable|disable, max_tx_rate Mbit/s) into VF N's policy.
 * Throws `OptionsError` naming what is wrong.
 */
export function parseVfFlag(flag: string): [number, VfPolicy] {
  const [n, ...pairs] = flag.split(',');
  const index = Number(n);
  if (n === undefined || !/^\d+$/.test(n) || index > 254)
    throw new OptionsError(`--vf wants N,key=value,... with N a VF index, got "${flag}"`);
  const policy: Record<string, unknown> = {};
  const onOff = (k: string, v: string) => {
    if (v !== 'on' && v !== 'off') throw new OptionsError(`--vf ${index}: ${k} wants on or off, got "${v}"`);
    return v === 'on';
  };
  const int = (k: string, v: string) => {
    if (!/^\d+(\.\d+)?$/.test(v)) throw new OptionsError(`--vf ${index}: ${k} wants a number, got "${v}"`);
    return Number(v);
  };
  for (const kv of pairs) {
    const i = kv.indexOf('=');
    const k = i > 0 ? kv.slice(0, i) : kv;
    const v = i > 0 ? kv.slice(i + 1) : '';
    if (k === 'mac') policy.mac = v;
    else if (k === 'vlan') policy.vlan = int(k, v);
    else if (k === 'qos') policy.qos = int(k, v);
    else if (k === 'spoofchk') policy.spoofCheck = onOff(k, v);
    else if (k === 'trust') policy.trust = onOff(k, v);
    else if (k === 'state') policy.linkState = v;
    else if (k === 'max_tx_rate') policy.maxTxRateMbps = int(k, v);
    else throw new OptionsError(`--vf ${index}: unknown key "${k}"; accepted: ${VF_FLAG_KEYS}`);
  }
  return [index, policy as VfPolicy];
}
