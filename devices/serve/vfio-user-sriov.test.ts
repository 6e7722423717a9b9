/**
 * An SR-IOV device served as one vfio-user function per socket (devices/serve/sriov.ts): two VF clients,
 * each mapping its own memory at the same guest-physical addresses and arming its own eventfds; a frame
 * from VF0 reaches VF1 through the shared switch, in VF1's memory and on VF1's eventfd only.
 *
 * The virtio driver (synchronous) reaches each VF through the same VfioUserDevice the server calls; what
 * only the socket can show — DMA_MAP, SET_IRQS, config and BAR reads — goes through the vfio-user client.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import * as sys from '../../lib/host/socket.js';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { MemoryBackend } from '../../lib/net/memory-backend.js';
import { VfioUserClient } from '../../lib/vfio-user/client.js';
import {
  body,
  Command,
  DMA_MAP,
  encodeVersionBody,
  IRQ_SET,
  IrqSetFlag,
  MsgFlag,
  REGION_RW,
  view,
} from '../../lib/vfio-user/protocol.js';
import { VfioUserServer } from '../../lib/vfio-user/server.js';
import { ethernet, udp4 } from '../testing/frames.js';
import { VirtioNetDriver } from '../testing/net-driver.js';
import { vfMac } from '../virtio-net-pci.js';
import { parseVfFlag, type VirtioNetSriovFunctions, virtioNetSriovVfioUser } from './sriov.js';

const MB = 1 << 20;
const RAM = 16 * MB;
const PF_MAC = '52:54:00:12:34:56';
const isError = (r: { header: { flags: number } }) => (r.header.flags & MsgFlag.ERROR) !== 0;

function rw(offset: number, region: number, count: number): Uint8Array {
  const b = new Uint8Array(REGION_RW.SIZE);
  const v = view(b);
  v.setBigUint64(REGION_RW.offset, BigInt(offset), true);
  v.setUint32(REGION_RW.region, region, true);
  v.setUint32(REGION_RW.count, count, true);
  return b;
}

/** One VF's guest: a client on its socket, its own memfd RAM (mapped here too) and eventfds. */
interface VfGuest {
  client: VfioUserClient;
  fd: number;
  ptr: sys.NativePointer;
  memory: GuestMemory;
  eventfds: number[];
}

async function attach(socket: string, vectors: number): Promise<VfGuest> {
  const client = VfioUserClient.connect(socket);
  const v = await client.request(
    Command.VERSION,
    encodeVersionBody(0, 0, {
      maxMsgFds: 16,
      maxDataXferSize: MB,
      pgsizes: 4096,
      maxDmaMaps: 64,
      writeMultiple: true,
    }),
  );
  expect(isError(v)).toBe(false);
  const fd = sys.memfdCreate('vfu-sriov-test', RAM);
  const map = body(DMA_MAP.SIZE, (o) => {
    o.setUint32(DMA_MAP.argsz, DMA_MAP.SIZE, true);
    o.setUint32(DMA_MAP.flags, 3, true);
    o.setBigUint64(DMA_MAP.offset, 0n, true);
    o.setBigUint64(DMA_MAP.address, 0n, true);
    o.setBigUint64(DMA_MAP.size, BigInt(RAM), true);
  });
  expect(isError(await client.request(Command.DMA_MAP, map, [fd]))).toBe(false);
  const eventfds = Array.from({ length: vectors }, () => sys.eventfd());
  const irq = new Uint8Array(IRQ_SET.SIZE);
  const iv = view(irq);
  iv.setUint32(IRQ_SET.argsz, IRQ_SET.SIZE, true);
  iv.setUint32(IRQ_SET.flags, IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, true);
  iv.setUint32(IRQ_SET.index, 2, true); // MSI-X
  iv.setUint32(IRQ_SET.start, 0, true);
  iv.setUint32(IRQ_SET.count, vectors, true);
  expect(isError(await client.request(Command.DEVICE_SET_IRQS, irq, eventfds))).toBe(false);
  const ptr = sys.mmap(null, RAM, sys.PROT_READ | sys.PROT_WRITE, sys.MAP_SHARED, fd, 0n);
  const memory = new GuestMemory([{ address: 0, bytes: new Uint8Array(sys.viewOf(ptr, RAM)) }]);
  return { client, fd, ptr, memory, eventfds };
}

async function configRead32(c: VfioUserClient, offset: number): Promise<number> {
  const r = await c.request(Command.REGION_READ, rw(offset, 7, 4));
  expect(isError(r)).toBe(false);
  return view(r.body).getUint32(REGION_RW.data, true);
}

let dir: string;
let fns: VirtioNetSriovFunctions;
let uplink: MemoryBackend;
let servers: VfioUserServer[];
let guests: VfGuest[];

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'vfu-sriov-'));
  uplink = new MemoryBackend();
  fns = virtioNetSriovVfioUser({
    options: { memory: new GuestMemory(), backend: uplink, mac: PF_MAC, vectors: 4 },
    vfs: 2,
    policies: { 1: parseVfFlag('1,spoofchk=on,trust=off')[1] },
  });
  servers = [fns.pf, ...fns.vfs].map(
    (fn, i) => new VfioUserServer(fn, { socketPath: join(dir, i === 0 ? 'nic' : `nic.vf${i - 1}`) }),
  );
  for (const s of servers) await s.listen();
  guests = [];
});

afterEach(async () => {
  for (const g of guests) {
    g.client.close();
    sys.munmap(g.ptr, RAM);
    sys.close(g.fd);
    for (const e of g.eventfds) sys.close(e);
  }
  for (const s of servers) await s.waitForDisconnect();
  for (const s of servers) await s.close();
  fns.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('SR-IOV over vfio-user: one socket per function', () => {
  it('serves the PF and each host-enabled VF, a VF with the IDs, BAR types and MAC of its own', async () => {
    expect(readdirSync(dir).sort()).toEqual(['nic', 'nic.vf0', 'nic.vf1']);
    expect(fns.net.vfs).toHaveLength(2);
    const pf = VfioUserClient.connect(join(dir, 'nic'));
    const vf1 = await attach(join(dir, 'nic.vf1'), 4);
    guests.push(vf1);
    await pf.request(
      Command.VERSION,
      encodeVersionBody(0, 0, {
        maxMsgFds: 8,
        maxDataXferSize: MB,
        pgsizes: 4096,
        maxDmaMaps: 8,
        writeMultiple: false,
      }),
    );
    expect(await configRead32(pf, 0)).toBe(0x10411af4);
    // A VF's own Vendor/Device read 0xffff; over its socket it shows the PF's vendor and the VF Device ID.
    expect(fns.net.vfs[1]?.configRead(0, 4)).toBe(0xffffffff);
    expect(await configRead32(vf1.client, 0)).toBe(0x10411af4);
    // BAR1: MSI-X, 32-bit; BAR4: 64-bit prefetchable (type bits, as QEMU reads them to register BARs).
    expect(await configRead32(vf1.client, 0x14)).toBe(0x0);
    expect(await configRead32(vf1.client, 0x20)).toBe(0xc);
    // The guest's virtio driver sizes the emulated BARs and finds the VF's own MAC in its device config.
    const drv = new VirtioNetDriver(fns.vfs[1]!, vf1.memory);
    drv.open();
    expect(drv.pci.bars.map((b) => [b.index, b.size])).toEqual([
      [1, 0x1000],
      [4, 0x4000],
    ]);
    expect(drv.mac()).toBe(vfMac(PF_MAC, 1));
    expect(fns.net.vfInfo(1)).toMatchObject({ spoofCheck: true, trust: false });
    pf.close();
  });

  it('two clients, two memories: a frame from VF0 reaches VF1 through the switch, in VF1 RAM and on its eventfd', async () => {
    const [g0, g1] = [await attach(join(dir, 'nic.vf0'), 4), await attach(join(dir, 'nic.vf1'), 4)];
    guests.push(g0, g1);
    // Both drivers put their rings and buffers at the same guest-physical addresses: with one memory for
    // both functions they would overwrite each other.
    const d0 = new VirtioNetDriver(fns.vfs[0]!, g0.memory);
    const d1 = new VirtioNetDriver(fns.vfs[1]!, g1.memory);
    d0.open();
    d1.open();
    for (const e of [...g0.eventfds, ...g1.eventfds]) sys.eventfdRead(e);
    let toUplink = 0;
    uplink.onFrame(() => toUplink++);
    const payload = new TextEncoder().encode('through the embedded switch');
    const frame = ethernet(d1.mac(), d0.mac(), 0x0800, udp4('10.0.0.1', '10.0.0.2', 1000, 2000, payload));
    d0.send(frame);
    let got: Uint8Array[] = [];
    for (let i = 0; i < 100 && got.length === 0; i++) {
      await new Promise((r) => setTimeout(r, 5));
      got = d1.receive().map((f) => f.frame);
    }
    expect(got).toHaveLength(1);
    expect([...(got[0] as Uint8Array)]).toEqual([...frame]);
    // VF1's receive vector (queue 0 → vector 1) fired on VF1's eventfd; VF0 got its transmit vector only.
    expect(sys.eventfdRead(g1.eventfds[1] as number)).toBeGreaterThan(0n);
    expect(sys.eventfdRead(g0.eventfds[1] as number)).toBe(0n);
    expect(servers[2]?.stats().irqsSignalled).toBeGreaterThan(0);
    expect(d0.receive()).toHaveLength(0);
    const sw = fns.net.stats().switch!;
    expect(sw.vfs[0]).toMatchObject({ index: 0, txFrames: 1, txBytes: frame.length });
    expect(sw.vfs[1]).toMatchObject({ index: 1, rxFrames: 1, rxBytes: frame.length });
    expect(sw.uplink.txFrames + sw.uplink.rxFrames).toBe(0);
    expect(toUplink).toBe(0);
  });

  it("a PF reset brings the host's VFs back (reset), and each VF socket follows its new VF", async () => {
    const g1 = await attach(join(dir, 'nic.vf1'), 4);
    guests.push(g1);
    const d1 = new VirtioNetDriver(fns.vfs[1]!, g1.memory);
    d1.open();
    expect(fns.net.vfs[1]?.stats().status).toBe(0xf);
    fns.pf.reset();
    expect(fns.net.vfs).toHaveLength(2);
    expect(fns.net.vfs[1]?.stats().status).toBe(0);
    // The VF adapter follows the new VF object: its config still answers with the VF's MAC.
    const d1b = new VirtioNetDriver(fns.vfs[1]!, g1.memory);
    d1b.open();
    expect(d1b.mac()).toBe(vfMac(PF_MAC, 1));
  });
});

describe('parseVfFlag', () => {
  it('maps ip-link vocabulary to a VF policy and refuses unknown keys and bad values', () => {
    expect(
      parseVfFlag(
        '3,mac=02:00:00:00:00:09,vlan=10,qos=2,spoofchk=off,trust=on,state=disable,max_tx_rate=100',
      ),
    ).toEqual([
      3,
      {
        mac: '02:00:00:00:00:09',
        vlan: 10,
        qos: 2,
        spoofCheck: false,
        trust: true,
        linkState: 'disable',
        maxTxRateMbps: 100,
      },
    ]);
    expect(() => parseVfFlag('x,trust=on')).toThrow(/VF index/);
    expect(() => parseVfFlag('0,trust=yes')).toThrow(/trust wants on or off/);
    expect(() => parseVfFlag('0,colour=red')).toThrow(/unknown key "colour"/);
  });
});
