/**
 * RSS hashing cost: `npx tsx bench/rss.bench.ts`.
 *
 * Reports ns per Toeplitz hash for the IPv4+ports (12-byte) and IPv6+ports (36-byte) inputs, for the
 * table form (`ToeplitzKey`) and a straightforward bit-serial Toeplitz measured in the same run, and the
 * cost of parse + hash per frame (`parsePacket` + `rssHashParsed`, the device's hot path).
 * Self-contained (no bench/harness.ts at the time of writing).
 */

import { ParsedPacket, parsePacket } from '../lib/net/packet-parser.js';
import { RssHashResult, rssHashParsed } from '../lib/net/rss-hash.js';
import { ToeplitzKey } from '../lib/net/toeplitz.js';

const KEY = Uint8Array.from(
  '6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa'
    .match(/../g)!
    .map((h) => parseInt(h, 16)),
);

/** Straightforward bit-serial Toeplitz (the definition): one key-window shift per input bit. */
function toeplitzBitSerial(key: Uint8Array, input: Uint8Array, offset: number, length: number): number {
  let result = 0;
  let window = (key[0]! << 24) | (key[1]! << 16) | (key[2]! << 8) | key[3]!;
  let nextBit = 32;
  for (let i = 0; i < length; i++) {
    const byte = input[offset + i]!;
    for (let b = 7; b >= 0; b--) {
      if ((byte >> b) & 1) result ^= window;
      window = (window << 1) | (((key[nextBit >> 3] ?? 0) >> (7 - (nextBit & 7))) & 1);
      nextBit++;
    }
  }
  return result >>> 0;
}

function frameV4(i: number): Uint8Array {
  const f = new Uint8Array(64);
  f.set([0x08, 0x00], 12);
  f.set([0x45, 0, 0, 50, 0, 0, 0x40, 0, 64, 6], 14);
  f.set([10, 0, (i >> 8) & 0xff, i & 0xff, 10, 1, 0, 1], 26);
  f.set([(i * 7) >> 8, (i * 7) & 0xff, 0, 80], 34);
  f[46] = 0x50;
  return f;
}

function frameV6(i: number): Uint8Array {
  const f = new Uint8Array(86);
  f.set([0x86, 0xdd], 12);
  f.set([0x60, 0, 0, 0, 0, 32, 6, 64], 14);
  f.set([0x20, 0x01, 0x0d, 0xb8], 22);
  f[36] = (i >> 8) & 0xff;
  f[37] = i & 0xff;
  f.set([0x20, 0x01, 0x0d, 0xb8], 38);
  f[53] = 1;
  f.set([(i * 7) >> 8, (i * 7) & 0xff, 0x01, 0xbb], 54);
  f[66] = 0x50;
  return f;
}

const N_FRAMES = 1024;
const v4 = Array.from({ length: N_FRAMES }, (_, i) => frameV4(i));
const v6 = Array.from({ length: N_FRAMES }, (_, i) => frameV6(i));
const key = new ToeplitzKey(KEY);
let sink = 0;

/** Runs `fn(iterations)` until ~`ms` elapsed, best of `rounds`; returns ns per operation. */
function measure(fn: (n: number) => void, opsPerCall: number, ms = 300, rounds = 5): number {
  let n = 1000;
  for (;;) {
    const t0 = process.hrtime.bigint();
    fn(n);
    const dt = Number(process.hrtime.bigint() - t0) / 1e6;
    if (dt > ms / 4) break;
    n *= 4;
  }
  let best = Number.POSITIVE_INFINITY;
  for (let r = 0; r < rounds; r++) {
    const t0 = process.hrtime.bigint();
    fn(n);
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / (n * opsPerCall));
  }
  return best;
}

function hashTable(frames: Uint8Array[], srcOff: number, len: number) {
  return (n: number) => {
    for (let i = 0; i < n; i++) {
      const f = frames[i & (N_FRAMES - 1)]!;
      sink ^= key.partial(f, srcOff, len, 0);
    }
  };
}

function hashSerial(frames: Uint8Array[], srcOff: number, len: number) {
  return (n: number) => {
    for (let i = 0; i < n; i++) {
      const f = frames[i & (N_FRAMES - 1)]!;
      sink ^= toeplitzBitSerial(KEY, f, srcOff, len);
    }
  };
}

const pkt = new ParsedPacket();
const res = new RssHashResult();
function parseAndHash(frames: Uint8Array[]) {
  return (n: number) => {
    for (let i = 0; i < n; i++) {
      const f = frames[i & (N_FRAMES - 1)]!;
      parsePacket(f, pkt);
      rssHashParsed(f, pkt, 0x1ff, key, res);
      sink ^= res.hash;
    }
  };
}

// Sanity: both implementations agree on every bench input (IPv4: addresses and ports are contiguous,
// 26..38; IPv6: 22..58).
for (let i = 0; i < N_FRAMES; i++) {
  if (key.hash(v4[i]!, 26, 12) !== toeplitzBitSerial(KEY, v4[i]!, 26, 12)) throw new Error('v4 mismatch');
  if (key.hash(v6[i]!, 22, 36) !== toeplitzBitSerial(KEY, v6[i]!, 22, 36)) throw new Error('v6 mismatch');
  parsePacket(v6[i]!, pkt);
  rssHashParsed(v6[i]!, pkt, 0x1ff, key, res);
  if (res.hash !== key.hash(v6[i]!, 22, 36)) throw new Error('v6 rss mismatch');
}

const rows: [string, number, number][] = [];
for (const [name, frames, off, len] of [
  ['IPv4+ports (12 B)', v4, 26, 12],
  ['IPv6+ports (36 B)', v6, 22, 36],
] as const) {
  const serial = measure(hashSerial(frames, off, len), 1);
  const table = measure(hashTable(frames, off, len), 1);
  rows.push([name, table, serial]);
}
const p4 = measure(parseAndHash(v4), 1);
const p6 = measure(parseAndHash(v6), 1);

console.log(`node ${process.version}, ${process.arch}`);
console.log('input              table ns/hash  bit-serial ns/hash  speed-up');
for (const [name, table, serial] of rows) {
  console.log(
    `${name.padEnd(18)} ${table.toFixed(1).padStart(14)} ${serial.toFixed(1).padStart(19)} ${(serial / table).toFixed(1).padStart(8)}x`,
  );
}
console.log(`parse + rssHash per frame: IPv4/TCP ${p4.toFixed(1)} ns, IPv6/TCP ${p6.toFixed(1)} ns`);
if (sink === 0.5) console.log(sink);
