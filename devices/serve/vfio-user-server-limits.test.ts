/** What a hostile vfio-user client runs into: replies it never reads, a socket it may not open. */
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { VfioUserClient } from '../../lib/vfio-user/client.js';
import {
  Command,
  encodeMessage,
  encodeVersionBody,
  MsgFlag,
  REGION_RW,
  view,
} from '../../lib/vfio-user/protocol.js';
import { VfioUserServer, type VfioUserServerOptions } from '../../lib/vfio-user/server.js';
import { StandInDevice } from './stand-in-device.js';

let dir: string;
let server: VfioUserServer;
const logs: string[] = [];

function start(options: Partial<VfioUserServerOptions> = {}): Promise<void> {
  const device = new StandInDevice({ memory: new GuestMemory(), msixVectors: 4 });
  server = new VfioUserServer(device, {
    socketPath: join(dir, 'vfu.sock'),
    log: (l) => logs.push(l),
    ...options,
  });
  return server.listen();
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'vfu-limits-'));
  logs.length = 0;
});

afterEach(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function versionBody(): Uint8Array {
  return encodeVersionBody(0, 0, {
    maxMsgFds: 8,
    maxDataXferSize: 1 << 20,
    pgsizes: 4096,
    maxDmaMaps: 16,
    writeMultiple: false,
  });
}

function request(id: number, command: number, body: Uint8Array): Uint8Array {
  return encodeMessage({ id, command, flags: MsgFlag.REQUEST, error: 0 }, body);
}

/** 16 KiB REGION_READs of BAR2 (the stand-in's 16 KiB echo BAR). */
function regionRead(id: number): Uint8Array {
  const b = new Uint8Array(REGION_RW.SIZE);
  const v = view(b);
  v.setBigUint64(REGION_RW.offset, 0n, true);
  v.setUint32(REGION_RW.region, 2, true);
  v.setUint32(REGION_RW.count, 16384, true);
  return request(id, Command.REGION_READ, b);
}

describe('a client that never reads its replies', () => {
  it('is throttled (bounded queue, responsive loop), then disconnected with a log line', async () => {
    const limit = 1 << 20;
    await start({ maxQueuedReplyBytes: limit, replyStallMs: 1000 });
    const sock: Socket = createConnection(join(dir, 'vfu.sock'));
    sock.pause(); // never consume what the server sends
    await new Promise<void>((r) => sock.once('connect', () => r()));
    const closed = new Promise<void>((r) => sock.once('close', () => r()));
    sock.on('error', () => {});
    const memBefore = process.memoryUsage().arrayBuffers;
    const chunk: Uint8Array[] = [request(0, Command.VERSION, versionBody())];
    for (let i = 1; i <= 20_000; i++) chunk.push(regionRead(i & 0xffff));
    sock.write(Buffer.concat(chunk));

    // The event loop keeps turning: a 10 ms timer keeps firing, never late by seconds (a flood handled in
    // one go stalled it for several).
    let worstLate = 0;
    let ticks = 0;
    const t0 = performance.now();
    let last = t0;
    const tick = setInterval(() => {
      const now = performance.now();
      worstLate = Math.max(worstLate, now - last - 10);
      last = now;
      ticks++;
    }, 10);
    let peakMem = 0;
    const sample = setInterval(() => {
      peakMem = Math.max(peakMem, process.memoryUsage().arrayBuffers - memBefore);
    }, 20);
    const disconnected = server.waitForDisconnect();
    await Promise.race([
      disconnected,
      new Promise((_, reject) => setTimeout(() => reject(new Error('client never disconnected')), 10_000)),
    ]).finally(() => {
      clearInterval(tick);
      clearInterval(sample);
    });
    const elapsed = performance.now() - t0;
    await closed;
    const st = server.stats();
    // Reading paused at the limit: at most the limit plus one reply was ever queued.
    expect(st.replyQueuePeak).toBeGreaterThan(limit / 2);
    expect(st.replyQueuePeak).toBeLessThanOrEqual(limit + 16 + REGION_RW.SIZE + 16384);
    expect(st.readPauses).toBeGreaterThanOrEqual(1);
    expect(st.requests.REGION_READ ?? 0).toBeLessThan(20_000);
    expect(peakMem).toBeLessThan(64 << 20);
    expect(worstLate).toBeLessThan(1000);
    expect(ticks).toBeGreaterThan(elapsed / 10 / 3);
    expect(logs.some((l) => /disconnected: .*not read/.test(l))).toBe(true);
    // And the server serves the next client.
    const c = VfioUserClient.connect(join(dir, 'vfu.sock'));
    const r = await c.request(Command.VERSION, versionBody());
    expect(r.header.flags & MsgFlag.ERROR).toBe(0);
    c.close();
    await server.waitForDisconnect();
  }, 20_000);

  it('is served again once it reads its replies', async () => {
    await start({ maxQueuedReplyBytes: 64 << 10, replyStallMs: 5000 });
    const sock: Socket = createConnection(join(dir, 'vfu.sock'));
    sock.pause();
    await new Promise<void>((r) => sock.once('connect', () => r()));
    const n = 200;
    const msgs: Uint8Array[] = [request(0, Command.VERSION, versionBody())];
    for (let i = 1; i <= n; i++) msgs.push(regionRead(i));
    sock.write(Buffer.concat(msgs));
    // Not reading: the server pauses with most requests still unread.
    for (let i = 0; i < 200 && server.stats().readPauses === 0; i++) await sleep(10);
    expect(server.stats().readPauses).toBe(1);
    await sleep(100);
    expect(server.stats().requests.REGION_READ ?? 0).toBeLessThan(n);
    // Reading: every reply arrives, in order, and the client stays connected.
    let got = 0;
    const want = n * (16 + REGION_RW.SIZE + 16384);
    const all = new Promise<void>((r) =>
      sock.on('data', (d: Buffer) => {
        got += d.length;
        if (got >= want + 16) r();
      }),
    );
    sock.resume();
    await all;
    expect(server.stats().requests.REGION_READ).toBe(n);
    expect(server.connected).toBe(true);
    sock.destroy();
    await server.waitForDisconnect();
  });
});

describe('the socket file', () => {
  const withUmask = async (mask: number, fn: () => Promise<void>) => {
    const old = process.umask(mask);
    try {
      await fn();
    } finally {
      process.umask(old);
    }
  };
  const mode = () => statSync(join(dir, 'vfu.sock')).mode & 0o7777;

  it('is created 0600 whatever the umask', async () => {
    await withUmask(0, () => start());
    expect(mode()).toBe(0o600);
    await server.close();
    await withUmask(0o077, () => start());
    expect(mode()).toBe(0o600);
  });

  it('takes a group (by name or id) and a mode; the group default is 0660', async () => {
    const gid = process.getgid?.() ?? 0;
    const name = readFileSync('/etc/group', 'utf8')
      .split('\n')
      .map((l) => l.split(':'))
      .find((f) => f[2] === String(gid))?.[0];
    expect(name).toBeDefined();
    await withUmask(0, () => start({ socketGroup: name }));
    expect(mode()).toBe(0o660);
    expect(statSync(join(dir, 'vfu.sock')).gid).toBe(gid);
    await server.close();
    await withUmask(0, () => start({ socketGroup: gid, socketMode: 0o640 }));
    expect(mode()).toBe(0o640);
    await server.close();
    await withUmask(0, () => start({ socketMode: 0o666 }));
    expect(mode()).toBe(0o666);
  });

  it('refuses to start when it cannot set them, and leaves no socket behind', async () => {
    await expect(start({ socketGroup: 'no-such-group-vnt' })).rejects.toThrow(/no-such-group-vnt/);
    expect(existsSync(join(dir, 'vfu.sock'))).toBe(false);
    await server.close();
    expect(
      () =>
        new VfioUserServer(new StandInDevice({ memory: new GuestMemory() }), {
          socketPath: join(dir, 'vfu.sock'),
          socketMode: 0o4777,
        }),
    ).toThrow(RangeError);
  });
});
