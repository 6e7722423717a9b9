/**
 * The system under test of the guest-* and backend targets: `createVirtioNetPci` on a MemoryBackend,
 * driven by the synthetic guest kit (virtio-net-ts/testing) through nothing but config-space and BAR
 * accessors and guest memory, as a VMM wires it. Every accessor the guest uses is guarded: an exception
 * out of the device is an EscapeError, never mistaken for the driver kit giving up on a broken device.
 */

import { LINUX_6_1_FEATURES, VirtioNetDriver } from '../../devices/testing/net-driver.js';
import type { VirtioNetPciOptions } from '../../devices/virtio-net/options.js';
import { createVirtioNetPci, type VirtioNetPci } from '../../devices/virtio-net-pci.js';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import type { NetOffload } from '../../lib/net/backend.js';
import { MemoryBackend, type MemoryBackendOptions } from '../../lib/net/memory-backend.js';
import { PCI_SRIOV_BAR, PCI_SRIOV_CTRL, PCI_SRIOV_NUM_VF } from '../../pci/sriov.js';
import { BumpAllocator } from '../../virtio/testing/bump-allocator.js';
import { InterruptCollector, type PciTarget } from '../../virtio/testing/pci-driver.js';
import { describeError, EscapeError, guard, InvariantError, invariant, type RunContext } from './engine.js';
import type { Rng } from './rng.js';
import {
  checkWorkersGone,
  checkWorkersIdle,
  onWorkers,
  poolOf,
  processResources,
  settleWorkers,
  shutdownWorkers,
} from './worker-rig.js';

/** Guest RAM of one rig: the PF driver allocates in [1, 16) MiB, VF drivers 3 MiB each above it. */
export const RAM = 32 << 20;
const PF_RAM_END = 16 << 20;
const VF_RAM = 3 << 20;
/** QEMU 11.1 puts the SR-IOV capability of the PF at 0x100. */
export const SRIOV_CAP = 0x100;
/** The top 64 KiB of RAM: a scratch area steps scribble on (descriptor tables, payloads). */
export const SCRATCH = RAM - 0x10000;
export const DEV_MAC = '52:54:00:12:34:56';
export const PEER_MAC = '52:54:00:ab:cd:ef';

/** Counts interrupts instead of recording them (a long run must not grow memory). */
export class CountingInterrupts extends InterruptCollector {
  msiCount = 0;
  intxCount = 0;
  override msi(): void {
    this.msiCount++;
  }
  override intx(asserted: boolean): void {
    this.intxLevel = asserted;
    this.intxCount++;
  }
}

export interface RigConfig {
  device: Omit<VirtioNetPciOptions, 'memory' | 'backend' | 'interrupts'>;
  backend: MemoryBackendOptions;
  /** Features the driver accepts (falls back to LINUX_6_1_FEATURES when the device refuses them). */
  wanted: bigint;
  rxBuffers: number;
  rxBufferSize: number | undefined;
  rxIndirect: boolean;
  rxSplitHeader: boolean;
}

/** A random device/backend/driver configuration (a fuzz case's setup). */
export function randomRigConfig(rng: Rng, o: { sriov?: boolean; queues?: number } = {}): RigConfig {
  const queues = o.queues ?? rng.pick([1, 1, 2, 3, 4]);
  const mq = queues > 1 || rng.chance(0.3);
  const rss = mq && rng.chance(0.5);
  // Drop a few random offered features now and then: odd combinations reach other code paths.
  // Linux 6.1's set plus DEVICE_STATS and VQ_NOTF_COAL (Linux 7.2 drives both), and the VIRTIO 1.4
  // HASH_TUNNEL (51) and RSS_CONTEXT (64), offered with RSS (no extra draw: seeds keep their cases).
  // IN_ORDER (35) and NOTIFICATION_DATA (38) too, which Linux 7.2 accepts: negotiated when offered.
  let wanted =
    LINUX_6_1_FEATURES | (1n << 35n) | (1n << 38n) | (1n << 50n) | (1n << 52n) | (1n << 51n) | (1n << 64n);
  if (rng.chance(0.4)) for (let i = 0; i < 3; i++) wanted &= ~(1n << BigInt(rng.int(0, 40)));
  return {
    device: {
      mac: DEV_MAC,
      queues,
      mq,
      rss,
      hash: rss && rng.bool(),
      hash_tunnel: rss,
      rss_context: rss,
      packed: rng.chance(0.4),
      event_idx: rng.chance(0.7),
      indirect_desc: rng.chance(0.8),
      mrg_rxbuf: rng.chance(0.7),
      in_order: rng.chance(0.2),
      notification_data: rng.chance(0.2),
      notf_coal: rng.chance(0.3),
      vq_notf_coal: rng.chance(0.3),
      device_stats: rng.chance(0.5),
      ...(o.sriov ? { sriov: { totalVfs: rng.int(1, 4) } } : {}),
    },
    backend: {
      queues: rng.pick([1, queues, queues, 4]),
      receive: rng.bool() ? 'direct' : 'copy',
      vnetHeader: rng.chance(0.8),
      backlog: rng.pick([0, 1, 4, 256]),
      steersFlows: rng.chance(0.2),
      rssSteering: rng.chance(0.3),
    },
    wanted,
    rxBuffers: rng.pick([0, 1, 4, 16, 32]),
    rxBufferSize: rng.pick([undefined, undefined, 64, 1526, 4096]),
    rxIndirect: rng.chance(0.2),
    rxSplitHeader: rng.chance(0.2),
  };
}

export function describeRigConfig(c: RigConfig): string {
  const d = { ...c.device } as Record<string, unknown>;
  delete d.mac;
  const w = c.device.workers;
  const where = onWorkers(c)
    ? `ON WORKERS (workers: ${w}; kicks and frames handled asynchronously, checked after settling): `
    : '';
  return `${where}device ${JSON.stringify(d)} backend ${JSON.stringify(c.backend)} driver wanted=0x${c.wanted.toString(16)} rxBuffers=${c.rxBuffers} rxBufferSize=${c.rxBufferSize ?? 'default'}${c.rxIndirect ? ' rxIndirect' : ''}${c.rxSplitHeader ? ' rxSplitHeader' : ''}`;
}

/** The accessors of `dev` with every call guarded (what the synthetic guest drives). */
export function guardedTarget(dev: PciTarget, label: string): PciTarget {
  return {
    configRead: (o, s) => guard(`${label}.configRead(0x${o.toString(16)}, ${s})`, () => dev.configRead(o, s)),
    configWrite: (o, s, v) =>
      guard(`${label}.configWrite(0x${o.toString(16)}, ${s}, 0x${v.toString(16)})`, () =>
        dev.configWrite(o, s, v),
      ),
    barRead: (b, o, s) =>
      guard(`${label}.barRead(${b}, 0x${o.toString(16)}, ${s})`, () => dev.barRead(b, o, s)),
    barWrite: (b, o, s, v) =>
      guard(`${label}.barWrite(${b}, 0x${o.toString(16)}, ${s}, 0x${v.toString(16)})`, () =>
        dev.barWrite(b, o, s, v),
      ),
  };
}

export class Rig {
  readonly memory: GuestMemory;
  readonly irq = new CountingInterrupts();
  backend: MemoryBackend;
  /** The device (replaced by `migrate`; `target` always reaches the current one). */
  dev: VirtioNetPci;
  readonly target: PciTarget;
  /** VF index → its current backend (a new one each time VFs are enabled). */
  readonly vfBackends = new Map<number, MemoryBackend>();
  driver: VirtioNetDriver;
  /** Frames the guest sent, as the PF backend saw them. */
  sent = 0;
  /** The guest scribbled on rings or descriptors since the last reopen: the driver kit may be confused. */
  corrupted = false;
  /** The driver is set up (open() completed since the last reopen or reset). */
  open = false;
  reopens = 0;
  /** Worker mode (worker-rig.ts): the queue pairs run on worker threads; `settle` before checking. */
  readonly onWorkers: boolean;
  /** Worker mode: every device made (migrate retires some), and the process before the first one. */
  private readonly devices: VirtioNetPci[] = [];
  private readonly baseline: { fds: number; threads: number } | null;

  constructor(readonly config: RigConfig) {
    this.onWorkers = onWorkers(config);
    // Workers view guest memory from their own threads: it must be a SharedArrayBuffer then.
    this.memory = new GuestMemory([
      {
        address: 0,
        bytes: this.onWorkers ? new Uint8Array(new SharedArrayBuffer(RAM)) : new Uint8Array(RAM),
      },
    ]);
    this.baseline = this.onWorkers ? processResources() : null;
    [this.dev, this.backend] = this.createDevice();
    const current: PciTarget = {
      configRead: (o, s) => this.dev.configRead(o, s),
      configWrite: (o, s, v) => this.dev.configWrite(o, s, v),
      barRead: (b, o, s) => this.dev.barRead(b, o, s),
      barWrite: (b, o, s, v) => this.dev.barWrite(b, o, s, v),
    };
    this.target = guardedTarget(current, 'pf');
    this.driver = this.newDriver();
  }

  /** A device with this rig's options on this rig's memory, with a new backend. */
  private createDevice(): [VirtioNetPci, MemoryBackend] {
    const config = this.config;
    const backend = new MemoryBackend(config.backend);
    backend.onFrame(() => {
      this.sent++;
    });
    const dev = guard('createVirtioNetPci', () =>
      createVirtioNetPci({
        ...config.device,
        ...(config.device.sriov
          ? {
              sriov: {
                ...config.device.sriov,
                vfBackend: (i: number) => {
                  const b = new MemoryBackend();
                  this.vfBackends.set(i, b);
                  return b;
                },
              },
            }
          : {}),
        memory: this.memory,
        backend,
        interrupts: this.irq,
      } as VirtioNetPciOptions),
    );
    this.devices.push(dev);
    return [dev, backend];
  }

  /**
   * Live migration: snapshot (through JSON, as a VMM stores it), a new device and backend on the same
   * guest memory restore it, and the guest carries on with the new one. The old device is reset (its
   * deferred work must not touch the rings any more) and closed. Returns both snapshots' JSON.
   */
  migrate(): { before: string; after: string } {
    const old = this.dev;
    const before = JSON.stringify(guard('snapshot()', () => old.snapshot()));
    guard('reset()', () => old.reset());
    guard('close()', () => old.close());
    const [dev, backend] = this.createDevice();
    guard('restore()', () => dev.restore(JSON.parse(before)));
    // Counters come along (format /2); the new backend starts from zero.
    txCarried.set(dev, guard('stats()', () => dev.stats()).txPackets);
    this.dev = dev;
    this.backend = backend;
    return { before, after: JSON.stringify(guard('snapshot()', () => dev.snapshot())) };
  }

  private newDriver(): VirtioNetDriver {
    const c = this.config;
    return new VirtioNetDriver(this.target, this.memory, {
      wanted: c.wanted,
      allocator: new BumpAllocator(0x100000, PF_RAM_END),
      interrupts: this.irq,
      rxBuffers: c.rxBuffers,
      ...(c.rxBufferSize !== undefined ? { rxBufferSize: c.rxBufferSize } : {}),
      rxIndirect: c.rxIndirect && c.device.indirect_desc !== false,
      rxSplitHeader: c.rxSplitHeader,
    });
  }

  /**
   * What a guest does to recover from anything: a fresh driver resets the device and sets it up again
   * (probe, BARs, MSI-X, features, queues, DRIVER_OK, rx buffers, rx mode). Escapes propagate; the
   * driver kit failing on a device just reset is an invariant violation (the device did not recover).
   */
  reopen(): void {
    this.driver = this.newDriver();
    this.open = false;
    this.reopens++;
    try {
      this.powerUp();
      this.driver.open();
    } catch (e) {
      if (e instanceof EscapeError || e instanceof InvariantError) throw e;
      if (/refused features/.test(String(e)) && this.config.wanted !== LINUX_6_1_FEATURES) {
        // Our random feature subset broke a dependency: the device may refuse it (§3.1.1).
        this.config.wanted = LINUX_6_1_FEATURES;
        this.reopen();
        return;
      }
      throw new InvariantError(`the guest could not set the device up after a reset: ${describeError(e)}`);
    }
    this.corrupted = false;
    this.open = true;
  }

  /** pci_set_power_state(D0), as Linux does before enabling a device (a guest may have left it in D3hot). */
  private powerUp(): void {
    const t = this.target;
    const seen = new Set<number>();
    for (let p = t.configRead(0x34, 1) & 0xfc; p >= 0x40 && !seen.has(p); p = t.configRead(p + 1, 1) & 0xfc) {
      seen.add(p);
      if (t.configRead(p, 1) === 0x01) t.configWrite(p + 4, 2, t.configRead(p + 4, 2) & ~3);
    }
  }

  get status(): number {
    return guard('pf.stats()', () => this.dev.stats()).status;
  }

  needsReset(): boolean {
    return (this.status & 0x40) !== 0;
  }

  /**
   * Worker mode: the settle point before an invariant (worker-rig.ts `settleWorkers`; `done` is what the
   * invariant waits for, e.g. the kicked chains being used). One thread: nothing (checks stay where the
   * one-thread device already did the work, synchronously).
   */
  async settle(done?: () => boolean): Promise<void> {
    if (!this.onWorkers) return;
    await settleWorkers(this.dev, this.backend, () => this.irq.msiCount + this.irq.intxCount, done);
    await checkWorkersIdle(poolOf(this.dev));
  }

  /**
   * Liveness after a reopen: a frame from the guest reaches the backend and a frame from the backend
   * reaches the guest (on some pair). Only meaningful right after `reopen` (clean filters, link up).
   */
  async checkAlive(what: string): Promise<void> {
    const d = this.driver;
    if (!this.backend.isLinkUp || !this.dev.net.linkUp) return;
    // Worker mode: frames a worker wrote before the reset reach the backend's handlers when the host
    // drains its rings (as a tap's queued frames): they land here, not in the count of this one.
    await this.settle();
    const before = this.sent;
    const frame = new Uint8Array(60);
    frame.set([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x88, 0xb5]);
    d.send(frame);
    await this.settle(() => this.sent === before + 1);
    invariant(
      this.sent === before + 1,
      `${what}: a frame the guest sent after reopening did not reach the backend`,
    );
    // A 60-byte frame must fit one buffer unless buffers merge.
    const size = this.config.rxBufferSize ?? (d.has(15) ? 1536 + d.hdrSize : 65562);
    if (d.hdrSize + 60 > size && !d.has(15)) return;
    // Enough buffers for the largest frame a backlog may hold, so what waits there drains first. With
    // buffers so small that a whole ring cannot hold one, such a frame wedges the queue for good (the
    // guest's own doing, as in QEMU): no verdict on receive then.
    const count = Math.ceil(70_000 / size) + 4;
    if (d.has(15) && size * d.queue(0).size < 70_000) return;
    for (let p = 0; p < d.maxPairs; p++) d.postRx(p, count);
    // Frames the backend held while the device was down arrive first: take them all.
    for (let i = 0; i < 1000; i++) {
      await this.settle();
      let n = 0;
      for (let p = 0; p < d.maxPairs; p++) n += d.receive(p).length;
      if (n === 0) break;
    }
    const rx = new Uint8Array(60);
    rx.set([0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x52, 0x54, 0x00, 0xab, 0xcd, 0xef, 0x88, 0xb5]);
    const s0 = this.backend.stats();
    guard('backend.inject', () => this.backend.inject(rx, 0));
    await this.settle();
    if (this.backend.stats().delivered === s0.delivered) return; // held by a paused backend queue
    let got = 0;
    for (let p = 0; p < d.maxPairs; p++) got += d.receive(p).length;
    invariant(got === 1, `${what}: a frame injected after reopening reached the guest ${got} times`);
  }

  /** VF Enable with `n` VFs (VF BARs placed first, as Linux does); `ctrl` as written to the register. */
  enableVfs(n: number, ctrl = 0x9): void {
    const t = this.target;
    t.configWrite(SRIOV_CAP + PCI_SRIOV_NUM_VF, 2, n);
    t.configWrite(SRIOV_CAP + PCI_SRIOV_BAR + 4, 4, 0xd000_0000);
    t.configWrite(SRIOV_CAP + PCI_SRIOV_BAR + 16, 4, 0x0000_000c);
    t.configWrite(SRIOV_CAP + PCI_SRIOV_BAR + 20, 4, 0x4);
    t.configWrite(SRIOV_CAP + PCI_SRIOV_CTRL, 2, ctrl);
  }

  /**
   * Brings VF `k` up with its own driver (memory of its own) and sends one frame: it must reach that
   * VF's backend. Skipped when the VF's link is down.
   */
  checkVfAlive(k: number): void {
    const vf = this.dev.vfs[k];
    const b = this.vfBackends.get(k);
    if (!vf || !b || !vf.net.linkUp || !b.isLinkUp) return;
    if ((this.target.configRead(SRIOV_CAP + PCI_SRIOV_CTRL, 2) & 0x9) !== 0x9) return; // VF memory decode off
    const base = PF_RAM_END + k * VF_RAM;
    const d = new VirtioNetDriver(guardedTarget(vf, `vf${k}`), this.memory, {
      allocator: new BumpAllocator(base, base + VF_RAM),
      interrupts: this.irq,
      rxBuffers: 2,
      rxBufferSize: 1526,
    });
    try {
      d.open();
    } catch (e) {
      if (e instanceof EscapeError || e instanceof InvariantError) throw e;
      throw new InvariantError(`VF ${k}: the guest could not set it up from reset: ${describeError(e)}`);
    }
    const before = b.stats().transmitted;
    const frame = new Uint8Array(60);
    frame.set([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef, 0x52, 0x54, 0x00, 0x12, 0x34, 0x57 + k, 0x88, 0xb5]);
    d.send(frame);
    invariant(
      b.stats().transmitted === before + 1,
      `VF ${k}: a frame its guest sent did not reach its backend`,
    );
  }

  /**
   * Injects one frame through the backend and checks it per frame: every frame the backend handed over
   * is delivered, dropped, filtered or backlogged, exactly once — or at least once when it carries a GSO
   * request the device may segment in software. Returns the frames the backend handed over (0 or 1).
   */
  async checkedInject(
    _ctx: RunContext,
    frame: Uint8Array,
    queue: number,
    offload?: NetOffload | null,
  ): Promise<number> {
    const a0 = rxAccount(this.dev, this.backend);
    guard('backend.inject', () => this.backend.inject(frame, queue, offload));
    // Worker mode: the frame is handed over (or not) when its worker gets to it. What settling also
    // brings (frames waiting in the rings since before DRIVER_OK, a backlog drained) is on both sides.
    await this.settle();
    const a1 = rxAccount(this.dev, this.backend);
    const taken = a1.taken - a0.taken;
    const outcomes = a1.accounted - a0.accounted + (a1.backlogged - a0.backlogged);
    const segmented = offload != null && (offload.gsoType & 0x7f) !== 0;
    if (segmented ? outcomes >= taken : outcomes === taken) return taken;
    throw new InvariantError(
      `the backend handed over ${taken} frame(s); the device accounted for ${outcomes} (delivered/dropped/filtered/backlogged)`,
    );
  }

  /**
   * The device may hold frames in its backlog waiting for rx buffers: a backend queue is paused, or
   * frames wait in a backlog (it can only be emptied by buffers or a reset).
   */
  backlogged(): boolean {
    const queues = this.backend.capabilities.queuePairs;
    for (let q = 0; q < queues; q++) if (this.backend.isPaused(q)) return true;
    return rxAccount(this.dev, this.backend).backlogged > 0;
  }

  /** No backend queue is paused or holds frames: a restore cannot set traffic going by resuming it. */
  quiet(): boolean {
    const queues = this.backend.capabilities.queuePairs;
    for (let q = 0; q < queues; q++)
      if (this.backend.isPaused(q) || this.backend.pending(q) > 0) return false;
    return true;
  }

  /** Rx buffers the driver may still post on one pair without running out of guest RAM for later. */
  postable(count: number): number {
    const d = this.driver;
    const size = this.config.rxBufferSize ?? (d.has(15) ? 1536 + d.hdrSize : 65562);
    const room = d.pci.allocator.remaining - (4 << 20); // kept for checkAlive and tx
    return Math.max(0, Math.min(count, Math.floor(room / (size + 64))));
  }

  async close(): Promise<void> {
    try {
      // A reset first: deferred device work (a known spin among it) must not outlive the case.
      this.dev.reset();
      if (this.onWorkers) {
        // Every device of the case (closed ones again: close is idempotent), and their threads gone.
        const problem = await shutdownWorkers(this.devices);
        if (problem) console.error(`fuzz rig cleanup: ${problem}`);
      } else this.dev.close();
    } catch {
      // reported elsewhere if it matters
    }
  }

  /**
   * Worker mode, end of a case: the devices closed, their worker threads exited, no descriptor or thread
   * left behind (process counts back to where they were before the first worker started).
   */
  async checkWorkersGone(): Promise<void> {
    if (!this.baseline) return;
    guard('reset()', () => this.dev.reset());
    await checkWorkersGone(this.devices, this.baseline);
  }
}

/** A read-only register: config offset, size, mask, the value at creation. */
interface RoReg {
  at: number;
  size: 1 | 2 | 4;
  mask: number;
  value: number;
  what: string;
}

/**
 * The registers of a function a guest must never change: IDs, class, header type, subsystem IDs, the
 * capability list (IDs and links), the virtio capabilities' locations, MSI-X table/PBA locations and
 * size, PCIe/PM capability registers, extended capability headers and SR-IOV's fixed fields.
 */
export function readOnlyRegisters(t: PciTarget, pcie: boolean): RoReg[] {
  const regs: RoReg[] = [];
  const add = (
    at: number,
    size: 1 | 2 | 4,
    what: string,
    mask = size === 4 ? 0xffffffff : (1 << (8 * size)) - 1,
  ) => regs.push({ at, size, mask, value: (t.configRead(at, size) & mask) >>> 0, what });
  add(0x00, 4, 'vendor/device id');
  add(0x08, 4, 'revision/class code');
  add(0x0e, 1, 'header type');
  add(0x2c, 4, 'subsystem ids');
  add(0x34, 1, 'capability pointer');
  add(0x06, 2, 'status: capability list bit', 0x10);
  const seen = new Set<number>();
  for (let p = t.configRead(0x34, 1) & 0xfc; p >= 0x40 && !seen.has(p); p = t.configRead(p + 1, 1) & 0xfc) {
    seen.add(p);
    const id = t.configRead(p, 1);
    add(p, 2, `capability 0x${id.toString(16)} at 0x${p.toString(16)}: id/next`);
    if (id === 0x09) {
      const type = t.configRead(p + 3, 1);
      add(p + 2, 2, `virtio cap at 0x${p.toString(16)}: len/type`);
      if (type !== 5) {
        add(p + 4, 2, `virtio cap type ${type}: bar/id`);
        add(p + 8, 4, `virtio cap type ${type}: offset`);
        add(p + 12, 4, `virtio cap type ${type}: length`);
        if (type === 2) add(p + 16, 4, 'notify_off_multiplier');
      }
    } else if (id === 0x11) {
      add(p + 2, 2, 'MSI-X table size', 0x7ff);
      add(p + 4, 4, 'MSI-X table offset/BIR');
      add(p + 8, 4, 'MSI-X PBA offset/BIR');
    } else if (id === 0x10) {
      add(p + 2, 2, 'PCIe capabilities register');
      add(p + 4, 4, 'PCIe device capabilities');
      add(p + 0x0c, 4, 'PCIe link capabilities');
    } else if (id === 0x01) {
      add(p + 2, 2, 'PM capabilities');
    }
  }
  if (pcie) {
    const seenExt = new Set<number>();
    for (let p = 0x100; p >= 0x100 && p < 0x1000 && !seenExt.has(p); ) {
      seenExt.add(p);
      const h = t.configRead(p, 4) >>> 0;
      if (h === 0 || h === 0xffffffff) break;
      add(p, 4, `extended capability 0x${(h & 0xffff).toString(16)} header`);
      if ((h & 0xffff) === 0x10) {
        add(p + 0x0c, 4, 'SR-IOV InitialVFs/TotalVFs');
        add(p + 0x1a, 2, 'SR-IOV VF device id');
        add(p + 0x1c, 4, 'SR-IOV supported page sizes');
      }
      p = h >>> 20;
    }
  }
  return regs;
}

/** Throws unless every register still reads its value at creation. */
export function checkReadOnly(t: PciTarget, regs: readonly RoReg[], label: string): void {
  for (const r of regs) {
    const v = (t.configRead(r.at, r.size) & r.mask) >>> 0;
    invariant(
      v === r.value,
      () =>
        `${label}: read-only ${r.what} (config 0x${r.at.toString(16)}/${r.size}) changed from 0x${r.value.toString(16)} to 0x${v.toString(16)}`,
    );
  }
}

/** Frame counts of one function: what its backend handed over vs what the device accounted for. */
export interface RxAccount {
  /** Frames the backend handed to the device. */
  taken: number;
  /** rxPackets + rxDropped + rxFiltered over the pairs, plus rxDroppedNotReady. */
  accounted: number;
  /** Frames waiting in the device's backlog now (each is counted in `accounted` when it leaves). */
  backlogged: number;
  /** Frames the device reports sent, and the frames the backend got. */
  txPackets: number;
  transmitted: number;
}

/** Frames a migrated device counted as sent before it reached its current backend. */
const txCarried = new WeakMap<VirtioNetPci, number>();

export function rxAccount(dev: VirtioNetPci, backend: MemoryBackend): RxAccount {
  const s = guard('stats()', () => dev.stats());
  let accounted = s.rxDroppedNotReady;
  let backlogged = 0;
  for (const q of s.queues) {
    accounted += q.rxPackets + q.rxDropped + q.rxFiltered;
    backlogged += q.rxBacklogDepth + q.rxCrossingDepth;
  }
  const b = backend.stats();
  const txPackets = s.txPackets - (txCarried.get(dev) ?? 0);
  return { taken: b.delivered, accounted, backlogged, txPackets, transmitted: b.transmitted };
}

/**
 * A restored state brings its own counters (a corrupted one may bring any valid number): from here on the
 * device's transmit count is judged against the backend relative to where both stand now.
 */
export function rebaseTxAccount(dev: VirtioNetPci, backend: MemoryBackend): void {
  txCarried.set(dev, guard('stats()', () => dev.stats()).txPackets - backend.stats().transmitted);
}

/** Every frame the device says it sent reached the backend, and no more. */
export function checkTxAccount(a: RxAccount, label: string): void {
  invariant(
    a.txPackets === a.transmitted,
    `${label}: the device counts ${a.txPackets} frames sent, the backend got ${a.transmitted}`,
  );
}
