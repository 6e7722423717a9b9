import { mkdtempSync, readdirSync, readFileSync, readSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import * as sys from '../../lib/host/socket.js';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { VfioUserClient } from '../../lib/vfio-user/client.js';
import {
  body,
  Command,
  DMA_MAP,
  DMA_UNMAP,
  decodeHeader,
  decodeVersionBody,
  Errno,
  encodeHeader,
  encodeMessage,
  encodeVersionBody,
  IRQ_SET,
  IrqSetFlag,
  MsgFlag,
  REGION_RW,
  view,
} from '../../lib/vfio-user/protocol.js';
import { VfioUserServer } from '../../lib/vfio-user/server.js';
import { StandInDevice, StandInReg } from './stand-in-device.js';

const fdCount = () => readdirSync('/proc/self/fd').length;
const memfdMaps = () =>
  readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((l) => l.includes('memfd:vfu-test')).length;

function versionBody(): Uint8Array {
  return encodeVersionBody(0, 0, {
    maxMsgFds: 16,
    maxDataXferSize: 1 << 20,
    pgsizes: 4096,
    maxDmaMaps: 65535,
    writeMultiple: true,
  });
}
function rw(offset: number | bigint, region: number, count: number, data?: Uint8Array): Uint8Array {
  const b = new Uint8Array(REGION_RW.SIZE + (data?.length ?? 0));
  const v = view(b);
  v.setBigUint64(REGION_RW.offset, BigInt(offset), true);
  v.setUint32(REGION_RW.region, region, true);
  v.setUint32(REGION_RW.count, count, true);
  if (data) b.set(data, REGION_RW.data);
  return b;
}
function dmaMap(address: bigint, size: bigint, offset = 0n, flags = 3): Uint8Array {
  return body(DMA_MAP.SIZE, (v) => {
    v.setUint32(DMA_MAP.argsz, DMA_MAP.SIZE, true);
    v.setUint32(DMA_MAP.flags, flags, true);
    v.setBigUint64(DMA_MAP.offset, offset, true);
    v.setBigUint64(DMA_MAP.address, address, true);
    v.setBigUint64(DMA_MAP.size, size, true);
  });
}
function dmaUnmap(address: bigint, size: bigint, flags = 0): Uint8Array {
  return body(DMA_UNMAP.SIZE, (v) => {
    v.setUint32(DMA_UNMAP.argsz, DMA_UNMAP.SIZE, true);
    v.setUint32(DMA_UNMAP.flags, flags, true);
    v.setBigUint64(DMA_UNMAP.address, address, true);
    v.setBigUint64(DMA_UNMAP.size, size, true);
  });
}
function irqSet(
  flags: number,
  index: number,
  start: number,
  count: number,
  extra: Uint8Array = new Uint8Array(0),
): Uint8Array {
  const b = new Uint8Array(IRQ_SET.SIZE + extra.length);
  const v = view(b);
  v.setUint32(IRQ_SET.argsz, b.length, true);
  v.setUint32(IRQ_SET.flags, flags, true);
  v.setUint32(IRQ_SET.index, index, true);
  v.setUint32(IRQ_SET.start, start, true);
  v.setUint32(IRQ_SET.count, count, true);
  b.set(extra, IRQ_SET.SIZE);
  return b;
}
function u32(b: Uint8Array, off: number): number {
  return view(b).getUint32(off, true);
}
const isError = (r: { header: { flags: number } }) => (r.header.flags & MsgFlag.ERROR) !== 0;
const EVT_TRIGGER = IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER;

let dir: string;
let memory: GuestMemory;
let device: StandInDevice;
let server: VfioUserServer;
let client: VfioUserClient;
let baseline: number;
const logs: string[] = [];

async function connect(): Promise<VfioUserClient> {
  const c = VfioUserClient.connect(join(dir, 'vfu.sock'));
  const r = await c.request(Command.VERSION, versionBody());
  expect(isError(r)).toBe(false);
  return c;
}

async function roundTrip(): Promise<void> {
  const r = await client.request(
    Command.DEVICE_GET_INFO,
    body(16, (v) => v.setUint32(0, 16, true)),
  );
  expect(isError(r)).toBe(false);
}

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'vfu-'));
  baseline = fdCount();
  memory = new GuestMemory();
  device = new StandInDevice({ memory, msixVectors: 4 });
  logs.length = 0;
  server = new VfioUserServer(device, { socketPath: join(dir, 'vfu.sock'), log: (l) => logs.push(l) });
  await server.listen();
  client = await connect();
});

afterEach(async () => {
  client.close();
  await server.waitForDisconnect();
  await server.close();
  rmSync(dir, { recursive: true, force: true });
  expect(fdCount()).toBe(baseline);
  expect(memfdMaps()).toBe(0);
});

describe('handshake and discovery', () => {
  it('answers VERSION with 0.0 and its capabilities', async () => {
    const r = await client.request(Command.VERSION, versionBody());
    const v = decodeVersionBody(r.body);
    expect(v).toEqual({
      major: 0,
      minor: 0,
      caps: {
        capabilities: {
          max_msg_fds: 8,
          max_data_xfer_size: 1048576,
          pgsizes: 4096,
          max_dma_maps: 65535,
          write_multiple: true,
        },
      },
    });
    expect(r.body[r.body.length - 1]).toBe(0);
  });

  it('refuses a major version it does not speak, and any command before VERSION', async () => {
    const bad = await client.request(Command.VERSION, new Uint8Array([1, 0, 0, 0]));
    expect(bad.header.error).toBe(Errno.ENOTSUP);
    const c2 = await (async () => {
      client.close();
      await server.waitForDisconnect();
      return VfioUserClient.connect(join(dir, 'vfu.sock'));
    })();
    client = c2;
    const r = await client.request(
      Command.DEVICE_GET_INFO,
      body(16, (v) => v.setUint32(0, 16, true)),
    );
    expect(r.header.error).toBe(Errno.EINVAL);
  });

  it('DEVICE_GET_INFO: RESET|PCI, 9 regions, 5 irq indexes', async () => {
    const r = await client.request(
      Command.DEVICE_GET_INFO,
      body(16, (v) => v.setUint32(0, 16, true)),
    );
    expect([u32(r.body, 0), u32(r.body, 4), u32(r.body, 8), u32(r.body, 12)]).toEqual([16, 3, 9, 5]);
    const short = await client.request(
      Command.DEVICE_GET_INFO,
      body(16, (v) => v.setUint32(0, 8, true)),
    );
    expect(short.header.error).toBe(Errno.EINVAL);
  });

  it('DEVICE_GET_REGION_INFO: config 4 KiB, BARs per device, absent regions size 0, bad index EINVAL', async () => {
    const info = async (index: number, argsz = 32) =>
      client.request(
        Command.DEVICE_GET_REGION_INFO,
        body(32, (v) => {
          v.setUint32(0, argsz, true);
          v.setUint32(8, index, true);
        }),
      );
    const expected: [number, number, number][] = [
      [0, 3, 0x1000],
      [1, 3, 0x1000],
      [2, 3, 0x4000],
      [3, 0, 0],
      [4, 0, 0],
      [5, 0, 0],
      [6, 0, 0],
      [7, 3, 4096],
      [8, 0, 0],
    ];
    for (const [index, flags, size] of expected) {
      const r = await info(index);
      expect(r.body.length).toBe(32);
      const v = view(r.body);
      expect([
        v.getUint32(0, true),
        v.getUint32(4, true),
        v.getUint32(8, true),
        v.getUint32(12, true),
      ]).toEqual([32, flags, index, 0]);
      expect([v.getBigUint64(16, true), v.getBigUint64(24, true)]).toEqual([BigInt(size), 0n]);
    }
    expect((await info(9)).header.error).toBe(Errno.EINVAL);
    expect((await info(0, 16)).header.error).toBe(Errno.EINVAL);
  });

  it('DEVICE_GET_IRQ_INFO: INTx 1 maskable/automasked, MSI 0, MSI-X per device, ERR/REQ 0', async () => {
    const info = async (index: number) =>
      client.request(
        Command.DEVICE_GET_IRQ_INFO,
        body(16, (v) => {
          v.setUint32(0, 16, true);
          v.setUint32(8, index, true);
        }),
      );
    const expected = [
      [0, 7, 1],
      [1, 1, 0],
      [2, 1, 4],
      [3, 0, 0],
      [4, 0, 0],
    ];
    for (const [index, flags, count] of expected) {
      const r = await info(index as number);
      expect([u32(r.body, 0), u32(r.body, 4), u32(r.body, 8), u32(r.body, 12)]).toEqual([
        16,
        flags,
        index,
        count,
      ]);
    }
    expect((await info(5)).header.error).toBe(Errno.EINVAL);
  });
});

describe('region access', () => {
  it('reads config space in any size, in aligned pieces, and bounds-checks', async () => {
    const r = await client.request(Command.REGION_READ, rw(0, 7, 4));
    expect([...r.body.subarray(0, 16)]).toEqual([...rw(0, 7, 4)]);
    expect(u32(r.body, 16)).toBe(0x7e571b36);
    const before = device.counts.configReads;
    const all = await client.request(Command.REGION_READ, rw(0, 7, 4096));
    expect(all.body.subarray(16)).toEqual(device.config);
    expect(device.counts.configReads - before).toBe(1024);
    const odd = await client.request(Command.REGION_READ, rw(1, 7, 3));
    expect([...odd.body.subarray(16)]).toEqual([0x1b, 0x57, 0x7e]);
    for (const [off, region, count] of [
      [4093, 7, 4],
      [0, 7, 0],
      [0, 3, 4],
      [0, 6, 4],
      [0, 8, 4],
      [0, 9, 4],
      [0x4000, 2, 1],
    ] as const) {
      const e = await client.request(Command.REGION_READ, rw(off, region, count));
      expect(e.header.error).toBe(Errno.EINVAL);
    }
    const huge = await client.request(Command.REGION_READ, rw(0xffffffffffffffffn, 0, 4));
    expect(huge.header.error).toBe(Errno.EINVAL);
    const tooBig = await client.request(Command.REGION_READ, rw(0, 7, (1 << 20) + 1));
    expect(tooBig.header.error).toBe(Errno.EINVAL);
  });

  it('writes config space through the device write mask and answers unposted writes with the request head', async () => {
    const data = new Uint8Array([0x78, 0x56, 0x34, 0x12]);
    const w = await client.request(Command.REGION_WRITE, rw(StandInReg.SCRATCH, 7, 4, data));
    expect(w.body).toEqual(rw(StandInReg.SCRATCH, 7, 4));
    const r = await client.request(Command.REGION_READ, rw(StandInReg.SCRATCH, 7, 4));
    expect(u32(r.body, 16)).toBe(0x12345678);
    await client.request(Command.REGION_WRITE, rw(0, 7, 4, new Uint8Array([0, 0, 0, 0])));
    expect(u32((await client.request(Command.REGION_READ, rw(0, 7, 4))).body, 16)).toBe(0x7e571b36);
  });

  it('BAR reads and writes of 1, 2, 4 and 8 bytes reach the device', async () => {
    const magic = await client.request(Command.REGION_READ, rw(0, 0, 4));
    expect(u32(magic.body, 16)).toBe(0x42544e56);
    const q = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]);
    await client.request(Command.REGION_WRITE, rw(0x100, 2, 8, q));
    expect(new DataView(device.barMemory[2]!.buffer).getBigUint64(0x100, true)).toBe(0x0807060504030201n);
    const back = await client.request(Command.REGION_READ, rw(0x100, 2, 8));
    expect([...back.body.subarray(16)]).toEqual([...q]);
    const b2 = await client.request(Command.REGION_READ, rw(0x102, 2, 2));
    expect([...b2.body.subarray(16)]).toEqual([3, 4]);
  });

  it('never answers a posted write, even a failing one', async () => {
    client.post(Command.REGION_WRITE, rw(0x10, 0, 4, new Uint8Array([9, 9, 9, 9])));
    client.post(Command.REGION_WRITE, rw(0x2000, 0, 4, new Uint8Array([1, 1, 1, 1])));
    const r = await client.request(Command.REGION_READ, rw(0x10, 0, 4));
    expect(u32(r.body, 16)).toBe(0x09090909);
    await roundTrip();
    expect(client.unmatched).toEqual([]);
    expect(server.stats().errors[Errno.EINVAL]).toBe(1);
  });

  it('rejects a REGION_WRITE whose count does not match its data, and a READ with data', async () => {
    const b = rw(0, 0, 8, new Uint8Array(4));
    expect((await client.request(Command.REGION_WRITE, b)).header.error).toBe(Errno.EINVAL);
    expect((await client.request(Command.REGION_WRITE, new Uint8Array(8))).header.error).toBe(Errno.EINVAL);
    expect((await client.request(Command.REGION_READ, rw(0, 0, 4, new Uint8Array(4)))).header.error).toBe(
      Errno.EINVAL,
    );
  });

  it('applies REGION_WRITE_MULTI entries in order and validates the batch first', async () => {
    const multi = (entries: [number, number, Uint8Array][], claimed = entries.length) => {
      const b = new Uint8Array(8 + 24 * entries.length);
      const v = view(b);
      v.setBigUint64(0, BigInt(claimed), true);
      entries.forEach(([off, region, data], i) => {
        v.setBigUint64(8 + 24 * i, BigInt(off), true);
        v.setUint32(8 + 24 * i + 8, region, true);
        v.setUint32(8 + 24 * i + 12, data.length, true);
        b.set(data, 8 + 24 * i + 16);
      });
      return b;
    };
    client.post(
      Command.REGION_WRITE_MULTI,
      multi([
        [0x20, 0, new Uint8Array([1, 2, 3, 4])],
        [0x20, 0, new Uint8Array([0xff])],
        [0x40, 2, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8])],
      ]),
    );
    const r = await client.request(Command.REGION_READ, rw(0x20, 0, 4));
    expect([...r.body.subarray(16)]).toEqual([0xff, 2, 3, 4]);
    expect([...device.barMemory[2]!.subarray(0x40, 0x48)]).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    const bad = await client.request(Command.REGION_WRITE_MULTI, multi([[0x20, 0, new Uint8Array([7])]], 5));
    expect(bad.header.error).toBe(Errno.EINVAL);
    const past = await client.request(
      Command.REGION_WRITE_MULTI,
      multi([
        [0x30, 0, new Uint8Array([7])],
        [0x1000, 0, new Uint8Array([7])],
      ]),
    );
    expect(past.header.error).toBe(Errno.EINVAL);
    expect(device.barMemory[0]![0x30]).toBe(0);
  });
});

describe('DMA', () => {
  const MB = 1 << 20;

  function memfd(size: number, fill?: (b: Uint8Array) => void): number {
    const fd = sys.memfdCreate('vfu-test', size);
    if (fill) {
      const b = new Uint8Array(size);
      fill(b);
      writeSync(fd, b, 0, size, 0);
    }
    return fd;
  }

  it('maps a descriptor into guest memory, shared both ways, and unmaps it', async () => {
    const fd = memfd(2 * MB, (b) => b.fill(0x5a, MB, MB + 16));
    const r = await client.request(Command.DMA_MAP, dmaMap(0x100000n, BigInt(MB), BigInt(MB)), [fd]);
    expect(isError(r)).toBe(false);
    expect(memfdMaps()).toBe(1);
    expect([...memory.read(0x100000, 17)]).toEqual([...new Array(16).fill(0x5a), 0]);
    memory.write(0x100000 + 100, new Uint8Array([1, 2, 3]));
    const back = new Uint8Array(3);
    readSync(fd, back, 0, 3, MB + 100);
    expect([...back]).toEqual([1, 2, 3]);
    expect(server.dmaRegions()).toEqual([{ address: 0x100000n, size: BigInt(MB), flags: 3, mapped: true }]);

    const stale = device.regions.get(0x100000) as Uint8Array;
    const u = await client.request(Command.DMA_UNMAP, dmaUnmap(0x100000n, BigInt(MB)));
    expect(view(u.body).getBigUint64(16, true)).toBe(BigInt(MB));
    expect(() => memory.read(0x100000, 1)).toThrow();
    expect(memfdMaps()).toBe(0);
    // A view that outlived the unmap reads scratch and never reaches the guest's file.
    expect(stale[0]).toBe(0);
    stale[0] = 0x77;
    readSync(fd, back, 0, 1, MB);
    expect(back[0]).toBe(0x5a);
    sys.close(fd);
  });

  it('maps read-only regions privately: device writes never reach the guest', async () => {
    const fd = memfd(64 * 1024, (b) => b.fill(0x11));
    expect(isError(await client.request(Command.DMA_MAP, dmaMap(0x200000n, 65536n, 0n, 1), [fd]))).toBe(
      false,
    );
    memory.write(0x200000, new Uint8Array([0x22]));
    const back = new Uint8Array(1);
    readSync(fd, back, 0, 1, 0);
    expect(back[0]).toBe(0x11);
    sys.close(fd);
  });

  it('refuses bad maps with the right errno and closes their descriptors', async () => {
    const fd = memfd(64 * 1024);
    const before = fdCount();
    const cases: [Uint8Array, number[], number][] = [
      [dmaMap(0x1000n, 0x1000n), [fd, fd], Errno.EINVAL], // two descriptors
      [dmaMap(0x1001n, 0x1000n), [fd], Errno.EINVAL], // misaligned
      [dmaMap(0x1000n, 0n), [fd], Errno.EINVAL], // empty
      [dmaMap(0x1000n, 0x20000n), [fd], Errno.EINVAL], // past the end of the file
      [dmaMap(0xfffffffffffff000n, 0x2000n), [fd], Errno.EINVAL], // wraps
      [dmaMap(0x1000n, 0x1000n, 0n, 8), [fd], Errno.EINVAL], // unknown flag
      [dmaMap(0x1000n, 0x1000n).subarray(0, 24), [fd], Errno.EINVAL], // short body
    ];
    for (const [b, fds, errno] of cases) {
      const r = await client.request(Command.DMA_MAP, b, fds);
      expect(r.header.error).toBe(errno);
    }
    const pipeLike = sys.eventfd();
    expect((await client.request(Command.DMA_MAP, dmaMap(0x1000n, 0x1000n), [pipeLike])).header.error).toBe(
      Errno.EINVAL,
    );
    sys.close(pipeLike);
    expect(isError(await client.request(Command.DMA_MAP, dmaMap(0x10000n, 0x8000n), [fd]))).toBe(false);
    const overlap = await client.request(Command.DMA_MAP, dmaMap(0x14000n, 0x8000n), [fd]);
    expect(overlap.header.error).toBe(Errno.EEXIST);
    // A straddling unmap removes nothing.
    expect((await client.request(Command.DMA_UNMAP, dmaUnmap(0x10000n, 0x4000n))).header.error).toBe(
      Errno.EINVAL,
    );
    expect(server.dmaRegions()).toHaveLength(1);
    expect((await client.request(Command.DMA_UNMAP, dmaUnmap(0x10000n, 0x4000n, 1))).header.error).toBe(
      Errno.EINVAL,
    );
    expect((await client.request(Command.DMA_UNMAP, dmaUnmap(0x10000n, 0x8000n), [fd])).header.error).toBe(
      Errno.EINVAL,
    );
    sys.close(fd);
    expect(fdCount()).toBe(before - 1);
  });

  it('accepts a mapping without a descriptor (unreachable), and DMA_UNMAP ALL removes everything', async () => {
    const fd = memfd(64 * 1024);
    await client.request(Command.DMA_MAP, dmaMap(0x0n, 0x10000n), [fd]);
    await client.request(Command.DMA_MAP, dmaMap(0x100000n, 0x10000n), []);
    expect(server.dmaRegions().map((r) => r.mapped)).toEqual([true, false]);
    expect((await client.request(Command.DMA_UNMAP, dmaUnmap(0n, 1n, 2))).header.error).toBe(Errno.EINVAL);
    const all = await client.request(Command.DMA_UNMAP, dmaUnmap(0n, 0n, 2));
    expect(view(all.body).getBigUint64(16, true)).toBe(0x20000n);
    expect(server.dmaRegions()).toEqual([]);
    expect(() => memory.read(0, 1)).toThrow();
    sys.close(fd);
  });

  it('maps more than 4 GiB in chunks of at most 1 GiB; accesses across chunk edges work; unmap releases all', async () => {
    const GiB = 1 << 30;
    // Just over 4 GiB (a single view of it used to abort the process), then a sparse 64 GiB memfd.
    const small = sys.memfdCreate('vfu-test', 2 ** 32 + 4096);
    const r0 = await client.request(Command.DMA_MAP, dmaMap(0x1_0000_0000n, 2n ** 32n + 4096n), [small]);
    expect(isError(r0)).toBe(false);
    expect(device.regions.size).toBe(5);
    memory.write(0x1_0000_0000 + 2 ** 32, new Uint8Array([9]));
    const one = new Uint8Array(1);
    readSync(small, one, 0, 1, 2 ** 32);
    expect(one[0]).toBe(9);
    sys.close(small);
    expect(isError(await client.request(Command.DMA_UNMAP, dmaUnmap(0n, 0n, 2)))).toBe(false);

    const size = 64 * GiB;
    const base = 0x10_0000_0000;
    const fd = sys.memfdCreate('vfu-test', size);
    writeSync(fd, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]), 0, 8, GiB - 4); // straddles chunk 0/1
    writeSync(fd, new Uint8Array([0xee]), 0, 1, size - 1);
    const r = await client.request(Command.DMA_MAP, dmaMap(BigInt(base), BigInt(size)), [fd]);
    expect(isError(r)).toBe(false);
    expect(server.dmaRegions()).toEqual([
      { address: BigInt(base), size: BigInt(size), flags: 3, mapped: true },
    ]);
    expect(device.regions.size).toBe(64);
    for (const bytes of device.regions.values()) expect(bytes.byteLength).toBeLessThanOrEqual(GiB);
    // Reads and scalar accesses spanning two chunks go through (GuestMemory copies across regions) ...
    expect([...memory.read(base + GiB - 4, 8)]).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(memory.readU32(base + GiB - 2)).toBe(0x06050403);
    expect(memory.readU8(base + size - 1)).toBe(0xee);
    // ... a write spanning chunks 40/41 reaches the guest's file ...
    memory.write(base + 41 * GiB - 3, new Uint8Array([0xa, 0xb, 0xc, 0xd, 0xe, 0xf]));
    const back = new Uint8Array(6);
    readSync(fd, back, 0, 6, 41 * GiB - 3);
    expect([...back]).toEqual([0xa, 0xb, 0xc, 0xd, 0xe, 0xf]);
    // ... while a zero-copy view cannot span two chunks: refused cleanly, as for any two regions.
    expect(memory.tryView(base + GiB - 4, 8)).toBeNull();
    expect(() => memory.read(base + size - 4, 8)).toThrow();
    const u = await client.request(Command.DMA_UNMAP, dmaUnmap(BigInt(base), BigInt(size)));
    expect(view(u.body).getBigUint64(16, true)).toBe(BigInt(size));
    expect(device.regions.size).toBe(0);
    expect(memfdMaps()).toBe(0);
    expect(() => memory.read(base, 1)).toThrow();
    sys.close(fd);
  });

  it('unmaps everything when the client disconnects, and resets the device', async () => {
    const fd = memfd(64 * 1024);
    await client.request(Command.DMA_MAP, dmaMap(0x0n, 0x10000n), [fd]);
    sys.close(fd);
    const resets = device.counts.resets;
    client.close();
    await server.waitForDisconnect();
    expect(memfdMaps()).toBe(0);
    expect(() => memory.read(0, 1)).toThrow();
    expect(device.counts.resets).toBe(resets + 1);
    client = await connect();
    await roundTrip();
  });
});

describe('interrupts', () => {
  it('arms MSI-X vectors with eventfds, replacing (never appending) and de-assigning', async () => {
    const e0 = sys.eventfd();
    const e1 = sys.eventfd();
    expect(
      isError(await client.request(Command.DEVICE_SET_IRQS, irqSet(EVT_TRIGGER, 2, 0, 2), [e0, e1])),
    ).toBe(false);
    expect(server.armedVectors(2)).toEqual([0, 1]);
    device.sink?.vector(1);
    device.sink?.vector(1);
    expect(sys.eventfdRead(e1)).toBe(2n);
    expect(sys.eventfdRead(e0)).toBe(0n);
    const before = fdCount();
    const e1b = sys.eventfd();
    await client.request(Command.DEVICE_SET_IRQS, irqSet(EVT_TRIGGER, 2, 1, 1), [e1b]);
    expect(fdCount()).toBe(before + 1); // the server closed its copy of the old eventfd
    device.sink?.vector(1);
    expect(sys.eventfdRead(e1)).toBe(0n);
    expect(sys.eventfdRead(e1b)).toBe(1n);
    // DATA_EVENTFD without descriptors de-assigns.
    await client.request(Command.DEVICE_SET_IRQS, irqSet(EVT_TRIGGER, 2, 1, 1), []);
    expect(server.armedVectors(2)).toEqual([0]);
    device.sink?.vector(1);
    expect(server.stats().irqsDropped).toBe(1);
    // DATA_NONE|TRIGGER count 0 disables the index.
    await client.request(
      Command.DEVICE_SET_IRQS,
      irqSet(IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_TRIGGER, 2, 0, 0),
    );
    expect(server.armedVectors(2)).toEqual([]);
    device.sink?.vector(0);
    expect(sys.eventfdRead(e0)).toBe(0n);
    for (const fd of [e0, e1, e1b]) sys.close(fd);
  });

  it('holds a masked vector pending and delivers it on unmask; software triggers by DATA_NONE and DATA_BOOL', async () => {
    const e = [sys.eventfd(), sys.eventfd(), sys.eventfd()];
    await client.request(Command.DEVICE_SET_IRQS, irqSet(EVT_TRIGGER, 2, 0, 3), e);
    await client.request(
      Command.DEVICE_SET_IRQS,
      irqSet(IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_MASK, 2, 0, 1),
    );
    device.sink?.vector(0);
    expect(sys.eventfdRead(e[0]!)).toBe(0n);
    await client.request(
      Command.DEVICE_SET_IRQS,
      irqSet(IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_UNMASK, 2, 0, 1),
    );
    expect(sys.eventfdRead(e[0]!)).toBe(1n);
    await client.request(
      Command.DEVICE_SET_IRQS,
      irqSet(IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_TRIGGER, 2, 1, 1),
    );
    expect(sys.eventfdRead(e[1]!)).toBe(1n);
    await client.request(
      Command.DEVICE_SET_IRQS,
      irqSet(IrqSetFlag.DATA_BOOL | IrqSetFlag.ACTION_TRIGGER, 2, 0, 3, new Uint8Array([0, 0, 1])),
    );
    expect(e.map((fd) => sys.eventfdRead(fd))).toEqual([0n, 0n, 1n]);
    for (const fd of e) sys.close(fd);
  });

  it('INTx: signals on assertion, stays masked until unmasked, re-signals while asserted', async () => {
    const e = sys.eventfd();
    await client.request(Command.DEVICE_SET_IRQS, irqSet(EVT_TRIGGER, 0, 0, 1), [e]);
    device.sink?.intx?.(true);
    device.sink?.intx?.(true);
    expect(sys.eventfdRead(e)).toBe(1n);
    await client.request(
      Command.DEVICE_SET_IRQS,
      irqSet(IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_UNMASK, 0, 0, 1),
    );
    expect(sys.eventfdRead(e)).toBe(1n);
    device.sink?.intx?.(false);
    await client.request(
      Command.DEVICE_SET_IRQS,
      irqSet(IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_UNMASK, 0, 0, 1),
    );
    expect(sys.eventfdRead(e)).toBe(0n);
    sys.close(e);
  });

  it('rejects malformed SET_IRQS and closes the descriptors it came with', async () => {
    const e = [sys.eventfd(), sys.eventfd()];
    const cases: [Uint8Array, number[]][] = [
      [irqSet(EVT_TRIGGER, 2, 0, 2), [e[0]!]], // descriptor count mismatch
      [irqSet(EVT_TRIGGER, 2, 3, 2), e], // past the vector count
      [irqSet(EVT_TRIGGER, 1, 0, 1), [e[0]!]], // MSI has no vectors
      [irqSet(EVT_TRIGGER, 5, 0, 1), [e[0]!]], // no such index
      [irqSet(IrqSetFlag.DATA_NONE | IrqSetFlag.DATA_BOOL | IrqSetFlag.ACTION_TRIGGER, 2, 0, 1), []],
      [irqSet(IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_MASK | IrqSetFlag.ACTION_TRIGGER, 2, 0, 1), []],
      [irqSet(IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_TRIGGER, 2, 0, 1), [e[0]!]], // fds without DATA_EVENTFD
      [irqSet(IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_UNMASK, 0, 0, 1), [e[0]!]], // resample eventfd
      [irqSet(IrqSetFlag.DATA_BOOL | IrqSetFlag.ACTION_TRIGGER, 2, 0, 3, new Uint8Array(1)), []], // bools missing
      [irqSet(EVT_TRIGGER, 2, 0, 1).subarray(0, 12), [e[0]!]], // short
    ];
    const before = fdCount();
    for (const [b, fds] of cases) {
      const r = await client.request(Command.DEVICE_SET_IRQS, b, fds);
      expect(r.header.error).toBe(Errno.EINVAL);
    }
    expect(fdCount()).toBe(before);
    expect(server.armedVectors(2)).toEqual([]);
    for (const fd of e) sys.close(fd);
  });

  it('a disconnect closes every armed eventfd', async () => {
    const e = [sys.eventfd(), sys.eventfd()];
    await client.request(Command.DEVICE_SET_IRQS, irqSet(EVT_TRIGGER, 2, 0, 2), e);
    const before = fdCount();
    client.close();
    await server.waitForDisconnect();
    expect(fdCount()).toBe(before - 4); // both ends of the connection and the server's two eventfd copies
    for (const fd of e) sys.close(fd);
    client = await connect();
  });
});

describe('hostile input', () => {
  it('answers DEVICE_RESET by resetting the device', async () => {
    const n = device.counts.resets;
    const r = await client.request(Command.DEVICE_RESET);
    expect(isError(r)).toBe(false);
    expect(device.counts.resets).toBe(n + 1);
    expect((await client.request(Command.DEVICE_RESET, new Uint8Array(4))).header.error).toBe(Errno.EINVAL);
  });

  it('answers unknown and unsupported commands with ENOSYS', async () => {
    for (const cmd of [Command.DMA_READ, Command.DIRTY_PAGES, Command.DEVICE_FEATURE, 99, 0xffff]) {
      expect((await client.request(cmd, new Uint8Array(8))).header.error).toBe(Errno.ENOSYS);
    }
  });

  it('closes descriptors sent where none belong, and refuses too many', async () => {
    const e = sys.eventfd();
    const before = fdCount();
    const r = await client.request(
      Command.DEVICE_GET_INFO,
      body(16, (v) => v.setUint32(0, 16, true)),
      [e],
    );
    expect(r.header.error).toBe(Errno.EINVAL);
    const many = Array.from({ length: 12 }, () => e);
    const r2 = await client.request(Command.DEVICE_SET_IRQS, irqSet(EVT_TRIGGER, 2, 0, 4), many);
    expect(r2.header.error).toBe(Errno.EINVAL);
    expect(fdCount()).toBe(before);
    sys.close(e);
  });

  it('answers a short header with EINVAL and an oversized one with E2BIG, and stays in step', async () => {
    const short = new Uint8Array(16);
    encodeHeader(short, { id: 500, command: Command.DEVICE_GET_INFO, size: 8, flags: 0, error: 0 });
    client.sendRaw(short);
    const a = await client.nextUnmatched();
    expect(decodeHeader(encodeMessage({ ...a.header }))).toMatchObject({ id: 500 });
    expect(a.header.error).toBe(Errno.EINVAL);
    const big = 16 + 16 + (1 << 20) + 1;
    const over = new Uint8Array(big);
    encodeHeader(over, { id: 501, command: Command.REGION_WRITE, size: big, flags: 0, error: 0 });
    over.fill(0xee, 16);
    const e = sys.eventfd();
    client.sendRaw(over, [e]);
    const b = await client.nextUnmatched();
    expect(b.header).toMatchObject({ id: 501, error: Errno.E2BIG });
    sys.close(e);
    await roundTrip();
  });

  it('drops messages of reply type without answering', async () => {
    client.sendRaw(
      encodeMessage({ id: 600, command: Command.DEVICE_GET_INFO, flags: MsgFlag.REPLY, error: 0 }),
    );
    await roundTrip();
    expect(client.unmatched).toEqual([]);
  });

  it('survives arbitrary messages and keeps serving (property)', async () => {
    const fd = sys.memfdCreate('vfu-test', 1 << 16);
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 20 }),
        fc.integer({ min: 0, max: 0x3f }),
        fc.uint8Array({ maxLength: 64 }),
        fc.boolean(),
        async (command, flags, payload, withFd) => {
          const type = flags & 0xf;
          if (command === Command.VERSION) return; // keeps the session
          const msg = encodeMessage(
            { id: 700, command, flags: flags & ~0xf & ~MsgFlag.NO_REPLY, error: 0 },
            payload,
          );
          if (type === 0) {
            const r = await client.request(command, payload, withFd ? [fd] : []);
            expect(r.header.id).toBeGreaterThan(0);
          } else {
            client.sendRaw(msg, withFd ? [fd] : []);
          }
          await roundTrip();
        },
      ),
      { numRuns: 300 },
    );
    await client.request(Command.DMA_UNMAP, dmaUnmap(0n, 0n, 2));
    await client.request(
      Command.DEVICE_SET_IRQS,
      irqSet(IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_TRIGGER, 2, 0, 0),
    );
    await client.request(
      Command.DEVICE_SET_IRQS,
      irqSet(IrqSetFlag.DATA_NONE | IrqSetFlag.ACTION_TRIGGER, 0, 0, 0),
    );
    sys.close(fd);
    client.unmatched.length = 0;
  });

  it('refuses a second client while one is connected', async () => {
    const c2 = VfioUserClient.connect(join(dir, 'vfu.sock'));
    await c2.closed;
    await roundTrip();
    expect(server.stats().connections).toBe(1);
  });
});
