// The SR-IOV virtio-net PF's administration virtqueue (VIRTIO 1.3 §2.12, §2.13) through the public
// object only: config space, BAR accessors and guest memory, with the synthetic driver. The VFs are reached
// the way Linux's virtio-vfio-pci reaches them for a legacy guest: LIST_QUERY/LIST_USE, then the legacy
// common/device config commands and the notify address LEGACY_NOTIFY_INFO reports.
import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { MemoryBackend } from '../../lib/net/memory-backend.js';
import { PCI_SRIOV_BAR, PCI_SRIOV_CTRL, PCI_SRIOV_NUM_VF } from '../../pci/sriov.js';
import { legacyRingLayout } from '../../virtio/pci/legacy.js';
import { InterruptCollector, VirtioPciDriver } from '../../virtio/testing/pci-driver.js';
import { SplitDriverQueue } from '../../virtio/testing/split-driver.js';
import { arp } from '../testing/frames.js';
import { createVirtioNetPci, type VirtioNetPci, vfMac } from '../virtio-net-pci.js';

const PF_MAC = '52:54:00:12:34:56';
const F_ADMIN_VQ = 1n << 41n;
const F_SR_IOV = 1n << 37n;
const F_MQ = 1n << 22n;
const LEGACY_ONLY = (1 << 24) | (1 << 27) | (1 << 30);

const NUMQ = 0x12;
const QSEL = 0x16;
const QSIZE = 0x18;
const ADMIN_INDEX = 0x3c;
const ADMIN_NUM = 0x3e;

const LIST_QUERY = 0;
const LIST_USE = 1;
const LEGACY_COMMON_CFG_WRITE = 2;
const LEGACY_COMMON_CFG_READ = 3;
const LEGACY_DEV_CFG_WRITE = 4;
const LEGACY_DEV_CFG_READ = 5;
const LEGACY_NOTIFY_INFO = 6;
const EINVAL = 22;
const Q_INVALID_FIELD = 3;
const Q_INVALID_GROUP = 4;
const Q_INVALID_MEMBER = 5;
const SRIOV_CAP = 0x100; // QEMU 11.1: SR-IOV at 0x100 on the PF

function setup(options: { queues?: number; sriov?: boolean; totalVfs?: number } = {}) {
  const memory = new GuestMemory([{ address: 0, bytes: new Uint8Array(16 << 20) }]);
  const irq = new InterruptCollector();
  const vfBackends: MemoryBackend[] = [];
  const dev = createVirtioNetPci({
    memory,
    backend: new MemoryBackend(),
    interrupts: irq,
    mac: PF_MAC,
    queues: options.queues ?? 1,
    mq: (options.queues ?? 1) > 1,
    ...((options.sriov ?? true)
      ? {
          sriov: {
            totalVfs: options.totalVfs ?? 2,
            vfBackend: (i: number) => {
              const b = new MemoryBackend();
              vfBackends[i] = b;
              return b;
            },
          },
        }
      : {}),
  });
  const drv = new VirtioPciDriver(dev, memory, { interrupts: irq });
  return { memory, irq, dev, drv, vfBackends };
}

type Setup = ReturnType<typeof setup>;

function bringUp(s: Setup, wanted: bigint = ~0n): number {
  s.drv.probe();
  s.drv.assignBars();
  s.drv.enableMsix();
  s.drv.negotiate(wanted);
  s.drv.setConfigVector(0);
  const aq = s.drv.readCommon(ADMIN_INDEX, 2);
  s.drv.setupQueue(aq, { vector: 3 });
  s.drv.driverOk();
  return aq;
}

function enableVfs(dev: VirtioNetPci, n: number): void {
  dev.configWrite(SRIOV_CAP + PCI_SRIOV_NUM_VF, 2, n);
  dev.configWrite(SRIOV_CAP + PCI_SRIOV_BAR + 4, 4, 0xd000_0000);
  dev.configWrite(SRIOV_CAP + PCI_SRIOV_BAR + 16, 4, 0x0000_000c);
  dev.configWrite(SRIOV_CAP + PCI_SRIOV_BAR + 20, 4, 0x4);
  dev.configWrite(SRIOV_CAP + PCI_SRIOV_CTRL, 2, 0x9); // VF Enable + VF MSE
}

function request(opcode: number, member: bigint, data: number[] = []): Uint8Array {
  const b = new Uint8Array(24 + data.length);
  const dv = new DataView(b.buffer);
  dv.setUint16(0, opcode, true);
  dv.setUint16(2, 1, true); // SR-IOV group
  dv.setBigUint64(16, member, true);
  b.set(data, 24);
  return b;
}

const wr = (offset: number, bytes: number[]) => [offset, 0, 0, 0, 0, 0, 0, 0, ...bytes];

function le(v: number, n: number): number[] {
  return Array.from({ length: n }, (_, i) => Math.floor(v / 2 ** (8 * i)) & 0xff);
}

function num(b: Uint8Array): number {
  let v = 0;
  for (let i = b.length - 1; i >= 0; i--) v = v * 256 + (b[i] as number);
  return v;
}

function send(s: Setup, aq: number, req: Uint8Array, resultLength = 8) {
  const q = s.drv.queues.get(aq) as SplitDriverQueue;
  q.add([req], [new Uint8Array(8 + resultLength)]);
  s.drv.kick(aq);
  const u = q.getUsed();
  if (!u) throw new Error('admin command not completed');
  const seg = u.segments.find((x) => x.write)!;
  const out = s.memory.read(seg.addr, seg.len);
  const dv = new DataView(out.buffer, out.byteOffset);
  return {
    status: dv.getUint16(0, true),
    qualifier: dv.getUint16(2, true),
    used: u.len,
    result: out.slice(8, u.len),
  };
}

function macString(b: Uint8Array): string {
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

describe('virtio-net-pci administration virtqueue', () => {
  it('without SR-IOV: no ADMIN_VQ, admin_queue_index/num read 0', () => {
    const s = setup({ sriov: false });
    s.drv.probe();
    s.drv.assignBars();
    expect(s.drv.deviceFeatures() & (F_ADMIN_VQ | F_SR_IOV)).toBe(0n);
    expect(s.drv.readCommon(ADMIN_INDEX, 2)).toBe(0);
    expect(s.drv.readCommon(ADMIN_NUM, 2)).toBe(0);
  });

  it('the SR-IOV PF offers ADMIN_VQ at index 2·queues + 1, whether or not MQ is negotiated', () => {
    for (const mq of [false, true]) {
      const s = setup({ queues: 4 });
      s.drv.probe();
      s.drv.assignBars();
      expect(s.drv.deviceFeatures() & (F_ADMIN_VQ | F_SR_IOV)).toBe(F_ADMIN_VQ | F_SR_IOV);
      const aq = bringUp(s, mq ? ~0n : ~F_MQ);
      expect(aq).toBe(9);
      expect(s.drv.readCommon(ADMIN_NUM, 2)).toBe(1);
      expect(s.drv.readCommon(NUMQ, 2)).toBe(mq ? 9 : 3);
      // device queues stop at num_queues; nothing between them and the admin queue
      s.drv.writeCommon(QSEL, 2, mq ? 8 : 2);
      expect(s.drv.readCommon(QSIZE, 2)).toBeGreaterThan(0);
      for (let i = mq ? 9 : 3; i < 9; i++) {
        s.drv.writeCommon(QSEL, 2, i);
        expect(s.drv.readCommon(QSIZE, 2)).toBe(0);
      }
      s.drv.writeCommon(QSEL, 2, 9);
      expect(s.drv.readCommon(QSIZE, 2)).toBe(64);
      // Opcodes 0-6 (legacy access) and 7-0x11 (VIRTIO 1.4 capabilities, resource objects, device parts).
      expect([...send(s, aq, request(LIST_QUERY, 0n)).result]).toEqual([0xff, 0xff, 0x03, 0, 0, 0, 0, 0]);
    }
  });

  it('LIST_QUERY, LIST_USE, then legacy access to 2 VFs enabled through the SR-IOV capability', () => {
    const s = setup();
    const aq = bringUp(s);
    const q = send(s, aq, request(LIST_QUERY, 0n));
    expect(q).toMatchObject({ status: 0, qualifier: 0, used: 16 });
    expect([...q.result]).toEqual([0xff, 0xff, 0x03, 0, 0, 0, 0, 0]);
    expect(send(s, aq, request(LIST_USE, 0n, [0x7f, 0, 0, 0, 0, 0, 0, 0]))).toMatchObject({
      status: 0,
      used: 8,
    });
    // before VF Enable the group does not exist
    expect(send(s, aq, request(LEGACY_COMMON_CFG_READ, 1n, [0]), 4).qualifier).toBe(Q_INVALID_GROUP);
    enableVfs(s.dev, 2);
    expect(s.dev.vfs).toHaveLength(2);

    // host features of VF 2: its modern word 0 plus the legacy-only bits, never ADMIN_VQ / SR_IOV
    const hf = send(s, aq, request(LEGACY_COMMON_CFG_READ, 2n, [0]), 4);
    expect(hf).toMatchObject({ status: 0, used: 12 });
    const vfDrv = new VirtioPciDriver(s.dev.vfs[1]!, s.memory);
    vfDrv.probe();
    vfDrv.assignBars();
    const vfFeatures = vfDrv.deviceFeatures();
    expect(vfFeatures & (F_ADMIN_VQ | F_SR_IOV)).toBe(0n);
    // Legacy access shows the legacy-only bits, VIRTIO_NET_F_GSO (6) included (QEMU legacy_features).
    expect(num(hf.result)).toBe((Number(vfFeatures & 0xffffffffn) | LEGACY_ONLY | (1 << 6)) >>> 0);

    // MAC of each VF (legacy device config, 6 bytes at 0) and the status field
    for (const vf of [1, 2]) {
      const m = send(s, aq, request(LEGACY_DEV_CFG_READ, BigInt(vf), [0]), 6);
      expect(m).toMatchObject({ status: 0, used: 14 });
      expect(macString(m.result)).toBe(vfMac(PF_MAC, vf - 1));
    }
    expect(num(send(s, aq, request(LEGACY_DEV_CFG_READ, 1n, [6]), 2).result)).toBe(1); // LINK_UP
    // an access spanning mac and status is not one field
    expect(send(s, aq, request(LEGACY_DEV_CFG_READ, 1n, [4]), 4)).toMatchObject({
      status: EINVAL,
      qualifier: Q_INVALID_FIELD,
    });
    // a legacy driver may set the MAC through the device config (no VERSION_1)
    expect(send(s, aq, request(LEGACY_DEV_CFG_WRITE, 2n, wr(5, [0xee]))).status).toBe(0);
    expect(s.dev.vfs[1]!.net.mac[5]).toBe(0xee);

    // status write to VF 1 only
    expect(send(s, aq, request(LEGACY_COMMON_CFG_WRITE, 1n, wr(18, [3]))).status).toBe(0);
    expect(s.dev.vfs[0]!.transport.status).toBe(3);
    expect(s.dev.vfs[1]!.transport.status).toBe(0);
    expect(num(send(s, aq, request(LEGACY_COMMON_CFG_READ, 1n, [18]), 1).result)).toBe(3);

    // notify info: VF BAR4 + 0x1800, then the end marker
    const n = send(s, aq, request(LEGACY_NOTIFY_INFO, 2n), 64);
    expect(n).toMatchObject({ status: 0, used: 72 });
    expect([...n.result.subarray(0, 16)]).toEqual([2, 4, 0, 0, 0, 0, 0, 0, 0x00, 0x18, 0, 0, 0, 0, 0, 0]);
    expect(n.result.subarray(16).every((b) => b === 0)).toBe(true);

    expect(send(s, aq, request(LEGACY_COMMON_CFG_READ, 3n, [0]), 4).qualifier).toBe(Q_INVALID_MEMBER);
    // the VFs' BAR0 stays absent (virtio-vfio requires it)
    s.dev.configWrite(SRIOV_CAP + PCI_SRIOV_BAR, 4, 0xffffffff);
    expect(s.dev.configRead(SRIOV_CAP + PCI_SRIOV_BAR, 4)).toBe(0);
    expect(s.dev.vfs[0]!.bars[0]).toBeNull();
  });

  it('a legacy driver transmits through VF 1 via the admin commands and the notify doorbell', () => {
    const s = setup();
    const aq = bringUp(s);
    send(s, aq, request(LIST_USE, 0n, [0x7f, 0, 0, 0, 0, 0, 0, 0]));
    enableVfs(s.dev, 2);
    const lw = (off: number, bytes: number[]) =>
      expect(send(s, aq, request(LEGACY_COMMON_CFG_WRITE, 1n, wr(off, bytes))).status).toBe(0);
    const lr = (off: number, n: number) =>
      num(send(s, aq, request(LEGACY_COMMON_CFG_READ, 1n, [off]), n).result);
    lw(18, [0]); // reset
    lw(18, [1]);
    lw(18, [3]);
    const MAC = 1 << 5;
    expect(lr(0, 4) & MAC).toBe(MAC);
    lw(4, le(MAC, 4)); // no mergeable buffers: 10-byte legacy header
    lw(14, le(1, 2)); // tx queue
    const size = lr(12, 2);
    expect(size).toBe(256);
    const base = 0x400000;
    const l = legacyRingLayout(base, size);
    const tx = new SplitDriverQueue(s.memory, {
      size,
      descAddr: l.desc,
      availAddr: l.avail,
      usedAddr: l.used,
      index: 1,
    });
    lw(8, le(base / 4096, 4));
    lw(18, [7]);
    const info = send(s, aq, request(LEGACY_NOTIFY_INFO, 1n), 64).result;
    const seen: Uint8Array[] = [];
    s.vfBackends[0]!.onFrame((f) => seen.push(f));
    const frame = arp(1, vfMac(PF_MAC, 0), '10.0.0.9', '00:00:00:00:00:00', '10.0.0.1');
    s.memory.write(0x500000, new Uint8Array(10));
    s.memory.write(0x500010, frame);
    tx.add(
      [
        { addr: 0x500000, len: 10 },
        { addr: 0x500010, len: frame.length },
      ],
      [],
    );
    s.dev.vfs[0]!.barWrite(info[1]!, Number(num(info.subarray(8, 16))), 2, 1);
    expect(seen).toHaveLength(1);
    expect([...seen[0]!]).toEqual([...frame]);
    expect(tx.getUsed()).not.toBeNull();
    expect(s.vfBackends[1]!.stats().transmitted).toBe(0);
  });

  it('QEMU 11.1 SR-IOV rules: VF Enable with NumVFs > TotalVFs is refused, so the group does not exist', () => {
    const s = setup({ totalVfs: 2 });
    const aq = bringUp(s);
    send(s, aq, request(LIST_USE, 0n, [0x7f, 0, 0, 0, 0, 0, 0, 0]));
    enableVfs(s.dev, 3);
    expect(s.dev.configRead(SRIOV_CAP + PCI_SRIOV_CTRL, 2) & 1).toBe(0);
    expect(send(s, aq, request(LEGACY_COMMON_CFG_READ, 1n, [0]), 4).qualifier).toBe(Q_INVALID_GROUP);
  });

  it('device snapshot/restore keeps the LIST_USE set; a PF reset clears it', () => {
    const s = setup();
    const aq = bringUp(s);
    send(s, aq, request(LIST_USE, 0n, [0x0f, 0, 0, 0, 0, 0, 0, 0]));
    enableVfs(s.dev, 2);
    const snap = JSON.parse(JSON.stringify(s.dev.snapshot()));
    expect(snap.transport.transport.admin.commands).toBeDefined();

    // restore into a fresh device built the same way (own VF backends, as setup) on the same memory, and
    // continue on the same admin ring
    const d = createVirtioNetPci({
      memory: s.memory,
      backend: new MemoryBackend(),
      interrupts: s.irq,
      mac: PF_MAC,
      sriov: { totalVfs: 2, vfBackend: () => new MemoryBackend() },
    });
    d.restore(snap);
    expect(d.vfs).toHaveLength(2);
    const q = s.drv.queues.get(aq) as SplitDriverQueue;
    const post = (req: Uint8Array, len: number) => q.add([req], [new Uint8Array(len)]);
    post(request(LEGACY_COMMON_CFG_READ, 1n, [18]), 9);
    post(request(LEGACY_DEV_CFG_READ, 1n, [0]), 14);
    d.barWrite(4, 0x3000 + 4 * aq, 2, aq);
    const status = () => {
      const u = q.getUsed()!;
      const seg = u.segments.find((x) => x.write)!;
      return new DataView(s.memory.read(seg.addr, 4).buffer).getUint16(2, true);
    };
    expect(status()).toBe(0); // opcode 3 in use after restore
    expect(status()).toBe(2); // opcode 5 was not in the LIST_USE set: INVALID_OPCODE

    d.reset();
    expect(d.transport.admin?.snapshot()).toEqual(setup().dev.transport.admin?.snapshot());
  });
});
