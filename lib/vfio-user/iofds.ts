/**
 * DEVICE_GET_REGION_IO_FDS (vfio-user.rst "Region I/O via file descriptors"): the server hands the client
 * one eventfd per doorbell the device declares, the client arranges for a guest write there to signal it
 * (KVM_IOEVENTFD, or its own MMIO dispatch), and the server, polling the eventfd on its event loop, makes
 * the doorbell's write itself. A kick then costs the client no socket message.
 *
 * The eventfds are created on the first request for a region and live until the client disconnects; a
 * repeated request hands out the same ones. Signals that arrive together are one write (a virtio kick is
 * idempotent: the device looks at the whole ring).
 */
import type { VfioUserDevice, VfioUserDoorbell } from './device.js';
import {
  Errno,
  IO_FD_SUB_REGION,
  IoEventfdFlag,
  IoFdType,
  REGION_IO_FDS,
  Region,
  body as makeBody,
  view,
} from './protocol.js';
import type { RequestHeader, Responder } from './responder.js';
import * as sys from '../host/socket.js';

/** Counters the server reports (VfioUserServerStats). */
export interface IoFdStats {
  /** Eventfd wake-ups that made a doorbell write. */
  kicksByEventfd: number;
  /** Signals read from the eventfds (more than the wake-ups when signals coalesced). */
  kickSignalsByEventfd: number;
}

interface Armed {
  doorbell: VfioUserDoorbell;
  /** Its position in the device's `doorbells()`, which names it to the device. */
  position: number;
  fd: number;
  poll: sys.FdPoll;
  /** The device reads this eventfd itself (VfioUserDoorbellEventfds.hold): not polled here. */
  held: boolean;
}

/** The server's ioeventfds for one connection. */
export class VfioUserIoFds {
  readonly #device: VfioUserDevice;
  readonly #maxFds: number;
  readonly #stats: IoFdStats;
  readonly #r: Responder;
  readonly #beforeRing: () => void;
  readonly #onRoutes: () => void;
  /** Armed doorbells per region index (created on the region's first request). */
  readonly #armed = new Map<number, Armed[]>();
  /** The same, by the doorbell's position in the device's `doorbells()` (VfioUserDoorbellEventfds). */
  readonly #byPosition = new Map<number, Armed>();

  /**
   * `maxFds`: most descriptors in one reply (the doorbells past it stay REGION_WRITE only). `beforeRing`
   * runs before a doorbell's write: the server handles what is already on the socket, so that a kick
   * never passes the client's earlier writes (say the queue enable and DRIVER_OK it posted). `onRoutes`
   * runs when new eventfds are armed (the device may take them to its own threads).
   */
  constructor(
    device: VfioUserDevice,
    maxFds: number,
    stats: IoFdStats,
    responder: Responder,
    beforeRing: () => void = () => {},
    onRoutes: () => void = () => {},
  ) {
    this.#device = device;
    this.#beforeRing = beforeRing;
    this.#onRoutes = onRoutes;
    this.#maxFds = maxFds;
    this.#stats = stats;
    this.#r = responder;
  }

  /** The device's valid doorbells in BAR `index`, at most `maxFds`. */
  #doorbells(index: number): VfioUserDoorbell[] {
    return this.#positioned(index).map(([d]) => d);
  }

  /** `#doorbells` with each one's position in the device's list. */
  #positioned(index: number): [VfioUserDoorbell, number][] {
    const bar = this.#device.bars[index];
    if (bar === null || bar === undefined || this.#device.doorbells === undefined) return [];
    const out: [VfioUserDoorbell, number][] = [];
    for (const [pos, d] of this.#device.doorbells().entries()) {
      if (d.bar !== index || !Number.isInteger(d.offset) || d.offset < 0) continue;
      if (d.offset + Math.max(d.size, d.replay.size) > bar.size) continue;
      if (d.datamatch !== undefined && d.size === 0) continue;
      if (out.length === this.#maxFds) break;
      out.push([d, pos]);
    }
    return out;
  }

  /** Creates and polls an eventfd per doorbell of region `index`; null (all closed again) on failure. */
  #arm(index: number): Armed[] | null {
    const have = this.#armed.get(index);
    if (have !== undefined) return have;
    const armed: Armed[] = [];
    try {
      for (const [doorbell, position] of this.#positioned(index)) {
        const fd = sys.eventfd();
        const poll = sys.pollFd(fd, (ev) => {
          if (ev.readable) this.#ring(entry);
        });
        const entry: Armed = { doorbell, position, fd, poll, held: false };
        armed.push(entry);
        poll.start({ readable: true, disconnect: false });
      }
    } catch (e) {
      this.#r.log(`GET_REGION_IO_FDS: ${(e as Error).message}`);
      this.#disarm(armed);
      return null;
    }
    this.#armed.set(index, armed);
    for (const a of armed) this.#byPosition.set(a.position, a);
    this.#onRoutes();
    return armed;
  }

  /** The armed eventfd of the device's doorbell `i` (its position in `doorbells()`), or undefined. */
  #at(i: number): Armed | undefined {
    return this.#byPosition.get(i);
  }

  /** VfioUserDoorbellEventfds.fd. */
  fdOf(i: number): number | null {
    return this.#at(i)?.fd ?? null;
  }

  /** VfioUserDoorbellEventfds.hold: a held eventfd is not polled here (the device reads it). */
  hold(i: number, held: boolean): void {
    const a = this.#at(i);
    if (a === undefined || a.held === held) return;
    a.held = held;
    if (held) a.poll.stop();
    else a.poll.start({ readable: true, disconnect: false });
  }

  #ring(a: Armed): void {
    const n = sys.eventfdRead(a.fd);
    if (n === 0n) return;
    this.#beforeRing();
    this.#stats.kicksByEventfd++;
    this.#stats.kickSignalsByEventfd += Number(n);
    const d = a.doorbell;
    this.#r.safe(() => this.#device.barWrite(d.bar, d.offset, d.replay.size, d.replay.value));
  }

  #disarm(armed: Armed[]): void {
    for (const a of armed) {
      a.poll.close();
      sys.close(a.fd);
    }
  }

  /** Stops polling and closes every eventfd (disconnect; the client's duplicates are its own). */
  closeAll(): void {
    for (const armed of this.#armed.values()) this.#disarm(armed);
    this.#armed.clear();
    this.#byPosition.clear();
  }

  /**
   * DEVICE_GET_REGION_IO_FDS. An argsz too small for the sub-regions gets the header alone with the argsz
   * and count needed, and no descriptors (as libvfio-user answers).
   */
  get(h: RequestHeader, b: Uint8Array) {
    if (b.length < REGION_IO_FDS.SIZE) return this.#r.error(h, Errno.EINVAL, 'malformed GET_REGION_IO_FDS');
    const v = view(b);
    const argsz = v.getUint32(REGION_IO_FDS.argsz, true);
    const index = v.getUint32(REGION_IO_FDS.index, true);
    if (argsz < REGION_IO_FDS.SIZE)
      return this.#r.error(h, Errno.EINVAL, `GET_REGION_IO_FDS argsz ${argsz} too small`);
    if (v.getUint32(REGION_IO_FDS.flags, true) !== 0 || v.getUint32(REGION_IO_FDS.count, true) !== 0)
      return this.#r.error(h, Errno.EINVAL, 'GET_REGION_IO_FDS flags and count must be zero');
    const exists = index === Region.CONFIG || (index <= Region.BAR5 && !!this.#device.bars[index]);
    if (!exists) return this.#r.error(h, Errno.EINVAL, `no region ${index}`);
    const doorbells = this.#doorbells(index);
    const needed = REGION_IO_FDS.SIZE + doorbells.length * IO_FD_SUB_REGION.SIZE;
    if (argsz < needed || doorbells.length === 0) return this.#reply(h, index, doorbells, false);
    const armed = this.#arm(index);
    if (armed === null) return this.#r.error(h, Errno.ENOMEM, 'cannot create eventfds');
    this.#reply(h, index, armed, true);
  }

  #reply(h: RequestHeader, index: number, subs: readonly (VfioUserDoorbell | Armed)[], full: boolean): void {
    const n = subs.length;
    const argsz = REGION_IO_FDS.SIZE + n * IO_FD_SUB_REGION.SIZE;
    const out = makeBody(full ? argsz : REGION_IO_FDS.SIZE, (o) => {
      o.setUint32(REGION_IO_FDS.argsz, argsz, true);
      o.setUint32(REGION_IO_FDS.flags, 0, true);
      o.setUint32(REGION_IO_FDS.index, index, true);
      o.setUint32(REGION_IO_FDS.count, n, true);
      if (!full) return;
      subs.forEach((s, i) => {
        const d = 'doorbell' in s ? s.doorbell : s;
        const at = REGION_IO_FDS.subRegions + i * IO_FD_SUB_REGION.SIZE;
        o.setBigUint64(at + IO_FD_SUB_REGION.offset, BigInt(d.offset), true);
        o.setBigUint64(at + IO_FD_SUB_REGION.size, BigInt(d.size), true);
        o.setUint32(at + IO_FD_SUB_REGION.fdIndex, i, true);
        o.setUint32(at + IO_FD_SUB_REGION.type, IoFdType.IOEVENTFD, true);
        o.setUint32(
          at + IO_FD_SUB_REGION.flags,
          d.datamatch === undefined ? 0 : IoEventfdFlag.DATAMATCH,
          true,
        );
        o.setBigUint64(at + IO_FD_SUB_REGION.datamatch, d.datamatch ?? 0n, true);
      });
    });
    const fds = full ? subs.map((s) => ('fd' in s ? s.fd : -1)).filter((fd) => fd >= 0) : [];
    this.#r.reply(h, out, fds);
  }
}
