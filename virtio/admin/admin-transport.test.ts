// The administration virtqueue through the virtio-pci transport (VIRTIO 1.3 §2.12, §2.13, §4.1.4.3): an
// SR-IOV PF (FakeDevice, network type) owning the SR-IOV group of its VFs, driven only through config
// space, BAR accessors and guest memory by the synthetic driver. Request/result bytes are written with
// the spec's literal offsets and numbers, not the modules' tables.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { OptionsError } from '../../lib/errors.js';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { PCI_SRIOV_BAR, PCI_SRIOV_CTRL, PCI_SRIOV_NUM_VF, SriovCapability } from '../../pci/sriov.js';
import { sriovDeviceGroup } from './admin-queue.js';
import { FAKE_MAGIC, FakeDevice } from '../fake-device.test-support.js';
import { legacyRingLayout } from '../pci/legacy.js';
import { InterruptCollector, STATUS, VirtioPciDriver } from '../testing/pci-driver.js';
import { SplitDriverQueue } from '../testing/split-driver.js';
import { type VirtioPciSnapshot, VirtioPciTransport } from '../pci/virtio-pci.js';

const MEM_SIZE = 0x400000;
const F_ADMIN_VQ = 1n << 41n;
const F_RING_RESET = 1n << 40n;
const F_EXTRA_QUEUE = 1n << 2n; // FakeDevice: adds a third queue (like virtio-net MQ)

// Common config offsets (§4.1.4.3).
const NUMQ = 0x12;
const STATUS_OFF = 0x14;
const QSEL = 0x16;
const QSIZE = 0x18;
const QMSIX = 0x1a;
const QENABLE = 0x1c;
const QNOFF = 0x1e;
const ADMIN_INDEX = 0x3c;
const ADMIN_NUM = 0x3e;

// Opcodes, group type, statuses (§2.12.1).
const LIST_QUERY = 0;
const LIST_USE = 1;
const LEGACY_COMMON_CFG_WRITE = 2;
const LEGACY_COMMON_CFG_READ = 3;
const LEGACY_DEV_CFG_WRITE = 4;
const LEGACY_DEV_CFG_READ = 5;
const LEGACY_NOTIFY_INFO = 6;
const SRIOV = 1;
const OK = 0;
const EINVAL = 22;
const Q_INVALID_OPCODE = 2;
const Q_INVALID_FIELD = 3;
const Q_INVALID_GROUP = 4;
const Q_INVALID_MEMBER = 5;

const SRIOV_CAP = 0x100;
const PCIE_CAP = 0x40;

interface Setup {
  memory: GuestMemory;
  irq: InterruptCollector;
  t: VirtioPciTransport;
  drv: VirtioPciDriver;
  vfs: (VirtioPciTransport | undefined)[];
  errors: string[];
  sriov: SriovCapability;
}

function setup(
  options: { memory?: GuestMemory; admin?: boolean; notify?: boolean; packed?: boolean } = {},
): Setup {
  const memory = options.memory ?? new GuestMemory([{ address: 0, bytes: new Uint8Array(MEM_SIZE) }]);
  const irq = new InterruptCollector();
  const errors: string[] = [];
  const t = new VirtioPciTransport({
    device: new FakeDevice({ deviceId: 1 }),
    memory,
    interrupts: irq,
    onGuestError: (e) => errors.push(e),
    features: { packed: options.packed ?? false },
  });
  const vfs: (VirtioPciTransport | undefined)[] = [];
  const sriov = new SriovCapability(
    t.function,
    {
      totalVfs: 2,
      vfDeviceId: 0x1041,
      firstVfOffset: 1,
      vfStride: 1,
      vfBars: [
        { index: 1, size: 0x1000, type: 'mem32' },
        { index: 4, size: 0x4000, type: 'mem64', prefetchable: true },
      ],
      rules: 'qemu-11.1',
    },
    {
      createVf: (i, routingId) => {
        const vf = new VirtioPciTransport({
          device: new FakeDevice({ deviceId: 1 }),
          memory,
          interrupts: new InterruptCollector(),
          vf: true,
          routingId,
          msixVectors: 4,
          legacyAccessForAdmin: true,
        });
        vfs[i] = vf;
        return vf.function;
      },
      destroyVf: (i) => {
        vfs[i] = undefined;
      },
    },
  );
  if (options.admin ?? true) {
    const member = (vf: number) => vfs[vf - 1];
    t.setAdminGroups([
      sriovDeviceGroup(sriov, {
        legacyMember: (vf) => member(vf)?.legacyMemberAccess() ?? null,
        ...((options.notify ?? true)
          ? { legacyNotifyInfo: (vf: number) => member(vf)?.legacyNotifyInfo() ?? [] }
          : {}),
      }),
    ]);
  }
  const drv = new VirtioPciDriver(t.function, memory, { interrupts: irq });
  return { memory, irq, t, drv, vfs, errors, sriov };
}

/** Probe, BARs, MSI-X, negotiate (ADMIN_VQ included), config vector 0: everything before the queues. */
function negotiate(s: Setup, wanted: bigint = ~0n): bigint {
  s.drv.probe();
  s.drv.assignBars();
  s.drv.enableMsix();
  const f = s.drv.negotiate(wanted);
  s.drv.setConfigVector(0);
  return f;
}

/** The admin queue set up by queue_select = admin_queue_index (vector 3), then DRIVER_OK. */
function bringUp(s: Setup): number {
  negotiate(s);
  const aq = s.drv.readCommon(ADMIN_INDEX, 2);
  s.drv.setupQueue(aq, { vector: 3 });
  s.drv.driverOk();
  return aq;
}

/** Enables `n` VFs through the PF's SR-IOV capability: NumVFs, VF BAR1/BAR4 bases, VF Enable + VF MSE. */
function enableVfs(s: Setup, n = 2): void {
  s.t.function.configWrite(SRIOV_CAP + PCI_SRIOV_NUM_VF, 2, n);
  s.t.function.configWrite(SRIOV_CAP + PCI_SRIOV_BAR + 4, 4, 0xd000_0000);
  s.t.function.configWrite(SRIOV_CAP + PCI_SRIOV_BAR + 16, 4, 0x0000_000c);
  s.t.function.configWrite(SRIOV_CAP + PCI_SRIOV_BAR + 20, 4, 0x4);
  s.t.function.configWrite(SRIOV_CAP + PCI_SRIOV_CTRL, 2, 0x1 | 0x8);
}

function request(opcode: number, member: bigint, data: number[] = [], groupType = SRIOV): Uint8Array {
  const b = new Uint8Array(24 + data.length);
  const dv = new DataView(b.buffer);
  dv.setUint16(0, opcode, true);
  dv.setUint16(2, groupType, true);
  dv.setBigUint64(16, member, true);
  b.set(data, 24);
  return b;
}

/** offset, reserved[7], data (virtio_admin_cmd_legacy_*_wr_data). */
function wr(offset: number, bytes: number[]): number[] {
  return [offset, 0, 0, 0, 0, 0, 0, 0, ...bytes];
}

function le(v: number | bigint, n: number): number[] {
  const out: number[] = [];
  let x = BigInt(v);
  for (let i = 0; i < n; i++) {
    out.push(Number(x & 0xffn));
    x >>= 8n;
  }
  return out;
}

interface Reply {
  status: number;
  qualifier: number;
  used: number;
  result: Uint8Array;
}

/** Posts one command on admin queue `aq`, kicks it through the notify area, takes the answer. */
function send(s: Setup, aq: number, req: Uint8Array, resultLength = 8): Reply {
  const q = s.drv.queues.get(aq) as SplitDriverQueue;
  q.add([req], [new Uint8Array(8 + resultLength)]);
  s.drv.kick(aq);
  const u = q.getUsed();
  if (!u) throw new Error('admin command not completed');
  return decode(s.memory, u);
}

function decode(
  memory: GuestMemory,
  u: { len: number; segments: { addr: number; len: number; write: boolean }[] },
) {
  const seg = u.segments.find((x) => x.write);
  if (!seg) throw new Error('no writable segment');
  const out = memory.read(seg.addr, seg.len);
  const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
  return {
    status: dv.getUint16(0, true),
    qualifier: dv.getUint16(2, true),
    used: u.len,
    result: out.slice(8, u.len),
  };
}

function u64(b: Uint8Array, at = 0): bigint {
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getBigUint64(at, true);
}

function num(b: Uint8Array): number {
  let v = 0;
  for (let i = b.length - 1; i >= 0; i--) v = v * 256 + (b[i] as number);
  return v;
}

const ALL_LEGACY = [0x7f, 0, 0, 0, 0, 0, 0, 0];

describe('offer and registers', () => {
  it('no admin groups: ADMIN_VQ not offered, admin_queue_index/num read 0, no queue past num_queues', () => {
    const s = setup({ admin: false });
    s.drv.probe();
    s.drv.assignBars();
    expect(s.drv.deviceFeatures() & F_ADMIN_VQ).toBe(0n);
    expect(s.drv.readCommon(ADMIN_INDEX, 2)).toBe(0);
    expect(s.drv.readCommon(ADMIN_NUM, 2)).toBe(0);
    expect(s.t.admin).toBeNull();
  });

  it('a group owner offers ADMIN_VQ (bit 41) and reports index = the largest num_queues, num = 1', () => {
    const s = setup();
    s.drv.probe();
    s.drv.assignBars();
    expect(s.drv.deviceFeatures() & F_ADMIN_VQ).toBe(F_ADMIN_VQ);
    // FakeDevice: 2 queues, 3 once its MQ-like bit 2 is negotiated: the admin queue sits at 3 either way.
    expect(s.drv.readCommon(ADMIN_INDEX, 2)).toBe(3);
    expect(s.drv.readCommon(ADMIN_NUM, 2)).toBe(1);
    s.drv.bars.length = 0;
    negotiate(s, ~F_EXTRA_QUEUE);
    expect(s.drv.numQueues()).toBe(2); // num_queues excludes the admin queue
    expect(s.drv.readCommon(ADMIN_INDEX, 2)).toBe(3);
    // queue 2 does not exist without the extra-queue bit; the admin queue does
    s.drv.writeCommon(QSEL, 2, 2);
    expect(s.drv.readCommon(QSIZE, 2)).toBe(0);
    s.drv.writeCommon(QSEL, 2, 3);
    expect(s.drv.readCommon(QSIZE, 2)).toBe(64);
    expect(s.drv.readCommon(QNOFF, 2)).toBe(3);
    expect(s.drv.readCommon(QMSIX, 2)).toBe(0xffff);
    expect(s.drv.readCommon(QENABLE, 2)).toBe(0);
  });

  it('with the extra queue negotiated, num_queues = 3 and queue 3 is still the admin queue', () => {
    const s = setup();
    negotiate(s);
    expect(s.drv.numQueues()).toBe(3);
    s.drv.writeCommon(QSEL, 2, 2);
    expect(s.drv.readCommon(QSIZE, 2)).toBe(64); // FakeDevice's extra queue
    s.drv.writeCommon(QSEL, 2, 3);
    expect(s.drv.readCommon(QSIZE, 2)).toBe(64);
    s.drv.writeCommon(QSEL, 2, 4);
    expect(s.drv.readCommon(QSIZE, 2)).toBe(0);
  });

  it('the admin queue is not selectable unless the driver accepted ADMIN_VQ', () => {
    const s = setup();
    negotiate(s, ~F_ADMIN_VQ);
    s.drv.writeCommon(QSEL, 2, 3);
    expect(s.drv.readCommon(QSIZE, 2)).toBe(0);
    s.drv.writeCommon(QENABLE, 2, 1); // ignored like any queue past num_queues
    expect(s.drv.readCommon(QENABLE, 2)).toBe(0);
    expect(s.drv.status & STATUS.NEEDS_RESET).toBe(0);
  });

  it('setAdminGroups is refused on a VF, twice, or without groups', () => {
    const s = setup();
    expect(() => s.t.setAdminGroups([sriovDeviceGroup(s.sriov)])).toThrow(OptionsError);
    const plain = setup({ admin: false });
    expect(() => plain.t.setAdminGroups([])).toThrow(OptionsError);
    enableVfs(s);
    expect(() => s.vfs[0]?.setAdminGroups([sriovDeviceGroup(s.sriov)])).toThrow(OptionsError);
  });

  it('property: device queue numbering and registers are the same as without admin queues', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(0n, 1n, 3n, 4n, 5n, 7n), // FakeDevice: bit 1 needs bit 0
        fc.boolean(),
        fc.array(fc.record({ sel: fc.integer({ min: 0, max: 6 }), size: fc.integer({ min: 0, max: 300 }) }), {
          maxLength: 8,
        }),
        (devBits, admin, writes) => {
          const plain = setup({ admin: false });
          const own = setup();
          const base = (1n << 32n) | F_RING_RESET | devBits;
          for (const x of [plain, own]) {
            x.drv.probe();
            x.drv.assignBars();
          }
          for (const [x, f] of [
            [plain, base],
            [own, base | (admin ? F_ADMIN_VQ : 0n)],
          ] as const) {
            x.drv.setStatus(STATUS.ACKNOWLEDGE);
            x.drv.setStatus(STATUS.DRIVER);
            x.drv.writeDriverFeatures(f);
            x.drv.setStatus(STATUS.FEATURES_OK);
          }
          expect(own.drv.status).toBe(plain.drv.status);
          expect(own.drv.status & STATUS.FEATURES_OK).toBe(STATUS.FEATURES_OK);
          expect(own.drv.numQueues()).toBe(plain.drv.numQueues());
          for (const w of writes) {
            if (w.sel === 3 && admin) continue; // the admin queue itself
            for (const x of [plain, own]) {
              x.drv.writeCommon(QSEL, 2, w.sel);
              x.drv.writeCommon(QSIZE, 2, w.size);
            }
          }
          for (let sel = 0; sel < 8; sel++) {
            if (sel === 3 && admin) continue;
            for (const off of [QSIZE, QMSIX, QENABLE, QNOFF, NUMQ]) {
              plain.drv.writeCommon(QSEL, 2, sel);
              own.drv.writeCommon(QSEL, 2, sel);
              expect(own.drv.readCommon(off, 2)).toBe(plain.drv.readCommon(off, 2));
            }
          }
        },
      ),
      { numRuns: 60 },
    );
  });
});

describe('commands through the admin queue', () => {
  it('LIST_QUERY after DRIVER_OK: opcodes 0-6, used length 16, the admin queue vector fires', () => {
    const s = setup();
    const aq = bringUp(s);
    s.irq.takeVectors();
    const r = send(s, aq, request(LIST_QUERY, 0n));
    expect(r).toMatchObject({ status: OK, qualifier: 0, used: 16 });
    expect(u64(r.result)).toBe(0x7fn);
    expect(s.irq.takeVectors()).toEqual([3]);
  });

  it('a packed admin ring (RING_PACKED negotiated) answers the same way', () => {
    const s = setup({ packed: true });
    const aq = bringUp(s);
    expect(s.drv.features & (1n << 34n)).toBe(1n << 34n);
    const q = s.drv.queues.get(aq) as unknown as SplitDriverQueue; // PackedDriverQueue: same add/getUsed
    q.add([request(LIST_QUERY, 0n)], [new Uint8Array(16)]);
    s.drv.kick(aq);
    const u = q.getUsed();
    expect(u && decode(s.memory, u)).toMatchObject({ status: OK, used: 16 });
    expect(u && u64(decode(s.memory, u).result)).toBe(0x7fn);
  });

  it('without legacyNotifyInfo the group offers opcodes 0-5 only', () => {
    const s = setup({ notify: false });
    const aq = bringUp(s);
    expect(u64(send(s, aq, request(LIST_QUERY, 0n)).result)).toBe(0x3fn);
  });

  it('commands queued before DRIVER_OK are executed at DRIVER_OK', () => {
    const s = setup();
    negotiate(s);
    const q = s.drv.setupQueue(3, { vector: 3 }) as SplitDriverQueue;
    q.add([request(LIST_QUERY, 0n)], [new Uint8Array(16)]);
    s.drv.kick(3); // ignored: not DRIVER_OK yet
    expect(q.getUsed()).toBeNull();
    s.drv.driverOk();
    const u = q.getUsed();
    expect(u).not.toBeNull();
    expect(u64(decode(s.memory, u!).result)).toBe(0x7fn);
  });

  it('LIST_USE: a subset is kept, a superset is INVALID_FIELD and keeps the old set', () => {
    const s = setup();
    const aq = bringUp(s);
    enableVfs(s);
    const read = () => send(s, aq, request(LEGACY_COMMON_CFG_READ, 1n, [0]), 4);
    expect(read()).toMatchObject({ status: EINVAL, qualifier: Q_INVALID_OPCODE, used: 8 });
    expect(send(s, aq, request(LIST_USE, 0n, [0x0b, 0, 0, 0, 0, 0, 0, 0]))).toMatchObject({
      status: OK,
      used: 8,
    });
    expect(read()).toMatchObject({ status: OK, used: 12 });
    expect(send(s, aq, request(LIST_USE, 0n, [0xff, 0, 0, 0, 0, 0, 0, 0]))).toMatchObject({
      status: EINVAL,
      qualifier: Q_INVALID_FIELD,
    });
    expect(read().status).toBe(OK);
    expect(send(s, aq, request(LEGACY_DEV_CFG_READ, 1n, [0]), 4).qualifier).toBe(Q_INVALID_OPCODE);
  });

  it('errors as §2.12.1 orders them: group type, opcode, group existence, member, field', () => {
    const s = setup();
    const aq = bringUp(s);
    expect(send(s, aq, request(LIST_USE, 0n, ALL_LEGACY)).status).toBe(OK);
    const e = (req: Uint8Array, len = 4) => {
      const r = send(s, aq, req, len);
      return [r.status, r.qualifier, r.used];
    };
    expect(e(request(LIST_QUERY, 0n, [], 2))).toEqual([EINVAL, Q_INVALID_GROUP, 8]);
    expect(e(request(7, 0n))).toEqual([EINVAL, Q_INVALID_OPCODE, 8]);
    expect(e(request(0x8000, 0n))).toEqual([EINVAL, Q_INVALID_OPCODE, 8]);
    // VF Enable clear: the SR-IOV group does not exist
    expect(e(request(LEGACY_COMMON_CFG_READ, 1n, [0]))).toEqual([EINVAL, Q_INVALID_GROUP, 8]);
    enableVfs(s, 2);
    expect(s.vfs.filter(Boolean)).toHaveLength(2);
    expect(e(request(LEGACY_COMMON_CFG_READ, 0n, [0]))).toEqual([EINVAL, Q_INVALID_MEMBER, 8]);
    expect(e(request(LEGACY_COMMON_CFG_READ, 3n, [0]))).toEqual([EINVAL, Q_INVALID_MEMBER, 8]);
    expect(e(request(LEGACY_COMMON_CFG_READ, 1n << 40n, [0]))).toEqual([EINVAL, Q_INVALID_MEMBER, 8]);
    // a 4-byte read at offset 2 spans two fields; offset 20 without MSI-X is device config, not common
    expect(e(request(LEGACY_COMMON_CFG_READ, 1n, [2]))).toEqual([EINVAL, Q_INVALID_FIELD, 8]);
    expect(e(request(LEGACY_COMMON_CFG_READ, 1n, [20]), 2)).toEqual([EINVAL, Q_INVALID_FIELD, 8]);
    // past the VF's 8 bytes of device config
    expect(e(request(LEGACY_DEV_CFG_READ, 2n, [6]), 4)).toEqual([EINVAL, Q_INVALID_FIELD, 8]);
    expect(e(request(LEGACY_DEV_CFG_WRITE, 2n, wr(8, [1])))).toEqual([EINVAL, Q_INVALID_FIELD, 8]);
    // answers came back on the admin queue only: the PF itself is fine
    expect(s.drv.status & STATUS.NEEDS_RESET).toBe(0);
    expect(s.t.admin?.stats.errors).toBe(11);
  });

  it('a broken admin ring sets DEVICE_NEEDS_RESET (no throw) and the queue is served again after reset', () => {
    const s = setup();
    const aq = bringUp(s);
    const q = s.drv.queues.get(aq) as SplitDriverQueue;
    // a descriptor pointing outside guest memory
    q.add([{ addr: MEM_SIZE + 0x1000, len: 24 }], [new Uint8Array(8)]);
    expect(() => s.drv.kick(aq)).not.toThrow();
    expect(s.drv.status & STATUS.NEEDS_RESET).toBe(STATUS.NEEDS_RESET);
    expect(s.errors.join()).toMatch(/admin queue 3/);
    s.drv.reset();
    s.drv.queues.clear();
    const aq2 = bringUp(s);
    expect(send(s, aq2, request(LIST_QUERY, 0n)).status).toBe(OK);
  });
});

describe('property', () => {
  it('random commands on the admin queue never throw, never break the PF, answer OK/EINVAL within the buffer', () => {
    const s = setup();
    const aq = bringUp(s);
    enableVfs(s);
    send(s, aq, request(LIST_USE, 0n, ALL_LEGACY));
    const q = s.drv.queues.get(aq) as SplitDriverQueue;
    fc.assert(
      fc.property(
        fc.oneof(fc.integer({ min: 0, max: 8 }), fc.integer({ min: 0, max: 0xffff })),
        fc.oneof(fc.constant(SRIOV), fc.integer({ min: 0, max: 0xffff })),
        fc.bigInt({ min: 0n, max: 4n }),
        fc.uint8Array({ maxLength: 24 }),
        fc.integer({ min: 0, max: 80 }),
        (opcode, groupType, member, data, writable) => {
          q.add(
            [request(opcode, member, [...data], groupType)],
            writable > 0 ? [new Uint8Array(writable)] : [],
          );
          expect(() => s.drv.kick(aq)).not.toThrow();
          const u = q.getUsed();
          expect(u).not.toBeNull();
          expect(u!.len).toBeLessThanOrEqual(writable);
          if (writable >= 4) {
            const r = decode(s.memory, u!);
            expect([OK, EINVAL]).toContain(r.status);
            if (r.status === OK) expect(r.qualifier).toBe(0);
            else
              expect([Q_INVALID_OPCODE, Q_INVALID_FIELD, Q_INVALID_GROUP, Q_INVALID_MEMBER]).toContain(
                r.qualifier,
              );
          }
          expect(s.drv.status & STATUS.NEEDS_RESET).toBe(0);
        },
      ),
      { numRuns: 300 },
    );
    expect(s.errors).toEqual([]);
  });
});

describe('legacy access to the VFs', () => {
  function ready() {
    const s = setup();
    const aq = bringUp(s);
    enableVfs(s, 2);
    expect(send(s, aq, request(LIST_USE, 0n, ALL_LEGACY)).status).toBe(OK);
    const vf = (i: number) => s.vfs[i] as VirtioPciTransport;
    return { s, aq, vf };
  }

  it('LEGACY_COMMON_CFG_READ of host features = the VF modern word 0 plus the legacy-only bits', () => {
    const { s, aq, vf } = ready();
    const r = send(s, aq, request(LEGACY_COMMON_CFG_READ, 2n, [0]), 4);
    expect(r).toMatchObject({ status: OK, used: 12 });
    const vfDrv = new VirtioPciDriver(vf(1).function, s.memory);
    vfDrv.probe();
    const modern = Number(vfDrv.deviceFeatures() & 0xffffffffn);
    expect(modern & ((1 << 24) | (1 << 27) | (1 << 30))).toBe(0);
    expect(num(r.result) >>> 0).toBe((modern | (1 << 24) | (1 << 27) | (1 << 30)) >>> 0);
    expect(vfDrv.deviceFeatures() & F_ADMIN_VQ).toBe(0n); // members offer no ADMIN_VQ
  });

  it('LEGACY_DEV_CFG_READ/WRITE reach the VF device config (offset 20, 24 once the VF enables MSI-X)', () => {
    const { s, aq, vf } = ready();
    const r = send(s, aq, request(LEGACY_DEV_CFG_READ, 1n, [0]), 4);
    expect(r).toMatchObject({ status: OK, used: 12 });
    expect(num(r.result)).toBe(FAKE_MAGIC);
    expect(send(s, aq, request(LEGACY_DEV_CFG_WRITE, 1n, wr(4, le(0xa1b2c3d4, 4)))).status).toBe(OK);
    const vfDrv = new VirtioPciDriver(vf(0).function, s.memory);
    vfDrv.probe();
    vfDrv.assignBars(); // VF BARs come from the PF; this sets the VF's Command register
    expect(vfDrv.readDeviceConfig(4, 4) >>> 0).toBe(0xa1b2c3d4);
    // VF 2 is untouched
    expect(num(send(s, aq, request(LEGACY_DEV_CFG_READ, 2n, [4]), 4).result)).toBe(0);
    // with the VF's MSI-X enabled the vectors appear at 20/22 and the config still answers by offset
    vfDrv.enableMsix();
    const v = send(s, aq, request(LEGACY_COMMON_CFG_READ, 1n, [20]), 2);
    expect(v).toMatchObject({ status: OK, used: 10 });
    expect(num(v.result)).toBe(0xffff);
    expect(num(send(s, aq, request(LEGACY_DEV_CFG_READ, 1n, [4]), 4).result) >>> 0).toBe(0xa1b2c3d4);
  });

  it('LEGACY_COMMON_CFG_WRITE of the status reaches the VF (its modern device_status reads it)', () => {
    const { s, aq, vf } = ready();
    expect(send(s, aq, request(LEGACY_COMMON_CFG_WRITE, 1n, wr(18, [3])))).toMatchObject({
      status: OK,
      used: 8,
    });
    expect(vf(0).status).toBe(3);
    const vfDrv = new VirtioPciDriver(vf(0).function, s.memory);
    vfDrv.probe();
    vfDrv.assignBars();
    expect(vfDrv.readCommon(STATUS_OFF, 1)).toBe(3);
    expect(num(send(s, aq, request(LEGACY_COMMON_CFG_READ, 1n, [18]), 1).result)).toBe(3);
    expect(vf(1).status).toBe(0);
  });

  it('LEGACY_NOTIFY_INFO names VF BAR4 0x1800, and a le16 write there notifies the VF queue', () => {
    const { s, aq, vf } = ready();
    const r = send(s, aq, request(LEGACY_NOTIFY_INFO, 1n), 64);
    expect(r).toMatchObject({ status: OK, used: 72 });
    expect([...r.result.subarray(0, 16)]).toEqual([2, 4, 0, 0, 0, 0, 0, 0, ...le(0x1800, 8)]);
    expect([...r.result.subarray(16)]).toEqual(new Array(48).fill(0)); // end markers
    const bar = r.result[1] as number;
    const offset = Number(u64(r.result, 8));
    // PF SR-IOV VF BAR0 is hardwired to 0 (Linux's virtio-vfio checks that VF BAR0 is absent)
    s.t.function.configWrite(SRIOV_CAP + PCI_SRIOV_BAR, 4, 0xffffffff);
    expect(s.t.function.configRead(SRIOV_CAP + PCI_SRIOV_BAR, 4)).toBe(0);

    // A legacy driver brings VF 1 up through the admin commands (what virtio-vfio forwards) ...
    const lw = (off: number, bytes: number[]) =>
      expect(send(s, aq, request(LEGACY_COMMON_CFG_WRITE, 1n, wr(off, bytes))).status).toBe(OK);
    const lr = (off: number, n: number) =>
      num(send(s, aq, request(LEGACY_COMMON_CFG_READ, 1n, [off]), n).result);
    lw(18, [1]);
    lw(18, [3]);
    lw(4, le(lr(0, 4) & 0b111, 4));
    const rings: SplitDriverQueue[] = [];
    for (const i of [0, 1]) {
      lw(14, le(i, 2));
      const n = lr(12, 2);
      expect(n).toBe(256);
      const base = 0x200000 + i * 0x10000;
      const l = legacyRingLayout(base, n);
      rings.push(
        new SplitDriverQueue(s.memory, {
          size: n,
          descAddr: l.desc,
          availAddr: l.avail,
          usedAddr: l.used,
          index: i,
        }),
      );
      lw(8, le(base >>> 12, 4));
    }
    lw(18, [7]);
    expect(vf(0).status).toBe(7);
    const [rx, tx] = rings as [SplitDriverQueue, SplitDriverQueue];
    rx.add([], [{ addr: 0x280000, len: 16 }]);
    tx.add([{ addr: 0x281000, len: 3 }], []);
    s.memory.write(0x281000, new Uint8Array([7, 8, 9]));
    // ... and notifies through the doorbell LEGACY_NOTIFY_INFO gave, with the queue index as data.
    vf(0).function.barWrite(bar, offset, 2, 1);
    const used = rx.getUsed();
    expect(used?.len).toBe(3);
    expect([...s.memory.read(0x280000, 3)]).toEqual([7, 8, 9]);
    expect(tx.getUsed()).not.toBeNull();
    // reading the doorbell has no side effect (the ISR bit stays for the legacy ISR read)
    expect(vf(0).function.barRead(bar, offset, 2)).toBe(0);
    expect(lr(19, 1)).toBe(1);
    expect(lr(19, 1)).toBe(0);
  });

  it('plain (non-VF) transports have no doorbell: writes in the ISR region stay ignored', () => {
    const s = setup();
    const aq = bringUp(s);
    expect(s.t.legacyMemberAccess()).toBeNull();
    expect(s.t.legacyNotifyInfo()).toEqual([]);
    s.t.function.barWrite(4, 0x1800, 2, aq);
    expect((s.drv.queues.get(aq) as SplitDriverQueue).pendingUsed()).toBe(0);
  });
});

describe('reset, FLR, queue reset, snapshot', () => {
  it('device reset (status 0) puts LIST_USE back to {0, 1} and clears the admin queue registers', () => {
    const s = setup();
    const aq = bringUp(s);
    enableVfs(s);
    send(s, aq, request(LIST_USE, 0n, ALL_LEGACY));
    expect(send(s, aq, request(LEGACY_COMMON_CFG_READ, 1n, [18]), 1).status).toBe(OK);
    s.drv.writeCommon(STATUS_OFF, 1, 0);
    expect(s.drv.readCommon(STATUS_OFF, 1)).toBe(0);
    s.drv.queues.clear();
    negotiate(s);
    s.drv.writeCommon(QSEL, 2, aq);
    expect(s.drv.readCommon(QENABLE, 2)).toBe(0);
    expect(s.drv.readCommon(QMSIX, 2)).toBe(0xffff);
    s.drv.setupQueue(aq, { vector: 3 });
    s.drv.driverOk();
    expect(send(s, aq, request(LEGACY_COMMON_CFG_READ, 1n, [18]), 1).qualifier).toBe(Q_INVALID_OPCODE);
    expect(send(s, aq, request(LIST_QUERY, 0n)).status).toBe(OK);
  });

  it('PF FLR resets the admin state too', () => {
    const s = setup();
    const aq = bringUp(s);
    send(s, aq, request(LIST_USE, 0n, ALL_LEGACY));
    s.t.function.configWrite(PCIE_CAP + 8, 2, 0x8000); // DevCtl Initiate FLR
    expect(s.t.status).toBe(0);
    s.drv.queues.clear();
    s.drv.bars.length = 0;
    const aq2 = bringUp(s);
    enableVfs(s);
    expect(send(s, aq2, request(LEGACY_COMMON_CFG_READ, 1n, [18]), 1).qualifier).toBe(Q_INVALID_OPCODE);
  });

  it('queue_reset of the admin queue alone keeps the LIST_USE state', () => {
    const s = setup();
    const aq = bringUp(s);
    enableVfs(s);
    send(s, aq, request(LIST_USE, 0n, ALL_LEGACY));
    s.drv.resetQueue(aq);
    s.drv.writeCommon(QSEL, 2, aq);
    expect(s.drv.readCommon(QENABLE, 2)).toBe(0);
    expect(s.drv.readCommon(QSIZE, 2)).toBe(64);
    s.drv.setupQueue(aq, { vector: 3 });
    expect(send(s, aq, request(LEGACY_COMMON_CFG_READ, 1n, [18]), 1).status).toBe(OK);
  });

  it('snapshot/restore carries the LIST_USE state and the admin ring position (JSON)', () => {
    const s = setup();
    const aq = bringUp(s);
    send(s, aq, request(LIST_USE, 0n, [0x0f, 0, 0, 0, 0, 0, 0, 0]));
    send(s, aq, request(LIST_QUERY, 0n));
    const snap = JSON.parse(JSON.stringify(s.t.snapshot())) as VirtioPciSnapshot;
    expect(snap.transport.admin?.queues[0]?.enabled).toBe(true);
    const pci = s.t.function.snapshot();
    const msix = s.t.msix?.snapshot();

    const d = setup({ memory: s.memory });
    d.t.function.restore(pci);
    if (msix) d.t.msix?.restore(msix);
    d.t.restore(snap);
    expect(d.t.driverFeatures & F_ADMIN_VQ).toBe(F_ADMIN_VQ);
    // the same driver-side ring, now served by the restored transport
    const q = s.drv.queues.get(aq) as SplitDriverQueue;
    const notify = 0x3000 + 4 * aq;
    // opcode 3 is in use (group absent → INVALID_GROUP, not INVALID_OPCODE); opcode 5 is not
    q.add([request(LEGACY_COMMON_CFG_READ, 1n, [18])], [new Uint8Array(9)]);
    q.add([request(LEGACY_DEV_CFG_READ, 1n, [0])], [new Uint8Array(12)]);
    d.t.function.barWrite(4, notify, 2, aq);
    const a = q.getUsed();
    const b = q.getUsed();
    expect(a && decode(d.memory, a).qualifier).toBe(Q_INVALID_GROUP);
    expect(b && decode(d.memory, b).qualifier).toBe(Q_INVALID_OPCODE);
    expect(q.getUsed()).toBeNull();

    // a snapshot of a plain transport has no admin part; restoring it into an owner resets the LIST_USE set
    const plain = setup({ admin: false });
    expect(plain.t.snapshot().transport.admin).toBeUndefined();
  });

  it('restoring a snapshot without admin state leaves LIST_USE at its reset value', () => {
    const s = setup();
    const aq = bringUp(s);
    send(s, aq, request(LIST_USE, 0n, ALL_LEGACY));
    const snap = s.t.snapshot();
    delete snap.transport.admin;
    s.t.restore(snap);
    expect(s.t.admin?.snapshot()).toEqual(setup().t.admin?.snapshot());
  });
});
