/**
 * Tap file descriptors: open /dev/net/tun by interface name or adopt fds a VMM opened, and the TUN*
 * ioctls on them (linux/if_tun.h; QEMU: net/tap-linux.c). No state: TapBackend holds the fds.
 */
import { execFileSync } from 'node:child_process';
import { BackendError, OptionsError } from '../errors.js';
import {
  Errno,
  errnoName,
  F_GETFL,
  F_SETFL,
  type Libc,
  libc,
  O_CLOEXEC,
  O_NONBLOCK,
  O_RDWR,
} from '../host/libc.js';
import type { BackendOffloads } from '../net/backend.js';

/** linux/if_tun.h ioctls (x86-64/aarch64 encodings of _IOW/_IOR('T', n, int)). */
export const TUNSETIFF = 0x400454ca;
export const TUNSETPERSIST = 0x400454cb;
export const TUNGETFEATURES = 0x800454cf;
export const TUNSETOFFLOAD = 0x400454d0;
export const TUNGETIFF = 0x800454d2;
export const TUNGETVNETHDRSZ = 0x800454d7;
export const TUNSETVNETHDRSZ = 0x400454d8;
export const TUNSETQUEUE = 0x400454d9;
export const TUNSETCARRIER = 0x400454e2;

/** linux/if_tun.h ifr_flags. */
export const IFF_TAP = 0x0002;
export const IFF_MULTI_QUEUE = 0x0100;
export const IFF_ATTACH_QUEUE = 0x0200;
export const IFF_DETACH_QUEUE = 0x0400;
export const IFF_NO_PI = 0x1000;
export const IFF_VNET_HDR = 0x4000;

/** linux/if_tun.h TUNSETOFFLOAD bits. */
export const TUN_F_CSUM = 0x01;
export const TUN_F_TSO4 = 0x02;
export const TUN_F_TSO6 = 0x04;
export const TUN_F_TSO_ECN = 0x08;
export const TUN_F_UFO = 0x10;
export const TUN_F_USO4 = 0x20;
export const TUN_F_USO6 = 0x40;
/** GSO over UDP tunnels (Linux 6.17+), and with the outer UDP checksum partial. */
export const TUN_F_UDP_TUNNEL_GSO = 0x80;
export const TUN_F_UDP_TUNNEL_GSO_CSUM = 0x100;

const IFNAMSIZ = 16;
const IFREQ_SIZE = 40;

/** An opened or adopted tap: its fds (one per queue pair), name, IFF_* flags and TUNGETFEATURES. */
export interface TapFds {
  fds: number[];
  name: string;
  flags: number;
  features: number;
}

/** A BackendError for a failed call, with the errno's usual meaning for taps spelled out. */
export function errnoError(what: string, errnum: number, context = ''): BackendError {
  const name = errnoName(errnum);
  let hint = '';
  if (errnum === Errno.EPERM || errnum === Errno.EACCES)
    hint = ': needs CAP_NET_ADMIN (run as root or grant the capability), or the tap belongs to another user';
  else if (errnum === Errno.EBUSY)
    hint =
      ': the interface name is in use (by a non-tap or with other flags) or the queue is already attached';
  else if (errnum === Errno.ENOENT || errnum === Errno.ENODEV || errnum === Errno.ENXIO)
    hint = ': no /dev/net/tun (load the tun module, or give the container the device)';
  else if (errnum === Errno.EINVAL) hint = ': the kernel rejected the request (flags or value not supported)';
  let msg = `${what}${context} failed with ${name}${hint}`;
  try {
    msg += ` (${libc().strerror(errnum)})`;
  } catch {
    // strerror is cosmetic
  }
  return new BackendError(msg, errnum, name);
}

/**
 * The tap no longer exists (tun.c answers EBADFD once the interface is deleted). Not EIO: that is a
 * write to a tap that is administratively down (`ip link set … down`), which comes back up.
 */
export function isGoneErrno(e: number): boolean {
  return e === Errno.EBADFD || e === Errno.ENODEV || e === Errno.ENXIO || e === Errno.EBADF;
}

/** The interface name in an ifreq (NUL-terminated, at most IFNAMSIZ bytes). */
function ifreqName(ifr: Uint8Array): string {
  const end = ifr.indexOf(0);
  return Buffer.from(ifr.subarray(0, end < 0 || end > IFNAMSIZ ? IFNAMSIZ : end)).toString();
}

/**
 * Opens /dev/net/tun once per queue and TUNSETIFF with IFF_TAP | IFF_NO_PI [| IFF_VNET_HDR]
 * [| IFF_MULTI_QUEUE], then moves the tap into `netns` when given. Closes what it opened on failure.
 */
export function openTapFds(c: Libc, name: string, queues: number, vnet: boolean, netns?: string): TapFds {
  let flags = IFF_TAP | IFF_NO_PI | (vnet ? IFF_VNET_HDR : 0);
  if (queues > 1) flags |= IFF_MULTI_QUEUE;
  const fds: number[] = [];
  const ifr = new Uint8Array(IFREQ_SIZE);
  const ifrView = new DataView(ifr.buffer);
  let features = 0;
  let actual = name;
  try {
    for (let i = 0; i < queues; i++) {
      const fd = c.open('/dev/net/tun', O_RDWR | O_NONBLOCK | O_CLOEXEC, 0);
      if (fd < 0) throw errnoError('open(/dev/net/tun)', c.errno());
      fds.push(fd);
      if (i === 0) {
        const f = new Uint32Array(1);
        if (c.ioctlPtr(fd, TUNGETFEATURES, f) === 0) features = f[0] as number;
        if (queues > 1 && features !== 0 && !(features & IFF_MULTI_QUEUE))
          throw new BackendError('TapBackend.open: this kernel has no multiqueue tap (IFF_MULTI_QUEUE)');
        if (vnet && features !== 0 && !(features & IFF_VNET_HDR))
          throw new BackendError('TapBackend.open: this kernel has no IFF_VNET_HDR; use vnetHeader: false');
      }
      ifr.fill(0);
      Buffer.from(ifr.buffer).write(actual, 0, IFNAMSIZ - 1);
      ifrView.setUint16(IFNAMSIZ, flags, true);
      if (c.ioctlPtr(fd, TUNSETIFF, ifr) < 0)
        throw errnoError('TUNSETIFF', c.errno(), ` on '${actual || 'tap%d'}'`);
      actual = ifreqName(ifr);
    }
    if (netns) {
      try {
        execFileSync('ip', ['link', 'set', 'dev', actual, 'netns', netns], { stdio: 'pipe' });
      } catch (err) {
        throw new BackendError(
          `TapBackend.open: cannot move '${actual}' into netns '${netns}': ${String((err as { stderr?: Buffer }).stderr ?? err).trim()}`,
        );
      }
    }
    return { fds, name: actual, flags, features };
  } catch (err) {
    for (const fd of fds) c.close(fd);
    throw err;
  }
}

/**
 * Checks fds a VMM opened (one per queue, same tap, IFF_TAP | IFF_NO_PI), reads their name and flags
 * back with TUNGETIFF and sets O_NONBLOCK. Closes nothing: until adopted they are the caller's.
 */
export function adoptTapFds(c: Libc, fds: number[], vnetHeader?: boolean): TapFds {
  const ifr = new Uint8Array(IFREQ_SIZE);
  let name = '';
  let flags = 0;
  for (const fd of fds) {
    ifr.fill(0);
    if (c.ioctlPtr(fd, TUNGETIFF, ifr) < 0)
      throw errnoError('TUNGETIFF', c.errno(), ` on fd ${fd} (is it a tap fd?)`);
    const n = ifreqName(ifr);
    const f = new DataView(ifr.buffer).getUint16(IFNAMSIZ, true);
    if (name && n !== name)
      throw new OptionsError(`TapBackend.adopt: fds belong to different taps ('${name}', '${n}')`);
    name = n;
    flags = f;
    if (!(f & IFF_TAP) || !(f & IFF_NO_PI))
      throw new OptionsError(`TapBackend.adopt: fd ${fd} must be a tap opened with IFF_TAP | IFF_NO_PI`);
    const fl = c.fcntl(fd, F_GETFL, 0);
    if (fl < 0 || c.fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) throw errnoError('fcntl(O_NONBLOCK)', c.errno());
  }
  if (vnetHeader !== undefined && vnetHeader !== ((flags & IFF_VNET_HDR) !== 0))
    throw new OptionsError(
      `TapBackend.adopt: vnetHeader ${vnetHeader} does not match the tap (IFF_VNET_HDR is ${flags & IFF_VNET_HDR ? 'on' : 'off'})`,
    );
  if (fds.length > 1 && !(flags & IFF_MULTI_QUEUE))
    throw new OptionsError('TapBackend.adopt: several fds need a tap opened with IFF_MULTI_QUEUE');
  const f = new Uint32Array(1);
  const features = c.ioctlPtr(fds[0] as number, TUNGETFEATURES, f) === 0 ? (f[0] as number) : 0;
  return { fds: [...fds], name, flags, features };
}

/** TUNGETVNETHDRSZ, or `fallback` when the ioctl fails. */
export function vnetHeaderSize(c: Libc, fd: number, fallback: number): number {
  const sz = new Int32Array(1);
  return c.ioctlPtr(fd, TUNGETVNETHDRSZ, sz) === 0 ? (sz[0] as number) : fallback;
}

/** TUNSETVNETHDRSZ; false (errno set) when it failed. */
export function setVnetHeaderSize(c: Libc, fd: number, size: number): boolean {
  return c.ioctlPtr(fd, TUNSETVNETHDRSZ, new Int32Array([size])) >= 0;
}

/** TUNSETOFFLOAD; false (errno set) when it failed. */
export function setOffloadBits(c: Libc, fd: number, bits: number): boolean {
  return c.ioctlVal(fd, TUNSETOFFLOAD, bits) >= 0;
}

/** TUNSETQUEUE IFF_ATTACH_QUEUE / IFF_DETACH_QUEUE; false (errno set) when it failed. */
export function setQueueAttached(c: Libc, fd: number, attached: boolean): boolean {
  const ifr = new Uint8Array(IFREQ_SIZE);
  new DataView(ifr.buffer).setUint16(IFNAMSIZ, attached ? IFF_ATTACH_QUEUE : IFF_DETACH_QUEUE, true);
  return c.ioctlPtr(fd, TUNSETQUEUE, ifr) >= 0;
}

/** TUNSETCARRIER; false (errno set) when it failed. */
export function setCarrier(c: Libc, fd: number, up: boolean): boolean {
  return c.ioctlPtr(fd, TUNSETCARRIER, new Int32Array([up ? 1 : 0])) >= 0;
}

export function noOffloads(): BackendOffloads {
  return {
    csum: false,
    tso4: false,
    tso6: false,
    ecn: false,
    ufo: false,
    uso4: false,
    uso6: false,
    tunnel: false,
    tunnelCsum: false,
  };
}

/** TUN_F_* bits for `want`, limited to `can` and to the combinations the kernel takes. */
export function offloadBits(want: BackendOffloads, can: BackendOffloads): number {
  if (!(want.csum && can.csum)) return 0;
  let bits = TUN_F_CSUM;
  if (want.tso4 && can.tso4) bits |= TUN_F_TSO4;
  if (want.tso6 && can.tso6) bits |= TUN_F_TSO6;
  if (want.ecn && can.ecn && bits & (TUN_F_TSO4 | TUN_F_TSO6)) bits |= TUN_F_TSO_ECN;
  if (want.ufo && can.ufo) bits |= TUN_F_UFO;
  if (want.uso4 && want.uso6 && can.uso4 && can.uso6) bits |= TUN_F_USO4 | TUN_F_USO6;
  // tun takes tunnel GSO only on top of a plain one (TSO or USO), its checksum only with it.
  if (want.tunnel && can.tunnel && bits & (TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4)) {
    bits |= TUN_F_UDP_TUNNEL_GSO;
    if (want.tunnelCsum && can.tunnelCsum) bits |= TUN_F_UDP_TUNNEL_GSO_CSUM;
  }
  return bits;
}

/** Which TUNSETOFFLOAD combinations this kernel accepts; leaves the tap with offloads off. */
export function probeOffloads(c: Libc, fd: number): BackendOffloads {
  const ok = (bits: number) => c.ioctlVal(fd, TUNSETOFFLOAD, bits) === 0;
  const csum = ok(TUN_F_CSUM);
  const o: BackendOffloads = {
    csum,
    tso4: csum && ok(TUN_F_CSUM | TUN_F_TSO4),
    tso6: csum && ok(TUN_F_CSUM | TUN_F_TSO6),
    ecn: csum && ok(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO_ECN),
    ufo: csum && ok(TUN_F_CSUM | TUN_F_UFO),
    uso4: false,
    uso6: false,
    tunnel: false,
    tunnelCsum: false,
  };
  o.uso4 = o.uso6 = csum && ok(TUN_F_CSUM | TUN_F_USO4 | TUN_F_USO6);
  // As QEMU's tap_probe_has_tunnel: on top of TSO4; the kernel has both tunnel bits or neither.
  const tunnel = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_UDP_TUNNEL_GSO;
  o.tunnel = o.tso4 && ok(tunnel);
  o.tunnelCsum = o.tunnel && ok(tunnel | TUN_F_UDP_TUNNEL_GSO_CSUM);
  c.ioctlVal(fd, TUNSETOFFLOAD, 0);
  return o;
}
