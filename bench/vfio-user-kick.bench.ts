/**
 * What a kick and an interrupt cost over vfio-user (issue 17): a ping-pong between our test client
 * (standing in for the VMM) and our server, in one process on one event loop. The client kicks queue 0,
 * the device answers each kick with MSI-X vector 0 (an eventfd given by SET_IRQS), the client waits for
 * that eventfd and kicks again. Kicks go either as a posted REGION_WRITE message on the socket (what
 * QEMU 11.1 does) or as a signal on the ioeventfd the server handed out (GET_REGION_IO_FDS). A third row
 * times the device's interrupt alone (one eventfd write per signal).
 *
 * Run: `node --expose-gc --import tsx bench/vfio-user-kick.bench.ts` (KICK_BENCH_ROUNDS=N to change N).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as sys from '../lib/host/socket.js';
import { GuestMemory } from '../lib/memory/guest-memory.js';
import { VfioUserClient } from '../lib/vfio-user/client.js';
import {
  Command,
  encodeVersionBody,
  IRQ_SET,
  Irq,
  IrqSetFlag,
  REGION_IO_FDS,
  REGION_RW,
  view,
} from '../lib/vfio-user/protocol.js';
import { type VfioUserDevice, type VfioUserInterruptSink, VfioUserServer } from '../lib/vfio-user/server.js';

const ROUNDS = Number(process.env.KICK_BENCH_ROUNDS ?? 20000);
const NOTIFY = 0x3000;

let sink: VfioUserInterruptSink | null = null;
let kicks = 0;
const device: VfioUserDevice = {
  configRead: () => 0,
  configWrite: () => {},
  barRead: () => 0,
  barWrite(bar, offset) {
    if (bar === 4 && offset === NOTIFY) {
      kicks++;
      sink?.vector(0);
    }
  },
  bars: [null, null, null, null, { size: 0x4000, type: 'mem64' }, null],
  msixVectors: 1,
  memory: new GuestMemory(),
  setInterruptSink: (s) => {
    sink = s;
  },
  reset: () => {},
  doorbells: () => [{ bar: 4, offset: NOTIFY, size: 0, replay: { size: 2, value: 0 } }],
};

const dir = mkdtempSync(join(tmpdir(), 'vfu-kick-'));
const server = new VfioUserServer(device, { socketPath: join(dir, 's') });
await server.listen();
const client = VfioUserClient.connect(join(dir, 's'));
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
const irq = sys.eventfd();
await client.request(
  Command.DEVICE_SET_IRQS,
  (() => {
    const b = new Uint8Array(IRQ_SET.SIZE);
    const v = view(b);
    v.setUint32(IRQ_SET.argsz, IRQ_SET.SIZE, true);
    v.setUint32(IRQ_SET.flags, IrqSetFlag.DATA_EVENTFD | IrqSetFlag.ACTION_TRIGGER, true);
    v.setUint32(IRQ_SET.index, Irq.MSIX, true);
    v.setUint32(IRQ_SET.count, 1, true);
    return b;
  })(),
  [irq],
);
const ioFds = await client.request(
  Command.DEVICE_GET_REGION_IO_FDS,
  (() => {
    const b = new Uint8Array(REGION_IO_FDS.SIZE);
    view(b).setUint32(REGION_IO_FDS.argsz, 4096, true);
    view(b).setUint32(REGION_IO_FDS.index, 4, true);
    return b;
  })(),
);
const doorbell = ioFds.fds[0] as number;

const write = new Uint8Array(REGION_RW.SIZE + 2);
view(write).setBigUint64(REGION_RW.offset, BigInt(NOTIFY), true);
view(write).setUint32(REGION_RW.region, 4, true);
view(write).setUint32(REGION_RW.count, 2, true);

/** N kick → interrupt round trips; resolves with ns per round trip. */
function pingPong(kick: () => void, rounds: number): Promise<number> {
  return new Promise((resolve) => {
    let left = rounds;
    const t0 = process.hrtime.bigint();
    const poll = sys.pollFd(irq, (ev) => {
      if (!ev.readable || sys.eventfdRead(irq) === 0n) return;
      if (--left === 0) {
        poll.close();
        resolve(Number(process.hrtime.bigint() - t0) / rounds);
      } else kick();
    });
    poll.start({ readable: true, disconnect: false });
    kick();
  });
}

const viaSocket = () => client.post(Command.REGION_WRITE, write);
const viaEventfd = () => {
  sys.eventfdSignal(doorbell);
};
const rows: [string, number][] = [];
for (const [name, kick] of [
  ['kick by posted REGION_WRITE + interrupt by eventfd', viaSocket],
  ['kick by ioeventfd + interrupt by eventfd', viaEventfd],
] as const) {
  await pingPong(kick, Math.ceil(ROUNDS / 10)); // warm-up
  rows.push([name, await pingPong(kick, ROUNDS)]);
}
// The interrupt alone: the device signals, the server writes the vector's eventfd.
const n = ROUNDS * 10;
const t0 = process.hrtime.bigint();
const armed = sink as VfioUserInterruptSink | null;
for (let i = 0; i < n; i++) armed?.vector(0);
rows.push(['interrupt alone (server side: one eventfd write)', Number(process.hrtime.bigint() - t0) / n]);
sys.eventfdRead(irq);

const st = server.stats();
for (const [name, ns] of rows) console.log(`${name.padEnd(52)} ${(ns / 1000).toFixed(2).padStart(7)} µs`);
console.log(
  `kicks seen ${kicks}, by eventfd ${st.kicksByEventfd}, REGION_WRITEs ${st.regionWrites[4] ?? 0}, interrupts ${st.irqsSignalled}`,
);
sys.close(doorbell);
client.close();
await server.waitForDisconnect();
await server.close();
sys.close(irq);
rmSync(dir, { recursive: true, force: true });
