/**
 * DEVICE_GET_REGION_IO_FDS: doorbells served as ioeventfds (lib/vfio-user/iofds.ts), with our client
 * standing in for a VMM that registers them; the virtio-net function's notify slots; hostile requests.
 */
import { mkdtempSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import * as sys from '../../lib/host/socket.js';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { MemoryBackend } from '../../lib/net/memory-backend.js';
import { type ClientReply, VfioUserClient } from '../../lib/vfio-user/client.js';
import {
  Command,
  Errno,
  encodeVersionBody,
  MsgFlag,
  REGION_IO_FDS,
  REGION_RW,
  view,
} from '../../lib/vfio-user/protocol.js';
import {
  type VfioUserDevice,
  type VfioUserDoorbell,
  type VfioUserDoorbellEventfds,
  VfioUserServer,
} from '../../lib/vfio-user/server.js';
import { virtioNetVfioUserDevice } from './vfio-user.js';

const fdCount = () => readdirSync('/proc/self/fd').length;
const isEventfd = (fd: number) => readlinkSync(`/proc/self/fd/${fd}`) === 'anon_inode:[eventfd]';
const tick = () => new Promise((r) => setTimeout(r, 5));

/** A device with BAR0 (no doorbells) and BAR4 with `doorbells`; records every BAR write. */
function fakeDevice(doorbells: VfioUserDoorbell[], memory: GuestMemory) {
  const writes: [number, number, number, number | bigint][] = [];
  const dev: VfioUserDevice & { writes: typeof writes; throwOnWrite: boolean } = {
    writes,
    throwOnWrite: false,
    configRead: () => 0,
    configWrite: () => {},
    barRead: () => 0,
    barWrite(bar, offset, size, value) {
      if (dev.throwOnWrite) throw new Error('device bug');
      writes.push([bar, offset, size, value]);
    },
    bars: [{ size: 0x1000, type: 'mem32' }, null, null, null, { size: 0x4000, type: 'mem64' }, null],
    msixVectors: 2,
    memory,
    setInterruptSink: () => {},
    reset: () => {},
    doorbells: () => doorbells,
  };
  return dev;
}

const queueDoorbells = (n: number): VfioUserDoorbell[] =>
  Array.from({ length: n }, (_, q) => ({
    bar: 4,
    offset: 0x3000 + 4 * q,
    size: 0,
    replay: { size: 2, value: q },
  }));

function ioFdsRequest(index: number, argsz = 4096, flags = 0, count = 0): Uint8Array {
  const b = new Uint8Array(REGION_IO_FDS.SIZE);
  const v = view(b);
  v.setUint32(REGION_IO_FDS.argsz, argsz, true);
  v.setUint32(REGION_IO_FDS.flags, flags, true);
  v.setUint32(REGION_IO_FDS.index, index, true);
  v.setUint32(REGION_IO_FDS.count, count, true);
  return b;
}

/** The reply's sub-regions as [offset, size, fd_index, type, flags, datamatch]. */
function subRegions(r: ClientReply): [number, number, number, number, number, bigint][] {
  const v = view(r.body);
  const n = v.getUint32(REGION_IO_FDS.count, true);
  return Array.from({ length: n }, (_, i) => {
    const at = 16 + 40 * i;
    return [
      Number(v.getBigUint64(at, true)),
      Number(v.getBigUint64(at + 8, true)),
      v.getUint32(at + 16, true),
      v.getUint32(at + 20, true),
      v.getUint32(at + 24, true),
      v.getBigUint64(at + 32, true),
    ];
  });
}

let dir: string;
let baseline: number;
let server: VfioUserServer;
let client: VfioUserClient;
let held: number[];

async function start(device: VfioUserDevice, maxMsgFds?: number): Promise<void> {
  server = new VfioUserServer(device, { socketPath: join(dir, 'vfu.sock'), maxMsgFds });
  await server.listen();
  client = VfioUserClient.connect(join(dir, 'vfu.sock'));
  const r = await client.request(
    Command.VERSION,
    encodeVersionBody(0, 0, {
      maxMsgFds: 16,
      maxDataXferSize: 1 << 20,
      pgsizes: 4096,
      maxDmaMaps: 65535,
      writeMultiple: true,
    }),
  );
  expect(r.header.flags & MsgFlag.ERROR).toBe(0);
}

async function ask(index: number, argsz?: number, flags?: number, count?: number): Promise<ClientReply> {
  const r = await client.request(Command.DEVICE_GET_REGION_IO_FDS, ioFdsRequest(index, argsz, flags, count));
  held.push(...r.fds);
  return r;
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'vfu-iofds-'));
  baseline = fdCount();
  held = [];
});

afterEach(async () => {
  for (const fd of held) sys.close(fd);
  client.close();
  await server.waitForDisconnect();
  await server.close();
  rmSync(dir, { recursive: true, force: true });
  expect(fdCount()).toBe(baseline);
});

describe('GET_REGION_IO_FDS', () => {
  it('hands one eventfd per doorbell, byte for byte, and a signal on one is that doorbell write', async () => {
    const dev = fakeDevice(queueDoorbells(3), new GuestMemory());
    await start(dev);
    const r = await ask(4);
    expect(r.header.flags & MsgFlag.ERROR).toBe(0);
    expect(r.body.length).toBe(16 + 3 * 40);
    expect([...new Uint32Array(r.body.buffer.slice(r.body.byteOffset, r.body.byteOffset + 16))]).toEqual([
      16 + 3 * 40,
      0,
      4,
      3,
    ]);
    expect(subRegions(r)).toEqual([
      [0x3000, 0, 0, 0, 0, 0n],
      [0x3004, 0, 1, 0, 0, 0n],
      [0x3008, 0, 2, 0, 0, 0n],
    ]);
    expect(r.fds).toHaveLength(3);
    expect(r.fds.every(isEventfd)).toBe(true);

    sys.eventfdSignal(r.fds[2] as number);
    for (let i = 0; i < 50 && dev.writes.length === 0; i++) await tick();
    expect(dev.writes).toEqual([[4, 0x3008, 2, 2]]);
    // Three signals before the server looks are one write (a kick covers the whole ring).
    for (let i = 0; i < 3; i++) sys.eventfdSignal(r.fds[0] as number);
    for (let i = 0; i < 50 && dev.writes.length === 1; i++) await tick();
    await tick();
    expect(dev.writes).toEqual([
      [4, 0x3008, 2, 2],
      [4, 0x3000, 2, 0],
    ]);
    const st = server.stats();
    expect(st.kicksByEventfd).toBe(2);
    expect(st.kickSignalsByEventfd).toBe(4);
    expect(st.regionWrites[4]).toBeUndefined();
  });

  it('the device holds a doorbell: the server leaves its eventfd alone until released, then serves the signal that waited', async () => {
    const dev = fakeDevice(queueDoorbells(3), new GuestMemory());
    let fds: VfioUserDoorbellEventfds | null = null;
    let routes = 0;
    dev.setDoorbellEventfds = (f) => {
      fds = f;
    };
    dev.interruptRoutesChanged = () => routes++;
    await start(dev);
    const eventfds = fds as unknown as VfioUserDoorbellEventfds;
    // Nothing handed out yet: no eventfd to take.
    expect([0, 1, 2].map((i) => eventfds.fd(i))).toEqual([null, null, null]);
    const r = await ask(4);
    // Arming them is a route change the device hears before the reply.
    expect(routes).toBe(1);
    const mine = [0, 1, 2].map((i) => eventfds.fd(i));
    expect(mine.every((fd) => fd !== null && isEventfd(fd))).toBe(true);
    expect(new Set(mine).size).toBe(3);
    expect([eventfds.fd(-1), eventfds.fd(3), eventfds.fd(1.5)]).toEqual([null, null, null]);
    eventfds.hold(1, true);
    sys.eventfdSignal(r.fds[1] as number);
    sys.eventfdSignal(r.fds[2] as number);
    for (let i = 0; i < 50 && dev.writes.length === 0; i++) await tick();
    for (let i = 0; i < 5; i++) await tick();
    // Only the doorbell nobody holds was rung; the held one's signal is still in its eventfd.
    expect(dev.writes).toEqual([[4, 0x3008, 2, 2]]);
    eventfds.hold(1, false);
    for (let i = 0; i < 50 && dev.writes.length === 1; i++) await tick();
    expect(dev.writes).toEqual([
      [4, 0x3008, 2, 2],
      [4, 0x3004, 2, 1],
    ]);
    expect(server.stats().kicksByEventfd).toBe(2);
  });

  it('a repeated request hands out the same eventfds (no new ones on the server)', async () => {
    const dev = fakeDevice(queueDoorbells(2), new GuestMemory());
    await start(dev);
    await ask(4);
    const afterFirst = fdCount();
    const again = await ask(4);
    // Only the two received duplicates are new descriptors in this process.
    expect(fdCount()).toBe(afterFirst + 2);
    sys.eventfdSignal(again.fds[1] as number);
    for (let i = 0; i < 50 && dev.writes.length === 0; i++) await tick();
    expect(dev.writes).toEqual([[4, 0x3004, 2, 1]]);
  });

  it('argsz too small for the sub-regions: the header with the argsz and count needed, no descriptors', async () => {
    await start(fakeDevice(queueDoorbells(2), new GuestMemory()));
    const before = fdCount();
    const r = await ask(4, 16 + 40);
    expect(r.header.flags & MsgFlag.ERROR).toBe(0);
    expect(r.body.length).toBe(16);
    const v = view(r.body);
    expect([v.getUint32(0, true), v.getUint32(8, true), v.getUint32(12, true)]).toEqual([96, 4, 2]);
    expect(r.fds).toEqual([]);
    expect(fdCount()).toBe(before);
  });

  it('regions without doorbells answer zero sub-regions; absent or unknown ones EINVAL', async () => {
    await start(fakeDevice(queueDoorbells(2), new GuestMemory()));
    for (const index of [0, 7]) {
      const r = await ask(index);
      expect(r.header.flags & MsgFlag.ERROR).toBe(0);
      expect([...new Uint8Array(r.body)]).toEqual([16, 0, 0, 0, 0, 0, 0, 0, index, 0, 0, 0, 0, 0, 0, 0]);
      expect(r.fds).toEqual([]);
    }
    for (const index of [1, 5, 6, 8, 9, 0xffffffff])
      expect((await ask(index)).header.error).toBe(Errno.EINVAL);
  });

  it('hostile requests get EINVAL, never an exception, and leave no descriptor behind', async () => {
    await start(fakeDevice(queueDoorbells(2), new GuestMemory()));
    const before = fdCount();
    const req = (b: Uint8Array, fds: number[] = []) =>
      client.request(Command.DEVICE_GET_REGION_IO_FDS, b, fds);
    expect((await req(new Uint8Array(15))).header.error).toBe(Errno.EINVAL);
    expect((await req(new Uint8Array(0))).header.error).toBe(Errno.EINVAL);
    expect((await ask(4, 15)).header.error).toBe(Errno.EINVAL);
    expect((await ask(4, 0)).header.error).toBe(Errno.EINVAL);
    expect((await ask(4, 4096, 1)).header.error).toBe(Errno.EINVAL);
    expect((await ask(4, 4096, 0, 2)).header.error).toBe(Errno.EINVAL);
    // Descriptors sent with the request are closed.
    const e = sys.eventfd();
    const r = await req(ioFdsRequest(4), [e, e]);
    expect(r.header.error).toBe(Errno.EINVAL);
    sys.close(e);
    // A NO_REPLY request is not answered (the next request's reply comes first) and does no harm.
    client.post(Command.DEVICE_GET_REGION_IO_FDS, ioFdsRequest(4));
    const ok = await ask(4);
    expect(ok.fds).toHaveLength(2);
    for (const fd of held.splice(0)) sys.close(fd);
    // The server holds its two eventfds until the client goes.
    expect(fdCount()).toBe(before + 2);
    expect(client.unmatched).toEqual([]);
  });

  it('a kick by eventfd never passes the writes the client sent before it', async () => {
    const dev = fakeDevice(queueDoorbells(1), new GuestMemory());
    await start(dev);
    const r = await ask(4);
    // More posted writes than the server handles in one wake (64), then the kick.
    const w = new Uint8Array(REGION_RW.SIZE + 4);
    view(w).setUint32(REGION_RW.region, 0, true);
    view(w).setUint32(REGION_RW.count, 4, true);
    for (let i = 0; i < 200; i++) {
      view(w).setBigUint64(REGION_RW.offset, BigInt(4 * (i % 1024)), true);
      client.post(Command.REGION_WRITE, w);
    }
    sys.eventfdSignal(r.fds[0] as number);
    for (let i = 0; i < 100 && dev.writes.length < 201; i++) await tick();
    expect(dev.writes).toHaveLength(201);
    expect(dev.writes.findIndex((x) => x[0] === 4)).toBe(200);
  });

  it('a device that throws on the replayed write is contained', async () => {
    const dev = fakeDevice(queueDoorbells(1), new GuestMemory());
    await start(dev);
    const r = await ask(4);
    dev.throwOnWrite = true;
    sys.eventfdSignal(r.fds[0] as number);
    for (let i = 0; i < 50 && server.stats().kicksByEventfd === 0; i++) await tick();
    expect(server.stats().kicksByEventfd).toBe(1);
    dev.throwOnWrite = false;
    expect((await ask(0)).header.flags & MsgFlag.ERROR).toBe(0);
  });

  it('serves at most max_msg_fds doorbells and skips ones outside the BAR', async () => {
    const bells = [
      ...queueDoorbells(5),
      { bar: 4, offset: 0x4000, size: 0 as const, replay: { size: 2 as const, value: 0 } },
    ];
    await start(fakeDevice([bells[5] as VfioUserDoorbell, ...bells.slice(0, 5)], new GuestMemory()), 4);
    const r = await ask(4);
    expect(subRegions(r).map((s) => s[0])).toEqual([0x3000, 0x3004, 0x3008, 0x300c]);
    expect(r.fds).toHaveLength(4);
  });

  it('closes its eventfds when the client disconnects; a new client gets new ones', async () => {
    const dev = fakeDevice(queueDoorbells(2), new GuestMemory());
    await start(dev);
    const r = await ask(4);
    const fd = r.fds[0] as number;
    client.close();
    await server.waitForDisconnect();
    // The server's ends are closed: our copy is the last reference, and signalling it reaches nobody.
    sys.eventfdSignal(fd);
    await tick();
    expect(dev.writes).toEqual([]);
    for (const f of held.splice(0)) sys.close(f);
    expect(fdCount()).toBe(baseline + 1); // the listening socket
    client = VfioUserClient.connect(join(dir, 'vfu.sock'));
    await client.request(
      Command.VERSION,
      encodeVersionBody(0, 0, {
        maxMsgFds: 16,
        maxDataXferSize: 4096,
        pgsizes: 4096,
        maxDmaMaps: 1,
        writeMultiple: false,
      }),
    );
    const r2 = await ask(4);
    sys.eventfdSignal(r2.fds[1] as number);
    for (let i = 0; i < 50 && dev.writes.length === 0; i++) await tick();
    expect(dev.writes).toEqual([[4, 0x3004, 2, 1]]);
  });
});

describe('the virtio-net function', () => {
  it('offers every virtqueue notify slot of BAR4, and a signal is that queue kick', async () => {
    const memory = new GuestMemory();
    const dev = virtioNetVfioUserDevice({
      memory,
      backend: new MemoryBackend({ queues: 2 }),
      queues: 2,
      mq: true,
    });
    const kicks: [number, number, number][] = [];
    const inner = dev.barWrite;
    dev.barWrite = (b, o, s, v) => {
      kicks.push([b, o, Number(v)]);
      inner(b, o, s, v);
    };
    try {
      await start(dev, 16);
      const r = await ask(4);
      // 2 queue pairs and the control queue: slots 0x3000 + 4 * q, any width, no datamatch.
      expect(subRegions(r)).toEqual(
        Array.from({ length: 5 }, (_, q) => [0x3000 + 4 * q, 0, q, 0, 0, 0n] as const),
      );
      sys.eventfdSignal(r.fds[1] as number);
      for (let i = 0; i < 50 && kicks.length === 0; i++) await tick();
      expect(kicks).toEqual([[4, 0x3004, 1]]);
      // A REGION_WRITE at the same slot still kicks the same way.
      const w = new Uint8Array(REGION_RW.SIZE + 2);
      view(w).setBigUint64(0, 0x3004n, true);
      view(w).setUint32(8, 4, true);
      view(w).setUint32(12, 2, true);
      view(w).setUint16(16, 1, true);
      await client.request(Command.REGION_WRITE, w);
      expect(kicks).toEqual([
        [4, 0x3004, 1],
        [4, 0x3004, 1],
      ]);
    } finally {
      client.close();
      await server.waitForDisconnect();
      dev.close();
    }
  });
});
