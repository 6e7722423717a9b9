/**
 * The receive filter of virtio-net (VIRTIO 1.3 §5.1.6.5.1 "Packet Receive Filtering", §5.1.6.5.2 MAC
 * table, §5.1.6.5.3 VLAN filtering), with QEMU's semantics (hw/net/virtio-net.c `receive_filter`):
 * promiscuous overrides everything; a tagged frame (TPID 0x8100) must have its VID in the VLAN table;
 * broadcast passes unless NOBCAST; multicast passes with ALLMULTI or a multicast table overflow or a table
 * hit, never with NOMULTI; unicast passes with ALLUNI, a unicast table overflow, our MAC or a table hit,
 * never with NOUNI.
 */

/** QEMU's MAC_TABLE_ENTRIES. */
export const MAC_TABLE_ENTRIES = 64;
/** VLAN IDs 0..4095. */
export const MAX_VLAN = 4096;

/** Receive-mode commands of VIRTIO_NET_CTRL_RX (§5.1.6.5.1). */
export const RxMode = { PROMISC: 0, ALLMULTI: 1, ALLUNI: 2, NOMULTI: 3, NOUNI: 4, NOBCAST: 5 } as const;

export interface RxFilterState {
  promisc: boolean;
  allmulti: boolean;
  alluni: boolean;
  nomulti: boolean;
  nouni: boolean;
  nobcast: boolean;
  /** MAC table entries as "aa:bb:..." strings: unicast first, then multicast. */
  unicast: string[];
  multicast: string[];
  uniOverflow: boolean;
  multiOverflow: boolean;
  /** VLAN bitmap as 128 u32 words. */
  vlans: number[];
}

export class RxFilter {
  /** QEMU resets to promiscuous (virtio_net_reset: n->promisc = 1). */
  promisc = true;
  allmulti = false;
  alluni = false;
  nomulti = false;
  nouni = false;
  nobcast = false;
  uniOverflow = false;
  multiOverflow = false;
  /** MAC table: `inUse` entries of 6 bytes; unicast ones first, multicast from `firstMulti`. */
  readonly macs = new Uint8Array(MAC_TABLE_ENTRIES * 6);
  inUse = 0;
  firstMulti = 0;
  /** One bit per VLAN ID. */
  readonly vlans = new Uint32Array(MAX_VLAN >> 5);

  /** Our own MAC (the config-space `mac`), 6 bytes; updated by MAC_ADDR_SET. */
  readonly mac = new Uint8Array(6);

  /** Device reset: QEMU's virtio_net_reset state (promiscuous, empty tables). */
  reset(ctrlVlan: boolean): void {
    this.promisc = true;
    this.allmulti = this.alluni = this.nomulti = this.nouni = this.nobcast = false;
    this.uniOverflow = this.multiOverflow = false;
    this.inUse = this.firstMulti = 0;
    this.macs.fill(0);
    this.setVlanDefault(ctrlVlan);
  }

  /** With CTRL_VLAN negotiated the table starts empty (tagged frames dropped); without it, all pass. */
  setVlanDefault(ctrlVlan: boolean): void {
    this.vlans.fill(ctrlVlan ? 0 : 0xffffffff);
  }

  setMode(cmd: number, on: boolean): boolean {
    switch (cmd) {
      case RxMode.PROMISC:
        this.promisc = on;
        return true;
      case RxMode.ALLMULTI:
        this.allmulti = on;
        return true;
      case RxMode.ALLUNI:
        this.alluni = on;
        return true;
      case RxMode.NOMULTI:
        this.nomulti = on;
        return true;
      case RxMode.NOUNI:
        this.nouni = on;
        return true;
      case RxMode.NOBCAST:
        this.nobcast = on;
        return true;
      default:
        return false;
    }
  }

  vlanAdd(vid: number): void {
    this.vlans[vid >> 5]! |= 1 << (vid & 31);
  }

  vlanDel(vid: number): void {
    this.vlans[vid >> 5]! &= ~(1 << (vid & 31));
  }

  vlanAllowed(vid: number): boolean {
    return (this.vlans[vid >> 5]! & (1 << (vid & 31))) !== 0;
  }

  /** Whether the frame passes. Allocates nothing. Frames shorter than an Ethernet header are rejected. */
  accepts(frame: Uint8Array): boolean {
    return this.acceptsAt(frame, 0, frame.length);
  }

  /** `accepts` for the frame at `bytes[offset, offset + length)` (a frame in guest memory, no view). */
  acceptsAt(bytes: Uint8Array, offset: number, length: number): boolean {
    if (this.promisc) return true;
    if (length < 14) return false;
    const o = offset;
    if (bytes[o + 12] === 0x81 && bytes[o + 13] === 0x00) {
      if (length < 16) return false;
      const vid = ((bytes[o + 14]! << 8) | bytes[o + 15]!) & 0xfff;
      if (!this.vlanAllowed(vid)) return false;
    }
    if (bytes[o]! & 1) {
      if (isBroadcast(bytes, o)) return !this.nobcast;
      if (this.nomulti) return false;
      if (this.allmulti || this.multiOverflow) return true;
      return this.tableHit(bytes, o, this.firstMulti, this.inUse);
    }
    if (this.nouni) return false;
    if (this.alluni || this.uniOverflow) return true;
    if (equal6(bytes, o, this.mac, 0)) return true;
    return this.tableHit(bytes, o, 0, this.firstMulti);
  }

  private tableHit(bytes: Uint8Array, o: number, from: number, to: number): boolean {
    for (let i = from; i < to; i++) if (equal6(bytes, o, this.macs, i * 6)) return true;
    return false;
  }

  state(): RxFilterState {
    const macAt = (i: number) => formatMac(this.macs.subarray(i * 6, i * 6 + 6));
    const unicast: string[] = [];
    const multicast: string[] = [];
    for (let i = 0; i < this.inUse; i++) (i < this.firstMulti ? unicast : multicast).push(macAt(i));
    return {
      promisc: this.promisc,
      allmulti: this.allmulti,
      alluni: this.alluni,
      nomulti: this.nomulti,
      nouni: this.nouni,
      nobcast: this.nobcast,
      unicast,
      multicast,
      uniOverflow: this.uniOverflow,
      multiOverflow: this.multiOverflow,
      vlans: Array.from(this.vlans),
    };
  }

  restore(s: RxFilterState): void {
    this.promisc = s.promisc;
    this.allmulti = s.allmulti;
    this.alluni = s.alluni;
    this.nomulti = s.nomulti;
    this.nouni = s.nouni;
    this.nobcast = s.nobcast;
    this.uniOverflow = s.uniOverflow;
    this.multiOverflow = s.multiOverflow;
    const all = [...s.unicast, ...s.multicast].slice(0, MAC_TABLE_ENTRIES);
    this.macs.fill(0);
    for (const [i, m] of all.entries()) this.macs.set(parseMac(m), i * 6);
    this.inUse = all.length;
    this.firstMulti = Math.min(s.unicast.length, MAC_TABLE_ENTRIES);
    for (let i = 0; i < this.vlans.length; i++) this.vlans[i] = (s.vlans[i] ?? 0) >>> 0;
  }
}

function isBroadcast(f: Uint8Array, o: number): boolean {
  return (f[o]! & f[o + 1]! & f[o + 2]! & f[o + 3]! & f[o + 4]! & f[o + 5]!) === 0xff;
}

function equal6(a: Uint8Array, ao: number, b: Uint8Array, bo: number): boolean {
  return (
    a[ao] === b[bo] &&
    a[ao + 1] === b[bo + 1] &&
    a[ao + 2] === b[bo + 2] &&
    a[ao + 3] === b[bo + 3] &&
    a[ao + 4] === b[bo + 4] &&
    a[ao + 5] === b[bo + 5]
  );
}

/** "52:54:00:12:34:56" → 6 bytes. */
export function parseMac(mac: string): Uint8Array {
  const out = new Uint8Array(6);
  const parts = mac.split(':');
  for (let i = 0; i < 6; i++) out[i] = Number.parseInt(parts[i] ?? '0', 16) & 0xff;
  return out;
}

export function formatMac(bytes: Uint8Array): string {
  return Array.from(bytes.subarray(0, 6), (b) => b.toString(16).padStart(2, '0')).join(':');
}
