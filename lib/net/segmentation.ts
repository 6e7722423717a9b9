/**
 * Software GSO for a backend without a vnet header (VIRTIO 1.3 §5.1.6.2, "Packet Transmission"): what
 * the device must do itself for a guest frame with VIRTIO_NET_HDR_F_NEEDS_CSUM or a gso_type when the
 * host side cannot take the offload.
 *
 * - TSO (GSO_TCPV4 / GSO_TCPV6, optionally | GSO_ECN): segments of gso_size payload bytes; IPv4 ID +i,
 *   total/payload length, TCP seq +i*gso_size, FIN and PSH only on the last segment, CWR only on the
 *   first (Linux tcp_gso_segment), IPv4 header and TCP checksums complete.
 * - UFO (GSO_UDP, IPv4): the UDP datagram's checksum is completed once, then the IP payload is split
 *   into fragments of gso_size rounded down to 8 bytes (same ID, MF on all but the last).
 * - USO (GSO_UDP_L4): each segment is a full UDP datagram of gso_size payload bytes with its own length
 *   and checksum (Linux __udp_gso_segment).
 * - Over a UDP tunnel (| GSO_UDP_TUNNEL_IPV4/6, VIRTIO 1.4; checked by tunnel.ts): TSO or USO of the
 *   inner packet as above, each segment with the outer headers copied and fixed: outer IP length (and
 *   IPv4 ID +i, header checksum), outer UDP length, and the outer UDP checksum computed when the frame
 *   has VIRTIO_NET_HDR_F_UDP_TUNNEL_CSUM, else kept as the sender wrote it (0: none), as Linux's
 *   __skb_udp_tunnel_segment does.
 * Guest-controlled fields are validated; a bad frame yields a SEGMENT_ERR_* code (a counted drop),
 * never an exception. Segments are built in one reused scratch buffer.
 */

import {
  checksumAdd,
  checksumFinish,
  completeChecksum,
  pseudoHeaderSumIpv4,
  pseudoHeaderSumIpv6,
  writeIpv4HeaderChecksum,
} from './checksum.js';
import type { NetOffload } from './backend.js';
import { L3_IPV4, L3_IPV6, L4_TCP, L4_UDP, ParsedPacket, parsePacket } from './packet-parser.js';
import { checkTunnelOffload, innerGsoType, isTunnelGso, TUNNEL_OK } from './tunnel.js';
import { GsoType, NetHdrFlags } from './vnet-header.js';

/** Result codes of `SoftwareSegmenter.process`. */
export const SEGMENT_OK = 0;
/** gso_size is 0, too small for UFO (< 8), or makes a segment larger than 64 KiB of IP. */
export const SEGMENT_ERR_GSO_SIZE = 1;
/** hdr_len is beyond the frame. */
export const SEGMENT_ERR_HDR_LEN = 2;
/** NEEDS_CSUM with csum_start/csum_offset outside the frame. */
export const SEGMENT_ERR_CSUM = 3;
/** The frame does not match gso_type (e.g. not TCP under TSO, IPv4 under TCPV6, a fragment, bad doff). */
export const SEGMENT_ERR_PROTOCOL = 4;
/** A gso_type we do not segment (unknown value, UFO over IPv6). */
export const SEGMENT_ERR_UNSUPPORTED = 5;
/** A UDP tunnel GSO request whose flags, type or offsets do not fit the frame (tunnel.ts). */
export const SEGMENT_ERR_TUNNEL = 6;

const TCP_FLAG_FIN = 0x01;
const TCP_FLAG_PSH = 0x08;
const TCP_FLAG_CWR = 0x80;
const IP_MAX_LENGTH = 0xffff;

/** Receives each segment; `segment` is only valid during the call (it views a reused scratch buffer). */
export type SegmentSink = (segment: Uint8Array) => void;

const copy = Buffer.prototype.copy as (
  this: Uint8Array,
  target: Uint8Array,
  targetStart: number,
  sourceStart: number,
  sourceEnd: number,
) => number;

function copyBytes(
  src: Uint8Array,
  srcStart: number,
  dst: Uint8Array,
  dstStart: number,
  length: number,
): void {
  if (length < 64) {
    for (let i = 0; i < length; i++) dst[dstStart + i] = src[srcStart + i]!;
  } else {
    copy.call(src, dst, dstStart, srcStart, srcStart + length);
  }
}

function put16(b: Uint8Array, o: number, v: number): void {
  b[o] = (v >>> 8) & 0xff;
  b[o + 1] = v & 0xff;
}

function get16(b: Uint8Array, o: number): number {
  return (b[o]! << 8) | b[o + 1]!;
}

/** Segments/checksums guest frames in software; one instance per tx queue (not re-entrant). */
export class SoftwareSegmenter {
  private scratch = new Uint8Array(2048);
  private view: Uint8Array = this.scratch.subarray(0, 0);
  private readonly pkt = new ParsedPacket();
  /** Outer headers of a tunnel GSO frame (`pkt` then holds the inner ones). */
  private readonly outerPkt = new ParsedPacket();
  /** The frame being segmented is a tunnel GSO frame; `outerCsum`: its outer UDP checksum is computed. */
  private tunnel = false;
  private outerCsum = false;
  /** IPv4 header for the second and later UFO fragments (only options with the copy bit kept). */
  private readonly fragHeader = new Uint8Array(60);
  /** Segments emitted by the last `process` call. */
  segments = 0;

  /**
   * Emits `frame` (no offload, or the offload completed in software) as one or more segments. The frame
   * itself is never modified (it may view guest memory). Returns SEGMENT_OK or a SEGMENT_ERR_* code, in
   * which case nothing was emitted.
   */
  process(frame: Uint8Array, offload: NetOffload | null, emit: SegmentSink): number {
    this.segments = 0;
    const len = frame.length;
    const gso = offload ? offload.gsoType & ~GsoType.ECN : GsoType.NONE;
    const needsCsum = offload !== null && (offload.flags & NetHdrFlags.NEEDS_CSUM) !== 0;
    if (needsCsum) {
      const start = offload.csumStart;
      const field = start + offload.csumOffset;
      if (start >= len || field + 2 > len) return SEGMENT_ERR_CSUM;
    }
    if (gso === GsoType.NONE) {
      if (!needsCsum) {
        this.segments = 1;
        emit(frame);
        return SEGMENT_OK;
      }
      const buf = this.ensure(len);
      copyBytes(frame, 0, buf, 0, len);
      completeChecksum(buf.subarray(0, len), offload.csumStart, offload.csumOffset);
      this.segments = 1;
      emit(this.viewOf(len));
      return SEGMENT_OK;
    }
    // offload is non-null here (gso != NONE).
    const o = offload!;
    // A backend is untrusted: gso_size is a le16 on the wire, anything else (NaN, 2^31) is malformed.
    if (!(Number.isInteger(o.gsoSize) && o.gsoSize > 0 && o.gsoSize <= 0xffff)) return SEGMENT_ERR_GSO_SIZE;
    if (o.hdrLen > len) return SEGMENT_ERR_HDR_LEN;
    if (isTunnelGso(o)) return this.tunnelGso(frame, o, emit);
    const pkt = parsePacket(frame, this.pkt);
    if (pkt.isFragment) return SEGMENT_ERR_PROTOCOL;
    switch (gso) {
      case GsoType.TCPV4:
      case GsoType.TCPV6: {
        const wantL3 = gso === GsoType.TCPV4 ? L3_IPV4 : L3_IPV6;
        if (pkt.l3Kind !== wantL3 || pkt.l4Kind !== L4_TCP) return SEGMENT_ERR_PROTOCOL;
        if (pkt.l4HeaderLength < 20 || pkt.l4Offset + pkt.l4HeaderLength > len) return SEGMENT_ERR_PROTOCOL;
        return this.tso(frame, pkt, o.gsoSize, emit);
      }
      case GsoType.UDP_L4:
        if (pkt.l4Kind !== L4_UDP) return SEGMENT_ERR_PROTOCOL;
        return this.uso(frame, pkt, o.gsoSize, emit);
      case GsoType.UDP:
        if (pkt.l4Kind !== L4_UDP) return SEGMENT_ERR_PROTOCOL;
        if (pkt.l3Kind !== L3_IPV4) return SEGMENT_ERR_UNSUPPORTED;
        return this.ufo(frame, pkt, o.gsoSize, emit);
      default:
        return SEGMENT_ERR_UNSUPPORTED;
    }
  }

  /** TSO/USO of the inner packet of a tunnel GSO frame, outer headers fixed per segment. */
  private tunnelGso(frame: Uint8Array, o: NetOffload, emit: SegmentSink): number {
    if (checkTunnelOffload(frame, o, this.outerPkt, this.pkt) !== TUNNEL_OK) return SEGMENT_ERR_TUNNEL;
    this.tunnel = true;
    this.outerCsum = (o.flags & NetHdrFlags.UDP_TUNNEL_CSUM) !== 0;
    try {
      return innerGsoType(o) === GsoType.UDP_L4
        ? this.uso(frame, this.pkt, o.gsoSize, emit)
        : this.tso(frame, this.pkt, o.gsoSize, emit);
    } finally {
      this.tunnel = false;
    }
  }

  /**
   * Fixes the outer headers of the tunnel segment in scratch ending at `end` (after its inner headers):
   * IP length, IPv4 ID + `idDelta` and header checksum, UDP length, and the UDP checksum if offloaded.
   */
  private fixOuter(buf: Uint8Array, end: number, idDelta: number): void {
    const outer = this.outerPkt;
    const udp = outer.l4Offset;
    this.fixIp(buf, outer, end - udp, idDelta);
    put16(buf, udp + 4, end - udp);
    if (this.outerCsum) this.l4Checksum(buf, outer, end, 6, true);
  }

  private ensure(size: number): Uint8Array {
    if (this.scratch.length < size) {
      this.scratch = new Uint8Array(Math.max(size, this.scratch.length * 2));
      this.view = this.scratch.subarray(0, 0);
    }
    return this.scratch;
  }

  /** A view of the first `length` scratch bytes; reused while the length repeats (all but the last segment). */
  private viewOf(length: number): Uint8Array {
    if (this.view.length !== length || this.view.buffer !== this.scratch.buffer) {
      this.view = this.scratch.subarray(0, length);
    }
    return this.view;
  }

  /** Where the outermost IP packet of a segment starts: its length bounds the segment size. */
  private ipStart(pkt: ParsedPacket): number {
    return this.tunnel ? this.outerPkt.l3Offset : pkt.l3Offset;
  }

  /** Writes IP lengths (and IPv4 ID/checksum) of the segment in scratch whose IP payload is `ipPayload`. */
  private fixIp(buf: Uint8Array, pkt: ParsedPacket, ipPayload: number, idDelta: number): void {
    const l3 = pkt.l3Offset;
    if (pkt.l3Kind === L3_IPV4) {
      put16(buf, l3 + 2, pkt.ipHeaderLength + ipPayload);
      put16(buf, l3 + 4, (get16(buf, l3 + 4) + idDelta) & 0xffff);
      writeIpv4HeaderChecksum(buf, l3, pkt.ipHeaderLength);
    } else {
      put16(buf, l3 + 4, pkt.ipHeaderLength - 40 + ipPayload);
    }
  }

  /** Completes the TCP/UDP checksum of the segment in scratch (L4 from l4Offset to `end`). */
  private l4Checksum(
    buf: Uint8Array,
    pkt: ParsedPacket,
    end: number,
    fieldOffset: number,
    udp: boolean,
  ): void {
    const l4 = pkt.l4Offset;
    const l4Len = end - l4;
    buf[l4 + fieldOffset] = 0;
    buf[l4 + fieldOffset + 1] = 0;
    const ph =
      pkt.l3Kind === L3_IPV4
        ? pseudoHeaderSumIpv4(buf, pkt.srcAddrOffset, pkt.dstAddrOffset, pkt.l4Proto, l4Len)
        : pseudoHeaderSumIpv6(buf, pkt.srcAddrOffset, pkt.dstAddrOffset, pkt.l4Proto, l4Len);
    let c = checksumFinish(checksumAdd(buf, l4, l4Len, ph));
    if (c === 0 && udp) c = 0xffff;
    put16(buf, l4 + fieldOffset, c);
  }

  private tso(frame: Uint8Array, pkt: ParsedPacket, mss: number, emit: SegmentSink): number {
    const hdr = pkt.l4Offset + pkt.l4HeaderLength;
    const payload = frame.length - hdr;
    if (hdr - this.ipStart(pkt) + Math.min(mss, payload) > IP_MAX_LENGTH) return SEGMENT_ERR_GSO_SIZE;
    const count = payload === 0 ? 1 : Math.ceil(payload / mss);
    const buf = this.ensure(hdr + Math.min(mss, payload));
    const l4 = pkt.l4Offset;
    const seq0 =
      (frame[l4 + 4]! * 0x1000000 + ((frame[l4 + 5]! << 16) | (frame[l4 + 6]! << 8) | frame[l4 + 7]!)) >>> 0;
    const flags0 = frame[l4 + 13]!;
    for (let i = 0; i < count; i++) {
      const off = i * mss;
      const chunk = Math.min(mss, payload - off);
      copyBytes(frame, 0, buf, 0, hdr);
      copyBytes(frame, hdr + off, buf, hdr, chunk);
      this.fixIp(buf, pkt, hdr - pkt.l4Offset + chunk, i);
      const seq = (seq0 + off) >>> 0;
      buf[l4 + 4] = seq >>> 24;
      buf[l4 + 5] = (seq >>> 16) & 0xff;
      buf[l4 + 6] = (seq >>> 8) & 0xff;
      buf[l4 + 7] = seq & 0xff;
      let flags = flags0;
      if (i !== count - 1) flags &= ~(TCP_FLAG_FIN | TCP_FLAG_PSH);
      if (i !== 0) flags &= ~TCP_FLAG_CWR;
      buf[l4 + 13] = flags;
      this.l4Checksum(buf, pkt, hdr + chunk, 16, false);
      if (this.tunnel) this.fixOuter(buf, hdr + chunk, i);
      this.segments++;
      emit(this.viewOf(hdr + chunk));
    }
    return SEGMENT_OK;
  }

  private uso(frame: Uint8Array, pkt: ParsedPacket, mss: number, emit: SegmentSink): number {
    const hdr = pkt.l4Offset + 8;
    const payload = frame.length - hdr;
    if (hdr - this.ipStart(pkt) + Math.min(mss, payload) > IP_MAX_LENGTH) return SEGMENT_ERR_GSO_SIZE;
    const count = payload === 0 ? 1 : Math.ceil(payload / mss);
    const buf = this.ensure(hdr + Math.min(mss, payload));
    for (let i = 0; i < count; i++) {
      const off = i * mss;
      const chunk = Math.min(mss, payload - off);
      copyBytes(frame, 0, buf, 0, hdr);
      copyBytes(frame, hdr + off, buf, hdr, chunk);
      this.fixIp(buf, pkt, 8 + chunk, i);
      put16(buf, pkt.l4Offset + 4, 8 + chunk);
      this.l4Checksum(buf, pkt, hdr + chunk, 6, true);
      if (this.tunnel) this.fixOuter(buf, hdr + chunk, i);
      this.segments++;
      emit(this.viewOf(hdr + chunk));
    }
    return SEGMENT_OK;
  }

  private ufo(frame: Uint8Array, pkt: ParsedPacket, gsoSize: number, emit: SegmentSink): number {
    const l3 = pkt.l3Offset;
    const l4 = pkt.l4Offset;
    const ipPayload = frame.length - l4;
    if (ipPayload > IP_MAX_LENGTH - pkt.ipHeaderLength) return SEGMENT_ERR_GSO_SIZE;
    const fragLen = gsoSize & ~7;
    if (fragLen === 0) return SEGMENT_ERR_GSO_SIZE;
    if (l4 - l3 + Math.min(fragLen, ipPayload) > IP_MAX_LENGTH) return SEGMENT_ERR_GSO_SIZE;
    const buf = this.ensure(l4 + Math.min(fragLen, ipPayload));
    const count = Math.ceil(ipPayload / fragLen);
    // Fragments keep the reserved bit and drop DF; an unfragmented datagram keeps its flags.
    const baseFlags = get16(frame, l3 + 6) & (count === 1 ? 0xc000 : 0x8000);
    let udpCsum = 0;
    {
      // Checksum of the whole datagram computed over the guest frame without modifying it.
      const ph = pseudoHeaderSumIpv4(frame, pkt.srcAddrOffset, pkt.dstAddrOffset, pkt.l4Proto, ipPayload);
      let sum = checksumAdd(frame, l4, 4, ph); // ports
      sum += ipPayload; // UDP length field as we rewrite it
      sum = checksumAdd(frame, l4 + 8, ipPayload - 8, sum);
      udpCsum = checksumFinish(sum) || 0xffff;
    }
    const laterIhl = this.buildLaterFragmentHeader(frame, l3, pkt.ipHeaderLength);
    for (let i = 0; i < count; i++) {
      const off = i * fragLen;
      const chunk = Math.min(fragLen, ipPayload - off);
      const ihl = i === 0 ? pkt.ipHeaderLength : laterIhl;
      copyBytes(frame, 0, buf, 0, l3);
      if (i === 0) copyBytes(frame, l3, buf, l3, ihl);
      else copyBytes(this.fragHeader, 0, buf, l3, ihl);
      copyBytes(frame, l4 + off, buf, l3 + ihl, chunk);
      if (i === 0) {
        put16(buf, l4 + 4, ipPayload);
        put16(buf, l4 + 6, udpCsum);
      }
      const last = i === count - 1;
      put16(buf, l3 + 2, ihl + chunk);
      put16(buf, l3 + 6, baseFlags | (last ? 0 : 0x2000) | (off >>> 3));
      writeIpv4HeaderChecksum(buf, l3, ihl);
      this.segments++;
      emit(this.viewOf(l3 + ihl + chunk));
    }
    return SEGMENT_OK;
  }

  /**
   * Builds in `fragHeader` the IPv4 header of non-first fragments: the fixed 20 bytes plus only the options
   * whose copied flag (0x80) is set (RFC 791 §3.1 / §3.2), padded with End of Option List to a multiple of
   * 4 bytes. Returns its length.
   */
  private buildLaterFragmentHeader(frame: Uint8Array, l3: number, ihl: number): number {
    const h = this.fragHeader;
    copyBytes(frame, l3, h, 0, 20);
    let w = 20;
    let q = l3 + 20;
    const end = l3 + ihl;
    while (q < end) {
      const type = frame[q]!;
      if (type === 0) break; // End of Option List
      if (type === 1) {
        q++; // NOP: copied flag 0
        continue;
      }
      if (q + 1 >= end) break;
      const len = frame[q + 1]!;
      if (len < 2 || q + len > end) break; // malformed: keep what we have
      if (type & 0x80) {
        copyBytes(frame, q, h, w, len);
        w += len;
      }
      q += len;
    }
    while (w & 3) h[w++] = 0;
    h[0] = 0x40 | (w >>> 2);
    return w;
  }
}
