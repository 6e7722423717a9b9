/**
 * The embeddable `virtio-net-pci` device (the API contract): one PCI function that
 * behaves like QEMU's `virtio-net-pci` (modern virtio-pci transport, VIRTIO 1.3 §4.1; virtio-net, §5.1),
 * optionally an SR-IOV physical function (PCIe SR-IOV extended capability) whose virtual functions are
 * virtio-net functions of their own. A VMM wires it to its bus: config-space and BAR accessors in,
 * MSI-X messages (or per-vector signals) / INTx and DMA through `GuestMemory` out.
 */
import { OptionsError } from '../lib/errors.js';
import type { NetBackend } from '../lib/net/backend.js';
import { MemoryBackend } from '../lib/net/memory-backend.js';
import { TapBackend } from '../lib/tap/tap-backend.js';
import { AriCapability } from '../pci/ari-capability.js';
import type { InterruptSink } from '../pci/msix.js';
import type { BarMapping, PciFunction } from '../pci/pci-function.js';
import { SriovCapability } from '../pci/sriov.js';
import { sriovDeviceGroup } from '../virtio/admin/admin-queue.js';
import type { MigrationMember } from '../virtio/admin/migration-commands.js';
import { featureBit, VIRTIO_F_SR_IOV } from '../virtio/features.js';
import { validateTransportSnapshot } from '../virtio/pci/transport-schema.js';
import {
  MODERN_BAR,
  MODERN_BAR_SIZE,
  MSIX_BAR,
  type VirtioPciSnapshot,
  VirtioPciTransport,
} from '../virtio/pci/virtio-pci.js';
import { defaultVfInfo, parseVfPolicy, type VfInfo, type VfPolicy } from './eswitch/policy.js';
import type { PortOwner } from './eswitch/port.js';
import { EmbeddedSwitch, type SwitchStats } from './eswitch/switch.js';
import {
  checkSnapshotEnvelope,
  parsePfState,
  SNAPSHOT_FORMAT,
  type SnapshotOptions,
} from './snapshot-format.js';
import { NetConfig } from './virtio-net/config.js';
import { VirtioNet } from './virtio-net/device.js';
import {
  parseVirtioNetPciOptions,
  type VirtioNetInterrupts,
  type VirtioNetPciConfig,
  type VirtioNetPciOptions,
} from './virtio-net/options.js';
import { NET_STATE_PART, type NetSnapshot } from './virtio-net/persist.js';
import { parseMac } from './virtio-net/rx-filter.js';
import type { NetDeviceStats, QueueStats } from './virtio-net/stats.js';
import { type WorkerBackendControl, WorkerControlBackend } from './virtio-net/workers/control-backend.js';
import { MemoryWorkerControl } from './virtio-net/workers/memory-control.js';
import { WorkerPool } from './virtio-net/workers/pool.js';

/** Size and kind of each of the six BARs (null where absent), for VMMs and the vfio-user server. */
export interface BarInfo {
  size: number;
  type: 'mem32' | 'mem64' | 'io';
  prefetchable: boolean;
}

export { SNAPSHOT_FORMAT, SNAPSHOT_FORMAT_V1, type SnapshotOptions } from './snapshot-format.js';

/** JSON-serialisable state of a function and its VFs (format `virtio-net-ts/2`). */
export interface VirtioNetPciSnapshot {
  format: typeof SNAPSHOT_FORMAT;
  options: SnapshotOptions;
  pci: unknown;
  msix: unknown;
  transport: VirtioPciSnapshot;
  vfs: VirtioNetPciSnapshot[];
  /** Per-VF switch policies (`setVf`), PF with the embedded switch only. */
  vfPolicies?: VfInfo[];
  /** The switch's counters, PF with the embedded switch only. */
  switch?: SwitchStats;
}

/** One queue pair's counters in {@link VirtioNetPciStats}. */
export type QueuePairStats = { pair: number } & { [K in keyof QueueStats]: QueueStats[K] };

/**
 * What `stats()` returns: the transport's status and negotiated features, the device-wide counters, totals
 * over the queue pairs, each pair's counters, and each enabled VF's own stats.
 */
export type VirtioNetPciStats = NetDeviceStats & {
  status: number;
  features: string;
  linkUp: boolean;
  queuePairs: number;
  rxPackets: number;
  rxBytes: number;
  rxDropped: number;
  txPackets: number;
  txBytes: number;
  txDropped: number;
  queues: QueuePairStats[];
  lastError: string | null;
  vfs: VirtioNetPciStats[];
  /** The embedded switch's per-port counters (an SR-IOV PF without `sriov.vfBackend`). */
  switch?: SwitchStats;
};

/** The embeddable device (API contract). */
export interface VirtioNetPci {
  /** PCI config space read, offsets 0..4095 (0..255 on `bus: 'pci'`). Never throws. */
  configRead(offset: number, size: 1 | 2 | 4): number;
  configWrite(offset: number, size: 1 | 2 | 4, value: number): void;
  /** Access at `offset` inside BAR `bar` (the VMM decoded the address). Never throws for guest values. */
  barRead(bar: number, offset: number, size: 1 | 2 | 4 | 8): number | bigint;
  barWrite(bar: number, offset: number, size: 1 | 2 | 4 | 8, value: number | bigint): void;
  /** Enabled virtual functions, in VF order (empty without SR-IOV or with VF Enable clear). */
  readonly vfs: readonly VirtioNetPci[];
  snapshot(): VirtioNetPciSnapshot;
  restore(state: unknown): void;
  /** Counters and state summary; see {@link VirtioNetPciStats}. */
  stats(): VirtioNetPciStats;

  /** The six BARs this function decodes (a VF's come from its PF's VF BARs). */
  readonly bars: readonly (BarInfo | null)[];
  /** MSI-X table size (0 without MSI-X). */
  readonly msixVectors: number;
  /** The guest memory the device reads and writes (vfio-user adds and removes regions on it). */
  readonly memory: VirtioNetPciConfig['memory'];
  /** The PCI function model underneath (config space, BAR mappings, FLR). */
  readonly function: PciFunction;
  /** The virtio-net device model underneath (filters, RSS state, counters). */
  readonly net: VirtioNet;
  readonly transport: VirtioPciTransport;
  /** Called whenever a BAR's guest address, size or decode enable changes. */
  onBarMappingChange(listener: (mapping: BarMapping) => void): void;
  /** Replaces where interrupts go (e.g. a vfio-user client's per-vector eventfds). */
  setInterrupts(interrupts: VirtioNetInterrupts): void;
  /** Link state as the guest sees it (VIRTIO_NET_S_LINK_UP, with a config interrupt). */
  setLinkUp(up: boolean): void;
  /** Ask the guest to announce itself (VIRTIO_NET_F_GUEST_ANNOUNCE), as QEMU does after migration. */
  announce(): boolean;
  /** A system reset of the function (and of its VFs). */
  reset(): void;
  /**
   * Per-VF policy, as `ip link set DEV vf N mac … vlan … qos … spoofchk … trust … state … max_tx_rate …`
   * for a hardware NIC (PF only, with `sriov`; any subset; callable while VFs are enabled, and kept across
   * VF Enable cycles). Throws `OptionsError` naming the field. See docs/sriov.md.
   */
  setVf(index: number, policy: VfPolicy): void;
  /** VF `index`'s policy with every field set (PF only, with `sriov`). */
  vfInfo(index: number): VfInfo;
  /** Releases the backends (PF and VFs) and stops the device touching guest memory or interrupting. */
  close(): void;
}

/** VF layout: QEMU 11.1 puts composed VFs right after the PF (addr 0.1, 0.2, ...). */
const VF_FIRST_OFFSET = 1;
const VF_STRIDE = 1;

/** Routes interrupts to whatever sink is current, so the sink can change after creation. */
class InterruptRelay implements InterruptSink {
  msi?: (address: bigint, data: number) => void;
  vector?: (n: number) => void;
  vectorFd?: (n: number) => number | null;
  constructor(
    private target: VirtioNetInterrupts,
    private readonly vfIndex: number | null,
  ) {
    this.bind();
  }
  set(target: VirtioNetInterrupts): void {
    this.target = target;
    this.bind();
  }
  intx(asserted: boolean): void {
    this.target.intx?.(asserted);
  }
  private bind(): void {
    const t = this.target;
    // With `vector` only, the VMM emulates the MSI-X table itself (QEMU's vfio-user client).
    this.msi = t.msi ? (a, d) => t.msi!(a, d) : undefined;
    this.vector =
      !t.msi && t.vector
        ? (n) => (t.vector as (n: number, vf?: number) => void)(n, this.vfIndex ?? undefined)
        : undefined;
    const fdOf = !t.msi ? t.vectorFd : undefined;
    this.vectorFd = fdOf ? (n) => fdOf.call(t, n, this.vfIndex ?? undefined) : undefined;
  }
}

class VirtioNetPciDevice implements VirtioNetPci {
  readonly net: VirtioNet;
  readonly transport: VirtioPciTransport;
  readonly function: PciFunction;
  readonly sriov: SriovCapability | null = null;
  readonly bars: readonly (BarInfo | null)[];
  readonly msixVectors: number;
  readonly memory: VirtioNetPciConfig['memory'];
  private readonly relay: InterruptRelay;
  /** Switches between the PF, its VFs and the uplink (the PF's backend); null without SR-IOV. */
  readonly eswitch: EmbeddedSwitch | null = null;
  /** VF policies by VF index (PF only). */
  private readonly vfPolicies: VfInfo[] = [];
  /** Indexed by VF number - 1; holes only while VF Enable is being cleared. */
  private readonly vfDevices: (VirtioNetPciDevice | undefined)[] = [];
  private readonly isVf: boolean;

  constructor(
    private readonly config: VirtioNetPciConfig,
    backend: NetBackend,
    options: { vfIndex: number | null; routingId: number },
  ) {
    const isVf = options.vfIndex !== null;
    this.isVf = isVf;
    this.memory = config.memory;
    if (config.sriov && !isVf && !config.sriov.vfBackend) {
      // The PF's backend becomes the uplink of the embedded switch; the PF gets a port of it.
      this.eswitch = new EmbeddedSwitch(backend);
      backend = this.eswitch.pf;
      for (let i = 0; i < config.sriov.totalVfs; i++)
        this.vfPolicies.push(defaultVfInfo(vfMac(config.mac, i)));
    }
    const workers = config.workers === true ? 256 : config.workers === false ? 0 : config.workers;
    let control: WorkerBackendControl | null = null;
    if (workers > 0 && !isVf) {
      const pairs = config.mq || config.rss ? config.queues : 1;
      if (config.sriov) throw new OptionsError('workers: not with sriov');
      if (backend instanceof TapBackend) control = new WorkerControlBackend(backend, pairs);
      else if (backend instanceof MemoryBackend) control = new MemoryWorkerControl(backend, pairs);
      else throw new OptionsError('workers: needs a TapBackend or a MemoryBackend');
      backend = control;
    }
    this.net = new VirtioNet(config, backend);
    if (control) this.net.dataPlane = new WorkerPool(this.net, control, config.memory, workers);
    if (this.eswitch) this.eswitch.pf.owner = portOwner(this.net);
    this.relay = new InterruptRelay(config.interrupts, options.vfIndex);
    // VIRTIO_F_SR_IOV (§6) is offered by the PF only, and only with an SR-IOV capability.
    if (config.sriov && !isVf) this.net.extraFeatures = featureBit(VIRTIO_F_SR_IOV);
    this.transport = new VirtioPciTransport({
      device: this.net,
      memory: config.memory,
      interrupts: this.relay,
      msixVectors: config.vectors,
      bus: config.bus,
      legacy: !config['disable-legacy'] && !isVf,
      modern: !config['disable-modern'],
      routingId: options.routingId,
      vf: isVf,
      // VFs have no I/O BAR; the PF's admin queue reaches their legacy registers (docs/admin-queue.md).
      legacyAccessForAdmin: isVf && !config['disable-modern'],
      isLegacyConfigField: isNetConfigField,
      features: {
        eventIdx: config.event_idx,
        indirectDesc: config.indirect_desc,
        packed: config.packed,
        queueReset: config.queue_reset,
        notificationData: config.notification_data,
        inOrder: config.in_order,
        accessPlatform: config.iommu_platform,
        anyLayout: config.any_layout,
        notifyOnEmpty: config.notify_on_empty,
      },
    });
    this.function = this.transport.function;
    this.msixVectors = config.vectors ?? 0;
    const bars: (BarInfo | null)[] = [null, null, null, null, null, null];
    for (let i = 0; i < 6; i++) {
      const b = this.function.getBar(i);
      if (b) bars[i] = { size: b.size, type: b.type, prefetchable: b.prefetchable ?? false };
    }
    this.bars = bars;

    // ARI (PCIe §7.8.7) on the PF and every VF, so that VFs beyond function 7 are reachable: with ARI the
    // function number is 8 bits. The PF is the device's only physical function and VFs are found through
    // First VF Offset / VF Stride, so every Next Function Number is 0 (the end of the chain).
    if (isVf) new AriCapability(this.function, { nextFunction: 0 });
    const sr = config.sriov;
    if (sr && !isVf) {
      this.sriov = new SriovCapability(
        this.function,
        {
          totalVfs: sr.totalVfs,
          vfDeviceId: sr.vfDeviceId ?? this.function.config.getU16(2),
          firstVfOffset: VF_FIRST_OFFSET,
          vfStride: VF_STRIDE,
          vfBars: [
            { index: MSIX_BAR, size: 0x1000, type: 'mem32' },
            { index: MODERN_BAR, size: MODERN_BAR_SIZE, type: 'mem64', prefetchable: true },
          ],
          rules: 'qemu-11.1',
        },
        {
          createVf: (index, routingId) => this.createVf(index, routingId),
          destroyVf: (index) => this.destroyVf(index),
        },
      );
      // After SR-IOV (0x100, 0x40 bytes): at 0x140, the slot QEMU 11.1 links to but leaves empty.
      new AriCapability(this.function, { nextFunction: 0 });
      // The PF owns the SR-IOV group (VIRTIO 1.3 §2.12): VIRTIO_F_ADMIN_VQ with the legacy-access commands.
      if (!config['disable-modern']) {
        const member = (vf: number) => this.vfDevices[vf - 1]?.transport ?? null;
        this.transport.setAdminGroups([
          sriovDeviceGroup(this.sriov, {
            legacyMember: (vf) => member(vf)?.legacyMemberAccess() ?? null,
            legacyNotifyInfo: (vf) => member(vf)?.legacyNotifyInfo() ?? [],
            migrationMember: (vf) => this.vfDevices[vf - 1]?.migrationMember() ?? null,
          }),
        ]);
      }
    }
  }

  /**
   * This function as a member for its PF's VIRTIO 1.4 device-parts commands: the transport's parts plus
   * one virtio-net-ts state part (docs/admin-queue.md "Device parts").
   */
  migrationMember(): MigrationMember {
    const t = this.transport;
    return {
      mode: () => t.mode,
      setMode: (m) => t.setMode(m),
      getParts: () => t.deviceParts(NET_STATE_PART, SNAPSHOT_FORMAT),
      setParts: (parts) =>
        t.setDeviceParts(parts, NET_STATE_PART, SNAPSHOT_FORMAT, (d) => this.net.validateSnapshot(d)),
    };
  }

  get vfs(): readonly VirtioNetPci[] {
    return this.vfDevices.filter((vf): vf is VirtioNetPciDevice => vf !== undefined);
  }

  // The VMM's accessors go straight to the PCI function: config space, BAR decode and the MSI-X table are
  // its own, and the transport's registers are BAR handlers on it.
  configRead(offset: number, size: 1 | 2 | 4): number {
    return this.function.configRead(offset, size);
  }
  configWrite(offset: number, size: 1 | 2 | 4, value: number): void {
    this.function.configWrite(offset, size, value);
  }
  barRead(bar: number, offset: number, size: 1 | 2 | 4 | 8): number | bigint {
    return this.function.barRead(bar, offset, size);
  }
  barWrite(bar: number, offset: number, size: 1 | 2 | 4 | 8, value: number | bigint): void {
    this.function.barWrite(bar, offset, size, value);
  }

  onBarMappingChange(listener: (mapping: BarMapping) => void): void {
    this.function.onBarMappingChange(listener);
  }

  setInterrupts(interrupts: VirtioNetInterrupts): void {
    this.relay.set(interrupts);
    this.transport.interruptRoutesChanged();
    for (const vf of this.vfs) vf.setInterrupts(interrupts);
  }

  setLinkUp(up: boolean): void {
    this.net.setLink(up);
  }

  announce(): boolean {
    return this.net.announce();
  }

  reset(): void {
    this.transport.reset();
  }

  close(): void {
    for (const vf of this.vfs) vf.close();
    // Deferred work (a scheduled drain, a transmit burst) must not touch guest memory after close: a
    // device that migrated away is closed while its VM runs on elsewhere. Frames its queue-pair workers
    // were passing between them are counted dropped first (a freeze would keep them for a snapshot), and
    // so are those waiting in the receive backlogs.
    this.net.dataPlane?.stop(true);
    this.transport.setMode('frozen');
    this.net.discardBacklogs();
    this.net.dataPlane?.close();
    this.net.backend.close();
  }

  snapshot(): VirtioNetPciSnapshot {
    // Queue pairs on workers give their rings, backlogs and counters back for the moment of the snapshot.
    const plane = this.net.dataPlane;
    if (!plane?.running) return this.takeSnapshot();
    plane.stop();
    try {
      return this.takeSnapshot();
    } finally {
      plane.start();
    }
  }

  private takeSnapshot(): VirtioNetPciSnapshot {
    return {
      format: SNAPSHOT_FORMAT,
      options: this.snapshotOptions(),
      pci: this.function.snapshot(),
      msix: this.transport.msix?.snapshot() ?? null,
      transport: this.transport.snapshot(),
      vfs: this.vfs.map((vf) => vf.snapshot()),
      ...(this.eswitch
        ? { vfPolicies: this.vfPolicies.map((p) => ({ ...p })), switch: this.eswitch.stats() }
        : {}),
    };
  }

  restore(state: unknown): void {
    // Check everything that can be checked before anything is written: a refused state leaves the device as it was.
    const pf = this.validateState(state);
    const s = state as VirtioNetPciSnapshot;
    this.function.restore(s.pci as never);
    if (this.transport.msix && s.msix) this.transport.msix.restore(s.msix as never);
    // Policies before the VFs come back: createVf gives each VF its own.
    if (pf.vfPolicies) for (const [i, p] of pf.vfPolicies.entries()) this.vfPolicies[i] = { ...p };
    this.sriov?.syncAfterRestore();
    this.transport.restore(s.transport);
    for (const [i, vs] of (s.vfs ?? []).entries()) this.vfDevices[i]?.restore(vs);
    if (pf.switch) this.eswitch?.restoreStats(pf.switch);
  }

  /** Every check `restore` makes before writing (the VFs' device parts included); returns the PF part. */
  private validateState(state: unknown) {
    const version = checkSnapshotEnvelope(state, this.snapshotOptions());
    const s = state as VirtioNetPciSnapshot;
    const pf =
      version === 2 && !this.isVf ? parsePfState(s, this.eswitch !== null, this.vfPolicies.length) : {};
    validateTransportSnapshot(
      s.transport,
      (d) => this.net.validateSnapshot(d),
      'transport',
      this.transport.limits(),
    );
    const vfs = s.vfs ?? [];
    if (!Array.isArray(vfs) || vfs.length > (this.config.sriov?.totalVfs ?? 0))
      throw new TypeError('virtio-net-pci snapshot: field "vfs": more VFs than TotalVFs');
    for (const [i, vs] of vfs.entries()) {
      if (vs?.format !== s.format)
        throw new TypeError(`virtio-net-pci snapshot: field "vfs.${i}.format" differs`);
      // A VF's device is built from the PF's options: the PF's validator fits it.
      const limits = (this.vfDevices[i] ?? this).transport.limits();
      validateTransportSnapshot(
        vs.transport,
        (d) => this.net.validateSnapshot(d),
        `vfs.${i}.transport`,
        limits,
      );
    }
    return pf;
  }

  private snapshotOptions(): SnapshotOptions {
    const c = this.config;
    return {
      bus: c.bus,
      queues: c.queues,
      features: `0x${this.transport.offeredFeatures.toString(16)}`,
      vectors: this.msixVectors,
      totalVfs: c.sriov?.totalVfs ?? 0,
      eswitch: this.eswitch !== null,
      hashTypes: `0x${this.net.supportedHashTypes.toString(16)}`,
    };
  }

  setVf(index: number, policy: VfPolicy): void {
    const current = this.policyOf(index, 'setVf');
    const next: VfInfo = { ...current, ...parseVfPolicy(index, policy) };
    this.vfPolicies[index] = next;
    const vf = this.vfDevices[index];
    const port = this.eswitch!.vfPort(index);
    if (vf === undefined || port === undefined) return;
    if (next.mac !== current.mac) vf.net.assignMac(parseMac(next.mac));
    vf.net.trusted = next.trust;
    this.eswitch!.applyPolicy(port, next);
  }

  vfInfo(index: number): VfInfo {
    return { ...this.policyOf(index, 'vfInfo') };
  }

  private policyOf(index: number, method: string): VfInfo {
    if (this.eswitch === null)
      throw new OptionsError(
        `${method}: needs an SR-IOV PF with the embedded switch (option "sriov" without "sriov.vfBackend")`,
      );
    const p = this.vfPolicies[index];
    if (!Number.isInteger(index) || p === undefined)
      throw new OptionsError(`${method}: VF index ${index} out of range (0..${this.vfPolicies.length - 1})`);
    return p;
  }

  stats(): VirtioNetPciStats {
    const n = this.net;
    n.dataPlane?.refreshStats();
    const queues: QueuePairStats[] = n.queueStats.map((q: QueueStats, pair: number) => ({ pair, ...q }));
    return {
      status: this.transport.status,
      features: `0x${this.transport.driverFeatures.toString(16)}`,
      linkUp: n.linkUp,
      queuePairs: n.curQueuePairs,
      ...n.deviceStats,
      rxPackets: sum(queues, 'rxPackets'),
      rxBytes: sum(queues, 'rxBytes'),
      rxDropped: sum(queues, 'rxDropped') + n.deviceStats.rxDroppedNotReady,
      txPackets: sum(queues, 'txPackets'),
      txBytes: sum(queues, 'txBytes'),
      txDropped: sum(queues, 'txDropped'),
      queues,
      lastError: this.transport.lastError,
      vfs: this.vfs.map((vf) => vf.stats()),
      ...(this.eswitch ? { switch: this.eswitch.stats() } : {}),
    };
  }

  /** JSON state of the net device alone (for tests). */
  netSnapshot(): NetSnapshot {
    return this.net.snapshot();
  }

  private createVf(index: number, routingId: number): PciFunction {
    const sr = this.config.sriov!;
    const policy = this.vfPolicies[index];
    const port = this.eswitch && policy ? this.eswitch.addVf(index, this.config.queues, policy) : null;
    const backend = port ?? (sr.vfBackend ? sr.vfBackend(index) : new MemoryBackend());
    const mac = policy?.mac ?? vfMac(this.config.mac, index);
    const vfConfig: VirtioNetPciConfig = {
      ...this.config,
      memory: sr.vfMemory?.(index) ?? this.config.memory,
      mac,
      sriov: undefined,
      backend,
      queues: this.config.queues,
    };
    const vf = new VirtioNetPciDevice(vfConfig, backend, { vfIndex: index, routingId });
    this.vfDevices[index] = vf;
    if (port && policy) {
      port.owner = portOwner(vf.net);
      vf.net.trusted = policy.trust;
    }
    return vf.function;
  }

  private destroyVf(index: number): void {
    const vf = this.vfDevices[index];
    if (!vf) return;
    vf.transport.reset();
    this.eswitch?.removeVf(index);
    vf.net.backend.close();
    // VFs go away together (VF Enable cleared), in any order: keep indices stable until the last one.
    this.vfDevices[index] = undefined;
    while (this.vfDevices.length > 0 && this.vfDevices[this.vfDevices.length - 1] === undefined)
      this.vfDevices.pop();
  }
}

/** The switch's view of a function: its live MAC and its own receive filter. */
function portOwner(net: VirtioNet): PortOwner {
  return { mac: net.mac, accepts: (b, o, l) => net.rxFilter.acceptsAt(b, o, l) };
}

/** virtio-net config fields as [start, end) (§5.1.4), for the legacy device-config commands. */
const NET_CONFIG_FIELDS: readonly (readonly [number, number])[] = [
  [NetConfig.MAC, NetConfig.STATUS],
  [NetConfig.STATUS, NetConfig.MAX_VIRTQUEUE_PAIRS],
  [NetConfig.MAX_VIRTQUEUE_PAIRS, NetConfig.MTU],
  [NetConfig.MTU, NetConfig.SPEED],
  [NetConfig.SPEED, NetConfig.DUPLEX],
  [NetConfig.DUPLEX, NetConfig.RSS_MAX_KEY_SIZE],
  [NetConfig.RSS_MAX_KEY_SIZE, NetConfig.RSS_MAX_INDIRECTION_TABLE_LENGTH],
  [NetConfig.RSS_MAX_INDIRECTION_TABLE_LENGTH, NetConfig.SUPPORTED_HASH_TYPES],
  [NetConfig.SUPPORTED_HASH_TYPES, NetConfig.SUPPORTED_TUNNEL_TYPES],
  [NetConfig.SUPPORTED_TUNNEL_TYPES, NetConfig.SIZE],
];

/** Whether a legacy config access stays inside one virtio-net config field. */
function isNetConfigField(offset: number, length: number): boolean {
  return NET_CONFIG_FIELDS.some(([a, b]) => offset >= a && offset + length <= b);
}

function sum(
  rows: QueuePairStats[],
  key: 'rxPackets' | 'rxBytes' | 'rxDropped' | 'txPackets' | 'txBytes' | 'txDropped',
): number {
  let s = 0;
  for (const r of rows) s += r[key];
  return s;
}

/** VF n's MAC: the PF's with the last byte advanced by n + 1 (a locally administered scheme). */
export function vfMac(pfMac: string, index: number): string {
  const b = pfMac.split(':').map((h) => Number.parseInt(h, 16));
  let carry = index + 1;
  for (let i = 5; i >= 3 && carry > 0; i--) {
    const v = b[i]! + carry;
    b[i] = v & 0xff;
    carry = v >> 8;
  }
  return b.map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/**
 * Creates a virtio-net PCI function (API contract `createVirtioNetPci`). Options use QEMU's
 * virtio-net-pci property names and defaults; invalid options throw `OptionsError` naming the option.
 */
export function createVirtioNetPci(options: VirtioNetPciOptions): VirtioNetPci {
  const config = parseVirtioNetPciOptions(options);
  return new VirtioNetPciDevice(config, config.backend, { vfIndex: null, routingId: 0 });
}
