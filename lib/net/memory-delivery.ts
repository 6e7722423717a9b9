/**
 * How an in-memory backend hands one frame to the device, shared by MemoryBackend on one thread and its
 * worker-side ring peer (memory-rings.ts): straight into a guest buffer the device lends (as tun's readv
 * into a lent buffer), or through `receive`. Owns the reused target, header and overflow buffers.
 */
import { type BackendSink, type NetOffload, ReceiveTarget } from './backend.js';
import {
  GSO_UDP_TUNNEL,
  VNET_HDR_OFFLOAD_BYTES,
  VNET_HDR_TUNNEL_BYTES,
  writeVnetHeader,
} from './vnet-header.js';

export class FrameDelivery {
  /** The vnet header size, as a tap's TUNSETVNETHDRSZ (10 until the device sets it). */
  hdrSize = 10;
  /** Frames handed to the sink, and of those the ones written into a lent buffer. */
  delivered = 0;
  deliveredDirect = 0;
  private readonly target = new ReceiveTarget();
  private overflow = new Uint8Array(0);
  private readonly header = new Uint8Array(VNET_HDR_TUNNEL_BYTES);

  constructor(
    private readonly vnetHeader: boolean,
    private readonly direct: boolean,
  ) {}

  /** Hands `bytes[offset, offset + length)` to `sink` as received on backend queue `qp`. */
  deliver(
    sink: BackendSink,
    bytes: Uint8Array,
    offset: number,
    length: number,
    qp: number,
    off: NetOffload | null,
  ): void {
    this.delivered++;
    const hs = this.vnetHeader ? this.hdrSize : 0;
    // Tunnel offsets need a 24-byte header; a shorter one cannot carry them (tun would not deliver it).
    const fits = hs >= VNET_HDR_TUNNEL_BYTES || off === null || (off.gsoType & GSO_UDP_TUNNEL) === 0;
    if (this.direct && fits && sink.completeReceive && sink.lendReceive?.(qp, hs, this.target)) {
      this.deliveredDirect++;
      sink.completeReceive(this.writeLent(hs, off, bytes, offset, length), this.overflow);
      return;
    }
    if (offset === 0 && length === bytes.length) sink.receive(bytes, qp, off);
    else if (sink.receiveRange) sink.receiveRange(bytes, offset, length, qp, off);
    else sink.receive(bytes.subarray(offset, offset + length), qp, off);
  }

  /**
   * What tun's read does with a vnet header: the 10 offload bytes (24 with the tunnel offsets when the
   * header is that large), the rest of the header skipped (left as it was), then the frame, over the lent
   * segments and then the overflow. Returns the bytes written.
   */
  private writeLent(
    hs: number,
    off: NetOffload | null,
    frame: Uint8Array,
    offset: number,
    length: number,
  ): number {
    const t = this.target;
    const total = hs + length;
    if (this.overflow.length < total) this.overflow = new Uint8Array(total);
    const h = this.header;
    const written = hs >= VNET_HDR_TUNNEL_BYTES ? VNET_HDR_TUNNEL_BYTES : VNET_HDR_OFFLOAD_BYTES;
    writeVnetHeader(h, 0, hs > 0 ? off : null, written);
    const put = (dst: Uint8Array, o: number, from: number, to: number) => {
      // Stream bytes [from, to) at dst[o...]: header bytes past `written` are skipped, not written.
      for (let p = from; p < Math.min(to, hs, written); p++) dst[o + p - from] = h[p] as number;
      const f = Math.max(from, hs);
      if (f < to) dst.set(frame.subarray(offset + f - hs, offset + to - hs), o + f - from);
    };
    let pos = 0;
    for (let i = 0; i < t.count && pos < total; i++) {
      const n = Math.min(t.lengths[i] as number, total - pos);
      put(t.bytes[i] as Uint8Array, t.offsets[i] as number, pos, pos + n);
      pos += n;
    }
    if (pos < total) put(this.overflow, 0, pos, total);
    return total;
  }
}
