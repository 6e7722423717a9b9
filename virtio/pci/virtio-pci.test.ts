// virtio-pci transport behaviour, driven only through config space, BAR accessors and guest memory
// (VirtioPciDriver from virtio/testing, or raw barRead/barWrite), with FakeDevice's loopback behind it.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { FAKE_MAGIC, FakeDevice, type FakeDeviceOptions } from '../fake-device.test-support.js';
import { PackedDriverQueue } from '../testing/packed-driver.js';
import { InterruptCollector, NO_VECTOR, STATUS, VirtioPciDriver } from '../testing/pci-driver.js';
import { SplitDriverQueue, type UsedBuffer } from '../testing/split-driver.js';
import { legacyRingLayout } from './legacy.js';
import { type VirtioPciOptions, VirtioPciTransport } from './virtio-pci.js';

const MEM_SIZE = 0x200000;
const F_RING_PACKED = 1n << 34n;
const F_NOTIFICATION_DATA = 1n << 38n;
const F_RING_RESET = 1n << 40n;
const F_EVENT_IDX = 1n << 29n;
const F_VERSION_1 = 1n << 32n;

// Common config offsets used directly.
const STATUS_OFF = 0x14;
const QSEL = 0x16;
const QSIZE = 0x18;
const QMSIX = 0x1a;
const QENABLE = 0x1c;
const QRESET = 0x3a;
const GEN = 0x15;

function setup(opts: Partial<VirtioPciOptions> = {}, dev: FakeDeviceOptions = {}) {
  const memory = new GuestMemory([{ address: 0, bytes: new Uint8Array(MEM_SIZE) }]);
  const irq = new InterruptCollector();
  const device = new FakeDevice(dev);
  const errors: string[] = [];
  const t = new VirtioPciTransport({
    device,
    memory,
    interrupts: irq,
    onGuestError: (e) => errors.push(e),
    ...opts,
  });
  const drv = new VirtioPciDriver(t.function, memory, { interrupts: irq });
  return { t, device, memory, irq, drv, errors };
}

/** Bring-up to the point before DRIVER_OK, as Linux does it. */
function upToFeatures(s: ReturnType<typeof setup>, wanted: bigint = ~0n, msix = true) {
  s.drv.probe();
  s.drv.assignBars();
  if (msix) s.drv.enableMsix();
  const f = s.drv.negotiate(wanted);
  if (msix) s.drv.setConfigVector(0);
  return f;
}

/** Post an rx buffer on queue 0 and `data` on queue 1, kick queue 1; return what came back on queue 0. */
function echo(drv: VirtioPciDriver, data: Uint8Array): UsedBuffer | null {
  const rx = drv.queues.get(0);
  const tx = drv.queues.get(1);
  if (!rx || !tx) throw new Error('queues not set up');
  // re-arm used-buffer notifications (used_event / flags), as virtqueue_enable_cb after a poll
  rx.enableInterrupts();
  tx.enableInterrupts();
  rx.add([], [new Uint8Array(data.length + 16)]);
  tx.add([data], []);
  drv.kick(1);
  const used = rx.getUsed();
  tx.getUsed();
  return used;
}

function readBack(memory: GuestMemory, used: UsedBuffer): Uint8Array {
  const seg = used.segments[0];
  if (!seg) throw new Error('no segment');
  return memory.read(seg.addr, used.len);
}

describe('bring-up and data path', () => {
  it('split rings: loopback through the notify area, MSI-X messages on the queues vectors', () => {
    const s = setup();
    const f = s.drv.initialize(~0n, [0, 1]);
    expect(f & F_VERSION_1).toBe(F_VERSION_1);
    expect(s.device.events).toContain(`activate 0x${f.toString(16)}`);
    const data = Uint8Array.from({ length: 100 }, (_, i) => i * 7);
    const used = echo(s.drv, data);
    expect(used?.len).toBe(100);
    expect(readBack(s.memory, used as UsedBuffer)).toEqual(data);
    // queue i is on vector i + 1 (config on 0); the fake signals tx (1) then rx (0)
    expect(s.irq.takeVectors()).toEqual([2, 1]);
    expect(s.t.function.intxAsserted).toBe(false);
  });

  it('packed rings (VIRTIO_F_RING_PACKED): same loopback, queue sizes need not be powers of two', () => {
    const s = setup({ features: { packed: true } });
    upToFeatures(s);
    expect(s.drv.features & F_RING_PACKED).toBe(F_RING_PACKED);
    s.drv.setupQueue(0, { size: 100 });
    s.drv.setupQueue(1, { size: 3 });
    s.drv.driverOk();
    expect(s.drv.queues.get(0)).toBeInstanceOf(PackedDriverQueue);
    for (let i = 0; i < 5; i++) {
      const data = new Uint8Array([i, 1, 2, 3]);
      const used = echo(s.drv, data);
      expect(readBack(s.memory, used as UsedBuffer)).toEqual(data);
    }
    expect(s.device.moved).toBe(20);
  });

  it('VIRTIO_F_NOTIFICATION_DATA: 32-bit kicks carrying the avail index work', () => {
    const s = setup({ features: { notificationData: true } });
    s.drv.initialize(~0n, [0, 1]);
    expect(s.drv.features & F_NOTIFICATION_DATA).toBe(F_NOTIFICATION_DATA);
    const used = echo(s.drv, new Uint8Array([9, 8, 7]));
    expect(used?.len).toBe(3);
  });

  it('INTx when MSI-X is off: ISR bit 0, pin asserted; reading the ISR clears it and drops the pin', () => {
    const s = setup();
    s.drv.probe();
    s.drv.assignBars();
    s.drv.negotiate();
    s.drv.setupQueue(0, { vector: NO_VECTOR });
    s.drv.setupQueue(1, { vector: NO_VECTOR });
    s.drv.driverOk();
    echo(s.drv, new Uint8Array(8));
    expect(s.irq.messages).toEqual([]);
    expect(s.irq.intxLevel).toBe(true);
    expect(s.t.function.configRead(0x06, 2) & 0x08).toBe(0x08); // Status.Interrupt Status
    expect(s.drv.readIsr()).toBe(1);
    expect(s.irq.intxLevel).toBe(false);
    expect(s.drv.readIsr()).toBe(0);
    // Command.Interrupt Disable masks the pin but not the ISR
    s.t.function.configWrite(0x04, 2, s.t.function.configRead(0x04, 2) | 0x400);
    echo(s.drv, new Uint8Array(8));
    expect(s.irq.intxLevel).toBe(false);
    expect(s.drv.readIsr()).toBe(1);
  });

  it('a queue mapped to NO_VECTOR with MSI-X on gets no message; a masked vector is held pending and sent on unmask', () => {
    const s = setup();
    upToFeatures(s);
    s.drv.setupQueue(0, { vector: NO_VECTOR });
    s.drv.setupQueue(1, { vector: 2 });
    s.drv.driverOk();
    const m = s.drv.msix;
    if (!m) throw new Error('no msix');
    s.t.function.barWrite(m.tableBar, m.tableOffset + 16 * 2 + 12, 4, 1); // mask vector 2
    echo(s.drv, new Uint8Array(4));
    expect(s.irq.takeVectors()).toEqual([]);
    expect(Number(s.t.function.barRead(m.pbaBar, m.pbaOffset, 8)) & 0b100).toBe(0b100);
    s.t.function.barWrite(m.tableBar, m.tableOffset + 16 * 2 + 12, 4, 0);
    expect(s.irq.takeVectors()).toEqual([2]);
    expect(s.drv.readIsr()).toBe(1); // QEMU sets ISR bit 0 even with MSI-X (nobody reads it)
  });

  it('a per-vector sink (VMM emulates the MSI-X table, e.g. vfio-user) gets vector(n)', () => {
    const memory = new GuestMemory([{ address: 0, bytes: new Uint8Array(MEM_SIZE) }]);
    const vectors: number[] = [];
    const t = new VirtioPciTransport({
      device: new FakeDevice(),
      memory,
      interrupts: { vector: (n) => vectors.push(n) },
    });
    const drv = new VirtioPciDriver(t.function, memory);
    drv.initialize(~0n, [0, 1]);
    echo(drv, new Uint8Array(3));
    expect(vectors).toEqual([2, 1]);
  });

  it('vectors out of range read back NO_VECTOR; valid ones stick', () => {
    const s = setup({ msixVectors: 3 });
    upToFeatures(s);
    expect(s.drv.setConfigVector(2)).toBe(2);
    expect(s.drv.setConfigVector(3)).toBe(NO_VECTOR);
    expect(s.drv.setConfigVector(0x7ff)).toBe(NO_VECTOR);
    s.drv.writeCommon(QSEL, 2, 1);
    s.drv.writeCommon(QMSIX, 2, 1);
    expect(s.drv.readCommon(QMSIX, 2)).toBe(1);
    s.drv.writeCommon(QMSIX, 2, 5);
    expect(s.drv.readCommon(QMSIX, 2)).toBe(NO_VECTOR);
  });

  it('without an MSI-X capability every vector reads NO_VECTOR and interrupts use INTx', () => {
    const s = setup({ msixVectors: 0 });
    s.drv.probe();
    expect(s.drv.msix).toBeNull();
    s.drv.assignBars();
    s.drv.negotiate();
    expect(s.drv.setConfigVector(0)).toBe(NO_VECTOR);
    s.drv.setupQueue(0);
    s.drv.setupQueue(1);
    s.drv.driverOk();
    echo(s.drv, new Uint8Array(1));
    expect(s.irq.intxLevel).toBe(true);
  });
});

describe('device config, generation and config interrupts', () => {
  it('reads the device config; bytes past its length read all-ones; writes reach the device', () => {
    const s = setup();
    upToFeatures(s);
    expect(s.drv.readDeviceConfig(0, 4)).toBe(FAKE_MAGIC);
    // an unaligned 4-byte read is two 2-byte pieces (QEMU): bytes 6-7 exist, 8-9 do not
    expect(s.drv.readDeviceConfig(6, 4)).toBe(0xffff0000);
    expect(s.drv.readDeviceConfig(8, 4)).toBe(0xffffffff);
    expect(s.drv.readDeviceConfig(8, 1)).toBe(0xff);
    s.drv.writeDeviceConfig(0, 4, 0); // read-only in the device
    expect(s.drv.readDeviceConfig(0, 4)).toBe(FAKE_MAGIC);
    s.drv.writeDeviceConfig(8, 4, 0x1234); // past the end: dropped
    expect(s.device.events.filter((e) => e.startsWith('config'))).toEqual([]);
  });

  it('a config change after DRIVER_OK bumps config_generation and sends the config vector with ISR bits 0|1', () => {
    const s = setup();
    upToFeatures(s);
    const g0 = s.drv.readCommon(GEN, 1);
    // before DRIVER_OK the device has no context to report through (QEMU: virtio_notify_config returns early)
    s.drv.writeDeviceConfig(4, 4, 0xdead);
    expect(s.drv.readCommon(GEN, 1)).toBe(g0);
    expect(s.irq.takeVectors()).toEqual([]);
    s.drv.setupQueue(0);
    s.drv.setupQueue(1);
    s.drv.driverOk();
    s.drv.readIsr();
    s.drv.writeDeviceConfig(4, 2, 0xbeef);
    expect(s.drv.readCommon(GEN, 1)).toBe((g0 + 1) & 0xff);
    expect(s.irq.takeVectors()).toEqual([0]);
    expect(s.drv.readIsr()).toBe(3); // QEMU virtio_notify_config: ISR |= 3
    expect(s.drv.readDeviceConfig(4, 4)).toBe(0xbeef);
  });

  it('config_generation wraps at 8 bits', () => {
    const s = setup();
    s.drv.initialize(~0n, [0, 1]);
    const g0 = s.drv.readCommon(GEN, 1);
    for (let i = 0; i < 255; i++) s.drv.writeDeviceConfig(4, 1, i);
    expect(s.drv.readCommon(GEN, 1)).toBe((g0 + 255) & 0xff);
    s.drv.writeDeviceConfig(4, 1, 0);
    expect(s.drv.readCommon(GEN, 1)).toBe(g0);
  });
});

describe('status state machine', () => {
  it('ACKNOWLEDGE and DRIVER stick; reset by writing 0 reads 0 at once and clears everything', () => {
    const s = setup();
    s.drv.probe();
    s.drv.assignBars();
    s.drv.enableMsix();
    s.drv.setStatus(STATUS.ACKNOWLEDGE);
    expect(s.drv.status).toBe(1);
    s.drv.setStatus(STATUS.DRIVER);
    expect(s.drv.status).toBe(3);
    s.drv.writeDriverFeatures(F_VERSION_1 | 1n);
    s.drv.setConfigVector(1);
    s.drv.writeCommon(QSEL, 2, 1);
    s.drv.writeCommon(QSIZE, 2, 16);
    s.drv.writeCommon(QMSIX, 2, 2);
    s.drv.writeCommon(0x20, 4, 0x1000);
    s.drv.writeCommon(STATUS_OFF, 1, 0);
    expect(s.drv.status).toBe(0);
    expect(s.drv.readCommon(0x10, 2)).toBe(NO_VECTOR);
    expect(s.drv.readCommon(QSEL, 2)).toBe(0);
    s.drv.writeCommon(QSEL, 2, 1);
    expect([s.drv.readCommon(QSIZE, 2), s.drv.readCommon(QMSIX, 2), s.drv.readCommon(0x20, 4)]).toEqual([
      256,
      NO_VECTOR,
      0,
    ]);
    s.drv.writeCommon(0x08, 4, 0);
    expect(s.drv.readCommon(0x0c, 4)).toBe(0);
    expect(s.device.events).toContain('reset');
  });

  it("FEATURES_OK does not stick when the device's dependency rule fails, and reads back clear", () => {
    const s = setup();
    s.drv.probe();
    s.drv.assignBars();
    s.drv.reset();
    s.drv.setStatus(STATUS.ACKNOWLEDGE | STATUS.DRIVER);
    s.drv.writeDriverFeatures(F_VERSION_1 | 0b10n); // bit 1 without bit 0
    s.drv.setStatus(STATUS.FEATURES_OK);
    expect(s.drv.status & STATUS.FEATURES_OK).toBe(0);
    expect(s.t.lastError).toMatch(/feature 1 needs feature 0/);
    // the driver may fix its set and try again
    s.drv.writeDriverFeatures(F_VERSION_1 | 0b11n);
    s.drv.setStatus(STATUS.FEATURES_OK);
    expect(s.drv.status).toBe(0xb);
    expect(() => s.drv.negotiate(~0n)).not.toThrow();
  });

  it('features not offered (any window) make FEATURES_OK fail', () => {
    for (const bad of [1n << 3n, 1n << 45n, 1n << 70n, 1n << 127n]) {
      const s = setup();
      s.drv.probe();
      s.drv.assignBars();
      s.drv.reset();
      s.drv.setStatus(3);
      s.drv.writeDriverFeatures(F_VERSION_1 | bad);
      s.drv.setStatus(STATUS.FEATURES_OK);
      expect(s.drv.status).toBe(3);
    }
  });

  it('device_feature windows past the offered bits read 0', () => {
    const s = setup();
    s.drv.probe();
    s.drv.assignBars();
    for (const sel of [2, 3, 4, 0x7fffffff]) {
      s.drv.writeCommon(0, 4, sel);
      expect(s.drv.readCommon(4, 4)).toBe(0);
    }
  });

  it('driver_feature writes after FEATURES_OK are ignored', () => {
    const s = setup();
    upToFeatures(s, F_VERSION_1 | 1n);
    s.drv.writeCommon(0x08, 4, 0);
    s.drv.writeCommon(0x0c, 4, 0b111);
    expect(s.drv.readCommon(0x0c, 4)).toBe(1);
  });

  it('DRIVER_OK without FEATURES_OK is refused with DEVICE_NEEDS_RESET and the device is not activated', () => {
    const s = setup();
    s.drv.probe();
    s.drv.assignBars();
    s.drv.setStatus(STATUS.ACKNOWLEDGE | STATUS.DRIVER);
    s.drv.setStatus(STATUS.DRIVER_OK);
    expect(s.drv.status).toBe(0x43);
    expect(s.device.events.some((e) => e.startsWith('activate'))).toBe(false);
  });

  it('NEEDS_RESET belongs to the device: the driver can neither set nor clear it; FAILED is stored', () => {
    const s = setup();
    s.drv.probe();
    s.drv.assignBars();
    s.drv.writeCommon(STATUS_OFF, 1, 0x41);
    expect(s.drv.status).toBe(0x01);
    s.drv.writeCommon(STATUS_OFF, 1, 0x81);
    expect(s.drv.status).toBe(0x81);
    s.drv.writeCommon(QSEL, 2, 0);
    s.drv.writeCommon(QENABLE, 2, 0); // a driver error
    expect(s.drv.status).toBe(0xc1);
    s.drv.writeCommon(STATUS_OFF, 1, 0x01);
    expect(s.drv.status).toBe(0x41);
    s.drv.reset();
    expect(s.drv.status).toBe(0);
  });

  it('num_queues follows the driver features written so far (like virtio-net MQ)', () => {
    const s = setup();
    s.drv.probe();
    s.drv.assignBars();
    expect(s.drv.numQueues()).toBe(2);
    s.drv.writeCommon(QSEL, 2, 2);
    expect(s.drv.readCommon(QSIZE, 2)).toBe(0);
    s.drv.writeDriverFeatures(F_VERSION_1 | 0b100n);
    expect(s.drv.numQueues()).toBe(3);
    s.drv.writeCommon(QSEL, 2, 2);
    expect(s.drv.readCommon(QSIZE, 2)).toBe(64);
    s.drv.writeDriverFeatures(F_VERSION_1);
    expect(s.drv.numQueues()).toBe(2);
  });
});

describe('queue registers and bad drivers', () => {
  it('queue_size: not a power of two is stored but enabling a split ring then fails with NEEDS_RESET', () => {
    const s = setup();
    upToFeatures(s);
    s.drv.writeCommon(QSEL, 2, 0);
    s.drv.writeCommon(QSIZE, 2, 100);
    expect(s.drv.readCommon(QSIZE, 2)).toBe(100);
    const q = SplitDriverQueue.allocate(s.memory, s.drv.allocator, 128);
    s.drv.writeCommon(0x20, 4, q.config.descAddr);
    s.drv.writeCommon(0x28, 4, q.config.driverAddr);
    s.drv.writeCommon(0x30, 4, q.config.deviceAddr);
    s.drv.writeCommon(QENABLE, 2, 1);
    expect(s.drv.readCommon(QENABLE, 2)).toBe(0);
    expect(s.drv.status & STATUS.NEEDS_RESET).toBe(STATUS.NEEDS_RESET);
    expect(s.errors.at(-1)).toMatch(/not a power of two/);
  });

  it('queue_size larger than the maximum, or 0, is ignored', () => {
    const s = setup();
    upToFeatures(s);
    s.drv.writeCommon(QSEL, 2, 0);
    s.drv.writeCommon(QSIZE, 2, 512);
    expect(s.drv.readCommon(QSIZE, 2)).toBe(256);
    s.drv.writeCommon(QSIZE, 2, 0);
    expect(s.drv.readCommon(QSIZE, 2)).toBe(256);
  });

  it('enabling a queue with no ring addresses: NEEDS_RESET, queue stays disabled, no throw', () => {
    const s = setup();
    upToFeatures(s);
    s.drv.writeCommon(QSEL, 2, 1);
    s.drv.writeCommon(QENABLE, 2, 1);
    expect(s.drv.readCommon(QENABLE, 2)).toBe(0);
    expect(s.drv.status).toBe(0x4b);
  });

  it('enabling a queue whose rings lie outside guest memory: NEEDS_RESET', () => {
    const s = setup();
    upToFeatures(s);
    s.drv.writeCommon(QSEL, 2, 1);
    s.drv.writeCommon(0x20, 4, 0);
    s.drv.writeCommon(0x24, 4, 0x10); // 64 GiB
    s.drv.writeCommon(0x28, 4, 0x1000);
    s.drv.writeCommon(0x30, 4, 0x2000);
    s.drv.writeCommon(QENABLE, 2, 1);
    expect(s.drv.readCommon(QENABLE, 2)).toBe(0);
    expect(s.drv.status & STATUS.NEEDS_RESET).toBeTruthy();
  });

  it('queue setup before FEATURES_OK: queue_enable is refused with NEEDS_RESET', () => {
    const s = setup();
    s.drv.probe();
    s.drv.assignBars();
    s.drv.setStatus(3);
    const q = SplitDriverQueue.allocate(s.memory, s.drv.allocator, 256);
    s.drv.writeCommon(QSEL, 2, 0);
    s.drv.writeCommon(0x20, 4, q.config.descAddr);
    s.drv.writeCommon(0x28, 4, q.config.driverAddr);
    s.drv.writeCommon(0x30, 4, q.config.deviceAddr);
    expect(s.drv.readCommon(0x20, 4)).toBe(q.config.descAddr);
    s.drv.writeCommon(QENABLE, 2, 1);
    expect(s.drv.readCommon(QENABLE, 2)).toBe(0);
    expect(s.drv.status).toBe(0x43);
  });

  it("an enabled queue's size and addresses cannot change; queues past num_queues read 0 and ignore writes", () => {
    const s = setup();
    upToFeatures(s);
    const q = s.drv.setupQueue(0);
    s.drv.writeCommon(QSEL, 2, 0);
    s.drv.writeCommon(QSIZE, 2, 16);
    s.drv.writeCommon(0x20, 4, 0x1234000);
    expect(s.drv.readCommon(QSIZE, 2)).toBe(256);
    expect(s.drv.readCommon(0x20, 4)).toBe(q.config.descAddr);
    s.drv.writeCommon(QSEL, 2, 5);
    s.drv.writeCommon(QSIZE, 2, 16);
    s.drv.writeCommon(0x20, 4, 0x1000);
    s.drv.writeCommon(QMSIX, 2, 1);
    s.drv.writeCommon(QENABLE, 2, 1);
    expect([
      s.drv.readCommon(QSIZE, 2),
      s.drv.readCommon(0x20, 4),
      s.drv.readCommon(QMSIX, 2),
      s.drv.readCommon(QENABLE, 2),
    ]).toEqual([0, 0, NO_VECTOR, 0]);
    expect(s.drv.readCommon(0x1e, 2)).toBe(5); // queue_notify_off = index (QEMU)
    expect(s.drv.status & STATUS.NEEDS_RESET).toBe(0);
  });

  it('notify of a nonexistent queue, a disabled queue, or before DRIVER_OK is ignored', () => {
    const s = setup();
    upToFeatures(s);
    s.drv.setupQueue(0);
    s.drv.setupQueue(1);
    s.t.function.barWrite(4, 0x3000 + 4, 2, 1); // before DRIVER_OK
    s.drv.driverOk();
    s.t.function.barWrite(4, 0x3000 + 4 * 7, 2, 7);
    s.t.function.barWrite(4, 0x3ffc, 4, 0xffffffff);
    s.t.function.barWrite(4, 0x3000 + 8, 2, 2);
    expect(s.device.events.filter((e) => e.startsWith('notify'))).toEqual([]);
    expect(s.drv.status).toBe(0x0f);
    s.drv.kick(1);
    expect(s.device.events.filter((e) => e.startsWith('notify'))).toEqual(['notify 1']);
  });

  it('a guest error inside a ring (VirtqueueError from the device) becomes NEEDS_RESET with a config interrupt', () => {
    const s = setup();
    s.drv.initialize(~0n, [0, 1]);
    const rx = s.drv.queues.get(0);
    const tx = s.drv.queues.get(1);
    if (!rx || !tx) throw new Error('queues');
    rx.add([], [new Uint8Array(2)]);
    tx.add([new Uint8Array(10)], []);
    s.irq.takeVectors();
    expect(() => s.drv.kick(1)).not.toThrow();
    expect(s.drv.status).toBe(0x4f);
    expect(s.irq.takeVectors()).toEqual([0]);
    expect(s.t.lastError).toMatch(/rx buffer too small/);
    // a broken device ignores further kicks until reset
    const before = s.device.events.length;
    s.drv.kick(1);
    expect(s.device.events.length).toBe(before);
    s.drv.initialize(~0n, [0, 1]);
    expect(echo(s.drv, new Uint8Array([1]))?.len).toBe(1);
  });

  it('queue_enable values other than 1 are a driver error (QEMU virtio_error)', () => {
    const s = setup();
    upToFeatures(s);
    s.drv.writeCommon(QSEL, 2, 0);
    s.drv.writeCommon(QENABLE, 2, 2);
    expect(s.drv.status).toBe(0x4b);
  });
});

describe('queue_reset (VIRTIO_F_RING_RESET)', () => {
  it('resets one queue synchronously: reads 0, queue disabled, registers back to reset values; re-enable works', () => {
    const s = setup();
    s.drv.initialize(~0n, [0, 1]);
    expect(s.drv.features & F_RING_RESET).toBe(F_RING_RESET);
    echo(s.drv, new Uint8Array([1, 2]));
    s.drv.writeCommon(QSEL, 2, 0);
    s.drv.writeCommon(QRESET, 2, 1);
    expect(s.drv.readCommon(QRESET, 2)).toBe(0);
    expect(s.drv.readCommon(QENABLE, 2)).toBe(0);
    expect([s.drv.readCommon(QSIZE, 2), s.drv.readCommon(QMSIX, 2), s.drv.readCommon(0x20, 4)]).toEqual([
      256,
      NO_VECTOR,
      0,
    ]);
    expect(s.device.events).toContain('queueReset 0');
    // traffic on queue 1 finds no rx queue now: dropped
    s.drv.queues.get(1)?.add([new Uint8Array(4)], []);
    s.drv.kick(1);
    expect(s.device.moved).toBe(2);
    s.drv.queues.delete(0);
    const rx = s.drv.setupQueue(0, { size: 64 });
    expect(s.device.events).toContain('queueEnabled 0');
    // the 4-byte frame still waiting on queue 1 goes out first, into the fresh ring
    rx.add([], [new Uint8Array(16)]);
    rx.add([], [new Uint8Array(16)]);
    s.drv.queues.get(1)?.add([new Uint8Array([5, 6, 7])], []);
    s.drv.kick(1);
    expect([rx.getUsed()?.len, rx.getUsed()?.len]).toEqual([4, 3]);
    expect(s.drv.status).toBe(0x0f);
  });

  it('is ignored when RING_RESET was not negotiated', () => {
    const s = setup();
    s.drv.initialize(~F_RING_RESET, [0, 1]);
    s.drv.writeCommon(QSEL, 2, 0);
    s.drv.writeCommon(QRESET, 2, 1);
    expect(s.drv.readCommon(QENABLE, 2)).toBe(1);
  });
});

describe('PCI configuration access capability', () => {
  it('reads common config and kicks a queue through pci_cfg_data', () => {
    const s = setup();
    s.drv.initialize(~0n, [0, 1]);
    const pc = s.t.caps.pciCfg;
    s.t.function.configWrite(pc + 4, 1, 4);
    s.t.function.configWrite(pc + 8, 4, 0x14);
    s.t.function.configWrite(pc + 12, 4, 1);
    expect(s.t.function.configRead(pc + 16, 1)).toBe(0x0f);
    s.drv.queues.get(0)?.add([], [new Uint8Array(8)]);
    s.drv.queues.get(1)?.add([new Uint8Array([4, 4])], []);
    s.t.function.configWrite(pc + 8, 4, 0x3000 + 4);
    s.t.function.configWrite(pc + 12, 4, 2);
    s.t.function.configWrite(pc + 16, 2, 1);
    expect(s.device.moved).toBe(2);
    // the ISR through the window clears it, like a direct read
    s.t.function.configWrite(pc + 8, 4, 0x1000);
    s.t.function.configWrite(pc + 12, 4, 1);
    expect(s.t.function.configRead(pc + 16, 1)).toBe(1);
    expect(s.t.function.configRead(pc + 16, 1)).toBe(0);
  });
});

describe('FLR and snapshot', () => {
  it('a function-level reset resets the virtio device', () => {
    const s = setup();
    s.drv.initialize(~0n, [0, 1]);
    const pcie = s.t.function.findCapability(0x10);
    s.t.function.configWrite(pcie + 8, 2, 0x8000);
    expect(s.device.events.at(-1)).toBe('reset');
    s.drv.assignBars();
    expect(s.drv.status).toBe(0);
  });

  it('snapshot is JSON; restore into a new transport continues the rings where they were', () => {
    const s = setup();
    s.drv.initialize(~0n, [0, 1]);
    for (let i = 0; i < 3; i++) echo(s.drv, new Uint8Array([i]));
    s.drv.writeDeviceConfig(4, 4, 0x5a5a);
    const json = JSON.stringify(s.t.snapshot());
    // a second device on the same guest memory; the guest's PCI state is re-programmed by the driver
    const device2 = new FakeDevice();
    const irq2 = new InterruptCollector();
    const t2 = new VirtioPciTransport({ device: device2, memory: s.memory, interrupts: irq2 });
    t2.restore(JSON.parse(json));
    expect(device2.events[device2.events.length - 1]).toMatch(/^activate/);
    expect(device2.moved).toBe(3);
    const drv2 = new VirtioPciDriver(t2.function, s.memory, { interrupts: irq2 });
    drv2.probe();
    drv2.assignBars();
    drv2.enableMsix();
    expect(drv2.status).toBe(0x0f);
    expect(drv2.readDeviceConfig(4, 4)).toBe(0x5a5a);
    drv2.writeCommon(QSEL, 2, 1);
    expect(drv2.readCommon(QENABLE, 2)).toBe(1);
    expect(drv2.readCommon(QMSIX, 2)).toBe(2);
    // the old driver's ring state continues against the new device
    drv2.features = s.drv.features;
    for (const [i, q] of s.drv.queues) drv2.queues.set(i, q);
    const used = echo(drv2, new Uint8Array([42, 43]));
    expect(readBack(s.memory, used as UsedBuffer)).toEqual(new Uint8Array([42, 43]));
    expect(irq2.takeVectors()).toEqual([2, 1]);
  });

  it('snapshot → restore → snapshot is the identity (split, packed, legacy, mid-setup, broken)', () => {
    const cases: [Partial<VirtioPciOptions>, (s: ReturnType<typeof setup>) => void][] = [
      [{}, (s) => s.drv.initialize(~0n, [0, 1])],
      [
        { features: { packed: true } },
        (s) => {
          s.drv.initialize(~0n, [0, 1]);
          echo(s.drv, new Uint8Array(5));
        },
      ],
      [
        {},
        (s) => {
          upToFeatures(s);
          s.drv.setupQueue(1, { size: 16 });
          s.drv.writeCommon(QSEL, 2, 0);
          s.drv.writeCommon(QSIZE, 2, 64);
        },
      ],
      [
        {},
        (s) => {
          s.drv.initialize(~0n, [0, 1]);
          s.drv.writeCommon(QENABLE, 2, 7);
        },
      ],
    ];
    for (const [opts, act] of cases) {
      const s = setup(opts);
      act(s);
      const snap = JSON.parse(JSON.stringify(s.t.snapshot()));
      const t2 = new VirtioPciTransport({
        device: new FakeDevice(),
        memory: s.memory,
        interrupts: {},
        ...opts,
      });
      t2.restore(snap);
      expect(JSON.parse(JSON.stringify(t2.snapshot()))).toEqual(snap);
    }
  });

  it('restore rejects malformed input with a TypeError', () => {
    const s = setup();
    expect(() => s.t.restore({} as never)).toThrow(TypeError);
  });
});

describe('legacy interface (transitional device)', () => {
  it('a legacy driver: host features, guest features, PFN queues, DRIVER_OK, notify, ISR', () => {
    const s = setup({ legacy: true, bus: 'pci', msixVectors: 0 }, { deviceId: 1 });
    const ids = s.drv.ids();
    expect(ids).toMatchObject({ deviceId: 0x1000 + 0, revision: 0 });
    s.drv.probe();
    const bars = s.drv.assignBars();
    expect(bars[0]).toMatchObject({ index: 0, io: true, size: 32 });
    const io = (o: number, sz: 1 | 2 | 4) => Number(s.t.function.barRead(0, o, sz));
    const out = (o: number, sz: 1 | 2 | 4, v: number) => s.t.function.barWrite(0, o, sz, v);
    out(18, 1, 0);
    out(18, 1, 1);
    out(18, 1, 3);
    const host = io(0, 4);
    expect(host & (1 << 30)).toBe(1 << 30);
    expect(host & 0b111).toBe(0b111);
    out(4, 4, host & ~(1 << 30) & ~Number(F_EVENT_IDX));
    expect(io(4, 4)).toBe(host & ~(1 << 30) & ~Number(F_EVENT_IDX));
    const rings: SplitDriverQueue[] = [];
    for (const i of [0, 1]) {
      out(14, 2, i);
      const n = io(12, 2);
      expect(n).toBe(256);
      const base = 0x100000 + i * 0x10000;
      const l = legacyRingLayout(base, n);
      rings.push(
        new SplitDriverQueue(s.memory, {
          size: n,
          descAddr: l.desc,
          availAddr: l.avail,
          usedAddr: l.used,
          index: i,
          allocator: s.drv.allocator,
        }),
      );
      out(8, 4, base >>> 12);
      expect(io(8, 4)).toBe(base >>> 12);
    }
    out(18, 1, 7);
    expect(io(18, 1)).toBe(7);
    expect(s.device.events.some((e) => e.startsWith('activate'))).toBe(true);
    const [rx, tx] = rings as [SplitDriverQueue, SplitDriverQueue];
    rx.add([], [new Uint8Array(16)]);
    tx.add([new Uint8Array([1, 2, 3])], []);
    out(16, 2, 1);
    expect(rx.getUsed()?.len).toBe(3);
    expect(s.irq.intxLevel).toBe(true);
    expect(io(19, 1)).toBe(1);
    expect(s.irq.intxLevel).toBe(false);
    // PFN 0 resets the device (QEMU)
    out(8, 4, 0);
    expect(io(18, 1)).toBe(0);
  });

  it('modern and legacy registers share one state: a legacy device config read sees the same bytes', () => {
    const s = setup({ legacy: true }, { deviceId: 1 });
    s.drv.probe();
    s.drv.assignBars();
    expect(Number(s.t.function.barRead(0, 20, 4))).toBe(FAKE_MAGIC);
    s.drv.enableMsix();
    expect(Number(s.t.function.barRead(0, 24, 4))).toBe(FAKE_MAGIC);
    expect(s.drv.readDeviceConfig(0, 4)).toBe(FAKE_MAGIC);
  });

  it('options: legacy needs a transitional ID; modern and legacy cannot both be off', () => {
    const memory = new GuestMemory([]);
    expect(
      () =>
        new VirtioPciTransport({
          device: new FakeDevice({ deviceId: 0x1f }),
          memory,
          interrupts: {},
          legacy: true,
        }),
    ).toThrow(/transitional/);
    expect(
      () =>
        new VirtioPciTransport({
          device: new FakeDevice({ deviceId: 1 }),
          memory,
          interrupts: {},
          modern: false,
        }),
    ).toThrow(/both/);
  });
});

describe('SR-IOV virtual function', () => {
  it('vf: true builds a VF function: IDs read 0xffff, virtio caps present, no INTx', () => {
    const memory = new GuestMemory([{ address: 0, bytes: new Uint8Array(0x1000) }]);
    const irq = new InterruptCollector();
    const t = new VirtioPciTransport({
      device: new FakeDevice({ deviceId: 1 }),
      memory,
      interrupts: irq,
      vf: true,
      routingId: 0x0108,
    });
    expect(t.function.isVf).toBe(true);
    expect(t.function.configRead(0, 4)).toBe(0xffffffff);
    expect(t.function.routingId).toBe(0x0108);
    const drv = new VirtioPciDriver(t.function, memory, { interrupts: irq });
    expect(() => drv.probe()).not.toThrow();
    expect(drv.caps.map((c) => c.cfgType)).toEqual([5, 2, 4, 3, 1]);
  });
});

describe('nothing the guest does throws', () => {
  const access = fc.record({
    kind: fc.constantFrom('cfgR', 'cfgW', 'barR', 'barW', 'common', 'notify'),
    bar: fc.integer({ min: 0, max: 5 }),
    offset: fc.oneof(
      fc.integer({ min: 0, max: 0x4010 }),
      fc.integer({ min: 0, max: 0x40 }),
      fc.integer({ min: -4, max: 0x10000 }),
    ),
    size: fc.constantFrom(1, 2, 4, 8, 3),
    value: fc.oneof(
      fc.integer({ min: 0, max: 0xffffffff }),
      fc.constantFrom(0, 1, 0xffff, 0xffffffff, -1, Number.NaN),
    ),
  });

  it('random config and BAR accesses after a full bring-up (split and packed, legacy on)', () => {
    fc.assert(
      fc.property(fc.boolean(), fc.array(access, { maxLength: 200 }), (packed, ops) => {
        const s = setup({ features: { packed, notificationData: true }, legacy: true }, { deviceId: 1 });
        s.drv.initialize(~0n, [0, 1]);
        for (const op of ops) {
          const size = op.size as 1 | 2 | 4 | 8;
          switch (op.kind) {
            case 'cfgR':
              s.t.function.configRead(op.offset, size as 1 | 2 | 4);
              break;
            case 'cfgW':
              s.t.function.configWrite(op.offset, size as 1 | 2 | 4, op.value);
              break;
            case 'barR':
              s.t.function.barRead(op.bar, op.offset, size);
              break;
            case 'barW':
              s.t.function.barWrite(op.bar, op.offset, size, op.value);
              break;
            case 'common':
              s.t.function.barWrite(4, op.offset & 0x3f, size, op.value);
              break;
            case 'notify':
              s.t.function.barWrite(4, 0x3000 + (op.offset & 0xff), size, op.value);
              break;
          }
          // kicks with garbage in the rings: the device may break, never throw
          const st = Number(s.t.function.barRead(4, STATUS_OFF, 1));
          expect(st >= 0 && st <= 0xff).toBe(true);
        }
      }),
      { numRuns: 60 },
    );
  });

  it('garbage written into the rings then kicked gives NEEDS_RESET or nothing, never a throw', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 64, maxLength: 4096 }), fc.boolean(), (junk, packed) => {
        const s = setup({ features: { packed } });
        s.drv.initialize(~0n, [0, 1]);
        const q = s.drv.queues.get(1);
        if (!q) throw new Error('no queue');
        s.memory.write(q.config.descAddr, junk.subarray(0, Math.min(junk.length, 16 * 256)));
        s.memory.write(q.config.driverAddr, junk.subarray(0, 4));
        expect(() => s.drv.kick(1)).not.toThrow();
        const st = s.drv.status;
        expect(st === 0x0f || st === 0x4f).toBe(true);
      }),
      { numRuns: 100 },
    );
  });
});
