// Test support: a small VirtioDevice for transport tests. Queue 1 is "tx", queue 0 is "rx": every chain the
// driver makes available on queue 1 has its readable bytes copied into the next writable chain of queue 0
// (loopback). 8 bytes of device config: le32 magic (read-only) at 0, le32 scratch at 4 (writes bump the
// config generation through configChanged). Feature bit 2 ("extra queue") adds a third queue of size 64,
// like virtio-net's MQ changes num_queues; feature bit 1 depends on bit 0 (validateFeatures).

import type { VirtioDevice, VirtioDeviceContext } from './virtio-device.js';
import { DescriptorChain, VirtqueueError } from './queue/virtqueue.js';

export interface FakeDeviceOptions {
  deviceId?: number;
  /** Device-type feature bits offered. */
  features?: bigint;
  queues?: number;
  /** Max queue sizes per index (default 256, last queue 64 when `extraQueueBit` is negotiated). */
  sizes?: number[];
  configBytes?: Uint8Array;
  /** Feature bit that adds one queue (MQ-like); -1 for none. */
  extraQueueBit?: number;
}

export const FAKE_MAGIC = 0x7a5c0de1;

export class FakeDevice implements VirtioDevice {
  readonly deviceId: number;
  readonly offered: bigint;
  ctx: VirtioDeviceContext | null = null;
  readonly events: string[] = [];
  readonly config: Uint8Array;
  private readonly view: DataView;
  private readonly baseQueues: number;
  private readonly sizes: number[];
  private readonly extraBit: number;
  private readonly rxChain = new DescriptorChain();
  private readonly txChain = new DescriptorChain();
  /** Bytes moved by the loopback. */
  moved = 0;

  constructor(o: FakeDeviceOptions = {}) {
    this.deviceId = o.deviceId ?? 0x1f;
    this.offered = o.features ?? 0b111n;
    this.baseQueues = o.queues ?? 2;
    this.sizes = o.sizes ?? [];
    this.extraBit = o.extraQueueBit ?? 2;
    this.config = o.configBytes ?? new Uint8Array(8);
    this.view = new DataView(this.config.buffer, this.config.byteOffset, this.config.byteLength);
    if (!o.configBytes) this.view.setUint32(0, FAKE_MAGIC, true);
  }

  deviceFeatures(): bigint {
    return this.offered;
  }

  validateFeatures(f: bigint): string | null {
    if (f & 0b10n && !(f & 0b1n)) return 'feature 1 needs feature 0';
    return null;
  }

  numQueues(f: bigint): number {
    return this.baseQueues + (this.extraBit >= 0 && (f >> BigInt(this.extraBit)) & 1n ? 1 : 0);
  }

  maxQueueSize(index: number, features?: bigint): number {
    const n = this.numQueues(features ?? 0n);
    if (index >= n) return 0;
    return this.sizes[index] ?? (index === n - 1 && n > this.baseQueues ? 64 : 256);
  }

  configLength(): number {
    return this.config.length;
  }

  readConfig(offset: number, size: number): number {
    let v = 0;
    for (let i = size - 1; i >= 0; i--) v = v * 256 + (this.config[offset + i] as number);
    return v;
  }

  writeConfig(offset: number, size: number, value: number): void {
    if (offset < 4) return; // magic is read-only
    for (let i = 0; i < size; i++) this.config[offset + i] = (value >>> (8 * i)) & 0xff;
    this.events.push(`config ${offset}`);
    this.ctx?.configChanged();
  }

  activate(ctx: VirtioDeviceContext): void {
    this.ctx = ctx;
    this.events.push(`activate 0x${ctx.features.toString(16)}`);
  }

  queueNotify(index: number): void {
    this.events.push(`notify ${index}`);
    if (index === 1) this.loopback();
  }

  queueReset(index: number): void {
    this.events.push(`queueReset ${index}`);
  }

  queueEnabled(index: number): void {
    this.events.push(`queueEnabled ${index}`);
  }

  reset(): void {
    this.ctx = null;
    this.events.push('reset');
  }

  snapshot(): unknown {
    return { scratch: this.view.getUint32(4, true), moved: this.moved };
  }

  restore(s: unknown): void {
    const st = s as { scratch: number; moved: number };
    this.view.setUint32(4, st.scratch, true);
    this.moved = st.moved;
  }

  /** Copy each tx chain's readable bytes into the next rx chain's writable buffers. */
  private loopback(): void {
    const ctx = this.ctx;
    if (!ctx) return;
    const tx = ctx.queue(1);
    const rx = ctx.queue(0);
    if (!tx || !rx) return;
    const mem = ctx.memory;
    let txDone = false;
    let rxDone = false;
    while (tx.pop(this.txChain)) {
      const data = new Uint8Array(this.txChain.readableLength);
      let at = 0;
      for (let i = 0; i < this.txChain.readableCount; i++) {
        data.set(mem.read(this.txChain.addr[i] as number, this.txChain.len[i] as number), at);
        at += this.txChain.len[i] as number;
      }
      tx.push(this.txChain, 0);
      txDone = true;
      if (!rx.pop(this.rxChain)) continue; // no rx buffer: drop
      if (this.rxChain.writableLength < data.length)
        throw new VirtqueueError('length-overflow', 'rx buffer too small');
      let off = 0;
      for (let i = this.rxChain.readableCount; i < this.rxChain.segmentCount && off < data.length; i++) {
        const n = Math.min(this.rxChain.len[i] as number, data.length - off);
        mem.write(this.rxChain.addr[i] as number, data.subarray(off, off + n));
        off += n;
      }
      rx.push(this.rxChain, data.length);
      this.moved += data.length;
      rxDone = true;
    }
    if (txDone && tx.needsNotification()) ctx.notifyQueue(1);
    if (rxDone && rx.needsNotification()) ctx.notifyQueue(0);
  }
}
