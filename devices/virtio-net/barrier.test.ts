/**
 * The device's side of the notification handshake with a driver on another CPU (VIRTIO 1.3 §2.7.10,
 * §2.7.7.2; QEMU's smp_mb() in virtio_should_notify and after setting avail_event). The race is modelled
 * by a guest-memory read that returns the avail idx as it was before the driver's last store (what a
 * store-buffered CPU may show): the device must look again after publishing what it waits for, or the
 * queue stalls, since the driver will not kick again.
 */
import { describe, expect, it } from 'vitest';
import { openBench, rawFrame } from './bench.test-support.js';

/** Makes the next `count` 16-bit reads at `address` return `stale` (the value before the driver's store). */
function staleReads(
  memory: { readU16(a: number | bigint): number },
  address: number,
  stale: number,
  count: number,
) {
  const real = memory.readU16.bind(memory);
  let left = count;
  memory.readU16 = (a: number | bigint) => {
    if (left > 0 && Number(a) === address) {
      left--;
      return stale;
    }
    return real(a);
  };
  return () => left;
}

const tick = () => new Promise((r) => setImmediate(r));

describe('virtio-net: out of rx buffers against a driver on another CPU', () => {
  // Direct receive looks at the ring twice before backlogging (the lend, then the copying path).
  for (const [mode, looks] of [
    ['copy', 1],
    ['direct', 2],
  ] as const) {
    it(`a frame that found the ring empty is delivered when buffers appeared meanwhile, without a kick (${mode})`, async () => {
      const b = openBench({}, { receive: mode }, { rxBuffers: 0 });
      const { driver, backend, memory } = b;
      const q = driver.queue(driver.rxIndex(0));
      // The driver posts (and kicks for) 4 buffers; the device has not looked at the ring since.
      driver.postRx(0, 4);
      const availIdxAddr = q.config.driverAddr + 2;
      // The device's first look sees the ring as it was before those stores: empty.
      const left = staleReads(memory, availIdxAddr, 0, looks);
      const frame = rawFrame(80, undefined, undefined, 1);
      backend.inject(frame);
      expect(left()).toBe(0); // the stale read happened: the frame was backlogged, not delivered
      expect(driver.receive(0)).toEqual([]);
      await tick();
      // No further kick: the device found the buffers on its second look and delivered.
      const got = driver.receive(0);
      expect(got.map((f) => f.frame)).toEqual([frame]);
      const st = b.dev.stats() as {
        queues: { rxPackets: number; rxBacklogged: number }[];
        rxDropped: number;
      };
      expect([st.queues[0]?.rxPackets, st.queues[0]?.rxBacklogged, st.rxDropped]).toEqual([1, 1, 0]);
    });
  }

  it('tx: a chain the driver added while the device was re-enabling kicks is sent without another kick', () => {
    const b = openBench();
    const { driver, memory, sent } = b;
    const q = driver.queue(driver.txIndex(0));
    const availIdxAddr = q.config.driverAddr + 2;
    const first = rawFrame(70, undefined, undefined, 3);
    const second = rawFrame(90, undefined, undefined, 4);
    // The device's 2nd look at the avail idx (after popping the first chain) is where the driver adds the
    // second chain without kicking (it read an old avail_event), and that pop attempt still sees the old
    // idx; the re-check after enableNotification's fence sees the new one.
    const real = memory.readU16.bind(memory);
    let reads = 0;
    memory.readU16 = (a: number | bigint) => {
      if (Number(a) !== availIdxAddr) return real(a);
      reads++;
      if (reads === 2) q.add([Uint8Array.from([...new Uint8Array(driver.hdrSize), ...second])], []);
      if (reads === 2) return 1;
      return real(a);
    };
    driver.send(first);
    expect(reads).toBeGreaterThanOrEqual(3); // the device looked again after enabling kicks
    expect(sent.map((f) => f.frame)).toEqual([first, second]);
  });

  it('a ring that is really empty stays backlogged until the kick, and nothing is lost', async () => {
    const b = openBench({}, {}, { rxBuffers: 0 });
    const { driver, backend } = b;
    const frame = rawFrame(80, undefined, undefined, 2);
    backend.inject(frame);
    await tick();
    expect(driver.receive(0)).toEqual([]);
    driver.postRx(0, 4); // kicks: the device asked for it through avail_event
    const got = driver.receive(0);
    expect(got.map((f) => f.frame)).toEqual([frame]);
  });
});
