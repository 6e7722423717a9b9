/**
 * The virtio-net PCI function as a vfio-user device: `createVirtioNetPci` plus the adapter to
 * `VfioUserDevice` (docs/vfio-user.md). QEMU's vfio-user client emulates the MSI-X table itself and takes
 * one eventfd per vector, so the device signals the per-vector form (`interrupts.vector`).
 */

import { OptionsError } from '../../lib/errors.js';
import type { GuestMemory } from '../../lib/memory/guest-memory.js';
import { MemoryBackend } from '../../lib/net/memory-backend.js';
import { TapSteering } from '../../lib/tap/steering.js';
import { TapBackend } from '../../lib/tap/tap-backend.js';
import type { VfioUserDevice, VfioUserDoorbell, VfioUserInterruptSink } from '../../lib/vfio-user/server.js';
import { MODERN_BAR } from '../../virtio/pci/virtio-pci.js';
import { parseVfPolicy, type VfPolicy } from '../eswitch/policy.js';
import { parseVirtioNetPciOptions, type VirtioNetPciOptions } from '../virtio-net/options.js';
import { parseQemuDevice } from '../virtio-net/qemu-device.js';
import { createVirtioNetPci, type VirtioNetPci } from '../virtio-net-pci.js';
import { virtioNetSriovVfioUser } from './sriov.js';

/** A served virtio-net function: the vfio-user device interface plus the controls a VMM process needs. */
export interface VirtioNetVfioUserDevice extends VfioUserDevice {
  /** The device underneath (stats, snapshot, RSS state, ...). */
  readonly net: VirtioNetPci;
  /** VIRTIO_NET_S_LINK_UP as the guest sees it (with a config interrupt); mirrored to a tap's carrier. */
  setLinkUp(up: boolean): void;
  /** Releases the backend. */
  close(): void;
}

/** Creates the function with `options` (without `interrupts`: they go to the vfio-user client's eventfds). */
export function virtioNetVfioUserDevice(
  options: Omit<VirtioNetPciOptions, 'interrupts'>,
): VirtioNetVfioUserDevice {
  let sink: VfioUserInterruptSink | null = null;
  const net = createVirtioNetPci({
    ...options,
    interrupts: {
      vector: (n) => sink?.vector(n),
      vectorFd: (n) => sink?.vectorFd?.(n) ?? null,
      intx: (a) => sink?.intx?.(a),
    },
  });
  // Each virtqueue's notify slot (BAR4, one address per queue): any write there is that queue's kick, so
  // the eventfd needs no width or datamatch, and the replay writes the queue index as Linux does.
  const doorbells: VfioUserDoorbell[] = net.transport
    .queueNotifyOffsets()
    .map((offset, q) => ({ bar: MODERN_BAR, offset, size: 0, replay: { size: 2, value: q } }));
  return {
    net,
    configRead: (o, s) => net.configRead(o, s),
    configWrite: (o, s, v) => net.configWrite(o, s, v),
    barRead: (b, o, s) => net.barRead(b, o, s),
    barWrite: (b, o, s, v) => net.barWrite(b, o, s, v),
    bars: net.bars,
    msixVectors: net.msixVectors,
    memory: net.memory,
    setInterruptSink: (s) => {
      sink = s;
    },
    interruptRoutesChanged: () => net.transport.interruptRoutesChanged(),
    // Doorbell i is queue i's (above): queue workers may poll its eventfd themselves.
    setDoorbellEventfds: (fds) => net.transport.setKickEventfds(fds),
    reset: () => net.reset(),
    doorbells: () => doorbells,
    setLinkUp: (up) => net.setLinkUp(up),
    close: () => net.close(),
  };
}

/**
 * `-o workers=auto|on|off|N` (docs/workers.md, docs/vfio-user.md): the `workers` option of
 * createVirtioNetPci. `auto` (the default) puts each queue pair on a worker thread when there is more than
 * one pair, no SR-IOV VF (the embedded switch runs on the main thread) and the kernel can apply the guest's
 * RSS to the tap (`kernelSteering`, eBPF): without it RSS stays in software, where most frames would be
 * copied from the worker that read them to the one that runs their pair (a handoff per frame), so `auto`
 * keeps one thread. `on` is one thread per pair, `N` pairs dealt over N threads. Throws OptionsError
 * naming the option.
 */
export function parseServeWorkers(
  value: string | undefined,
  queues: number,
  vfs: number,
  kernelSteering = true,
): boolean | number {
  const v = value ?? 'auto';
  let w: boolean | number;
  if (v === 'auto') return queues > 1 && vfs === 0 && kernelSteering;
  if (v === 'on') w = true;
  else if (v === 'off') return false;
  else if (/^[1-9][0-9]{0,2}$/.test(v) && Number(v) <= 256) w = Number(v);
  else throw new OptionsError(`-o workers=${v}: expected auto, on, off or a thread count 1..256`);
  if (vfs > 0) throw new OptionsError(`-o workers=${v}: queue pairs on workers cannot serve --vfs (SR-IOV)`);
  return w;
}

/**
 * `virtio-net-ts serve --tap NAME [-o prop=value]... [--vfs N [--vf I,key=value,...]...]`: QEMU
 * `virtio-net-pci` properties (parseQemuDevice) on a TapBackend opened on NAME (created if absent; an
 * existing multiqueue tap is attached to) with one fd per queue pair, moved into `netns` when given;
 * `-o workers=…` (parseServeWorkers) puts the queue pairs on worker threads. With
 * `vfs`, an SR-IOV PF whose tap is the embedded switch's uplink, with that many VFs enabled by the host
 * (devices/serve/sriov.ts), returned in `vfFunctions`. Throws OptionsError for a missing tap name or a bad
 * property or policy, before the tap is created.
 */
export function virtioNetFromCommandLine(input: {
  memory: GuestMemory;
  tap?: string;
  netns?: string;
  options: Record<string, string>;
  vfs?: number;
  vfPolicies?: Record<number, VfPolicy>;
}): VirtioNetVfioUserDevice & { vfFunctions?: readonly VfioUserDevice[] } {
  if (!input.tap) throw new OptionsError('--device virtio-net needs --tap NAME (the host tap interface)');
  const props: Partial<VirtioNetPciOptions> = {};
  for (const [k, v] of Object.entries(input.options))
    if (k !== 'workers') Object.assign(props, parseQemuDevice(`${k}=${v}`));
  // Validate the options before anything is created on the host (a stand-in backend of the same shape).
  parseVirtioNetPciOptions({
    ...props,
    memory: input.memory,
    backend: new MemoryBackend({
      queues: Number.isInteger(props.queues) && (props.queues ?? 1) > 0 ? props.queues : 1,
    }),
    interrupts: { vector: () => {} },
    ...(input.vfs ? { sriov: { totalVfs: input.vfs } } : {}),
  });
  for (const [i, p] of Object.entries(input.vfPolicies ?? {})) {
    if (!input.vfs || Number(i) >= input.vfs)
      throw new OptionsError(`--vf ${i}: no such VF (--vfs ${input.vfs ?? 0})`);
    parseVfPolicy(Number(i), p);
  }
  const workers = parseServeWorkers(
    input.options.workers,
    props.queues ?? 1,
    input.vfs ?? 0,
    (props.queues ?? 1) < 2 || TapSteering.supported() === null,
  );
  const tap = TapBackend.open({ name: input.tap, queues: props.queues ?? 1, netns: input.netns });
  try {
    if (input.vfs) {
      const f = virtioNetSriovVfioUser({
        options: { ...props, memory: input.memory, backend: tap },
        vfs: input.vfs,
        policies: input.vfPolicies,
      });
      return { ...f.pf, vfFunctions: f.vfs };
    }
    return virtioNetVfioUserDevice({ ...props, memory: input.memory, backend: tap, workers });
  } catch (err) {
    tap.close();
    throw err;
  }
}
