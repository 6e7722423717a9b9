/**
 * Interrupts of a vfio-user device (DEVICE_GET_IRQ_INFO, DEVICE_SET_IRQS): one eventfd per MSI-X vector or
 * for INTx, masking with pending bits, and INTx as Linux's vfio-pci has it (level-triggered, automasked).
 */
import { readlinkSync } from 'node:fs';
import {
  Errno,
  IRQ_INFO,
  IRQ_SET,
  Irq,
  IrqInfoFlag,
  IrqSetFlag,
  body as makeBody,
  view,
} from './protocol.js';
import type { RequestHeader, Responder } from './responder.js';
import * as sys from '../host/socket.js';

/** Whether `fd` is an eventfd (as Linux's vfio checks with eventfd_ctx_fdget). */
function isEventfd(fd: number): boolean {
  try {
    return readlinkSync(`/proc/self/fd/${fd}`) === 'anon_inode:[eventfd]';
  } catch {
    return false;
  }
}

const NUM_IRQS = Irq.COUNT;

interface IrqIndexState {
  fds: (number | null)[];
  masked: boolean[];
  pending: boolean[];
}

/** The server's interrupt state; signals are counted in `stats`. */
export class VfioUserIrqs {
  readonly #irqs: IrqIndexState[];
  #intxLevel = false;
  readonly #msixVectors: number;
  readonly #stats: { irqsSignalled: number; irqsDropped: number };
  readonly #r: Responder;
  readonly #onRoutes: () => void;

  /**
   * `onRoutes` runs whenever `vectorFd` may answer differently, after the change and before an eventfd
   * it named is closed (a device's worker threads that write them drop theirs then).
   */
  constructor(
    msixVectors: number,
    stats: { irqsSignalled: number; irqsDropped: number },
    responder: Responder,
    onRoutes: () => void = () => {},
  ) {
    this.#msixVectors = msixVectors;
    this.#stats = stats;
    this.#r = responder;
    this.#onRoutes = onRoutes;
    this.#irqs = Array.from({ length: NUM_IRQS }, (_, i) => {
      const n = this.count(i);
      return {
        fds: new Array(n).fill(null),
        masked: new Array(n).fill(false),
        pending: new Array(n).fill(false),
      };
    });
  }

  /** Vectors of an irq index that currently have an eventfd (for tests and diagnostics). */
  armedVectors(index: number): number[] {
    const st = this.#irqs[index];
    if (!st) return [];
    return st.fds.flatMap((fd, i) => (fd === null ? [] : [i]));
  }

  /**
   * The eventfd that signals MSI-X vector `n` now (assigned and not masked by SET_IRQS), or null. Valid
   * until the next `onRoutes`.
   */
  vectorFd(n: number): number | null {
    const st = this.#irqs[Irq.MSIX] as IrqIndexState;
    if (!Number.isInteger(n) || n < 0 || n >= st.fds.length || st.masked[n]) return null;
    return st.fds[n] ?? null;
  }

  /** Closes every eventfd and forgets masks and pending signals (disconnect). */
  disableAll(): void {
    for (const st of this.#irqs) this.#disableIndex(st);
    this.#intxLevel = false;
  }

  /** MSI-X routes changed: tell the device, then close the eventfds that were replaced or removed. */
  #rerouted(index: number, retired: readonly number[]): void {
    if (index === Irq.MSIX) this.#onRoutes();
    for (const fd of retired) sys.close(fd);
  }

  /** Vectors of an irq index (INTx 1, MSI-X per device, the others 0). */
  count(index: number): number {
    if (index === Irq.INTX) return 1;
    if (index === Irq.MSIX) return this.#msixVectors;
    return 0;
  }

  /** DEVICE_GET_IRQ_INFO. */
  info(h: RequestHeader, b: Uint8Array) {
    if (b.length < IRQ_INFO.SIZE || view(b).getUint32(IRQ_INFO.argsz, true) < IRQ_INFO.SIZE) {
      return this.#r.error(h, Errno.EINVAL, 'malformed DEVICE_GET_IRQ_INFO');
    }
    const index = view(b).getUint32(IRQ_INFO.index, true);
    if (index >= NUM_IRQS) return this.#r.error(h, Errno.EINVAL, `no irq index ${index}`);
    // As Linux's vfio-pci: INTx is maskable and automasked; MSI-X without NORESIZE, so QEMU arms vectors
    // one at a time as the guest unmasks them. MSI, ERR and REQ have no vectors.
    const flags =
      index === Irq.INTX
        ? IrqInfoFlag.EVENTFD | IrqInfoFlag.MASKABLE | IrqInfoFlag.AUTOMASKED
        : index === Irq.MSIX || index === Irq.MSI
          ? IrqInfoFlag.EVENTFD
          : 0;
    this.#r.reply(
      h,
      makeBody(IRQ_INFO.SIZE, (o) => {
        o.setUint32(IRQ_INFO.argsz, IRQ_INFO.SIZE, true);
        o.setUint32(IRQ_INFO.flags, flags, true);
        o.setUint32(IRQ_INFO.index, index, true);
        o.setUint32(IRQ_INFO.count, this.count(index), true);
      }),
    );
  }

  #disableIndex(st: IrqIndexState): void {
    const retired: number[] = [];
    for (let i = 0; i < st.fds.length; i++) {
      const fd = st.fds[i];
      if (fd !== null && fd !== undefined) retired.push(fd);
      st.fds[i] = null;
      st.masked[i] = false;
      st.pending[i] = false;
    }
    if (retired.length > 0) this.#rerouted(this.#irqs.indexOf(st), retired);
  }

  /** DEVICE_SET_IRQS; takes ownership of `fds` (kept or closed). */
  set(h: RequestHeader, b: Uint8Array, fds: number[]) {
    const fail = (why: string) => {
      for (const fd of fds.splice(0)) sys.close(fd);
      this.#r.error(h, Errno.EINVAL, why);
    };
    if (b.length < IRQ_SET.SIZE || view(b).getUint32(IRQ_SET.argsz, true) < IRQ_SET.SIZE)
      return fail('malformed SET_IRQS');
    const v = view(b);
    const flags = v.getUint32(IRQ_SET.flags, true);
    const index = v.getUint32(IRQ_SET.index, true);
    const start = v.getUint32(IRQ_SET.start, true);
    const count = v.getUint32(IRQ_SET.count, true);
    const data = flags & IrqSetFlag.DATA_MASK;
    const action = flags & IrqSetFlag.ACTION_MASK_ALL;
    if ((flags & ~(IrqSetFlag.DATA_MASK | IrqSetFlag.ACTION_MASK_ALL)) !== 0)
      return fail('unknown SET_IRQS flags');
    if (![IrqSetFlag.DATA_NONE, IrqSetFlag.DATA_BOOL, IrqSetFlag.DATA_EVENTFD].includes(data as 1 | 2 | 4)) {
      return fail('SET_IRQS needs exactly one DATA_* flag');
    }
    if (
      ![IrqSetFlag.ACTION_MASK, IrqSetFlag.ACTION_UNMASK, IrqSetFlag.ACTION_TRIGGER].includes(
        action as 8 | 16 | 32,
      )
    ) {
      return fail('SET_IRQS needs exactly one ACTION_* flag');
    }
    const st = this.#irqs[index];
    if (st === undefined) return fail(`no irq index ${index}`);
    if (data !== IrqSetFlag.DATA_EVENTFD && fds.length > 0) return fail('descriptors without DATA_EVENTFD');
    // DATA_NONE|TRIGGER with count 0 disables the whole index (vfio_pci_set_irqs_ioctl).
    if (data === IrqSetFlag.DATA_NONE && action === IrqSetFlag.ACTION_TRIGGER && count === 0) {
      this.#disableIndex(st);
      return this.#r.reply(h);
    }
    if (count === 0 || start >= st.fds.length || count > st.fds.length - start) {
      return fail(`vectors ${start}+${count} outside index ${index} (${st.fds.length})`);
    }
    let bools: Uint8Array | null = null;
    if (data === IrqSetFlag.DATA_BOOL) {
      if (b.length < IRQ_SET.SIZE + count) return fail('SET_IRQS DATA_BOOL without its bytes');
      bools = b.subarray(IRQ_SET.SIZE, IRQ_SET.SIZE + count);
    } else if (b.length !== IRQ_SET.SIZE) {
      return fail('SET_IRQS carries unexpected data');
    }
    const chosen = (i: number) => bools === null || (bools[i] ?? 0) !== 0;
    if (data === IrqSetFlag.DATA_EVENTFD) {
      // Eventfds only for TRIGGER (the unmask-by-eventfd resampler is a KVM path QEMU falls back from).
      if (action !== IrqSetFlag.ACTION_TRIGGER) return fail('eventfds are only taken for ACTION_TRIGGER');
      if (fds.length !== 0 && fds.length !== count)
        return fail(`${fds.length} descriptors for ${count} vectors`);
      if (!fds.every(isEventfd)) return fail('a descriptor is not an eventfd');
      // Replace, never append: each vector keeps at most one eventfd; no descriptors de-assigns.
      const retired: number[] = [];
      for (let i = 0; i < count; i++) {
        const old = st.fds[start + i];
        if (old !== null && old !== undefined) retired.push(old);
        st.fds[start + i] = fds.length > 0 ? (fds[i] as number) : null;
      }
      fds.splice(0);
      this.#rerouted(index, retired);
      if (index === Irq.INTX) {
        st.masked[0] = false;
        if (this.#intxLevel) this.#fireIntx();
      }
      return this.#r.reply(h);
    }
    let remasked = false;
    for (let i = 0; i < count; i++) {
      if (!chosen(i)) continue;
      const n = start + i;
      if (action === IrqSetFlag.ACTION_MASK) {
        remasked ||= !st.masked[n];
        st.masked[n] = true;
      } else if (action === IrqSetFlag.ACTION_UNMASK) {
        remasked ||= st.masked[n] === true;
        st.masked[n] = false;
        if (index === Irq.INTX) {
          if (this.#intxLevel) this.#fireIntx();
        } else if (st.pending[n]) {
          st.pending[n] = false;
          this.#write(st, n);
        }
      } else if (index === Irq.INTX) this.#fireIntx();
      else this.#fire(st, n);
    }
    // Before the reply: a vector masked now is not signalled by a worker after it.
    if (remasked) this.#rerouted(index, []);
    this.#r.reply(h);
  }

  #write(st: IrqIndexState, n: number): void {
    const fd = st.fds[n];
    if (fd === null || fd === undefined || !sys.eventfdSignal(fd)) {
      this.#stats.irqsDropped++;
      return;
    }
    this.#stats.irqsSignalled++;
  }

  #fire(st: IrqIndexState, n: number): void {
    if (st.masked[n]) st.pending[n] = true;
    else this.#write(st, n);
  }

  /** The device signalled MSI-X vector `n`. */
  signalMsix(n: number): void {
    const st = this.#irqs[Irq.MSIX] as IrqIndexState;
    if (!Number.isInteger(n) || n < 0 || n >= st.fds.length) {
      this.#stats.irqsDropped++;
      return;
    }
    this.#fire(st, n);
  }

  /** Level-triggered INTx as vfio-pci: signal on assertion, then stay masked until the client unmasks. */
  #fireIntx(): void {
    const st = this.#irqs[Irq.INTX] as IrqIndexState;
    if (st.masked[0]) return;
    st.masked[0] = true;
    this.#write(st, 0);
  }

  /** The device changed its INTx level. */
  setIntx(asserted: boolean): void {
    this.#intxLevel = asserted;
    if (asserted) this.#fireIntx();
  }
}
