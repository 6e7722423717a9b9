// A control command with a zero-length readable descriptor inside it (Linux 6.x sent RSS_CONFIG with an
// empty key descriptor when the device's rss_max_key_size was 0). QEMU refuses any zero-sized buffer
// (virtqueue_map_desc: "zero sized buffers are not allowed" → NEEDS_RESET, and the guest spins on its
// command forever); we read the command across it (docs/compatibility.md).
import { describe, expect, it } from 'vitest';
import { CtrlClass, VIRTIO_NET_OK } from './control-queue.js';
import { openBench, rawFrame } from './bench.test-support.js';

describe('control command with a zero-length readable descriptor', () => {
  it('is read across the empty descriptor and acked; the device stays usable', () => {
    const b = openBench();
    const q = b.driver.queue(2);
    const ack = b.driver.pci.allocator.alloc(1, 1);
    b.memory.write(ack, Uint8Array.of(0xee));
    q.add([Uint8Array.of(CtrlClass.RX, 0), new Uint8Array(0), Uint8Array.of(1)], [{ addr: ack, len: 1 }]);
    b.driver.pci.kick(2);
    expect(q.getUsed()?.len).toBe(1);
    expect(b.memory.read(ack, 1)[0]).toBe(VIRTIO_NET_OK);
    expect(b.driver.pci.status & 0x40).toBe(0);
    b.backend.inject(rawFrame(60, '52:54:00:99:99:99'));
    expect(b.driver.receive()).toHaveLength(1); // promiscuous: the data byte after the empty descriptor
  });

  it('a command whose readable part is empty altogether is a device error, as in QEMU', () => {
    const b = openBench();
    const q = b.driver.queue(2);
    q.add([new Uint8Array(0)], [new Uint8Array(1)]);
    b.driver.pci.kick(2);
    expect(b.driver.pci.status & 0x40).toBe(0x40);
  });
});
