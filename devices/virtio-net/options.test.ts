import { describe, expect, it } from 'vitest';
import { OptionsError } from '../../lib/errors.js';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { MemoryBackend } from '../../lib/net/memory-backend.js';
import { offeredNetFeatures } from './features.js';
import { parseVirtioNetPciOptions } from './options.js';
import { parseQemuDevice } from './qemu-device.js';

const base = () => ({
  memory: new GuestMemory([{ address: 0, bytes: new Uint8Array(4096) }]),
  backend: new MemoryBackend(),
  interrupts: { msi() {} },
});

describe('virtio-net-pci options', () => {
  it("applies QEMU's defaults", () => {
    const o = parseVirtioNetPciOptions(base());
    expect(o.mac).toBe('52:54:00:12:34:56');
    expect(o.mq).toBe(false);
    expect(o.rx_queue_size).toBe(256);
    expect(o.vectors).toBe(4); // 2 * queues + 2
    expect(o['disable-legacy']).toBe(true); // behind a PCIe port
    expect(parseVirtioNetPciOptions({ ...base(), bus: 'pci' })['disable-legacy']).toBe(false);
  });

  it('offers what QEMU 7.2 offers with a vnet-header tap (device bits of 0x0000010130bfffa7)', () => {
    const o = parseVirtioNetPciOptions({ ...base(), guest_uso4: false, guest_uso6: false, host_uso: false });
    const f = offeredNetFeatures(o, new MemoryBackend().capabilities);
    expect(f).toBe(0x0000010130bfffa7n & 0xffffffffn & ~(0x3n << 28n)); // minus INDIRECT/EVENT_IDX (transport bits)
  });

  it('drops every checksum/GSO/hash bit without a vnet header, as QEMU does', () => {
    const o = parseVirtioNetPciOptions({ ...base(), hash: true, rss: true, mq: true, queues: 2 });
    const f = offeredNetFeatures(o, new MemoryBackend({ vnetHeader: false }).capabilities);
    for (const b of [0, 1, 7, 8, 9, 10, 11, 12, 13, 14, 54, 55, 56, 57])
      expect((f >> BigInt(b)) & 1n).toBe(0n);
    expect((f >> 60n) & 1n).toBe(1n); // RSS stays
  });

  it.each([
    [{ mq: 'yes' }, /option "mq"/],
    [{ mac: '01:00:00:00:00:01' }, /option "mac".*unicast/],
    [{ mac: 'nope' }, /option "mac"/],
    [{ rx_queue_size: 100 }, /option "rx_queue_size".*power of two/],
    [{ bogus: 1 }, /unknown option "bogus"/],
    [{ bus: 'isa' }, /option "bus": expected one of "pcie", "pci"/],
    [{ queues: 4 }, /queues > 1 needs mq=on or rss=on/],
    [{ backend: {} }, /option "backend"/],
    [{ memory: null }, /option "memory"/],
  ])('rejects %j with a message naming the option', (patch, message) => {
    expect(() => parseVirtioNetPciOptions({ ...base(), ...patch })).toThrow(OptionsError);
    expect(() => parseVirtioNetPciOptions({ ...base(), ...patch })).toThrow(message);
  });
});

describe('parseQemuDevice', () => {
  it('maps a -device string to options', () => {
    expect(
      parseQemuDevice(
        'virtio-net-pci,mq=on,rss=on,hash=off,vectors=10,mac=52:54:00:00:00:02,netdev=n0,id=nic0',
      ),
    ).toEqual({
      mq: true,
      rss: true,
      hash: false,
      vectors: 10,
      mac: '52:54:00:00:00:02',
    });
    expect(parseQemuDevice('virtio-net-pci-non-transitional')).toEqual({ 'disable-legacy': true });
  });

  it("ignores QEMU's plumbing: its bus id (pcie.0, a root port), ioeventfd, id, netdev, addr", () => {
    const o = parseQemuDevice('virtio-net-pci,bus=pcie.0,ioeventfd=on,id=n0,netdev=hn0,addr=0x3,mq=on');
    expect(o).toEqual({ mq: true });
    expect(parseQemuDevice('virtio-net-pci,bus=rp0')).toEqual({});
    expect(parseQemuDevice('virtio-net-pci,bus=pci')).toEqual({ bus: 'pci' });
    expect(() =>
      parseVirtioNetPciOptions({ ...base(), ...parseQemuDevice('virtio-net-pci,bus=pcie.0') }),
    ).not.toThrow();
  });

  it('rejects unknown properties and malformed values', () => {
    expect(() => parseQemuDevice('virtio-net-pci,nonsense=on')).toThrow(
      /unknown property "nonsense"; accepted: .*\bid\b.*\bmq\b.*\bnetdev\b.*\brss\b/,
    );
    expect(() => parseQemuDevice('virtio-net-pci,memory=1')).toThrow(/unknown property "memory"/);
    expect(() => parseQemuDevice('virtio-net-pci,mq=maybe')).toThrow(/"mq" expects on or off/);
    expect(() => parseQemuDevice('virtio-net-pci,vectors=x')).toThrow(/"vectors" expects an integer/);
    expect(() => parseQemuDevice('e1000,mq=on')).toThrow(/not virtio-net-pci/);
  });
});
