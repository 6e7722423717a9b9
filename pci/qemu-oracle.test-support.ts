// Test support: load the QEMU fixtures (7.2 by default) and replay the oracle scripts' probe sequences on our model.
import { readFileSync } from 'node:fs';
import type { PciFunction } from './pci-function.js';

const DIR = new URL('../fixtures/qemu-7.2/', import.meta.url);

/** A fixture file; `version` picks fixtures/qemu-<version>/. */
export function fixtureBin(name: string, version = '7.2'): Uint8Array {
  return new Uint8Array(readFileSync(new URL(`../qemu-${version}/${name}`, DIR)));
}

export function fixtureJson<T = Record<string, unknown>>(name: string, version = '7.2'): T {
  return JSON.parse(readFileSync(new URL(`../qemu-${version}/${name}`, DIR), 'utf8')) as T;
}

export function hex(s: string): Uint8Array {
  return Uint8Array.from(Buffer.from(s, 'hex'));
}

/** Dword-by-dword dump, like qtest.py PCI.dump. */
export function dump(fn: { configRead(o: number, s: 4): number }, size = 4096): Uint8Array {
  const out = new Uint8Array(size);
  const dv = new DataView(out.buffer);
  for (let o = 0; o < size; o += 4) dv.setUint32(o, fn.configRead(o, 4), true);
  return out;
}

export interface AssignedBar {
  bar: number;
  io: boolean;
  is64?: boolean;
  prefetch?: boolean;
  size: number;
  addr: number;
  sizing_readback: number;
}

/** Port of qtest.py assign_bars (same order and addresses). */
export function assignBars(fn: PciFunction, npBase: number, pfBase: number, ioBase = 0xc000): AssignedBar[] {
  const r32 = (o: number) => fn.configRead(o, 4);
  const w32 = (o: number, v: number) => fn.configWrite(o, 4, v);
  const bars: AssignedBar[] = [];
  let i = 0;
  while (i < 6) {
    const off = 0x10 + 4 * i;
    const orig = r32(off);
    w32(off, 0xffffffff);
    const sz = r32(off);
    w32(off, orig);
    if (sz === 0) {
      i += 1;
      continue;
    }
    if (orig & 1) {
      const size = (~(sz & 0xfffffffc) + 1) & 0xffff;
      const addr = (ioBase + size - 1) & ~(size - 1);
      ioBase = addr + size;
      w32(off, addr);
      bars.push({ bar: i, io: true, size, addr, sizing_readback: sz });
      i += 1;
      continue;
    }
    const is64 = ((orig >>> 1) & 3) === 2;
    const pref = (orig & 8) !== 0;
    let size: bigint;
    if (is64) {
      const hiOrig = r32(off + 4);
      w32(off + 4, 0xffffffff);
      const szhi = r32(off + 4);
      w32(off + 4, hiOrig);
      const mask = (BigInt(szhi) << 32n) | BigInt((sz & 0xfffffff0) >>> 0);
      size = BigInt.asUintN(64, ~mask) + 1n;
    } else {
      size = BigInt.asUintN(32, ~BigInt((sz & 0xfffffff0) >>> 0)) + 1n;
    }
    const n = Number(size);
    let addr: number;
    if (pref) {
      addr = Math.ceil(pfBase / n) * n;
      pfBase = addr + n;
    } else {
      addr = Math.ceil(npBase / n) * n;
      npBase = addr + n;
    }
    w32(off, addr >>> 0);
    if (is64) w32(off + 4, Math.floor(addr / 2 ** 32));
    bars.push({ bar: i, io: false, is64, prefetch: pref, size: n, addr, sizing_readback: sz });
    i += is64 ? 2 : 1;
  }
  return bars;
}

/** Port of test/oracle/pci_wmask_probe.py's byte loop: write 0xff (0x7f for `skip`), read, write 0, read, restore. */
export function probeBytes(fn: PciFunction, size: number, skip: readonly number[]) {
  const ones = new Uint8Array(size);
  const zeros = new Uint8Array(size);
  for (let o = 0; o < size; o++) {
    const orig = fn.configRead(o, 1);
    fn.configWrite(o, 1, skip.includes(o) ? 0x7f : 0xff);
    ones[o] = fn.configRead(o, 1);
    fn.configWrite(o, 1, 0);
    zeros[o] = fn.configRead(o, 1);
    fn.configWrite(o, 1, orig);
  }
  return { ones, zeros };
}

/** Byte-level diff for readable assertion failures: [offset, ours, theirs] for each differing byte. */
export function diff(
  a: Uint8Array,
  b: Uint8Array,
  ignore: (o: number) => boolean = () => false,
): [string, string, string][] {
  const out: [string, string, string][] = [];
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if (ignore(i)) continue;
    if (a[i] !== b[i])
      out.push([`0x${i.toString(16)}`, (a[i] ?? -1).toString(16), (b[i] ?? -1).toString(16)]);
  }
  return out;
}
