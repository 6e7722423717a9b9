/**
 * The RSS steering program (VIRTIO 1.3 §5.1.6.4.3) for a multiqueue tap (TUNSETSTEERINGEBPF), as QEMU's
 * ebpf/rss.bpf.c; lib/tap/steering.ts loads and attaches it. tun runs the program for every frame it is about
 * to queue (`tun_select_queue`) and uses `return value % attached queues` as the tap queue, so frames
 * reach the queue pair the guest's RSS configuration names and no copy between queues is needed.
 *
 * The program is raw eBPF built with lib/host/bpf.ts's assembler (no compiler at run time). It
 * is a BPF_PROG_TYPE_SOCKET_FILTER (the only type tun accepts); the skb it sees starts at the Ethernet
 * header; it reads the frame with bpf_skb_load_bytes (which fails cleanly past the end, unlike LD_ABS,
 * whose failure ends the program with 0). It computes exactly what lib/net/rss-hash.ts `rssHash` computes:
 * - Ethernet with up to two VLAN tags, counting a tag the stack left in skb->vlan_tci (tun inserts it
 *   into the frame it writes, so the guest sees it); a third tag is unclassified.
 * - IPv4 (version 4, IHL >= 5, whole header present): addresses, plus ports for TCP/UDP when the hash
 *   type is on, the datagram is not a fragment and the minimal L4 header is in the frame.
 * - IPv6 (version 6, 40 bytes present): walks up to `MAX_IPV6_EXT_HEADERS` extension headers
 *   (Hop-by-Hop, Routing, Fragment, AH, Destination Options) as lib/net/packet-parser.ts does, then the
 *   same port rules, _EX type before plain per L4 kind. The _EX types use the first type 2 Routing
 *   Header's address as destination and the first Home Address option (looked for among the first
 *   `MAX_DEST_OPTIONS` options of each Destination Options header) as source.
 * - Where the program stops short of the parser (more than MAX_IPV6_EXT_HEADERS extension headers, a
 *   Home Address option past MAX_DEST_OPTIONS options) it hashes what it found: addresses only, or the
 *   plain source. Real stacks send at most a handful of each; rssHash differs only for such frames.
 * - Toeplitz over a fixed 36-byte input (src, dst, ports; zero bytes contribute nothing, so IPv4's 12
 *   bytes and address-only inputs fit the same layout) by table lookup: the config map holds, per input
 *   byte position, the hash contribution of each of the 256 byte values (what `ToeplitzKey` builds),
 *   so the hash is 36 loads and XORs, unrolled.
 * - queue = table[hash & (length - 1)]; no applicable hash type → `defaultQueue`.
 *
 * One BPF array map with one entry holds the whole configuration (`encodeSteeringConfig`; TapSteering
 * rewrites it without reloading the program). The program reads it through a direct map-value pointer
 * (BPF_PSEUDO_MAP_VALUE).
 */

import { OptionsError } from '../errors.js';
import {
  BPF_ADD,
  BPF_AND,
  BPF_B,
  BPF_DW,
  BPF_FUNC_skb_load_bytes,
  BPF_H,
  BPF_JEQ,
  BPF_JGE,
  BPF_JGT,
  BPF_JLT,
  BPF_JNE,
  BPF_LSH,
  BPF_RSH,
  BPF_W,
  BPF_XOR,
  BpfAssembler,
  R0,
  R1,
  R10,
  R2,
  R3,
  R4,
  R6,
  R7,
  R8,
  R9,
} from '../host/bpf.js';
import {
  VIRTIO_NET_RSS_HASH_TYPE_IP_EX,
  VIRTIO_NET_RSS_HASH_TYPE_IPv4,
  VIRTIO_NET_RSS_HASH_TYPE_IPv6,
  VIRTIO_NET_RSS_HASH_TYPE_TCP_EX,
  VIRTIO_NET_RSS_HASH_TYPE_TCPv4,
  VIRTIO_NET_RSS_HASH_TYPE_TCPv6,
  VIRTIO_NET_RSS_HASH_TYPE_UDP_EX,
  VIRTIO_NET_RSS_HASH_TYPE_UDPv4,
  VIRTIO_NET_RSS_HASH_TYPE_UDPv6,
} from '../net/rss-hash.js';
import { ToeplitzKey } from '../net/toeplitz.js';

/** VIRTIO_NET_RSS_MAX_KEY_SIZE (QEMU's rss_max_key_size; VIRTIO 1.3 §5.1.4). */
export const RSS_MAX_KEY_SIZE = 40;
/** VIRTIO_NET_RSS_MAX_TABLE_LEN (QEMU): indirection table entries at most. */
export const RSS_MAX_TABLE_LEN = 128;
/** tun's MAX_TAP_QUEUES: queue indexes are below this. */
export const MAX_TAP_QUEUES = 256;
/** IPv6 extension headers the program walks before giving up on ports (addresses-only hash then). */
export const MAX_IPV6_EXT_HEADERS = 8;
/** Options of one Destination Options header the program looks through for a Home Address option. */
export const MAX_DEST_OPTIONS = 8;

/** Every VIRTIO_NET_RSS_HASH_TYPE_* bit. */
export const ALL_HASH_TYPES =
  VIRTIO_NET_RSS_HASH_TYPE_IPv4 |
  VIRTIO_NET_RSS_HASH_TYPE_TCPv4 |
  VIRTIO_NET_RSS_HASH_TYPE_UDPv4 |
  VIRTIO_NET_RSS_HASH_TYPE_IPv6 |
  VIRTIO_NET_RSS_HASH_TYPE_TCPv6 |
  VIRTIO_NET_RSS_HASH_TYPE_UDPv6 |
  VIRTIO_NET_RSS_HASH_TYPE_IP_EX |
  VIRTIO_NET_RSS_HASH_TYPE_TCP_EX |
  VIRTIO_NET_RSS_HASH_TYPE_UDP_EX;
/** Hash types the program computes: all nine of VIRTIO 1.3 §5.1.6.4.3.1. */
export const STEERING_HASH_TYPES = ALL_HASH_TYPES;

/** The RSS configuration the program applies (VIRTIO 1.3 §5.1.6.5.7.1, `virtio_net_rss_config`). */
export interface RssSteeringConfig {
  /** Toeplitz key, 1..40 bytes (bytes past its end count as zero, as in lib/net/toeplitz.ts). */
  key: Uint8Array;
  /** VIRTIO_NET_RSS_HASH_TYPE_* bits (lib/net/rss-hash.ts), 0..0x1ff. */
  hashTypes: number;
  /** Indirection table: tap queue per entry; length a power of 2 in 1..128. */
  table: readonly number[];
  /** Queue of frames no enabled hash type applies to (`unclassified_queue`). */
  defaultQueue: number;
}

// ---------------------------------------------------------------------------------------------------
// The configuration map value (one array entry), native little-endian:
//   0: u32 hash_types   4: u32 table mask (length - 1)   8: u32 default queue   12: u32 zero
//   16: u16 indirection[128]
//   272: u32 toeplitz[36][256]: contribution of byte value b at input position p (ToeplitzKey's table)

const CFG_HASH_TYPES = 0;
const CFG_TABLE_MASK = 4;
const CFG_DEFAULT_QUEUE = 8;
const CFG_ZERO = 12;
const CFG_TABLE = 16;
const CFG_TOEPLITZ = CFG_TABLE + 2 * RSS_MAX_TABLE_LEN;
/** Hash input bytes: IPv6 source, destination, ports. */
const HASH_INPUT = 36;
/** Size of the map value. */
export const STEERING_CONFIG_SIZE = CFG_TOEPLITZ + HASH_INPUT * 256 * 4;

/** Throws OptionsError unless `config` is a valid configuration for the program. */
export function validateSteeringConfig(config: RssSteeringConfig, what = 'TapSteering'): void {
  const { key, hashTypes, table, defaultQueue } = config;
  if (!(key instanceof Uint8Array) || key.length < 1 || key.length > RSS_MAX_KEY_SIZE)
    throw new OptionsError(
      `${what}: key must be a Uint8Array of 1..${RSS_MAX_KEY_SIZE} bytes, got ${key instanceof Uint8Array ? `${key.length} bytes` : typeof key}`,
    );
  if (!Number.isInteger(hashTypes) || hashTypes < 0 || hashTypes & ~ALL_HASH_TYPES)
    throw new OptionsError(
      `${what}: hashTypes must be VIRTIO_NET_RSS_HASH_TYPE_* bits (0..0x1ff), got ${hashTypes}`,
    );
  const n = table.length;
  if (!Array.isArray(table) || n < 1 || n > RSS_MAX_TABLE_LEN || (n & (n - 1)) !== 0)
    throw new OptionsError(
      `${what}: table length must be a power of 2 in 1..${RSS_MAX_TABLE_LEN}, got ${Array.isArray(table) ? n : typeof table}`,
    );
  for (let i = 0; i < n; i++) {
    const q = table[i];
    if (!Number.isInteger(q) || (q as number) < 0 || (q as number) >= MAX_TAP_QUEUES)
      throw new OptionsError(
        `${what}: table[${i}] must be a queue index in 0..${MAX_TAP_QUEUES - 1}, got ${q}`,
      );
  }
  if (!Number.isInteger(defaultQueue) || defaultQueue < 0 || defaultQueue >= MAX_TAP_QUEUES)
    throw new OptionsError(
      `${what}: defaultQueue must be a queue index in 0..${MAX_TAP_QUEUES - 1}, got ${defaultQueue}`,
    );
}

/** The map value for `config` (validated first). */
export function encodeSteeringConfig(config: RssSteeringConfig): Uint8Array {
  validateSteeringConfig(config);
  const out = new Uint8Array(STEERING_CONFIG_SIZE);
  const v = new DataView(out.buffer);
  v.setUint32(CFG_HASH_TYPES, config.hashTypes, true);
  v.setUint32(CFG_TABLE_MASK, config.table.length - 1, true);
  v.setUint32(CFG_DEFAULT_QUEUE, config.defaultQueue, true);
  for (let i = 0; i < config.table.length; i++)
    v.setUint16(CFG_TABLE + 2 * i, config.table[i] as number, true);
  const key = new ToeplitzKey(config.key);
  const one = new Uint8Array(1);
  for (let pos = 0; pos < HASH_INPUT; pos++)
    for (let b = 1; b < 256; b++) {
      one[0] = b;
      v.setInt32(CFG_TOEPLITZ + (pos * 256 + b) * 4, key.partial(one, 0, 1, pos), true);
    }
  return out;
}

// Stack layout (offsets from R10). Stack accesses must be aligned to their size.
const S_INPUT = -40; // 36-byte hash input (src, dst, ports), zeroed first
const S_SCRATCH = -48; // 8 bytes: fields of the header being looked at
const S_FRAG = -56; // u64: IPv6 fragment seen
const S_EXSRC = -64; // u64: offset of the Home Address option's address (0: none seen)
const S_EXDST = -72; // u64: offset of the type 2 Routing Header's address (0: none seen)
const S_END = -80; // u64: end offset of the extension header being looked at
const S_OPT = -88; // 2 bytes: type and length of a Destination Options option
const S_IP4 = -112; // 20-byte IPv4 header
const ETH_P_8021Q = 0x8100;
const ETH_P_8021AD = 0x88a8;
const SKB_LEN = 0; // offsetof(struct __sk_buff, len)
const SKB_VLAN_PRESENT = 20; // offsetof(struct __sk_buff, vlan_present)

/** Builds the steering program for the config map `mapFd`. */
export function buildSteeringProgram(mapFd: number): Uint8Array {
  const a = new BpfAssembler();
  const DEFAULT = 'default';
  const HASH = 'hash';
  // R6 = skb, R7 = config value, R8 = current offset, R9 = EtherType / next header.
  const loadBytes = (offReg: number, offAdd: number, stackOff: number, len: number, fail: string) => {
    a.movReg(R1, R6).movReg(R2, offReg);
    if (offAdd) a.aluImm(BPF_ADD, R2, offAdd);
    a.movReg(R3, R10).aluImm(BPF_ADD, R3, stackOff).movImm(R4, len).call(BPF_FUNC_skb_load_bytes);
    a.jmpImm(BPF_JNE, R0, 0, fail);
  };
  /** goto `target` when offset register `reg` + `add` > skb->len (R2, R3 clobbered). */
  const beyondEnd = (reg: number, add: number | null, addReg: number | null, target: string) => {
    a.ldx(BPF_W, R2, R6, SKB_LEN).movReg(R3, reg);
    if (add !== null) a.aluImm(BPF_ADD, R3, add);
    if (addReg !== null) a.aluReg(BPF_ADD, R3, addReg);
    a.jmpReg(BPF_JGT, R3, R2, target);
  };
  /** goto `target` when none of `bits` is enabled (R2 clobbered). */
  const unlessHashType = (bits: number, target: string) => {
    a.ldx(BPF_W, R2, R7, CFG_HASH_TYPES).aluImm(BPF_AND, R2, bits).jmpImm(BPF_JEQ, R2, 0, target);
  };

  /**
   * reg ^= a config word that is always 0: the value is unchanged, but the verifier no longer knows its
   * range, so a later "== 0" test is not decided statically (which would make the offset precise and
   * multiply the states it explores, past its 1M-instruction budget).
   */
  const opaque = (reg: number) => a.ldx(BPF_W, R2, R7, CFG_ZERO).aluReg(BPF_XOR, reg, R2);
  /**
   * Looks for the Home Address option (type 0xc9, length >= 16) in the Destination Options header at
   * R8 (its end in S_END), over at most MAX_DEST_OPTIONS options, as lib/net/packet-parser.ts does: Pad1 is
   * one byte, a truncated option ends the search. Stores the address offset in S_EXSRC. Clobbers R8.
   */
  const homeAddressScan = (done: string) => {
    a.aluImm(BPF_ADD, R8, 2);
    for (let k = 0; k < MAX_DEST_OPTIONS; k++) {
      const notPad = a.fresh('npad');
      const skip = a.fresh('skip');
      const step = a.fresh('step');
      a.ldx(BPF_DW, R2, R10, S_END).jmpReg(BPF_JGE, R8, R2, done);
      loadBytes(R8, 0, S_OPT, 1, done);
      a.ldx(BPF_B, R1, R10, S_OPT).jmpImm(BPF_JNE, R1, 0, notPad).aluImm(BPF_ADD, R8, 1).ja(step);
      a.label(notPad);
      a.ldx(BPF_DW, R2, R10, S_END).movReg(R3, R8).aluImm(BPF_ADD, R3, 2).jmpReg(BPF_JGT, R3, R2, done);
      loadBytes(R8, 1, S_OPT + 1, 1, done);
      a.ldx(BPF_B, R1, R10, S_OPT + 1).ldx(BPF_DW, R2, R10, S_END);
      a.movReg(R3, R8).aluImm(BPF_ADD, R3, 2).aluReg(BPF_ADD, R3, R1).jmpReg(BPF_JGT, R3, R2, done);
      a.ldx(BPF_B, R2, R10, S_OPT).jmpImm(BPF_JNE, R2, 0xc9, skip).jmpImm(BPF_JLT, R1, 16, skip);
      a.movReg(R1, R8).aluImm(BPF_ADD, R1, 2);
      opaque(R1).stx(BPF_DW, R10, S_EXSRC, R1).ja(done);
      a.label(skip).movReg(R8, R3);
      a.label(step);
    }
  };

  a.movReg(R6, R1).ldMapValue(R7, mapFd, 0);
  for (let o = S_INPUT; o < 0; o += 8) a.st(BPF_DW, R10, o, 0);

  // Ethernet, VLAN tags: at most two in all, one of them possibly in skb->vlan_tci.
  a.movImm(R8, 12);
  loadBytes(R8, 0, S_SCRATCH, 2, DEFAULT);
  a.ldx(BPF_H, R9, R10, S_SCRATCH).be(R9, 16).movImm(R8, 14);
  for (let tag = 1; tag <= 3; tag++) {
    const isTag = a.fresh('tag');
    a.jmpImm(BPF_JEQ, R9, ETH_P_8021Q, isTag).jmpImm(BPF_JNE, R9, ETH_P_8021AD, 'l3').label(isTag);
    if (tag === 3) {
      a.ja(DEFAULT);
      break;
    }
    if (tag === 2) a.ldx(BPF_W, R1, R6, SKB_VLAN_PRESENT).jmpImm(BPF_JNE, R1, 0, DEFAULT);
    loadBytes(R8, 2, S_SCRATCH, 2, DEFAULT);
    a.ldx(BPF_H, R9, R10, S_SCRATCH).be(R9, 16).aluImm(BPF_ADD, R8, 4);
  }
  a.label('l3');
  a.jmpImm(BPF_JEQ, R9, 0x0800, 'ipv4').jmpImm(BPF_JEQ, R9, 0x86dd, 'ipv6').ja(DEFAULT);

  // IPv4 (RFC 791): version 4, IHL >= 5, whole header in the frame.
  a.label('ipv4');
  loadBytes(R8, 0, S_IP4, 20, DEFAULT);
  a.ldx(BPF_B, R1, R10, S_IP4).movReg(R2, R1).aluImm(BPF_RSH, R2, 4).jmpImm(BPF_JNE, R2, 4, DEFAULT);
  a.aluImm(BPF_AND, R1, 0xf).jmpImm(BPF_JLT, R1, 5, DEFAULT).aluImm(BPF_LSH, R1, 2);
  beyondEnd(R8, null, R1, DEFAULT);
  a.movReg(R9, R3); // L4 offset
  a.ldx(BPF_W, R1, R10, S_IP4 + 12).stx(BPF_W, R10, S_INPUT, R1);
  a.ldx(BPF_W, R1, R10, S_IP4 + 16).stx(BPF_W, R10, S_INPUT + 4, R1);
  a.ldx(BPF_H, R1, R10, S_IP4 + 6)
    .be(R1, 16)
    .aluImm(BPF_AND, R1, 0x3fff)
    .jmpImm(BPF_JNE, R1, 0, 'v4addr');
  a.ldx(BPF_B, R1, R10, S_IP4 + 9);
  a.jmpImm(BPF_JNE, R1, 6, 'v4udp');
  unlessHashType(VIRTIO_NET_RSS_HASH_TYPE_TCPv4, 'v4addr');
  beyondEnd(R9, 20, null, 'v4addr');
  a.ja('v4ports');
  a.label('v4udp');
  a.jmpImm(BPF_JNE, R1, 17, 'v4addr');
  unlessHashType(VIRTIO_NET_RSS_HASH_TYPE_UDPv4, 'v4addr');
  beyondEnd(R9, 8, null, 'v4addr');
  a.label('v4ports');
  loadBytes(R9, 0, S_INPUT + 8, 4, DEFAULT);
  a.ja(HASH);
  a.label('v4addr');
  unlessHashType(VIRTIO_NET_RSS_HASH_TYPE_IPv4, DEFAULT);
  a.ja(HASH);

  // IPv6 (RFC 8200): version 6, fixed header in the frame, then the extension header chain.
  a.label('ipv6');
  beyondEnd(R8, 40, null, DEFAULT);
  loadBytes(R8, 0, S_SCRATCH, 8, DEFAULT);
  a.ldx(BPF_B, R1, R10, S_SCRATCH).aluImm(BPF_RSH, R1, 4).jmpImm(BPF_JNE, R1, 6, DEFAULT);
  a.ldx(BPF_B, R9, R10, S_SCRATCH + 6);
  loadBytes(R8, 8, S_INPUT, 32, DEFAULT);
  a.aluImm(BPF_ADD, R8, 40).ldx(BPF_W, R1, R7, CFG_ZERO);
  a.stx(BPF_DW, R10, S_FRAG, R1).stx(BPF_DW, R10, S_EXSRC, R1).stx(BPF_DW, R10, S_EXDST, R1);
  // Offsets past here are opaque to the verifier: with the VLAN count known, they would be constants
  // that decide the option scan's comparisons statically, and each constant would be a separate state.
  opaque(R8);
  for (let i = 0; i <= MAX_IPV6_EXT_HEADERS; i++) {
    const hdr = a.fresh('ext');
    for (const nh of [0, 43, 44, 51, 60]) a.jmpImm(BPF_JEQ, R9, nh, hdr);
    a.ja('v6l4');
    a.label(hdr);
    // More headers than we walk: the L4 header is out of reach; hash the addresses.
    if (i === MAX_IPV6_EXT_HEADERS) {
      a.ja('v6ip');
      break;
    }
    // Every extension header is at least 8 bytes: shorter is truncated (no L4 header).
    beyondEnd(R8, 8, null, 'v6ip');
    loadBytes(R8, 0, S_SCRATCH, 8, 'v6ip');
    const notFrag = a.fresh('nfrag');
    const notAh = a.fresh('nah');
    const length = a.fresh('len');
    const noFragBits = a.fresh('nfb');
    a.ldx(BPF_B, R1, R10, S_SCRATCH + 1);
    a.jmpImm(BPF_JNE, R9, 44, notFrag);
    a.ldx(BPF_H, R2, R10, S_SCRATCH + 2)
      .be(R2, 16)
      .aluImm(BPF_AND, R2, 0xfff9);
    a.jmpImm(BPF_JEQ, R2, 0, noFragBits).movImm(R1, 1);
    opaque(R1).stx(BPF_DW, R10, S_FRAG, R1).label(noFragBits);
    a.movImm(R1, 8).ja(length);
    a.label(notFrag).jmpImm(BPF_JNE, R9, 51, notAh);
    a.aluImm(BPF_ADD, R1, 2).aluImm(BPF_LSH, R1, 2).ja(length); // AH: (len + 2) * 4
    a.label(notAh).aluImm(BPF_ADD, R1, 1).aluImm(BPF_LSH, R1, 3); // (len + 1) * 8
    a.label(length);
    beyondEnd(R8, null, R1, 'v6ip');
    a.stx(BPF_DW, R10, S_END, R3);
    // _EX addresses (VIRTIO 1.3 §5.1.6.4.3.4), the first of each kind: a type 2 Routing Header
    // (length 2, type 2, segments left 1) names the destination, a Home Address option the source.
    const notRt2 = a.fresh('nrt2');
    const next = a.fresh('next');
    a.jmpImm(BPF_JNE, R9, 43, notRt2).ldx(BPF_DW, R1, R10, S_EXDST).jmpImm(BPF_JNE, R1, 0, next);
    a.ldx(BPF_W, R1, R10, S_SCRATCH).aluImm(BPF_AND, R1, 0xffffff00).jmpImm(BPF_JNE, R1, 0x01020200, next);
    a.movReg(R1, R8).aluImm(BPF_ADD, R1, 8);
    opaque(R1).stx(BPF_DW, R10, S_EXDST, R1).ja(next);
    a.label(notRt2).jmpImm(BPF_JNE, R9, 60, next).ldx(BPF_DW, R1, R10, S_EXSRC).jmpImm(BPF_JNE, R1, 0, next);
    homeAddressScan(next);
    a.label(next);
    a.ldx(BPF_DW, R8, R10, S_END).ldx(BPF_B, R9, R10, S_SCRATCH);
  }
  // Per L4 kind the _EX type first, then the plain one (QEMU's order; lib/net/rss-hash.ts). R9 = use _EX.
  a.label('v6l4');
  a.ldx(BPF_DW, R1, R10, S_FRAG).jmpImm(BPF_JNE, R1, 0, 'v6ip');
  a.jmpImm(BPF_JNE, R9, 6, 'v6udp');
  unlessHashType(VIRTIO_NET_RSS_HASH_TYPE_TCP_EX | VIRTIO_NET_RSS_HASH_TYPE_TCPv6, 'v6ip');
  beyondEnd(R8, 20, null, 'v6ip');
  a.ldx(BPF_W, R9, R7, CFG_HASH_TYPES).aluImm(BPF_AND, R9, VIRTIO_NET_RSS_HASH_TYPE_TCP_EX).ja('v6ports');
  a.label('v6udp');
  a.jmpImm(BPF_JNE, R9, 17, 'v6ip');
  unlessHashType(VIRTIO_NET_RSS_HASH_TYPE_UDP_EX | VIRTIO_NET_RSS_HASH_TYPE_UDPv6, 'v6ip');
  beyondEnd(R8, 8, null, 'v6ip');
  a.ldx(BPF_W, R9, R7, CFG_HASH_TYPES).aluImm(BPF_AND, R9, VIRTIO_NET_RSS_HASH_TYPE_UDP_EX);
  a.label('v6ports');
  loadBytes(R8, 0, S_INPUT + 32, 4, DEFAULT);
  a.ja('v6ex');
  a.label('v6ip');
  a.ldx(BPF_W, R9, R7, CFG_HASH_TYPES).aluImm(BPF_AND, R9, VIRTIO_NET_RSS_HASH_TYPE_IP_EX);
  a.jmpImm(BPF_JNE, R9, 0, 'v6ex');
  unlessHashType(VIRTIO_NET_RSS_HASH_TYPE_IPv6, DEFAULT);
  a.ja(HASH);
  // _EX: replace the source / destination by the addresses found, if any.
  a.label('v6ex').jmpImm(BPF_JEQ, R9, 0, HASH);
  a.ldx(BPF_DW, R8, R10, S_EXSRC).jmpImm(BPF_JEQ, R8, 0, 'exdst');
  loadBytes(R8, 0, S_INPUT, 16, DEFAULT);
  a.label('exdst').ldx(BPF_DW, R8, R10, S_EXDST).jmpImm(BPF_JEQ, R8, 0, HASH);
  loadBytes(R8, 0, S_INPUT + 16, 16, DEFAULT);

  // Toeplitz: R0 ^= toeplitz[pos][input[pos]] for the 36 input bytes.
  // Load offsets are s16: R8 points into the middle of the 36 KiB table so every position is in reach.
  const mid = CFG_TOEPLITZ + (HASH_INPUT / 2) * 1024;
  a.label(HASH).movImm(R0, 0).movReg(R8, R7).aluImm(BPF_ADD, R8, mid);
  for (let pos = 0; pos < HASH_INPUT; pos++) {
    a.ldx(BPF_B, R1, R10, S_INPUT + pos).aluImm(BPF_LSH, R1, 2);
    a.movReg(R2, R8)
      .aluReg(BPF_ADD, R2, R1)
      .ldx(BPF_W, R1, R2, CFG_TOEPLITZ + pos * 1024 - mid);
    a.aluReg(BPF_XOR, R0, R1);
  }
  // Indirection: table[hash & mask]; the extra & 127 bounds the index for the verifier.
  a.ldx(BPF_W, R1, R7, CFG_TABLE_MASK)
    .aluReg(BPF_AND, R0, R1)
    .aluImm(BPF_AND, R0, RSS_MAX_TABLE_LEN - 1);
  a.aluImm(BPF_LSH, R0, 1).movReg(R2, R7).aluReg(BPF_ADD, R2, R0).ldx(BPF_H, R0, R2, CFG_TABLE).exit();
  a.label(DEFAULT).ldx(BPF_W, R0, R7, CFG_DEFAULT_QUEUE).exit();
  return a.assemble();
}
