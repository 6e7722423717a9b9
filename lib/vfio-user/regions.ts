/**
 * Region access of a vfio-user device (DEVICE_GET_REGION_INFO, REGION_READ, REGION_WRITE,
 * REGION_WRITE_MULTI): bounds checks, then the access cut into naturally aligned pieces for the device.
 */
import type { VfioUserDevice } from './device.js';
import {
  Errno,
  REGION_INFO,
  REGION_RW,
  Region,
  RegionFlag,
  body as makeBody,
  view,
  WRITE_MULTI,
} from './protocol.js';
import type { RequestHeader, Responder } from './responder.js';

const CONFIG_SIZE = 4096;
const NUM_REGIONS = Region.COUNT;

/** Splits [offset, offset+count) into naturally aligned pieces of at most `max` bytes. */
export function pieces(offset: number, count: number, max: 4 | 8): [number, 1 | 2 | 4 | 8][] {
  const out: [number, 1 | 2 | 4 | 8][] = [];
  let o = offset;
  const end = offset + count;
  while (o < end) {
    let s: 1 | 2 | 4 | 8 = max;
    while (s > 1 && (o % s !== 0 || o + s > end)) s = (s >> 1) as 1 | 2 | 4;
    out.push([o, s]);
    o += s;
  }
  return out;
}

/** The server's region handlers; accesses are counted in `stats`. */
export class VfioUserRegions {
  readonly #device: VfioUserDevice;
  readonly #maxDataXferSize: number;
  readonly #stats: { regionReads: Record<number, number>; regionWrites: Record<number, number> };
  readonly #r: Responder;

  constructor(
    device: VfioUserDevice,
    maxDataXferSize: number,
    stats: { regionReads: Record<number, number>; regionWrites: Record<number, number> },
    responder: Responder,
  ) {
    this.#device = device;
    this.#maxDataXferSize = maxDataXferSize;
    this.#stats = stats;
    this.#r = responder;
  }

  /** Size of a region (0: absent). */
  size(index: number): number {
    if (index === Region.CONFIG) return CONFIG_SIZE;
    if (index >= Region.BAR0 && index <= Region.BAR5) return this.#device.bars[index]?.size ?? 0;
    return 0;
  }

  /** DEVICE_GET_REGION_INFO. */
  info(h: RequestHeader, b: Uint8Array) {
    if (
      b.length < REGION_INFO.REQUEST_SIZE ||
      view(b).getUint32(REGION_INFO.argsz, true) < REGION_INFO.SIZE
    ) {
      return this.#r.error(h, Errno.EINVAL, 'malformed DEVICE_GET_REGION_INFO');
    }
    const index = view(b).getUint32(REGION_INFO.index, true);
    if (index >= NUM_REGIONS) return this.#r.error(h, Errno.EINVAL, `no region ${index}`);
    const size = this.size(index);
    this.#r.reply(
      h,
      makeBody(REGION_INFO.SIZE, (o) => {
        o.setUint32(REGION_INFO.argsz, REGION_INFO.SIZE, true);
        o.setUint32(REGION_INFO.flags, size > 0 ? RegionFlag.READ | RegionFlag.WRITE : 0, true);
        o.setUint32(REGION_INFO.index, index, true);
        o.setUint32(REGION_INFO.capOffset, 0, true);
        o.setBigUint64(REGION_INFO.size, BigInt(size), true);
        o.setBigUint64(REGION_INFO.offset, 0n, true);
      }),
    );
  }

  /** Validates a region access; returns an error text or null. */
  #checkAccess(region: number, offset: bigint, count: number): string | null {
    const size = region < NUM_REGIONS ? this.size(region) : 0;
    if (size === 0) return `no region ${region}`;
    if (count === 0) return 'zero-length access';
    if (count > this.#maxDataXferSize) return `access of ${count} bytes exceeds max_data_xfer_size`;
    if (offset + BigInt(count) > BigInt(size))
      return `access ${offset}+${count} past the end of region ${region} (${size})`;
    return null;
  }

  #readRegion(region: number, offset: number, out: Uint8Array): void {
    const v = view(out);
    const isConfig = region === Region.CONFIG;
    for (const [o, s] of pieces(offset, out.length, isConfig ? 4 : 8)) {
      const at = o - offset;
      let value: number | bigint;
      if (isConfig) value = this.#device.configRead(o, s as 1 | 2 | 4);
      else value = this.#device.barRead(region, o, s);
      // A number is taken modulo 2^64 (negative values as two's complement); NaN or Infinity reads as 0.
      const big = BigInt.asUintN(
        64,
        typeof value === 'bigint' ? value : BigInt(Number.isFinite(value) ? Math.trunc(value) : 0),
      );
      if (s === 8) v.setBigUint64(at, big, true);
      else if (s === 4) v.setUint32(at, Number(big & 0xffffffffn), true);
      else if (s === 2) v.setUint16(at, Number(big & 0xffffn), true);
      else v.setUint8(at, Number(big & 0xffn));
    }
  }

  #writeRegion(region: number, offset: number, data: Uint8Array): void {
    const v = view(data);
    const isConfig = region === Region.CONFIG;
    for (const [o, s] of pieces(offset, data.length, isConfig ? 4 : 8)) {
      const at = o - offset;
      const value =
        s === 8
          ? v.getBigUint64(at, true)
          : s === 4
            ? v.getUint32(at, true)
            : s === 2
              ? v.getUint16(at, true)
              : v.getUint8(at);
      if (isConfig) this.#device.configWrite(o, s as 1 | 2 | 4, value as number);
      else this.#device.barWrite(region, o, s, value);
    }
  }

  /** REGION_READ. */
  read(h: RequestHeader, b: Uint8Array) {
    if (b.length !== REGION_RW.SIZE) return this.#r.error(h, Errno.EINVAL, 'malformed REGION_READ');
    const v = view(b);
    const offset = v.getBigUint64(REGION_RW.offset, true);
    const region = v.getUint32(REGION_RW.region, true);
    const count = v.getUint32(REGION_RW.count, true);
    const bad = this.#checkAccess(region, offset, count);
    if (bad !== null) return this.#r.error(h, Errno.EINVAL, bad);
    this.#stats.regionReads[region] = (this.#stats.regionReads[region] ?? 0) + 1;
    const out = new Uint8Array(REGION_RW.SIZE + count);
    out.set(b.subarray(0, REGION_RW.SIZE));
    let ok = true;
    try {
      this.#readRegion(region, Number(offset), out.subarray(REGION_RW.data));
    } catch (e) {
      ok = false;
      this.#r.log(`device threw on read: ${(e as Error).stack ?? e}`);
    }
    if (!ok) return this.#r.error(h, Errno.EIO, 'device read failed');
    this.#r.reply(h, out);
  }

  /** REGION_WRITE. */
  write(h: RequestHeader, b: Uint8Array) {
    if (b.length < REGION_RW.SIZE) return this.#r.error(h, Errno.EINVAL, 'malformed REGION_WRITE');
    const v = view(b);
    const offset = v.getBigUint64(REGION_RW.offset, true);
    const region = v.getUint32(REGION_RW.region, true);
    const count = v.getUint32(REGION_RW.count, true);
    if (b.length !== REGION_RW.SIZE + count)
      return this.#r.error(h, Errno.EINVAL, 'REGION_WRITE count does not match its data');
    const bad = this.#checkAccess(region, offset, count);
    if (bad !== null) return this.#r.error(h, Errno.EINVAL, bad);
    this.#stats.regionWrites[region] = (this.#stats.regionWrites[region] ?? 0) + 1;
    if (!this.#r.safe(() => this.#writeRegion(region, Number(offset), b.subarray(REGION_RW.data)))) {
      return this.#r.error(h, Errno.EIO, 'device write failed');
    }
    this.#r.reply(h, b.subarray(0, REGION_RW.SIZE));
  }

  /** REGION_WRITE_MULTI: posted writes of at most 8 bytes each, batched by QEMU; applied in order. */
  writeMulti(h: RequestHeader, b: Uint8Array) {
    if (b.length < WRITE_MULTI.entries) return this.#r.error(h, Errno.EINVAL, 'malformed REGION_WRITE_MULTI');
    const v = view(b);
    const n = v.getBigUint64(WRITE_MULTI.count, true);
    if (
      n > BigInt(WRITE_MULTI.maxEntries) ||
      b.length < WRITE_MULTI.entries + Number(n) * WRITE_MULTI.entrySize
    ) {
      return this.#r.error(h, Errno.EINVAL, 'REGION_WRITE_MULTI count does not match its size');
    }
    const entries: { region: number; offset: bigint; data: Uint8Array }[] = [];
    for (let i = 0; i < Number(n); i++) {
      const at = WRITE_MULTI.entries + i * WRITE_MULTI.entrySize;
      const offset = v.getBigUint64(at + WRITE_MULTI.entryOffset, true);
      const region = v.getUint32(at + WRITE_MULTI.entryRegion, true);
      const count = v.getUint32(at + WRITE_MULTI.entryCount, true);
      if (count > WRITE_MULTI.maxData)
        return this.#r.error(h, Errno.EINVAL, `REGION_WRITE_MULTI entry ${i} count ${count}`);
      const bad = this.#checkAccess(region, offset, count);
      if (bad !== null) return this.#r.error(h, Errno.EINVAL, `REGION_WRITE_MULTI entry ${i}: ${bad}`);
      entries.push({
        region,
        offset,
        data: b.subarray(at + WRITE_MULTI.entryData, at + WRITE_MULTI.entryData + count),
      });
    }
    for (const e of entries) {
      this.#stats.regionWrites[e.region] = (this.#stats.regionWrites[e.region] ?? 0) + 1;
      if (!this.#r.safe(() => this.#writeRegion(e.region, Number(e.offset), e.data))) {
        return this.#r.error(h, Errno.EIO, 'device write failed');
      }
    }
    this.#r.reply(h);
  }
}
