// QEMU 11.1's `-device virtio-net-pci,help` (fixtures/qemu-11.1/virtio-net-pci.help.txt): every property
// it lists is known to parseQemuDevice and honoured (with QEMU's default as ours), ignored as QEMU
// plumbing, accepted at the value we implement, or refused naming the property and the reason; and the
// properties this project added for that (failover, gso on legacy, any_layout, notify_on_empty, hash-*,
// disable-legacy=auto) change what the guest sees.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { OptionsError } from '../../lib/errors.js';
import { GuestMemory } from '../../lib/memory/guest-memory.js';
import { MemoryBackend } from '../../lib/net/memory-backend.js';
import { VIRTIO_F_ANY_LAYOUT, VIRTIO_F_NOTIFY_ON_EMPTY } from '../../virtio/features.js';
import { LEGACY } from '../../virtio/pci/legacy.js';
import { BumpAllocator } from '../../virtio/testing/bump-allocator.js';
import { InterruptCollector, VirtioPciDriver } from '../../virtio/testing/pci-driver.js';
import { VirtioNetDriver } from '../testing/net-driver.js';
import { createVirtioNetPci } from '../virtio-net-pci.js';
import { NetConfig } from './config.js';
import { NetF } from './features.js';
import { parseVirtioNetPciOptions } from './options.js';
import type { VirtioNetPciOptions } from './options-types.js';
import { parseQemuDevice, QEMU_PROPERTIES } from './qemu-device.js';

const FIXTURE = resolve(import.meta.dirname, '../../fixtures/qemu-11.1/virtio-net-pci.help.txt');

/** name, type and default of each property line ("  name=<type>  - text (default: X)"). */
function qemuProperties(): { name: string; type: string; def: string | undefined }[] {
  const out = [];
  for (const line of readFileSync(FIXTURE, 'utf8').split('\n')) {
    const m = /^ {2}([A-Za-z0-9_-]+)=<([^>]+)>(.*)$/.exec(line);
    if (!m) continue;
    const def = /\(default: (.*)\)\s*$/.exec(m[3]!)?.[1];
    out.push({ name: m[1]!, type: m[2]!, def });
  }
  return out;
}

const base = () => ({
  memory: new GuestMemory([{ address: 0, bytes: new Uint8Array(4096) }]),
  backend: new MemoryBackend(),
  interrupts: { msi() {} },
});

/** QEMU's spelling of one of our default values. */
function qemuSpelling(v: unknown): string {
  if (v === true) return 'on';
  if (v === false) return 'off';
  return String(v);
}

describe("QEMU 11.1's virtio-net-pci properties", () => {
  const props = qemuProperties();

  it('the fixture is the whole list (93 lines, 92 properties, QEMU 11.1)', () => {
    expect(props.length).toBe(92);
    expect(props.map((p) => p.name)).toContain('failover');
  });

  it('every property QEMU lists is in the table', () => {
    const missing = props.map((p) => p.name).filter((n) => !Object.hasOwn(QEMU_PROPERTIES, n));
    expect(missing).toEqual([]);
  });

  // Properties whose QEMU default is a sentinel we spell differently.
  const SENTINEL: Record<string, string> = {
    vectors: '4294967295 means "2 * queues + 2" in QEMU, as our default does',
  };

  const NO_DEFAULT_SAMPLE: Record<string, [string, unknown]> = {
    vectors: ['10', 10],
    mac: ['52:54:00:00:00:09', '52:54:00:00:00:09'],
    duplex: ['full', 'full'],
  };

  for (const p of qemuProperties()) {
    const h = QEMU_PROPERTIES[p.name];
    if (!h) continue;
    it(`${p.name}: ${h.kind}${h.kind === 'option' ? '' : ` (${h.reason})`}`, () => {
      const sample = p.def ?? 'x';
      switch (h.kind) {
        case 'option': {
          if (p.def === undefined || SENTINEL[p.name]) {
            const v = NO_DEFAULT_SAMPLE[p.name]!;
            const o = parseQemuDevice(`virtio-net-pci,${p.name}=${v[0]}`);
            expect(o).toEqual({ [p.name]: v[1] });
            expect(() => parseVirtioNetPciOptions({ ...base(), ...o })).not.toThrow();
            break;
          }
          // QEMU's default parses to exactly our default.
          const parsed = parseQemuDevice(`virtio-net-pci,${p.name}=${p.def}`);
          const ours = parseVirtioNetPciOptions(base()) as unknown as Record<string, unknown>;
          const key = p.name as keyof VirtioNetPciOptions;
          expect(Object.keys(parsed)).toEqual([key]);
          const resolved = parseVirtioNetPciOptions({ ...base(), ...parsed }) as unknown as Record<
            string,
            unknown
          >;
          expect(resolved[key], `${p.name}=${p.def}`).toEqual(ours[key]);
          expect(qemuSpelling(parsed[key]).toLowerCase()).toBe(p.def.toLowerCase());
          break;
        }
        case 'ignored':
          expect(parseQemuDevice(`virtio-net-pci,${p.name}=${sample}`)).toEqual({});
          expect(h.reason.length).toBeGreaterThan(20);
          break;
        case 'only': {
          expect(p.def, 'QEMU default is the value we implement').toBe(h.values[0]);
          for (const v of h.values) expect(parseQemuDevice(`virtio-net-pci,${p.name}=${v}`)).toEqual({});
          const other = h.values.includes('on') ? 'off' : 'on';
          const refused = () => parseQemuDevice(`virtio-net-pci,${p.name}=${other}`);
          expect(refused).toThrow(OptionsError);
          expect(refused).toThrow(`"${p.name}" accepts only ${h.values.join(', ')}: ${h.reason}`);
          break;
        }
        case 'refused': {
          const refused = () => parseQemuDevice(`virtio-net-pci,${p.name}=${sample}`);
          expect(refused).toThrow(OptionsError);
          expect(refused).toThrow(`property "${p.name}" is not supported: ${h.reason}`);
          break;
        }
      }
    });
  }

  it('an unknown property is refused, listing the accepted ones', () => {
    expect(() => parseQemuDevice('virtio-net-pci,nosuch=1')).toThrow(
      /unknown property "nosuch"; accepted: .*\bfailover\b.*\bmq\b/,
    );
  });

  it('a whole QEMU command-line device parses and builds a device', () => {
    const o = parseQemuDevice(
      'virtio-net-pci,netdev=n0,id=nic0,bus=pcie.0,addr=0x3,romfile=,bootindex=1,mq=on,vectors=10,' +
        'disable-legacy=auto,failover=on,host_tunnel=on,ioeventfd=off,x-pcie-flr-init=on',
    );
    expect(o).toEqual({ mq: true, vectors: 10, 'disable-legacy': 'auto', failover: true, host_tunnel: true });
    expect(() => createVirtioNetPci({ ...base(), ...o })).not.toThrow();
  });
});

function bench(options: Partial<VirtioNetPciOptions>) {
  const memory = new GuestMemory([{ address: 0, bytes: new Uint8Array(0x2000000) }]);
  const interrupts = new InterruptCollector();
  const dev = createVirtioNetPci({ memory, backend: new MemoryBackend(), interrupts, ...options });
  const pci = new VirtioPciDriver(dev, memory, {
    allocator: new BumpAllocator(0x100000, 0x2000000),
    interrupts,
  });
  pci.probe();
  const bars = pci.assignBars();
  const legacyBar = bars.some((b) => b.io && b.index === 0);
  const legacyFeatures = () => BigInt(Number(dev.barRead(0, LEGACY.hostFeatures, 4)) >>> 0);
  return { dev, pci, legacyBar, legacyFeatures, memory, interrupts };
}

const bit = (f: bigint, n: number) => (f >> BigInt(n)) & 1n;

describe('the properties behind QEMU vocabulary', () => {
  it('disable-legacy=auto: legacy I/O BAR0 on conventional PCI, none behind a PCIe port (virtio_pci_realize)', () => {
    expect(bench({ bus: 'pci', 'disable-legacy': 'auto' }).legacyBar).toBe(true);
    expect(bench({ bus: 'pcie', 'disable-legacy': 'auto' }).legacyBar).toBe(false);
    expect(bench({ bus: 'pcie', 'disable-legacy': 'off' }).legacyBar).toBe(true);
    expect(bench({ bus: 'pci', 'disable-legacy': 'on' }).legacyBar).toBe(false);
    expect(() =>
      parseVirtioNetPciOptions({ ...base(), 'disable-legacy': 'on', 'disable-modern': true }),
    ).toThrow(/leaves no interface/);
  });

  it('failover=on offers VIRTIO_NET_F_STANDBY (bit 62); off by default', () => {
    expect(bit(bench({ failover: true }).pci.deviceFeatures(), NetF.STANDBY)).toBe(1n);
    expect(bit(bench({}).pci.deviceFeatures(), NetF.STANDBY)).toBe(0n);
  });

  it('gso: VIRTIO_NET_F_GSO (bit 6) on the legacy interface only, as QEMU legacy_features; gso=off drops it', () => {
    const b = bench({ bus: 'pci' });
    expect(bit(b.legacyFeatures(), NetF.GSO)).toBe(1n);
    expect(bit(b.pci.deviceFeatures(), NetF.GSO)).toBe(0n);
    expect(bit(bench({ bus: 'pci', gso: false }).legacyFeatures(), NetF.GSO)).toBe(0n);
    // A legacy driver may negotiate it.
    b.dev.barWrite(0, LEGACY.guestFeatures, 4, 1 << NetF.GSO);
    expect(Number(b.dev.barRead(0, LEGACY.guestFeatures, 4))).toBe(1 << NetF.GSO);
  });

  it('any_layout / notify_on_empty: the legacy-only transport bits 27 and 24 follow the options', () => {
    const on = bench({ bus: 'pci' }).legacyFeatures();
    expect([bit(on, VIRTIO_F_ANY_LAYOUT), bit(on, VIRTIO_F_NOTIFY_ON_EMPTY)]).toEqual([1n, 1n]);
    const off = bench({ bus: 'pci', any_layout: false, notify_on_empty: false }).legacyFeatures();
    expect([bit(off, VIRTIO_F_ANY_LAYOUT), bit(off, VIRTIO_F_NOTIFY_ON_EMPTY)]).toEqual([0n, 0n]);
  });

  it('hash-*=off withholds the type from supported_hash_types and an RSS config naming it is refused', () => {
    const memory = new GuestMemory([{ address: 0, bytes: new Uint8Array(0x4200000) }]);
    const dev = createVirtioNetPci({
      memory,
      backend: new MemoryBackend({ queues: 2 }),
      interrupts: new InterruptCollector(),
      ...parseQemuDevice('virtio-net-pci,mq=on,rss=on,hash-tcp6=off,hash-udp6ex=off'),
      queues: 2,
    });
    const driver = new VirtioNetDriver(dev, memory);
    driver.open();
    const supported = driver.pci.readDeviceConfig(NetConfig.SUPPORTED_HASH_TYPES, 4);
    expect(supported).toBe(0x1ff & ~(1 << 4) & ~(1 << 8));
    const key = new Uint8Array(40).fill(7);
    expect(driver.setRss({ hashTypes: 1 << 4, table: [0, 1], key })).toBe(1); // VIRTIO_NET_ERR
    expect(driver.setRss({ hashTypes: 1 << 1, table: [0, 1], key })).toBe(0); // TCPv4 still supported
    expect(bench({ mq: true, rss: true, queues: 2 }).dev.net.supportedHashTypes).toBe(0x1ff);
  });
});
