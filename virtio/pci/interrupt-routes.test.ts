// VirtioDeviceContext.queueInterruptFd / queueKickFd and VirtioDevice.interruptRoutesChanged: which eventfd a queue's
// used-buffer notification would signal (a VMM that serves MSI-X vectors by eventfd, as vfio-user does),
// and that the device hears of every change of that answer (queue vector, MSI-X Enable, mode, the VMM's
// own fds) while it runs. Queue-pair workers write those eventfds themselves (docs/workers.md).
import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { FakeDevice } from '../fake-device.test-support.js';
import { NO_VECTOR, VirtioPciDriver } from '../testing/pci-driver.js';
import { VirtioPciTransport } from './virtio-pci.js';

const QMSIX = 0x1a;
const QSEL = 0x16;

class RoutedDevice extends FakeDevice {
  routes = 0;
  interruptRoutesChanged(): void {
    this.routes++;
  }
}

function setup(withMsi = false) {
  const memory = new GuestMemory([{ address: 0, bytes: new Uint8Array(0x200000) }]);
  const device = new RoutedDevice();
  /** The VMM's eventfd per vector (fake numbers; null: none or masked). */
  const fds = new Map<number, number>([
    [1, 101],
    [2, 102],
    [3, 103],
  ]);
  const signalled: number[] = [];
  const interrupts = withMsi
    ? { msi: () => {}, vector: (n: number) => signalled.push(n), vectorFd: (n: number) => fds.get(n) ?? null }
    : { vector: (n: number) => signalled.push(n), vectorFd: (n: number) => fds.get(n) ?? null };
  const t = new VirtioPciTransport({ device, memory, interrupts });
  const drv = new VirtioPciDriver(t.function, memory);
  drv.initialize(~0n, [0, 1]); // queue i on vector i + 1
  return { t, device, drv, fds, signalled, ctx: device.ctx! };
}

/** Writes queue_msix_vector of queue `q` through the common configuration. */
function setVector(s: ReturnType<typeof setup>, q: number, v: number): void {
  const cfg = s.drv.caps.find((c) => c.cfgType === 1)!;
  const bar = cfg.bar;
  s.t.function.barWrite(bar, cfg.offset + QSEL, 2, q);
  s.t.function.barWrite(bar, cfg.offset + QMSIX, 2, v);
}

describe('queue interrupt eventfds', () => {
  it('a running queue answers its vector’s eventfd; the device hears each change of vector', () => {
    const s = setup();
    expect([s.ctx.queueInterruptFd!(0), s.ctx.queueInterruptFd!(1)]).toEqual([101, 102]);
    expect(s.ctx.queueInterruptFd!(7)).toBeNull(); // no such queue
    const before = s.device.routes;
    setVector(s, 1, 3);
    expect(s.device.routes).toBe(before + 1);
    expect(s.ctx.queueInterruptFd!(1)).toBe(103);
    setVector(s, 1, 3); // the same vector again: no change
    expect(s.device.routes).toBe(before + 1);
    setVector(s, 0, NO_VECTOR);
    expect(s.device.routes).toBe(before + 2);
    expect(s.ctx.queueInterruptFd!(0)).toBeNull();
    // The sink's answer is taken as it is now (the VMM masked vector 3: it says null).
    s.fds.delete(3);
    expect(s.ctx.queueInterruptFd!(1)).toBeNull();
  });

  it('MSI-X Enable off: no eventfd (the device signals INTx then), and the device hears it; on again likewise', () => {
    const s = setup();
    const cap = s.drv.msixCap;
    const before = s.device.routes;
    const control = s.t.function.configRead(cap + 2, 2);
    s.t.function.configWrite(cap + 2, 2, control & ~0x8000);
    expect(s.device.routes).toBe(before + 1);
    expect(s.ctx.queueInterruptFd!(0)).toBeNull();
    s.t.function.configWrite(cap + 2, 2, control);
    expect(s.device.routes).toBe(before + 2);
    expect(s.ctx.queueInterruptFd!(0)).toBe(101);
  });

  it('a stopped device (DEV_MODE_SET) answers none; the VMM’s own change is passed on while the device runs', () => {
    const s = setup();
    const before = s.device.routes;
    s.t.interruptRoutesChanged();
    expect(s.device.routes).toBe(before + 1);
    s.t.setMode('stopped');
    expect(s.device.routes).toBe(before + 2);
    expect(s.ctx.queueInterruptFd!(0)).toBeNull();
    s.t.setMode('active');
    expect(s.ctx.queueInterruptFd!(0)).toBe(101);
    // After a reset nothing runs: nothing to tell.
    s.t.reset();
    const after = s.device.routes;
    s.t.interruptRoutesChanged();
    expect(s.device.routes).toBe(after);
  });

  it('a VMM that takes MSI messages (it has `msi`) gets none of this: the table is ours', () => {
    const s = setup(true);
    expect(s.ctx.queueInterruptFd!(0)).toBeNull();
  });
});

describe('queue kick eventfds', () => {
  it('a running, enabled queue answers the VMM’s kick eventfd; holds pass through; none when stopped or reset', () => {
    const s = setup();
    const held: [number, boolean][] = [];
    const before = s.device.routes;
    s.t.setKickEventfds({ fd: (q) => (q < 2 ? 200 + q : null), hold: (q, h) => held.push([q, h]) });
    // Setting the source is a route change the running device hears.
    expect(s.device.routes).toBe(before + 1);
    expect([0, 1, 2].map((q) => s.ctx.queueKickFd!(q))).toEqual([200, 201, null]);
    s.ctx.holdKick!(1, true);
    s.ctx.holdKick!(1, false);
    expect(held).toEqual([
      [1, true],
      [1, false],
    ]);
    s.t.setMode('stopped');
    expect(s.ctx.queueKickFd!(0)).toBeNull();
    s.t.setMode('active');
    expect(s.ctx.queueKickFd!(0)).toBe(200);
    s.t.reset();
    expect(s.ctx.queueKickFd!(0)).toBeNull();
  });
});
