/**
 * A guest-memory region removed from GuestMemory (what the vfio-user server does on DMA_UNMAP and when a
 * client disconnects) must not stay reachable from the tap backend: the server replaces an unmapped range
 * with an anonymous placeholder that lives until the garbage collector drops the last view, so a view kept
 * in a cache holds the guest's whole RAM size of address space (found by test/guest/reconnect.test.ts:
 * 512 MiB of external memory after QEMU was killed, held by the tap's ReceiveTarget and address cache).
 */
import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { udpFrame } from '../tap/frames.test-support.js';
import {
  faultRig,
  GUEST_IP,
  heapAfterGc,
  KERNEL_IP,
  PY_FLOOD,
  sleep,
  unavailable,
} from './rig.test-support.js';

if (unavailable && process.env.CI) throw new Error(`fault tests cannot run in CI: ${unavailable}`);

describe.skipIf(unavailable !== null)(
  `guest regions released by the tap${unavailable ? ` (skipped: ${unavailable})` : ''}`,
  () => {
    it('after zero-copy traffic both ways, a removed region is garbage once the device was reset', {
      timeout: 30_000,
    }, async () => {
      let bytes: Uint8Array | undefined = new Uint8Array(80 << 20);
      const region = new WeakRef(bytes);
      const memory = new GuestMemory([{ address: 0, bytes }]);
      bytes = undefined;
      // Batched reads copy from the tap's own slots: this is about the lent (zero-copy) path, so one read each.
      const r = faultRig({ queues: 2, memory, tap: { batchRx: false } });
      try {
        const child = r.ns.spawn('python3', ['-c', PY_FLOOD, GUEST_IP, '7000', '8', '1000', '200000']);
        // Frames of 1000 bytes are read straight into guest buffers (lent); the guest's go out by transmitRange.
        for (let end = Date.now() + 40_000; Date.now() < end && r.tap.stats().rxDirect < 200; ) {
          for (let p = 0; p < 2; p++)
            r.drv.send(udpFrame(GUEST_IP, KERNEL_IP, 47000, 5563, new Uint8Array(600)), { pair: p });
          r.drain();
          await sleep(2);
        }
        child.kill('SIGKILL');
        expect(r.tap.stats().rxDirect).toBeGreaterThan(0);
        expect(r.tap.stats().txDirect).toBeGreaterThan(0);
        // The server's disconnect: reset the device, then remove the client's memory.
        r.dev.reset();
        expect(memory.removeRegion(0)).toBe(true);
        await sleep(50);
        heapAfterGc();
        expect(region.deref(), 'the removed region is still referenced').toBeUndefined();
      } finally {
        r.dispose();
      }
    });
  },
);
