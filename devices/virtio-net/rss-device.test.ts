// RSS and hash report (issue 7) through the public object and the synthetic guest: RSS_CONFIG and
// HASH_CONFIG over the control queue, steering by the indirection table, hash report fields equal to
// `rssHash`, the rss-vectors.json vectors, the unclassified queue, invalid configs leaving state
// unchanged, snapshot/restore and reset.
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  eth,
  fragmentHeader,
  homeAddressOption,
  ipv4,
  ipv6,
  optionsHeader,
  routingType2,
  tcp,
  udp,
} from '../../lib/net/frames.test-support.js';
import { rssHash } from '../../lib/net/rss-hash.js';
import { BumpAllocator } from '../../virtio/testing/bump-allocator.js';
import { VirtioNetDriver } from '../testing/net-driver.js';
import type { VirtioNetPci } from '../virtio-net-pci.js';
import { type Bench, hexOf, inWorkerMode, MEM_SIZE, openBench, rawFrame } from './bench.test-support.js';
import { NetConfig } from './config.js';
import { CtrlClass, CtrlMq, VIRTIO_NET_ERR, VIRTIO_NET_OK } from './control-queue.js';
import { NetF } from './features.js';
import type { WorkerPool } from './workers/pool.js';

const vectors = JSON.parse(
  readFileSync(new URL('../../fixtures/rss-vectors.json', import.meta.url), 'utf8'),
) as {
  key: string;
  vectors: {
    key: string;
    src_ip: string;
    dst_ip: string;
    src_port: number;
    dst_port: number;
    hash_ipv4_or_ipv6_only: string;
    hash_with_ports: string;
  }[];
};
const KEY = Uint8Array.from(Buffer.from(vectors.key, 'hex'));
const T = {
  IPv4: 1,
  TCPv4: 2,
  UDPv4: 4,
  IPv6: 8,
  TCPv6: 16,
  UDPv6: 32,
  IP_EX: 64,
  TCP_EX: 128,
  UDP_EX: 256,
  ALL: 0x1ff,
} as const;
const PAIRS = 4;

function stats(dev: VirtioNetPci) {
  return dev.stats();
}

/** An RSS bench: mq + rss + hash, 4 pairs, promiscuous (test frames use arbitrary MACs). */
function rssBench(options: Record<string, unknown> = {}, wanted?: bigint): Bench {
  const b = openBench(
    { mq: true, rss: true, hash: true, queues: PAIRS, ...options },
    { queues: PAIRS },
    wanted ? { wanted } : {},
  );
  expect(b.driver.rxMode(0, true)).toBe(VIRTIO_NET_OK);
  return b;
}

interface Arrival {
  pair: number;
  frame: Uint8Array;
  hashValue: number;
  hashReport: number;
}

/** Injects `frame` on backend queue `q` and returns where and how it arrived (exactly one arrival). */
function deliver(b: Bench, frame: Uint8Array, q = 0): Arrival {
  b.backend.inject(frame, q);
  const got: Arrival[] = [];
  for (let p = 0; p < b.driver.maxPairs; p++)
    for (const r of b.driver.receive(p)) got.push({ pair: p, ...r });
  expect(got, 'exactly one arrival').toHaveLength(1);
  expect(hexOf(got[0]!.frame)).toBe(hexOf(frame));
  return got[0]!;
}

function table(n: number, f: (i: number) => number): number[] {
  return Array.from({ length: n }, (_, i) => f(i));
}

/** What the device must do for `frame` under RSS config (types, key, table, unclassified). */
function expected(frame: Uint8Array, types: number, key: Uint8Array, tbl: number[], unclassified: number) {
  const h = rssHash(frame, types, key);
  if (!h) return { pair: unclassified, hashValue: 0, hashReport: 0 };
  return { pair: tbl[h.hash & (tbl.length - 1)]!, hashValue: h.hash, hashReport: h.reportType };
}

const v4tcp = (src: string, dst: string, sp: number, dp: number) =>
  eth(0x0800, ipv4({ src, dst, proto: 6, payload: tcp(sp, dp) }));
const v4udp = (src: string, dst: string, sp: number, dp: number) =>
  eth(0x0800, ipv4({ src, dst, proto: 17, payload: udp(sp, dp) }));
const v6tcp = (src: string, dst: string, sp: number, dp: number) =>
  eth(0x86dd, ipv6(src, dst, 6, tcp(sp, dp)));
const v6udp = (src: string, dst: string, sp: number, dp: number) =>
  eth(0x86dd, ipv6(src, dst, 17, udp(sp, dp)));

describe('config space and negotiation', () => {
  it('RSS limits in the device config; control queue at 2N', () => {
    const b = rssBench();
    expect(b.driver.has(NetF.RSS) && b.driver.has(NetF.HASH_REPORT)).toBe(true);
    expect(b.driver.hdrSize).toBe(20);
    expect(b.driver.readConfig(NetConfig.RSS_MAX_KEY_SIZE, 1)).toBe(40);
    expect(b.driver.readConfig(NetConfig.RSS_MAX_INDIRECTION_TABLE_LENGTH, 2)).toBe(128);
    expect(b.driver.readConfig(NetConfig.SUPPORTED_HASH_TYPES, 4)).toBe(0x1ff);
    expect(b.driver.ctrlIndex).toBe(2 * PAIRS);
  });
});

describe('rss-vectors.json through the device, with hash report', () => {
  it('every vector, with and without ports, TCP and UDP: hash, report type and queue exact', () => {
    const b = rssBench();
    const tbl = table(128, (i) => (i * 3 + 1) % PAIRS);
    let n = 0;
    for (const v of vectors.vectors) {
      const six = v.src_ip.includes(':');
      const key = Uint8Array.from(Buffer.from(v.key, 'hex'));
      const withPorts = Number(v.hash_with_ports);
      const ipOnly = Number(v.hash_ipv4_or_ipv6_only);
      const cases: [number, Uint8Array, number, number][] = six
        ? [
            [T.TCPv6, v6tcp(v.src_ip, v.dst_ip, v.src_port, v.dst_port), withPorts, 5],
            [T.UDPv6, v6udp(v.src_ip, v.dst_ip, v.src_port, v.dst_port), withPorts, 6],
            [T.IPv6, v6tcp(v.src_ip, v.dst_ip, v.src_port, v.dst_port), ipOnly, 4],
            [T.IPv6 | T.UDPv6, v6tcp(v.src_ip, v.dst_ip, v.src_port, v.dst_port), ipOnly, 4],
          ]
        : [
            [T.TCPv4, v4tcp(v.src_ip, v.dst_ip, v.src_port, v.dst_port), withPorts, 2],
            [T.UDPv4, v4udp(v.src_ip, v.dst_ip, v.src_port, v.dst_port), withPorts, 3],
            [T.IPv4, v4tcp(v.src_ip, v.dst_ip, v.src_port, v.dst_port), ipOnly, 1],
            [T.IPv4 | T.UDPv4, v4tcp(v.src_ip, v.dst_ip, v.src_port, v.dst_port), ipOnly, 1],
          ];
      for (const [types, frame, hash, report] of cases) {
        expect(b.driver.setRss({ hashTypes: types, table: tbl, key, maxTxVq: PAIRS })).toBe(VIRTIO_NET_OK);
        const a = deliver(b, frame);
        expect({ h: a.hashValue >>> 0, r: a.hashReport, p: a.pair }, `${v.src_ip} types ${types}`).toEqual({
          h: hash >>> 0,
          r: report,
          p: tbl[hash & 127],
        });
        n++;
      }
    }
    expect(n).toBe(vectors.vectors.length * 4);
  });
});

describe('steering by the indirection table', () => {
  it('many flows: each lands on table[hash & mask], reported hash = rssHash, distribution as predicted', () => {
    const b = rssBench();
    const tbl = table(128, (i) => [0, 1, 2, 3, 3, 2][i % 6]!);
    expect(b.driver.setRss({ hashTypes: T.ALL, table: tbl, unclassified: 1, key: KEY, maxTxVq: PAIRS })).toBe(
      VIRTIO_NET_OK,
    );
    const counts = [0, 0, 0, 0];
    const want = [0, 0, 0, 0];
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 3 }),
        fc.tuple(fc.integer({ min: 1, max: 254 }), fc.integer({ min: 0, max: 255 })),
        fc.integer({ min: 1, max: 65535 }),
        fc.integer({ min: 1, max: 65535 }),
        fc.integer({ min: 0, max: PAIRS - 1 }),
        (kind, [a, c], sp, dp, q) => {
          const s = `10.${a}.${c}.1`;
          const d = `192.168.${c}.${a}`;
          const s6 = `2001:db8::${a.toString(16)}:${c.toString(16)}`;
          const frame = [
            v4tcp(s, d, sp, dp),
            v4udp(s, d, sp, dp),
            v6tcp(s6, '2001:db8::1', sp, dp),
            v6udp(s6, '2001:db8::2', sp, dp),
          ][kind]!;
          const e = expected(frame, T.ALL, KEY, tbl, 1);
          const got = deliver(b, frame, q);
          expect({ pair: got.pair, hashValue: got.hashValue >>> 0, hashReport: got.hashReport }).toEqual({
            ...e,
            hashValue: e.hashValue >>> 0,
          });
          counts[got.pair]!++;
          want[e.pair]!++;
        },
      ),
      { numRuns: 400, seed: 7 },
    );
    expect(counts).toEqual(want);
    // 1/3 of the table points at queues 2 and 3 each, 1/6 at 0 and 1: every queue gets traffic.
    for (const c of counts) expect(c).toBeGreaterThan(20);
    expect(counts[2]! + counts[3]!).toBeGreaterThan(counts[0]! + counts[1]!);
  });

  it('varied frames (fragments, VLAN tags, IPv6 extension headers, truncated) × hash types = rssHash', () => {
    const b = rssBench();
    const tbl = table(64, (i) => (i >> 2) % PAIRS);
    const frames: Uint8Array[] = [
      v4tcp('1.2.3.4', '5.6.7.8', 1000, 2000),
      eth(0x0800, ipv4({ src: '1.2.3.4', dst: '5.6.7.8', proto: 6, payload: tcp(1, 2), fragField: 0x2000 })),
      eth(0x0800, ipv4({ src: '1.2.3.4', dst: '5.6.7.8', proto: 17, payload: udp(1, 2), fragField: 0x0010 })),
      eth(0x0800, ipv4({ src: '9.9.9.9', dst: '8.8.8.8', proto: 6, payload: tcp(5, 6) }), [[0x8100, 5]]),
      eth(0x0800, ipv4({ src: '9.9.9.9', dst: '8.8.8.8', proto: 17, payload: udp(5, 6) }), [
        [0x88a8, 7],
        [0x8100, 5],
      ]),
      eth(0x0800, ipv4({ src: '7.7.7.7', dst: '6.6.6.6', proto: 47, payload: new Uint8Array(20) })),
      v6tcp('2001:db8::1', '2001:db8::2', 80, 8080),
      v6udp('fe80::1', 'ff02::1', 546, 547),
      eth(0x86dd, ipv6('2001:db8::1', '2001:db8::2', 0, concatBytes(optionsHeader(6), tcp(1, 2)))),
      eth(
        0x86dd,
        ipv6(
          '2001:db8::1',
          '2001:db8::2',
          60,
          concatBytes(
            optionsHeader(43, homeAddressOption('2001:db8::aa')),
            routingType2(6, '2001:db8::bb'),
            tcp(3, 4),
          ),
        ),
      ),
      eth(
        0x86dd,
        ipv6('2001:db8::1', '2001:db8::2', 44, concatBytes(fragmentHeader(17, 0, true), udp(3, 4))),
      ),
      eth(
        0x86dd,
        ipv6('2001:db8::1', '2001:db8::2', 44, concatBytes(fragmentHeader(17, 10, false), udp(3, 4))),
      ),
      v4tcp('1.2.3.4', '5.6.7.8', 1000, 2000).subarray(0, 40),
      v4tcp('1.2.3.4', '5.6.7.8', 1000, 2000).subarray(0, 30),
      v6tcp('2001:db8::1', '2001:db8::2', 80, 8080).subarray(0, 60),
      rawFrame(60, '01:02:03:04:05:06', '52:54:00:00:00:01', 0, 0x0806),
    ];
    const typeSets = [
      T.ALL,
      T.IPv4 | T.IPv6,
      T.TCPv4 | T.TCPv6,
      T.UDPv4 | T.UDPv6,
      T.IP_EX,
      T.TCP_EX | T.IPv6,
      T.UDP_EX,
      T.TCPv4,
      0,
    ];
    for (const types of typeSets) {
      expect(
        b.driver.setRss({ hashTypes: types, table: tbl, unclassified: 3, key: KEY, maxTxVq: PAIRS }),
      ).toBe(VIRTIO_NET_OK);
      frames.forEach((f, i) => {
        const e = expected(f, types, KEY, tbl, 3);
        const got = deliver(b, f, i % PAIRS);
        expect(
          { pair: got.pair, hashValue: got.hashValue >>> 0, hashReport: got.hashReport },
          `types ${types} frame ${i}`,
        ).toEqual({ ...e, hashValue: e.hashValue >>> 0 });
      });
    }
  });

  it('unclassified queue: non-IP frames and IP frames with no enabled type', () => {
    const b = rssBench();
    expect(
      b.driver.setRss({ hashTypes: T.TCPv4, table: [0, 1], unclassified: 2, key: KEY, maxTxVq: PAIRS }),
    ).toBe(VIRTIO_NET_OK);
    for (const [f, q] of [
      [rawFrame(60), 0],
      [v6tcp('::1', '::2', 1, 2), 1],
      [v4udp('1.1.1.1', '2.2.2.2', 1, 2), 3],
    ] as const) {
      const a = deliver(b, f, q);
      expect([a.pair, a.hashValue, a.hashReport]).toEqual([2, 0, 0]);
    }
    const a = deliver(b, v4tcp('1.1.1.1', '2.2.2.2', 1, 2), 3);
    expect(a.hashReport).toBe(2);
    expect(a.pair).toBe([0, 1][a.hashValue & 1]);
  });

  it('RSS_CONFIG sets the queue pairs in use from max_tx_vq', () => {
    const b = rssBench({}, undefined);
    expect(b.driver.setRss({ hashTypes: T.ALL, table: [1], key: KEY, maxTxVq: 2 })).toBe(VIRTIO_NET_OK);
    expect(stats(b.dev).queuePairs).toBe(2);
    expect(b.backend.queuePairEnabledCalls.slice(-4).map((c) => c.enabled)).toEqual([
      true,
      true,
      false,
      false,
    ]);
  });
});

describe('RSS / hash report combinations', () => {
  it('RSS without hash report: 12-byte header, steering by the table', () => {
    const b = rssBench({ hash: false });
    expect(b.driver.has(NetF.HASH_REPORT)).toBe(false);
    expect(b.driver.hdrSize).toBe(12);
    const tbl = table(16, (i) => 3 - (i % 4));
    expect(b.driver.setRss({ hashTypes: T.ALL, table: tbl, key: KEY, maxTxVq: PAIRS })).toBe(VIRTIO_NET_OK);
    for (let i = 0; i < 40; i++) {
      const f = v4tcp('10.1.1.1', '10.2.2.2', 1000 + i, 80);
      const a = deliver(b, f, 0);
      expect(a.pair).toBe(expected(f, T.ALL, KEY, tbl, 0).pair);
      expect([a.hashValue, a.hashReport]).toEqual([0, 0]);
    }
    expect(b.driver.setHashConfig(T.ALL, KEY)).toBe(VIRTIO_NET_ERR);
  });

  it('hash report without RSS (HASH_CONFIG): hash fields filled, no redirection', () => {
    const b = openBench({ hash: true });
    expect(b.driver.has(NetF.RSS)).toBe(false);
    expect(b.driver.readConfig(NetConfig.RSS_MAX_INDIRECTION_TABLE_LENGTH, 2)).toBe(1);
    b.driver.rxMode(0, true);
    expect(b.driver.setRss({ hashTypes: T.ALL, table: [0], key: KEY, maxTxVq: 1 })).toBe(VIRTIO_NET_ERR);
    expect(b.driver.setHashConfig(T.TCPv4 | T.IPv6, KEY)).toBe(VIRTIO_NET_OK);
    for (const f of [
      v4tcp('1.2.3.4', '4.3.2.1', 5, 6),
      v4udp('1.2.3.4', '4.3.2.1', 5, 6),
      v6udp('::5', '::6', 7, 8),
      rawFrame(60),
    ]) {
      const a = deliver(b, f);
      const h = rssHash(f, T.TCPv4 | T.IPv6, KEY);
      expect([a.pair, a.hashValue >>> 0, a.hashReport]).toEqual([
        0,
        (h?.hash ?? 0) >>> 0,
        h?.reportType ?? 0,
      ]);
    }
    // Zero types and key length disable it.
    expect(b.driver.setHashConfig(0, new Uint8Array(0))).toBe(VIRTIO_NET_OK);
    expect(deliver(b, v4tcp('1.2.3.4', '4.3.2.1', 5, 6)).hashReport).toBe(0);
  });

  it('hash report with MQ but without RSS: HASH_CONFIG reports, flows stay on their backend queue', () => {
    const b = openBench({ mq: true, hash: true, queues: PAIRS }, { queues: PAIRS });
    b.driver.rxMode(0, true);
    expect(b.driver.setHashConfig(T.ALL, KEY)).toBe(VIRTIO_NET_OK);
    const f = v4tcp('1.2.3.4', '4.3.2.1', 5, 6);
    const a = deliver(b, f, 2);
    expect([a.pair, a.hashValue >>> 0, a.hashReport]).toEqual([2, rssHash(f, T.ALL, KEY)!.hash >>> 0, 2]);
  });

  it('hash report without RSS keeps automatic flow steering (MQ + HASH_CONFIG)', async () => {
    const { ethernet, tcp4 } = await import('../testing/frames.js');
    const b = openBench({ mq: true, hash: true, queues: PAIRS }, { queues: PAIRS });
    b.driver.rxMode(0, true);
    expect(b.driver.setHashConfig(T.ALL, KEY)).toBe(VIRTIO_NET_OK);
    const out = ethernet(
      '52:54:00:ab:cd:ef',
      '52:54:00:12:34:56',
      0x0800,
      tcp4('10.0.0.2', '10.0.0.9', 40001, 443, 1, 0x02, new Uint8Array(0)),
    );
    const reply = ethernet(
      '52:54:00:12:34:56',
      '52:54:00:ab:cd:ef',
      0x0800,
      tcp4('10.0.0.9', '10.0.0.2', 443, 40001, 9, 0x12, new Uint8Array(0)),
    );
    b.driver.send(out, { pair: 2 });
    const a = deliver(b, reply, 0);
    expect([a.pair, a.hashValue >>> 0, a.hashReport]).toEqual([2, rssHash(reply, T.ALL, KEY)!.hash >>> 0, 2]);
  });

  // Not in worker mode: there the pair's own worker holds the frames (its backlog, its tap queue paused);
  // the worker that read them forwards and does not pause (docs/workers.md). Covered by its own case below.
  it.skipIf(inWorkerMode())('steered frames wait in the backlog of their pair with their hash', () => {
    const b = rssBench();
    expect(b.driver.setRss({ hashTypes: T.ALL, table: [2], key: KEY, maxTxVq: PAIRS })).toBe(VIRTIO_NET_OK);
    // Take every rx buffer of pair 2 off the ring.
    const frames = Array.from({ length: 300 }, (_, i) => v4udp('10.0.0.1', '10.0.0.2', 1000 + i, 53));
    for (const f of frames) b.backend.inject(f, 0);
    expect(b.backend.isPaused(0)).toBe(true);
    const got: { frame: string; h: number; r: number }[] = [];
    for (let i = 0; i < 4; i++)
      for (const r of b.driver.receive(2))
        got.push({ frame: hexOf(r.frame), h: r.hashValue >>> 0, r: r.hashReport });
    expect(got).toEqual(
      frames.map((f) => ({ frame: hexOf(f), h: rssHash(f, T.ALL, KEY)!.hash >>> 0, r: 3 })),
    );
    expect(b.backend.isPaused(0)).toBe(false);
  });

  it.runIf(inWorkerMode())(
    'workers: frames steered to another worker’s pair cross to it with their hash, wait for its buffers, none lost',
    () => {
      const b = rssBench();
      const pool = b.dev.net.dataPlane as WorkerPool;
      expect(pool.workerCount).toBe(PAIRS);
      expect(b.driver.setRss({ hashTypes: T.ALL, table: [2], key: KEY, maxTxVq: PAIRS })).toBe(VIRTIO_NET_OK);
      // Read by pair 0's worker, run by pair 2's: more frames than pair 2 has buffers.
      const frames = Array.from({ length: 300 }, (_, i) => v4udp('10.0.0.1', '10.0.0.2', 1000 + i, 53));
      for (const f of frames) b.backend.inject(f, 0);
      const got: { frame: string; h: number; r: number }[] = [];
      for (let i = 0; i < 4; i++)
        for (const r of b.driver.receive(2))
          got.push({ frame: hexOf(r.frame), h: r.hashValue >>> 0, r: r.hashReport });
      expect(got).toEqual(
        frames.map((f) => ({ frame: hexOf(f), h: rssHash(f, T.ALL, KEY)!.hash >>> 0, r: 3 })),
      );
      pool.refreshStats();
      expect([pool.handoffs.crossPairForwards, pool.handoffs.crossPairDrops]).toEqual([300, 0]);
      const q = stats(b.dev).queues;
      expect(q.map((x) => x.rxPackets)).toEqual([0, 0, 300, 0]);
      expect(q[2]!.rxBacklogged).toBeGreaterThan(0);
      expect(q.map((x) => x.rxDropped)).toEqual([0, 0, 0, 0]);
      // Backpressure as on one thread: the reading worker held backend queue 0 while pair 2 was behind,
      // and let it go again.
      const q0 = b.backend.pauseCalls.filter((c) => c.queuePair === 0).map((c) => c.paused);
      expect(q0[0]).toBe(true);
      expect(q0.at(-1)).toBe(false);
    },
  );

  it('RSS disabled by a zero-length config: no hash, backend queue kept, queue pairs from max_tx_vq', () => {
    const b = rssBench();
    expect(b.driver.setRss({ hashTypes: T.ALL, table: [3], key: KEY, maxTxVq: PAIRS })).toBe(VIRTIO_NET_OK);
    expect(deliver(b, v4tcp('1.1.1.1', '2.2.2.2', 3, 4), 1).pair).toBe(3);
    expect(b.driver.setRss({ hashTypes: 0, table: [0], key: new Uint8Array(0), maxTxVq: 3 })).toBe(
      VIRTIO_NET_OK,
    );
    expect(stats(b.dev).queuePairs).toBe(3);
    const a = deliver(b, v4tcp('1.1.1.1', '2.2.2.2', 3, 4), 1);
    expect([a.pair, a.hashValue, a.hashReport]).toEqual([1, 0, 0]);
  });

  it('VQ_PAIRS_SET after RSS_CONFIG: the last command wins (RSS off, automatic steering)', () => {
    const b = rssBench();
    expect(b.driver.setRss({ hashTypes: T.ALL, table: [3], key: KEY, maxTxVq: PAIRS })).toBe(VIRTIO_NET_OK);
    expect(b.driver.setQueuePairs(PAIRS)).toBe(VIRTIO_NET_OK);
    const a = deliver(b, v4tcp('1.1.1.1', '2.2.2.2', 3, 4), 1);
    expect([a.pair, a.hashReport]).toEqual([1, 0]);
    expect(b.driver.setRss({ hashTypes: T.ALL, table: [3], key: KEY, maxTxVq: PAIRS })).toBe(VIRTIO_NET_OK);
    expect(deliver(b, v4tcp('1.1.1.1', '2.2.2.2', 3, 4), 1).pair).toBe(3);
  });
});

describe('invalid RSS / hash configs: VIRTIO_NET_ERR, state unchanged', () => {
  const goodTable = table(32, (i) => (i * 5) % PAIRS);
  const probe = [0, 1, 2, 3, 4, 5, 6, 7].map((i) => v4tcp('10.0.0.1', '10.0.0.2', 2000 + i * 13, 443));

  function raw(
    hashTypes: number,
    mask: number,
    unclassified: number,
    entries: number[],
    maxTxVq: number,
    keyLen: number,
    key: Uint8Array,
  ): Uint8Array {
    const n = entries.length;
    const buf = new Uint8Array(11 + 2 * n + key.length);
    const dv = new DataView(buf.buffer);
    dv.setUint32(0, hashTypes, true);
    dv.setUint16(4, mask, true);
    dv.setUint16(6, unclassified, true);
    entries.forEach((q, i) => {
      dv.setUint16(8 + 2 * i, q, true);
    });
    dv.setUint16(8 + 2 * n, maxTxVq, true);
    buf[10 + 2 * n] = keyLen;
    buf.set(key, 11 + 2 * n);
    return buf;
  }

  it('RSS_CONFIG', () => {
    const b = rssBench();
    expect(
      b.driver.setRss({
        hashTypes: T.TCPv4 | T.IPv4,
        table: goodTable,
        unclassified: 2,
        key: KEY,
        maxTxVq: PAIRS,
      }),
    ).toBe(VIRTIO_NET_OK);
    const before = probe.map((f, i) => deliver(b, f, i % PAIRS));
    const nonIp = deliver(b, rawFrame(60), 1);
    expect(nonIp.pair).toBe(2);
    const eight = table(8, () => 1);
    const bad: [string, Uint8Array][] = [
      ['empty', new Uint8Array(0)],
      ['7 bytes', new Uint8Array(7)],
      ['unsupported hash type', raw(1 << 9, 7, 0, eight, PAIRS, 40, KEY)],
      ['table length 3', raw(T.IPv4, 2, 0, [0, 1, 2], PAIRS, 40, KEY)],
      [
        'table length 256',
        raw(
          T.IPv4,
          255,
          0,
          table(256, () => 0),
          PAIRS,
          40,
          KEY,
        ),
      ],
      ['unclassified = max pairs', raw(T.IPv4, 7, PAIRS, eight, PAIRS, 40, KEY)],
      ['table entry = max pairs', raw(T.IPv4, 7, 0, [0, 1, 2, PAIRS, 0, 0, 0, 0], PAIRS, 40, KEY)],
      ['table entry with bit 15', raw(T.IPv4, 7, 0, [0x8000, 0, 0, 0, 0, 0, 0, 0], PAIRS, 40, KEY)],
      ['max_tx_vq 0', raw(T.IPv4, 7, 0, eight, 0, 40, KEY)],
      ['max_tx_vq > max', raw(T.IPv4, 7, 0, eight, PAIRS + 1, 40, KEY)],
      ['key 41 bytes', raw(T.IPv4, 7, 0, eight, PAIRS, 41, new Uint8Array(41))],
      ['types without a key', raw(T.IPv4, 7, 0, eight, PAIRS, 0, new Uint8Array(0))],
      ['key cut short', raw(T.IPv4, 7, 0, eight, PAIRS, 40, KEY).subarray(0, 11 + 16 + 20)],
      ['table cut short', raw(T.IPv4, 7, 0, eight, PAIRS, 40, KEY).subarray(0, 12)],
      ['max_tx_vq missing', raw(T.IPv4, 7, 0, eight, PAIRS, 40, KEY).subarray(0, 8 + 16)],
      ['key length missing', raw(T.IPv4, 7, 0, eight, PAIRS, 40, KEY).subarray(0, 8 + 16 + 2)],
    ];
    const errors0 = stats(b.dev).ctrlErrors;
    for (const [name, data] of bad) {
      expect(b.driver.control(CtrlClass.MQ, CtrlMq.RSS_CONFIG, data), name).toBe(VIRTIO_NET_ERR);
      const after = probe.map((f, i) => deliver(b, f, i % PAIRS));
      expect(after, name).toEqual(before);
      expect(deliver(b, rawFrame(60), 1).pair, name).toBe(2);
    }
    // Rejected VQ_PAIRS_SET commands do not touch RSS either.
    for (const n of [0, PAIRS + 1]) {
      expect(b.driver.control(CtrlClass.MQ, CtrlMq.VQ_PAIRS_SET, Uint8Array.of(n, 0))).toBe(VIRTIO_NET_ERR);
      expect(probe.map((f, i) => deliver(b, f, i % PAIRS))).toEqual(before);
    }
    expect(stats(b.dev).ctrlErrors - errors0).toBe(bad.length + 2);
    expect(stats(b.dev).queuePairs).toBe(PAIRS);
    expect(b.driver.pci.status & 0x40).toBe(0);
  });

  it('HASH_CONFIG', () => {
    const b = openBench({ hash: true });
    b.driver.rxMode(0, true);
    expect(b.driver.setHashConfig(T.TCPv4, KEY)).toBe(VIRTIO_NET_OK);
    const before = probe.map((f) => deliver(b, f));
    const hc = (types: number, keyLen: number, key: Uint8Array) => {
      const d = new Uint8Array(13 + key.length);
      new DataView(d.buffer).setUint32(0, types, true);
      d[12] = keyLen;
      d.set(key, 13);
      return d;
    };
    const bad: [string, Uint8Array][] = [
      ['empty', new Uint8Array(0)],
      ['12 bytes', new Uint8Array(12)],
      ['unsupported type', hc(0x200, 40, KEY)],
      ['key 41', hc(T.IPv4, 41, new Uint8Array(41))],
      ['types without key', hc(T.IPv4, 0, new Uint8Array(0))],
      ['key cut short', hc(T.IPv4, 40, KEY).subarray(0, 30)],
    ];
    for (const [name, data] of bad) {
      expect(b.driver.control(CtrlClass.MQ, CtrlMq.HASH_CONFIG, data), name).toBe(VIRTIO_NET_ERR);
      expect(
        probe.map((f) => deliver(b, f)),
        name,
      ).toEqual(before);
    }
  });

  it('random RSS_CONFIG payloads never throw; accepted ones steer as rssHash + table, rejected ones change nothing', () => {
    const b = rssBench();
    let cur: { types: number; tbl: number[]; unclassified: number; key: Uint8Array } = {
      types: T.ALL,
      tbl: [0, 1, 2, 3],
      unclassified: 0,
      key: KEY,
    };
    let pairs = PAIRS;
    expect(b.driver.setRss({ hashTypes: cur.types, table: cur.tbl, key: cur.key, maxTxVq: PAIRS })).toBe(
      VIRTIO_NET_OK,
    );
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 0x3ff }),
        fc.constantFrom(0, 1, 3, 7, 8, 127, 128, 255),
        fc.integer({ min: 0, max: 5 }),
        fc.array(fc.integer({ min: 0, max: 4 }), { minLength: 1, maxLength: 8 }),
        fc.integer({ min: 0, max: 6 }),
        fc.integer({ min: 0, max: 45 }),
        fc.integer({ min: -5, max: 5 }),
        (types, mask, unclassified, seed, maxTxVq, keyLen, cut) => {
          // Mostly entries < PAIRS; seed value 4 (= PAIRS) makes an invalid entry.
          const entries = Array.from({ length: mask + 1 }, (_, i) =>
            seed.length > 1 ? seed[i % seed.length]! : seed[0]! % PAIRS,
          );
          const key = Uint8Array.from({ length: keyLen }, (_, i) => (i * 29 + types) & 0xff);
          let data = raw(types, mask, unclassified, entries, maxTxVq, keyLen, key);
          if (cut < 0) data = data.subarray(0, Math.max(0, data.length + cut));
          const ack = b.driver.control(CtrlClass.MQ, CtrlMq.RSS_CONFIG, data);
          expect([VIRTIO_NET_OK, VIRTIO_NET_ERR]).toContain(ack);
          const n = mask + 1;
          const valid =
            (types & ~0x1ff) === 0 &&
            n <= 128 &&
            (n & (n - 1)) === 0 &&
            cut >= 0 &&
            unclassified < PAIRS &&
            entries.every((q) => q < PAIRS) &&
            maxTxVq >= 1 &&
            maxTxVq <= PAIRS &&
            keyLen <= 40 &&
            (keyLen > 0 || types === 0);
          expect(
            ack,
            JSON.stringify({ types, mask, unclassified, n: entries.length, maxTxVq, keyLen, cut }),
          ).toBe(valid ? VIRTIO_NET_OK : VIRTIO_NET_ERR);
          if (valid)
            cur =
              keyLen === 0
                ? { types: -1, tbl: [], unclassified: 0, key }
                : { types, tbl: entries, unclassified, key };
          if (valid) pairs = maxTxVq;
          const f = v4tcp('10.9.8.7', '10.1.2.3', 4000 + keyLen, 80);
          const got = deliver(b, f, 1);
          // RSS off: the backend queue, folded onto the pairs in use (max_tx_vq).
          if (cur.types === -1) expect([got.pair, got.hashReport]).toEqual([1 % pairs, 0]);
          else {
            const e = expected(f, cur.types, cur.key, cur.tbl, cur.unclassified);
            expect({ pair: got.pair, hashValue: got.hashValue >>> 0, hashReport: got.hashReport }).toEqual({
              ...e,
              hashValue: e.hashValue >>> 0,
            });
          }
        },
      ),
      { numRuns: 300, seed: 11, endOnFailure: true },
    );
  });
});

describe('RSS state across snapshot/restore and reset', () => {
  it('survives snapshot/restore into a fresh device; cleared by reset', async () => {
    const b = rssBench();
    const tbl = table(128, (i) => (i * 7) % PAIRS);
    expect(b.driver.setRss({ hashTypes: T.ALL, table: tbl, unclassified: 3, key: KEY, maxTxVq: PAIRS })).toBe(
      VIRTIO_NET_OK,
    );
    const flows = Array.from({ length: 24 }, (_, i) => v4udp('172.16.0.1', '172.16.9.9', 3000 + i * 7, 53));
    const before = flows.map((f) => deliver(b, f));
    const snap = JSON.parse(JSON.stringify(b.dev.snapshot()));
    // A fresh device on the same guest memory, driven by the same driver state (the guest did not notice).
    const { createVirtioNetPci } = await import('../virtio-net-pci.js');
    const { MemoryBackend } = await import('../../lib/net/memory-backend.js');
    const backend2 = new MemoryBackend({ queues: PAIRS });
    const dev2 = createVirtioNetPci({
      memory: b.memory,
      backend: backend2,
      interrupts: b.irq,
      mq: true,
      rss: true,
      hash: true,
      queues: PAIRS,
    });
    dev2.restore(snap);
    // Route the same driver (its rings and buffers live in the shared guest memory) to the new device.
    const proxy = {
      configRead: dev2.configRead.bind(dev2),
      configWrite: dev2.configWrite.bind(dev2),
      barRead: dev2.barRead.bind(dev2),
      barWrite: dev2.barWrite.bind(dev2),
    };
    (b.driver.pci as unknown as { target: unknown }).target = proxy;
    const b2: Bench = { ...b, backend: backend2, dev: dev2 };
    expect(flows.map((f) => deliver(b2, f))).toEqual(before);
    expect(deliver(b2, rawFrame(60), 0).pair).toBe(3);
    // Reset clears RSS: after a new open, frames stay on their backend queue without a hash.
    const d2 = new VirtioNetDriver(proxy, b.memory, {
      allocator: new BumpAllocator(0x4000000, MEM_SIZE - 0x1000),
      interrupts: b.irq,
    });
    d2.open();
    d2.rxMode(0, true);
    const b3: Bench = { ...b2, driver: d2 };
    const a = deliver(b3, flows[0]!, 1);
    expect([a.pair, a.hashValue, a.hashReport]).toEqual([1, 0, 0]);
  });
});

function concatBytes(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

describe('RSS naming a receive queue that is not enabled', () => {
  it('drops and counts frames for that queue without holding them or pausing the backend; other queues go on', () => {
    const b = openBench({ mq: true, rss: true, queues: 2 });
    const { driver, backend, dev } = b;
    expect(driver.setRss({ hashTypes: 0x3f, table: [1, 1], unclassified: 1, maxTxVq: 2, key: KEY })).toBe(
      VIRTIO_NET_OK,
    );
    driver.pci.resetQueue(driver.rxIndex(1)); // VIRTIO_F_RING_RESET: receiveq2 is now disabled
    const frame = rawFrame(64);
    for (let i = 0; i < 300; i++) backend.inject(frame); // more than the backlog would hold
    const st = () =>
      dev.stats() as { queues: { rxDropped: number; rxBacklogged: number; rxPackets: number }[] };
    expect(st().queues[1]).toMatchObject({ rxDropped: 300, rxBacklogged: 0, rxPackets: 0 });
    expect(backend.isPaused(0)).toBe(false);
    expect(driver.setRss({ hashTypes: 0x3f, table: [0, 0], maxTxVq: 2, key: KEY })).toBe(VIRTIO_NET_OK);
    backend.inject(frame);
    expect(driver.receive(0).map((f) => f.frame)).toEqual([frame]);
  });
});

describe('RSS applied by the backend (NetBackend.setRssSteering, a tap with an eBPF program)', () => {
  const tbl = table(64, (i) => (i * 3) % PAIRS);
  const flows = Array.from({ length: 40 }, (_, i) => v4tcp('10.1.0.1', '10.1.0.2', 1000 + i * 17, 443));

  function steeringBench(hash: boolean) {
    const b = openBench({ mq: true, rss: true, hash, queues: PAIRS }, { queues: PAIRS, rssSteering: true });
    expect(b.driver.rxMode(0, true)).toBe(VIRTIO_NET_OK);
    expect(b.driver.setRss({ hashTypes: T.ALL, table: tbl, key: KEY, unclassified: 2 })).toBe(VIRTIO_NET_OK);
    return b;
  }

  it('gets the configuration; the device keeps the backend queue and receives it straight into guest buffers', () => {
    const b = steeringBench(false);
    expect(b.backend.rssSteeringCalls.at(-1)).toEqual({
      key: KEY,
      hashTypes: T.ALL,
      table: tbl,
      defaultQueue: 2,
    });
    for (const f of flows) {
      const q = expected(f, T.ALL, KEY, tbl, 2).pair; // where the backend puts it
      const a = deliver(b, f, q);
      expect([a.pair, a.hashValue, a.hashReport]).toEqual([q, 0, 0]);
    }
    expect(b.backend.stats().deliveredDirect).toBe(flows.length);
    // The device trusts the backend's choice: it does not steer again.
    const f = flows[0]!;
    const other = (expected(f, T.ALL, KEY, tbl, 2).pair + 1) % PAIRS;
    expect(deliver(b, f, other).pair).toBe(other);
  });

  it('with hash report the device still computes the reported hash (copying path), queue from the backend', () => {
    const b = steeringBench(true);
    expect(b.driver.has(NetF.HASH_REPORT)).toBe(true);
    for (const f of flows.slice(0, 10)) {
      const e = expected(f, T.ALL, KEY, tbl, 2);
      const a = deliver(b, f, e.pair);
      expect([a.pair, a.hashValue >>> 0, a.hashReport]).toEqual([e.pair, e.hashValue >>> 0, e.hashReport]);
    }
    expect(b.backend.stats().deliveredDirect).toBe(0);
  });

  it('not handed over when the table names a detached queue; stopped by VQ_PAIRS_SET and reset', () => {
    const b = openBench({ mq: true, rss: true, queues: PAIRS }, { queues: PAIRS, rssSteering: true });
    expect(b.driver.rxMode(0, true)).toBe(VIRTIO_NET_OK);
    // max_tx_vq 2: backend queues 2 and 3 are detached, but the table names pair 3.
    expect(b.driver.setRss({ hashTypes: T.ALL, table: [0, 3], key: KEY, maxTxVq: 2 })).toBe(VIRTIO_NET_OK);
    expect(b.backend.rssSteeringCalls).toEqual([]);
    const f = flows[1]!;
    expect(deliver(b, f, 0).pair).toBe(expected(f, T.ALL, KEY, [0, 3], 0).pair); // software RSS
    expect(b.driver.setRss({ hashTypes: T.ALL, table: [0, 1], key: KEY, maxTxVq: 2 })).toBe(VIRTIO_NET_OK);
    expect(b.backend.rssSteeringCalls.at(-1)?.table).toEqual([0, 1]);
    expect(b.driver.setQueuePairs(PAIRS)).toBe(VIRTIO_NET_OK); // the last command wins: RSS off
    expect(b.backend.rssSteeringCalls.at(-1)).toBeNull();
    expect(b.driver.setRss({ hashTypes: T.ALL, table: [1], key: KEY })).toBe(VIRTIO_NET_OK);
    expect(b.backend.rssSteeringCalls.at(-1)?.table).toEqual([1]);
    b.dev.reset();
    expect(b.backend.rssSteeringCalls.at(-1)).toBeNull();
  });
});
