/**
 * `vfio-user`: a hostile client of the vfio-user server (lib/vfio-user/server.ts) serving the virtio-net
 * function (`virtioNetVfioUserDevice`): random message sequences before and after the VERSION handshake
 * (valid headers with random bodies, every command, random flags), truncated messages, headers whose size
 * lies, descriptors of every kind passed with SCM_RIGHTS (memfd, pipe, eventfd, socket, /dev/null,
 * /dev/zero, a regular file, a directory), a second client while one is connected, and disconnects at
 * any point, mid-message included; and a synthetic guest that maps a region, brings the NIC up (its pairs
 * on workers in half the 2-queue cases) and sends, receives and gets frames injected meanwhile.
 *
 * Invariants: every request is answered (a reply with its id, an error reply, or the connection closes)
 * within the time budget; a NO_REPLY request is never answered; after any disconnect the server has
 * closed every descriptor it was given and unmapped every DMA region (the process's descriptor count
 * and memfd mappings are back where they were), and a new client can connect, handshake and be served.
 */

import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type VirtioNetVfioUserDevice, virtioNetVfioUserDevice } from '../../../devices/serve/vfio-user.js';
import { VirtioNetDriver } from '../../../devices/testing/net-driver.js';
import type { WorkerPool } from '../../../devices/virtio-net/workers/pool.js';
import * as sys from '../../../lib/host/socket.js';
import { GuestMemory } from '../../../lib/memory/guest-memory.js';
import { MemoryBackend } from '../../../lib/net/memory-backend.js';
import { type ClientReply, VfioUserClient } from '../../../lib/vfio-user/client.js';
import {
  Command,
  encodeHeader,
  encodeMessage,
  encodeVersionBody,
  MsgFlag,
} from '../../../lib/vfio-user/protocol.js';
import { VfioUserServer } from '../../../lib/vfio-user/server.js';
import { BumpAllocator } from '../../../virtio/testing/bump-allocator.js';
import { describeError, type FuzzTarget, guard, invariant } from '../engine.js';
import type { Rng } from '../rng.js';
import { checkWorkersIdle } from '../worker-rig.js';

type FdKind = 'memfd' | 'memfd0' | 'eventfd' | 'pipe' | 'socket' | 'null' | 'zero' | 'file' | 'dir';
type Step =
  | { op: 'connect'; version: 'valid' | 'garbage' | 'none' }
  | { op: 'request'; command: number; body: number[]; fds: FdKind[]; posted: boolean }
  | {
      op: 'raw';
      size: number;
      command: number;
      flags: number;
      body: number;
      fds: FdKind[];
      thenClose: boolean;
    }
  | { op: 'second' }
  | { op: 'disconnect'; partial: number }
  /** The synthetic guest (over a region this client DMA-maps) brings the NIC up, sends, receives. */
  | { op: 'guest'; action: 'up' | 'send' | 'receive' | 'inject'; pair: number };

interface State {
  dir: string;
  /** The device's pairs run on worker threads. */
  onWorkers: boolean;
  path: string;
  memory: GuestMemory;
  device: VirtioNetVfioUserDevice;
  server: VfioUserServer;
  client: VfioUserClient | null;
  /** The stream is out of step (a raw message whose size lied): replies can no longer be matched. */
  desynced: boolean;
  backend: MemoryBackend;
  /** The guest of `guest` steps, while its region is mapped. */
  guest: { fd: number; ptr: sys.NativePointer; drv: VirtioNetDriver | null } | null;
  baselineFds: number;
  budgetMs: number;
  counters: Record<string, number>;
}

const fdCount = () => readdirSync('/proc/self/fd').length;
const memfdMaps = () =>
  readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((l) => l.includes('memfd:vfu-fuzz')).length;

const le = (v: number | bigint, n: number) => {
  const b = BigInt.asUintN(8 * n, BigInt(v));
  return Array.from({ length: n }, (_, i) => Number((b >> BigInt(8 * i)) & 0xffn));
};

/** A body shaped like the command's (fields at their offsets, values often edge cases), or noise. */
function body(rng: Rng, command: number): number[] {
  const u32 = () => le(rng.edgeU32(), 4);
  const addr = () => le(rng.chance(0.6) ? BigInt(rng.int(0, 64)) * 0x1000n : rng.edgeU64(), 8);
  switch (command) {
    case Command.VERSION: {
      const json = rng.chance(0.6)
        ? JSON.stringify({
            capabilities: { max_msg_fds: rng.int(0, 20), max_data_xfer_size: rng.edgeU32(), pgsizes: 4096 },
          })
        : rng.pick(['{', 'null', '[]', '{"capabilities":7}', '', '\u0000']);
      return [
        ...le(rng.chance(0.8) ? 0 : rng.int(1, 3), 2),
        ...le(rng.int(0, 5), 2),
        ...Buffer.from(json),
        0,
      ];
    }
    case Command.DMA_MAP:
      return [
        ...le(rng.chance(0.8) ? 32 : rng.edgeU32(), 4),
        ...le(rng.pick([1, 2, 3, 0, 8, 3]), 4),
        ...addr(),
        ...addr(),
        ...le(rng.pick([0x1000, 0x10000, 0, 0x100000, 0x1001]), 8),
      ];
    case Command.DMA_UNMAP:
      return [
        ...le(rng.chance(0.8) ? 24 : rng.edgeU32(), 4),
        ...le(rng.pick([0, 0, 2, 1, 4]), 4),
        ...addr(),
        ...le(rng.pick([0x1000, 0x10000, 0, 0x100000]), 8),
      ];
    case Command.DEVICE_GET_INFO:
      return [...le(rng.chance(0.8) ? 16 : rng.edgeU32(), 4), ...u32(), ...u32(), ...u32()];
    case Command.DEVICE_GET_REGION_INFO:
      return [...le(rng.chance(0.8) ? 32 : rng.edgeU32(), 4), ...u32(), ...le(rng.int(0, 10), 4), ...u32()];
    case Command.DEVICE_GET_REGION_IO_FDS:
      return [
        ...le(rng.chance(0.8) ? rng.pick([16, 56, 400, 4096, 15]) : rng.edgeU32(), 4),
        ...le(rng.chance(0.8) ? 0 : rng.edgeU32(), 4),
        ...le(rng.chance(0.5) ? 4 : rng.int(0, 10), 4),
        ...le(rng.chance(0.8) ? 0 : rng.edgeU32(), 4),
      ];
    case Command.DEVICE_GET_IRQ_INFO:
      return [...le(16, 4), ...u32(), ...le(rng.int(0, 6), 4), ...u32()];
    case Command.DEVICE_SET_IRQS: {
      const count = rng.int(0, 12);
      return [
        ...le(20, 4),
        ...le(rng.chance(0.7) ? rng.pick([0x24, 0x21, 0x09, 0x11, 0x22, 0x24]) : rng.edge(8), 4),
        ...le(rng.int(0, 5), 4),
        ...le(rng.int(0, 8), 4),
        ...le(count, 4),
        ...(rng.chance(0.3) ? Array.from({ length: count }, () => rng.int(0, 1)) : []),
      ];
    }
    case Command.REGION_READ:
    case Command.REGION_WRITE: {
      const count = rng.pick([1, 2, 4, 8, 3, 0, 64, 4096, 0x100001]);
      const data =
        command === Command.REGION_WRITE
          ? Array.from({ length: Math.min(count, 8192) }, () => rng.int(0, 255))
          : [];
      return [
        ...le(rng.chance(0.8) ? rng.int(0, 0x1100) : rng.edgeU32(), 8),
        ...le(rng.int(0, 9), 4),
        ...le(count, 4),
        ...data,
      ];
    }
    case Command.REGION_WRITE_MULTI: {
      const n = rng.int(0, 4);
      const out = le(rng.chance(0.8) ? n : rng.edgeU32(), 8);
      for (let i = 0; i < n; i++)
        out.push(
          ...le(rng.int(0, 0x40), 8),
          ...le(rng.pick([0, 4, 7, 2]), 4),
          ...le(rng.pick([1, 2, 4, 8, 9]), 4),
          ...le(rng.u32(), 8),
        );
      return out;
    }
    case Command.DEVICE_RESET:
      return rng.chance(0.8) ? [] : [1, 2, 3, 4];
    default:
      return Array.from({ length: rng.length(64) }, () => rng.int(0, 255));
  }
}

const FD_KINDS: FdKind[] = ['memfd', 'memfd0', 'eventfd', 'pipe', 'socket', 'null', 'zero', 'file', 'dir'];

function generate(rng: Rng): Step {
  const op = rng.weighted({ connect: 6, request: 70, raw: 8, second: 1, disconnect: 5, guest: 25 });
  const fds = () =>
    rng.chance(0.75) ? [] : Array.from({ length: rng.pick([1, 1, 2, 4, 9]) }, () => rng.pick(FD_KINDS));
  switch (op) {
    case 'connect':
      return { op, version: rng.weighted({ valid: 8, garbage: 1, none: 1 }) };
    case 'request': {
      const command = rng.chance(0.9) ? rng.int(1, 16) : rng.edge(16);
      return { op, command, body: body(rng, command), fds: fds(), posted: rng.chance(0.1) };
    }
    case 'raw':
      return {
        op,
        size: rng.pick([0, 8, 15, 16, 17, 24, 100, 0x10000, 0x100020, 0xffffffff]),
        command: rng.int(0, 20),
        flags: rng.edge(32),
        body: rng.pick([0, 1, 8, 84, 200]),
        fds: fds(),
        thenClose: rng.chance(0.3),
      };
    case 'second':
      return { op };
    case 'guest':
      return { op, action: rng.weighted({ up: 2, send: 6, receive: 4, inject: 4 }), pair: rng.int(0, 1) };
    default:
      return { op: 'disconnect', partial: rng.pick([0, 0, 4, 15, 20]) };
  }
}

function describe(s: Step): string {
  switch (s.op) {
    case 'connect':
      return `connect (${s.version} VERSION)`;
    case 'request':
      return `${s.posted ? 'posted ' : ''}request ${s.command} body[${s.body.length}]${s.fds.length ? ` fds [${s.fds.join(',')}]` : ''}: ${Buffer.from(s.body.slice(0, 24)).toString('hex')}`;
    case 'raw':
      return `raw header size ${s.size} cmd ${s.command} flags 0x${s.flags.toString(16)}, ${s.body} body bytes${s.fds.length ? ` fds [${s.fds.join(',')}]` : ''}${s.thenClose ? ', then close' : ''}`;
    case 'second':
      return 'a second client connects';
    case 'guest':
      return `guest ${s.action} (pair ${s.pair})`;
    default:
      return `disconnect${s.partial ? ` after ${s.partial} bytes of a message` : ''}`;
  }
}

/** Makes descriptors of the given kinds; the caller closes them after sending (the server gets copies). */
function makeFds(st: State, kinds: FdKind[]): number[] {
  return kinds.map((k) => {
    switch (k) {
      case 'memfd':
        return sys.memfdCreate('vfu-fuzz', 0x10000);
      case 'memfd0':
        return sys.memfdCreate('vfu-fuzz', 0);
      case 'eventfd':
        return sys.eventfd();
      case 'pipe':
        return openSync(join(st.dir, 'fifo'), 'r+');
      case 'socket': {
        const [a, b] = sys.socketPair();
        sys.close(b);
        return a;
      }
      case 'null':
        return openSync('/dev/null', 'r+');
      case 'zero':
        return openSync('/dev/zero', 'r+');
      case 'file':
        return openSync(join(st.dir, 'file'), 'r+');
      default:
        return openSync(st.dir, 'r');
    }
  });
}

function closeAll(fds: number[]): void {
  for (const fd of fds) closeSync(fd);
}

/** Waits for `p` at most `ms`; null on timeout. */
async function within<T>(p: Promise<T>, ms: number): Promise<T | null> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), ms);
  });
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}

/** Sends a request and requires an answer: its reply, an error reply, or the connection closing. */
async function ask(
  st: State,
  command: number,
  b: Uint8Array,
  fds: number[] = [],
): Promise<ClientReply | 'closed'> {
  const c = st.client!;
  const p = c.request(command, b, fds).then(
    (r) => r,
    () => 'closed' as const,
  );
  const r = await within(p, st.budgetMs);
  invariant(r !== null, `request ${command} (body ${b.length} bytes) got no answer within ${st.budgetMs} ms`);
  if (r !== 'closed' && r.fds.length > 0) {
    // GET_REGION_IO_FDS eventfds: ring one (a kick the server must survive), then drop ours.
    sys.eventfdSignal(r.fds[0] as number);
    st.counters.ioFdsReceived = (st.counters.ioFdsReceived ?? 0) + r.fds.length;
    for (const fd of r.fds.splice(0)) sys.close(fd);
  }
  if (r === 'closed') {
    st.client = null;
    st.counters.serverClosed = (st.counters.serverClosed ?? 0) + 1;
  }
  return r;
}

const GUEST_ADDR = 0x4000_0000;
const GUEST_SIZE = 4 << 20;
const guestFrame = Uint8Array.from({ length: 60 }, (_, i) => (i < 6 ? 0xff : i === 12 ? 8 : i & 0xff));

/**
 * A guest step. `up`: map a region (DMA_MAP of a memfd) and run Linux's bring-up on the function through
 * VirtioNetDriver (the same calls the client's REGION_WRITEs make), so queues run — on workers in worker
 * cases — while the hostile messages go on. The driver's own errors (a device the client broke) are
 * counted, not failures: the server's and the device's invariants are checked as for every step.
 */
async function guestStep(st: State, s: Extract<Step, { op: 'guest' }>): Promise<void> {
  const g = st.guest;
  const count = (k: string) => {
    st.counters[k] = (st.counters[k] ?? 0) + 1;
  };
  if (s.action === 'inject') {
    st.backend.inject(guestFrame, s.pair % st.backend.capabilities.queuePairs);
    return;
  }
  if (s.action !== 'up') {
    if (!g?.drv) return;
    try {
      if (s.action === 'send') g.drv.send(guestFrame, { pair: s.pair % g.drv.pairs });
      else g.drv.receive(s.pair % g.drv.pairs);
      count(`guest${s.action}`);
    } catch {
      count('guestDriverErrors');
    }
    return;
  }
  if (g || !st.client || st.desynced) return;
  const fd = sys.memfdCreate('vfu-fuzz-guest', GUEST_SIZE);
  const map = new Uint8Array(32);
  const v = new DataView(map.buffer);
  v.setUint32(0, 32, true);
  v.setUint32(4, 3, true);
  v.setBigUint64(16, BigInt(GUEST_ADDR), true);
  v.setBigUint64(24, BigInt(GUEST_SIZE), true);
  const r = await ask(st, Command.DMA_MAP, map, [fd]);
  if (r === 'closed' || (r.header.flags & MsgFlag.ERROR) !== 0) {
    sys.close(fd);
    return;
  }
  const ptr = sys.mmap(null, GUEST_SIZE, sys.PROT_READ | sys.PROT_WRITE, sys.MAP_SHARED, fd, 0n);
  const memory = new GuestMemory([
    { address: GUEST_ADDR, bytes: new Uint8Array(sys.viewOf(ptr, GUEST_SIZE)) },
  ]);
  st.guest = { fd, ptr, drv: null };
  const drv = new VirtioNetDriver(st.device.net, memory, {
    allocator: new BumpAllocator(GUEST_ADDR + 0x10000, GUEST_ADDR + GUEST_SIZE),
    rxBuffers: 16,
  });
  try {
    drv.open();
    st.guest.drv = drv;
    count(st.onWorkers ? 'guestUpOnWorkers' : 'guestUp');
  } catch {
    count('guestDriverErrors');
  }
}

/** Unmaps the guest's region on this side (the server drops its own mapping with the client). */
function dropGuest(st: State): void {
  if (!st.guest) return;
  sys.munmap(st.guest.ptr, GUEST_SIZE);
  sys.close(st.guest.fd);
  st.guest = null;
}

async function disconnect(st: State): Promise<void> {
  dropGuest(st);
  st.client?.close();
  st.client = null;
  st.desynced = false;
  invariant(
    (await within(st.server.waitForDisconnect(), st.budgetMs)) !== null,
    'the server did not notice a disconnect',
  );
  // Everything the client handed over is released with the connection.
  invariant(
    st.server.dmaRegions().length === 0,
    `${st.server.dmaRegions().length} DMA regions outlived the client`,
  );
  invariant(memfdMaps() === 0, `${memfdMaps()} memfd mappings outlived the client`);
  const n = fdCount();
  invariant(
    n === st.baselineFds,
    `${n - st.baselineFds} descriptors leaked across a client (${n} open, ${st.baselineFds} before)`,
  );
}

async function connect(st: State, version: 'valid' | 'garbage' | 'none'): Promise<void> {
  if (st.client) return;
  st.client = guard('connect', () => VfioUserClient.connect(st.path));
  st.desynced = false;
  st.counters.connections = (st.counters.connections ?? 0) + 1;
  if (version === 'none') return;
  const b =
    version === 'valid'
      ? encodeVersionBody(0, 0, {
          maxMsgFds: 8,
          maxDataXferSize: 1 << 20,
          pgsizes: 4096,
          maxDmaMaps: 65535,
          writeMultiple: true,
        })
      : Uint8Array.from([0, 0, 0, 0, 0x7b]);
  const r = await ask(st, Command.VERSION, b);
  if (version === 'valid')
    invariant(r !== 'closed' && (r.header.flags & MsgFlag.ERROR) === 0, 'a valid VERSION was refused');
}

/** A fresh client is served: VERSION, DEVICE_GET_INFO (then it leaves). */
async function checkServes(st: State, what: string): Promise<void> {
  if (st.client) await disconnect(st);
  await connect(st, 'valid');
  const r = await ask(st, Command.DEVICE_GET_INFO, Uint8Array.from(le(16, 4).concat(new Array(12).fill(0))));
  invariant(
    r !== 'closed' && (r.header.flags & MsgFlag.ERROR) === 0 && r.body.length === 16,
    `${what}: a new client is not served`,
  );
  await disconnect(st);
}

async function execute(st: State, s: Step): Promise<void> {
  switch (s.op) {
    case 'connect':
      await connect(st, s.version);
      return;
    case 'request': {
      if (!st.client) await connect(st, 'valid');
      const c = st.client!;
      const fds = makeFds(st, s.fds);
      try {
        if (s.posted) {
          // A posted request is never answered, even when it fails (replies to raw messages may wait here).
          c.unmatched.length = 0;
          c.sendRaw(
            encodeMessage(
              { id: 0xfffe, command: s.command, flags: MsgFlag.NO_REPLY, error: 0 },
              Uint8Array.from(s.body),
            ),
            fds,
          );
          if (!st.desynced) {
            const probe = await ask(
              st,
              Command.DEVICE_GET_INFO,
              Uint8Array.from(le(16, 4).concat(new Array(12).fill(0))),
            );
            if (probe !== 'closed')
              invariant(
                !c.unmatched.some((m) => m.header.id === 0xfffe),
                `a NO_REPLY request ${s.command} was answered`,
              );
          }
        } else if (st.desynced) {
          c.request(s.command, Uint8Array.from(s.body), fds).catch(() => {});
        } else {
          const r = await ask(st, s.command, Uint8Array.from(s.body), fds);
          if (r !== 'closed')
            st.counters[(r.header.flags & MsgFlag.ERROR) !== 0 ? 'errorReplies' : 'okReplies'] =
              (st.counters[(r.header.flags & MsgFlag.ERROR) !== 0 ? 'errorReplies' : 'okReplies'] ?? 0) + 1;
        }
      } finally {
        closeAll(fds);
      }
      return;
    }
    case 'raw': {
      if (!st.client) await connect(st, 'valid');
      const bytes = new Uint8Array(16 + s.body);
      encodeHeader(bytes, { id: 0xfffd, command: s.command, size: s.size, flags: s.flags, error: 0 });
      const fds = makeFds(st, s.fds);
      try {
        st.client!.sendRaw(bytes, fds);
      } finally {
        closeAll(fds);
      }
      // A size that is not the bytes sent leaves the stream out of step (as a truncated message does).
      if (s.size !== bytes.length) st.desynced = true;
      if (s.thenClose || st.desynced) await checkServes(st, 'after a raw message');
      return;
    }
    case 'second': {
      if (!st.client || st.desynced) return;
      const other = guard('connect', () => VfioUserClient.connect(st.path));
      const closed = await within(other.closed, st.budgetMs / 2);
      other.close();
      invariant(closed !== null, 'a second client was not turned away while one is connected');
      await ask(st, Command.DEVICE_GET_INFO, Uint8Array.from(le(16, 4).concat(new Array(12).fill(0))));
      return;
    }
    case 'guest':
      await guestStep(st, s);
      return;
    case 'disconnect':
      if (st.client && s.partial > 0) {
        const m = encodeMessage(
          { id: 0xfffc, command: Command.DEVICE_GET_INFO, flags: 0, error: 0 },
          new Uint8Array(16),
        );
        st.client.sendRaw(m.subarray(0, s.partial));
      }
      await checkServes(st, 'after a disconnect');
  }
}

export const vfioUser: FuzzTarget<State, Step> = {
  name: 'vfio-user',
  summary: 'a hostile vfio-user client: random messages, lying sizes, descriptors of every kind, disconnects',
  stepsPerCase: 250,
  minimize: true,
  unavailable: () =>
    process.platform === 'linux' ? null : 'vfio-user needs Linux (AF_UNIX, memfd, eventfd)',
  async setup(rng: Rng) {
    const dir = mkdtempSync(join(tmpdir(), 'vfu-fuzz-'));
    execFileSync('mkfifo', [join(dir, 'fifo')]);
    writeFileSync(join(dir, 'file'), new Uint8Array(0x10000));
    const memory = new GuestMemory();
    const queues = rng.pick([1, 2]);
    const backend = new MemoryBackend({ queues });
    const device = virtioNetVfioUserDevice({
      memory,
      backend,
      queues,
      mq: true,
      packed: rng.bool(),
      // Pairs on workers: the client's DMA maps, eventfds and doorbells reach worker threads too.
      workers: queues === 2 && rng.bool(),
    });
    // The workers' own descriptors (each thread's event loop) exist once they answered: before the baseline.
    const pool = device.net.net.dataPlane as WorkerPool | null;
    pool?.coalesceTimers();
    const path = join(dir, 's');
    const server = new VfioUserServer(device, { socketPath: path, maxMsgFds: rng.pick([1, 8, 16]) });
    await server.listen();
    const st: State = {
      dir,
      path,
      memory,
      device,
      server,
      client: null,
      desynced: false,
      backend,
      guest: null,
      baselineFds: fdCount(),
      budgetMs: 2000,
      counters: {},
      onWorkers: pool !== null,
    };
    return st;
  },
  generate,
  execute,
  async check(st) {
    guard('server.stats()', () => st.server.stats());
    guard('device stats()', () => st.device.net.stats());
    // The engine's spin check sees this thread only: the workers' event loops are checked here.
    if (st.onWorkers) await checkWorkersIdle(st.device.net.net.dataPlane as WorkerPool | null);
  },
  async finish(st) {
    await checkServes(st, 'end of case');
  },
  async dispose(st) {
    dropGuest(st);
    st.client?.close();
    try {
      await within(st.server.waitForDisconnect(), 2000);
      await st.server.close();
      st.device.close();
      // The next case's baseline must not count these workers' descriptors.
      await within((st.device.net.net.dataPlane as WorkerPool | null)?.exited() ?? Promise.resolve(), 5000);
    } catch (e) {
      console.error(`vfio-user fuzz cleanup: ${describeError(e)}`);
    }
    rmSync(st.dir, { recursive: true, force: true });
  },
  describe,
  counters: (st) => {
    const s = st.server.stats();
    return {
      ...st.counters,
      requests: Object.values(s.requests).reduce((a, b) => a + b, 0),
      casesOnWorkers: st.onWorkers ? 1 : 0,
    };
  },
};
