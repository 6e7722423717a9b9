/**
 * `npm run demo -- --vfs`: two VFs of one SR-IOV virtio-net PF talk through the device's embedded switch
 * (no bridge anywhere). A synthetic guest enables 2 VFs, brings each up with its own virtio-net driver,
 * VF 0 pings VF 1 (ARP, then ICMP echo; VF 1's "stack" is a tiny responder), a spoofed frame from VF 0 is
 * dropped by the spoof check, and the demo prints the switch's per-port counters.
 */
import { arp, ethernet, icmpEcho, ipv4, PeerResponder } from '../devices/testing/frames.js';
import { VirtioNetDriver } from '../devices/testing/net-driver.js';
import { createVirtioNetPci, type VirtioNetPci } from '../devices/virtio-net-pci.js';
import { GuestMemory } from '../lib/memory/guest-memory.js';
import { MemoryBackend } from '../lib/net/memory-backend.js';
import { PCI_SRIOV_BAR, PCI_SRIOV_CTRL, PCI_SRIOV_NUM_VF } from '../pci/sriov.js';
import { BumpAllocator } from '../virtio/testing/bump-allocator.js';
import { InterruptCollector } from '../virtio/testing/pci-driver.js';

const SR = 0x100; // the PF's SR-IOV capability
const SLICE = 24 << 20;

export function sriovDemo(): number {
  const memory = new GuestMemory([{ address: 0, bytes: new Uint8Array(128 << 20) }]);
  const irq = new InterruptCollector();
  const uplink = new MemoryBackend();
  const nic = createVirtioNetPci({ memory, backend: uplink, interrupts: irq, sriov: { totalVfs: 4 } });
  nic.setVf(0, { mac: '02:00:00:00:00:10' });
  nic.setVf(1, { mac: '02:00:00:00:00:11', maxTxRateMbps: 100 });
  const driver = (fn: VirtioNetPci, slot: number) =>
    new VirtioNetDriver(fn, memory, {
      interrupts: irq,
      allocator: new BumpAllocator(0x100000 + slot * SLICE, 0x100000 + (slot + 1) * SLICE),
    });
  driver(nic, 0).open();
  // What Linux's PF driver does for `echo 2 > sriov_numvfs`: NumVFs, VF BARs, VF Enable + VF MSE + ARI.
  nic.configWrite(SR + PCI_SRIOV_NUM_VF, 2, 2);
  nic.configWrite(SR + PCI_SRIOV_BAR + 4, 4, 0xd000_0000);
  nic.configWrite(SR + PCI_SRIOV_BAR + 20, 4, 2);
  nic.configWrite(SR + PCI_SRIOV_CTRL, 2, 0x19);
  const [a, b] = [driver(nic.vfs[0]!, 1), driver(nic.vfs[1]!, 2)];
  a.open();
  b.open();
  console.log(
    `SR-IOV PF with ${nic.vfs.length} VFs enabled; VF 0 ${a.mac()} (10.9.0.1), VF 1 ${b.mac()} (10.9.0.2)`,
  );
  console.log(`VF 1 policy: ${JSON.stringify(nic.vfInfo(1))}`);

  const stackB = new PeerResponder(b.mac(), '10.9.0.2');
  const pump = () => {
    for (const r of b.receive(0)) {
      const reply = stackB.handle(r.frame);
      if (reply) b.send(reply);
    }
    return a.receive(0).map((r) => r.frame);
  };
  a.send(arp(1, a.mac(), '10.9.0.1', '00:00:00:00:00:00', '10.9.0.2'));
  const arpReply = pump().find((f) => f[12] === 0x08 && f[13] === 0x06);
  console.log(`ARP who-has 10.9.0.2 (broadcast, flooded) -> ${arpReply ? 'is-at from VF 1' : 'no answer'}`);
  let replies = 0;
  for (let seq = 1; seq <= 3; seq++) {
    const echo = icmpEcho(8, 0x77, seq, new TextEncoder().encode(`ping ${seq}`));
    a.send(ethernet(b.mac(), a.mac(), 0x0800, ipv4('10.9.0.1', '10.9.0.2', 1, echo)));
    const got = pump().filter((f) => f[23] === 1 && f[34] === 0).length;
    replies += got;
    console.log(`ICMP echo seq ${seq} VF 0 -> VF 1: ${got ? 'reply' : 'lost'}`);
  }
  // Spoof check (on by default): a frame with someone else's source MAC never leaves VF 0.
  a.send(ethernet(b.mac(), '02:66:66:66:66:66', 0x0800, ipv4('10.9.0.1', '10.9.0.2', 17, new Uint8Array(8))));
  pump();

  const s = nic.stats().switch!;
  const rows = [
    ['uplink', s.uplink],
    ['PF', s.pf],
    ...s.vfs.map((v) => [`VF ${v.index}`, v] as const),
  ] as const;
  console.log('\nport     rx frames  tx frames  spoof  filter  vlan  no-buffer  link-down');
  for (const [name, p] of rows) {
    console.log(
      `${name.padEnd(8)} ${String(p.rxFrames).padStart(9)} ${String(p.txFrames).padStart(10)} ${String(p.dropSpoof).padStart(6)}` +
        ` ${String(p.dropFilter).padStart(7)} ${String(p.dropVlan).padStart(5)} ${String(p.dropNoBuffer).padStart(10)}` +
        ` ${String(p.dropLinkDown).padStart(10)}`,
    );
  }
  console.log(
    `\n${replies}/3 echo replies through the switch; the uplink saw ${uplink.stats().transmitted} frame(s) (the flooded ARP)`,
  );
  nic.close();
  return replies === 3 && arpReply ? 0 : 1;
}
