// VIRTIO 1.4 RSS contexts (VIRTIO_NET_F_RSS_CONTEXT, feature bit 64) through the public object and the
// synthetic guest: the offer in feature word 2, CAP_GET's reply bytes, ADD / MOD / DEL acks and every
// malformed form answered ERR with every context unchanged, VQ_PAIRS_SET refused while a context exists,
// contexts steering frames by their own table and key (and inner headers), reset and snapshot/restore.
import { describe, expect, it } from 'vitest';
import { hex, toeplitzBitSerial } from '../../lib/net/frames.test-support.js';
import { MemoryBackend } from '../../lib/net/memory-backend.js';
import { ParsedPacket, parsePacket } from '../../lib/net/packet-parser.js';
import { RssHashResult } from '../../lib/net/rss-hash.js';
import { HashTunnelType } from '../../lib/net/tunnel-inner.js';
import { encapsulations, ethPacket, type Flow, tuple } from '../../lib/net/tunnel-frames.test-support.js';
import { LINUX_6_1_FEATURES } from '../testing/net-driver.js';
import { createVirtioNetPci } from '../virtio-net-pci.js';
import { type Bench, makeBench, openBench } from './bench.test-support.js';
import { CtrlClass, VIRTIO_NET_ERR, VIRTIO_NET_OK } from './control-queue.js';
import { NetF } from './features.js';
import { encodeRssConfig } from './rss.js';
import { CtrlRssCtx, encodeRssContext, encodeRssContextDel, RSS_MAX_CONTEXTS } from './rss-context.js';

const bit = (b: number) => 1n << BigInt(b);
const KEY = hex('6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa');
const KEY2 = hex('be' + 'ac01fa6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73b');
const PAIRS = 8;
const WANT = { wanted: LINUX_6_1_FEATURES | bit(NetF.RSS_CONTEXT) | bit(NetF.HASH_TUNNEL) };

function bench(): Bench {
  const b = openBench(
    { mq: true, rss: true, rss_context: true, hash_tunnel: true, queues: PAIRS },
    { queues: PAIRS },
    WANT,
  );
  expect(b.driver.rxMode(0, true)).toBe(VIRTIO_NET_OK);
  return b;
}

/** Every context as [id, snapshot], for "state unchanged" checks. */
const state = (b: Bench) => JSON.stringify(b.dev.net.rssContexts.snapshot());

const CTX1 = { hashTypes: 0x3f, table: [4, 5, 6, 7], key: KEY, unclassified: 7 };

describe('VIRTIO_NET_F_RSS_CONTEXT offer', () => {
  it('bit 64 (feature word 2, bit 0) with rss_context and rss; rss_context alone is an option error', () => {
    const b = makeBench({ mq: true, rss: true, rss_context: true, queues: 2 });
    expect(b.dev.net.offered & bit(NetF.RSS_CONTEXT)).toBe(bit(64));
    b.driver.open();
    expect((b.driver.pci.deviceFeatures() >> 64n) & 1n).toBe(1n);
    expect(makeBench({ mq: true, rss: true, queues: 2 }).dev.net.offered & bit(64)).toBe(0n);
    expect(() => makeBench({ rss_context: true })).toThrow(/rss_context=on needs rss=on/);
    const opened = bench();
    expect(opened.driver.has(NetF.RSS_CONTEXT)).toBe(true);
  });
});

describe('VIRTNET_RSS_CTX_CTRL commands', () => {
  it('CAP_GET: ack then le16 max_rss_contexts (16), 3 bytes used; input data or no room: ERR', () => {
    const b = bench();
    expect(b.driver.rssContextCapGet()).toEqual({ ack: VIRTIO_NET_OK, maxContexts: RSS_MAX_CONTEXTS });
    const r = b.driver.controlReply(CtrlClass.RSS_CTX, CtrlRssCtx.CAP_GET, new Uint8Array(0), 4);
    expect([r.ack, r.usedLength, ...r.result]).toEqual([0, 3, 16, 0, 0, 0]);
    expect(b.driver.controlReply(CtrlClass.RSS_CTX, CtrlRssCtx.CAP_GET, Uint8Array.of(0, 0), 2).ack).toBe(
      VIRTIO_NET_ERR,
    );
    expect(b.driver.controlReply(CtrlClass.RSS_CTX, CtrlRssCtx.CAP_GET, new Uint8Array(0), 1).ack).toBe(
      VIRTIO_NET_ERR,
    );
  });

  it('ADD / MOD / DEL: the command bytes, acks and the stored configuration', () => {
    const cfg = encodeRssConfig({ ...CTX1, maxTxVq: 8 });
    expect(Array.from(encodeRssContext(3, { ...CTX1, maxTxVq: 8 }).subarray(0, 8))).toEqual([
      3, 0, 0, 0, 0, 0, 0, 0,
    ]);
    expect(encodeRssContext(3, { ...CTX1, maxTxVq: 8 }).subarray(8)).toEqual(cfg);
    expect(Array.from(encodeRssContextDel(0x102))).toEqual([2, 1]);
    const b = bench();
    const ctxs = b.dev.net.rssContexts;
    expect(b.driver.setRssContext(1, CTX1)).toBe(VIRTIO_NET_OK);
    expect(ctxs.get(1)!.snapshot()).toEqual({
      enabled: true,
      redirect: true,
      hashTypes: 0x3f,
      table: [4, 5, 6, 7],
      unclassified: 7,
      key: Array.from(KEY),
    });
    // reserved[6] is ignored by the device.
    const add16 = encodeRssContext(16, { hashTypes: 1, table: [2], key: KEY2, maxTxVq: 8 });
    add16.fill(0xee, 2, 8);
    expect(b.driver.control(CtrlClass.RSS_CTX, CtrlRssCtx.ADD, add16)).toBe(VIRTIO_NET_OK);
    expect(ctxs.get(16)!.table).toEqual(Uint16Array.of(2));
    expect(b.driver.setRssContext(1, { hashTypes: 2, table: [1, 2], key: KEY2 }, true)).toBe(VIRTIO_NET_OK);
    expect(ctxs.get(1)!.snapshot()).toMatchObject({ hashTypes: 2, table: [1, 2], unclassified: 0 });
    expect(ctxs.size).toBe(2);
    expect(b.driver.deleteRssContext(1)).toBe(VIRTIO_NET_OK);
    expect(ctxs.get(1)).toBeUndefined();
    expect(ctxs.size).toBe(1);
    // The default configuration is untouched by all of this.
    expect(b.dev.net.rss.enabled).toBe(false);
  });

  it('every malformed or out-of-range command: ERR, every context unchanged', () => {
    const b = bench();
    expect(b.driver.setRssContext(2, CTX1)).toBe(VIRTIO_NET_OK);
    const before = state(b);
    const ok = encodeRssContext(5, { ...CTX1, maxTxVq: 8 });
    const bad: [string, number, Uint8Array][] = [
      ['ADD id 0', CtrlRssCtx.ADD, encodeRssContext(0, { ...CTX1, maxTxVq: 8 })],
      ['ADD id 17 (> max_rss_contexts)', CtrlRssCtx.ADD, encodeRssContext(17, { ...CTX1, maxTxVq: 8 })],
      ['ADD id 0xffff', CtrlRssCtx.ADD, encodeRssContext(0xffff, { ...CTX1, maxTxVq: 8 })],
      ['ADD an id in use', CtrlRssCtx.ADD, encodeRssContext(2, { ...CTX1, maxTxVq: 8 })],
      ['MOD an id not in use', CtrlRssCtx.MOD, ok],
      ['ADD header only (7 bytes)', CtrlRssCtx.ADD, ok.subarray(0, 7)],
      ['ADD without the RSS config', CtrlRssCtx.ADD, ok.subarray(0, 8)],
      ['ADD key cut short', CtrlRssCtx.ADD, ok.subarray(0, ok.length - 1)],
      ['ADD table of 3', CtrlRssCtx.ADD, encodeRssContext(5, { ...CTX1, table: [1, 2, 3], maxTxVq: 8 })],
      ['ADD table naming pair 8', CtrlRssCtx.ADD, encodeRssContext(5, { ...CTX1, table: [8], maxTxVq: 8 })],
      ['ADD unclassified 8', CtrlRssCtx.ADD, encodeRssContext(5, { ...CTX1, unclassified: 8, maxTxVq: 8 })],
      ['ADD hash type bit 9', CtrlRssCtx.ADD, encodeRssContext(5, { ...CTX1, hashTypes: 0x200, maxTxVq: 8 })],
      [
        'ADD key of 41',
        CtrlRssCtx.ADD,
        encodeRssContext(5, { ...CTX1, key: new Uint8Array(41), maxTxVq: 8 }),
      ],
      [
        'ADD types without key',
        CtrlRssCtx.ADD,
        encodeRssContext(5, { ...CTX1, key: new Uint8Array(0), maxTxVq: 8 }),
      ],
      ['ADD max_tx_vq 0', CtrlRssCtx.ADD, encodeRssContext(5, { ...CTX1, maxTxVq: 0 })],
      [
        'MOD to a table of 256',
        CtrlRssCtx.MOD,
        encodeRssContext(2, { ...CTX1, table: new Array(256).fill(0), maxTxVq: 8 }),
      ],
      ['DEL an id not in use', CtrlRssCtx.DEL, encodeRssContextDel(3)],
      ['DEL id 0', CtrlRssCtx.DEL, encodeRssContextDel(0)],
      ['DEL one byte', CtrlRssCtx.DEL, Uint8Array.of(2)],
      ['command 4', 4, ok],
    ];
    for (const [name, cmd, data] of bad) {
      expect(b.driver.control(CtrlClass.RSS_CTX, cmd, data), name).toBe(VIRTIO_NET_ERR);
      expect(state(b), name).toBe(before);
    }
    // All sixteen ids fit; the device holds no more than max_rss_contexts.
    for (let id = 1; id <= RSS_MAX_CONTEXTS; id++)
      if (id !== 2) expect(b.driver.setRssContext(id, CTX1), `id ${id}`).toBe(VIRTIO_NET_OK);
    expect(b.dev.net.rssContexts.size).toBe(RSS_MAX_CONTEXTS);
  });

  it('refused when RSS_CONTEXT was not negotiated', () => {
    const b = openBench({ mq: true, rss: true, rss_context: true, queues: PAIRS }, { queues: PAIRS });
    expect(b.driver.has(NetF.RSS_CONTEXT)).toBe(false);
    expect(b.driver.rssContextCapGet().ack).toBe(VIRTIO_NET_ERR);
    expect(b.driver.setRssContext(1, CTX1)).toBe(VIRTIO_NET_ERR);
    expect(b.dev.net.rssContexts.size).toBe(0);
  });

  it('VQ_PAIRS_SET is refused while a context exists (the driver MUST NOT send it) and accepted after DEL', () => {
    const b = bench();
    expect(b.driver.setQueuePairs(4)).toBe(VIRTIO_NET_OK);
    expect(b.driver.setRssContext(9, CTX1)).toBe(VIRTIO_NET_OK);
    expect(b.driver.setQueuePairs(2)).toBe(VIRTIO_NET_ERR);
    expect(b.dev.net.curQueuePairs).toBe(4);
    expect(b.driver.deleteRssContext(9)).toBe(VIRTIO_NET_OK);
    expect(b.driver.setQueuePairs(2)).toBe(VIRTIO_NET_OK);
    expect(b.dev.net.curQueuePairs).toBe(2);
  });
});

describe('contexts steer as configured', () => {
  const flows: Flow[] = Array.from({ length: 32 }, (_, i) => ({
    v6: i % 4 === 3,
    src: i % 4 === 3 ? `fd01::${i}` : `10.2.${i}.7`,
    dst: i % 4 === 3 ? 'fd01::1' : '10.2.0.1',
    proto: i % 2 === 0 ? 6 : 17,
    sport: 1024 + 131 * i,
    dport: 8080,
  }));

  it('each context picks table[toeplitz(its key) & mask]; frames it cannot hash go to its unclassified queue', () => {
    const b = bench();
    expect(
      b.driver.setRssContext(1, { hashTypes: 0x1ff, table: [4, 5, 6, 7], key: KEY, unclassified: 3 }),
    ).toBe(VIRTIO_NET_OK);
    expect(b.driver.setRssContext(2, { hashTypes: 0x1ff, table: [0, 1], key: KEY2, unclassified: 6 })).toBe(
      VIRTIO_NET_OK,
    );
    // No key, no hash types: everything to its unclassified queue.
    expect(
      b.driver.setRssContext(3, { hashTypes: 0, table: [0], key: new Uint8Array(0), unclassified: 5 }),
    ).toBe(VIRTIO_NET_OK);
    const ctxs = b.dev.net.rssContexts;
    const pkt = new ParsedPacket();
    const out = new RssHashResult();
    for (const f of flows) {
      const frame = ethPacket(f);
      parsePacket(frame, pkt);
      const h1 = toeplitzBitSerial(KEY, tuple(f, true));
      expect(ctxs.steer(1, frame, pkt, out)).toBe([4, 5, 6, 7][h1 & 3]);
      expect(out.hash >>> 0).toBe(h1);
      const h2 = toeplitzBitSerial(KEY2, tuple(f, true));
      expect(ctxs.steer(2, frame, pkt, out)).toBe([0, 1][h2 & 1]);
      expect(out.hash >>> 0).toBe(h2);
      expect(ctxs.steer(3, frame, pkt, out)).toBe(5);
    }
    const arp = new Uint8Array(60);
    arp[12] = 0x08;
    arp[13] = 0x06;
    parsePacket(arp, pkt);
    expect(ctxs.steer(1, arp, pkt, out)).toBe(3);
    expect(ctxs.steer(4, arp, pkt, out)).toBe(-1);
  });

  it('a context hashes inner headers when HASH_TUNNEL_SET enabled the type', () => {
    const b = bench();
    expect(b.driver.setRssContext(1, { hashTypes: 0x1ff, table: [0, 1, 2, 3, 4, 5, 6, 7], key: KEY })).toBe(
      VIRTIO_NET_OK,
    );
    expect(b.driver.setHashTunnel(HashTunnelType.GENEVE)).toBe(VIRTIO_NET_OK);
    const pkt = new ParsedPacket();
    const out = new RssHashResult();
    for (const f of flows.slice(0, 8)) {
      const gen = encapsulations(f).find((e) => e.type === HashTunnelType.GENEVE)!;
      parsePacket(gen.frame, pkt);
      const h = toeplitzBitSerial(KEY, tuple(f, true));
      expect(b.dev.net.rssContexts.steer(1, gen.frame, pkt, out)).toBe(h & 7);
    }
  });

  it('received frames still follow the default configuration (VIRTIO 1.4 routes no frame to a context)', () => {
    const b = bench();
    expect(b.driver.setRss({ hashTypes: 0x1ff, table: [2], key: KEY })).toBe(VIRTIO_NET_OK);
    expect(b.driver.setRssContext(1, { hashTypes: 0x1ff, table: [6], key: KEY })).toBe(VIRTIO_NET_OK);
    b.backend.inject(ethPacket(flows[0]!), 0);
    expect(b.driver.receive(2)).toHaveLength(1);
    expect(b.driver.receive(6)).toHaveLength(0);
  });
});

describe('RSS contexts across reset and snapshot/restore', () => {
  it('reset clears every context', () => {
    const b = bench();
    expect(b.driver.setRssContext(1, CTX1)).toBe(VIRTIO_NET_OK);
    b.dev.reset();
    expect(b.dev.net.rssContexts.size).toBe(0);
  });

  it('restored into a fresh device; absent means none; a bad id is refused and changes nothing', () => {
    const b = bench();
    expect(b.driver.setRssContext(1, CTX1)).toBe(VIRTIO_NET_OK);
    expect(
      b.driver.setRssContext(7, { hashTypes: 0, table: [0], key: new Uint8Array(0), unclassified: 2 }),
    ).toBe(VIRTIO_NET_OK);
    const snap = JSON.parse(JSON.stringify(b.dev.snapshot()));
    const dev = (s: typeof snap) => s.transport.transport.device as Record<string, unknown>;
    const fresh = () =>
      createVirtioNetPci({
        memory: b.memory,
        backend: new MemoryBackend({ queues: PAIRS }),
        interrupts: b.irq,
        mq: true,
        rss: true,
        rss_context: true,
        hash_tunnel: true,
        queues: PAIRS,
      });
    const d2 = fresh();
    d2.restore(snap);
    expect(JSON.stringify(d2.net.rssContexts.snapshot())).toBe(state(b));
    const pkt = new ParsedPacket();
    const frame = ethPacket(flows0());
    parsePacket(frame, pkt);
    const out = new RssHashResult();
    expect(d2.net.rssContexts.steer(1, frame, pkt, out)).toBe(
      b.dev.net.rssContexts.steer(1, frame, pkt, out),
    );
    expect(d2.net.rssContexts.steer(7, frame, pkt, out)).toBe(2);
    const old = JSON.parse(JSON.stringify(snap));
    delete dev(old).rssContexts;
    const d3 = fresh();
    d3.restore(old);
    expect(d3.net.rssContexts.size).toBe(0);
    for (const badId of [0, 17]) {
      const bad = JSON.parse(JSON.stringify(snap));
      (dev(bad).rssContexts as { id: number }[])[0]!.id = badId;
      const d4 = fresh();
      expect(() => d4.restore(bad)).toThrow(/rssContexts/);
      expect(d4.net.rssContexts.size).toBe(0);
    }
    const off = JSON.parse(JSON.stringify(snap));
    (dev(off).rssContexts as { rss: { enabled: boolean } }[])[0]!.rss.enabled = false;
    expect(() => fresh().restore(off)).toThrow(/configured context/);
    const dup = JSON.parse(JSON.stringify(snap));
    (dev(dup).rssContexts as { id: number }[])[1]!.id = 1;
    expect(() => fresh().restore(dup)).toThrow(/distinct/);
  });
});

function flows0(): Flow {
  return { v6: false, src: '10.3.3.3', dst: '10.4.4.4', proto: 6, sport: 5555, dport: 80 };
}
