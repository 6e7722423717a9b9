// v86 with virtio-net-ts beside v86 with its own virtio-net, in one run: boot to /init and guest TCP
// throughput (4 MiB each way, timed by the guest) over a tap in a fresh network namespace. v86's NIC is
// bridged to its tap through v86's bus events (net0-send / net0-receive). Root; the v86 kit
// (test/v86/prepare.sh). Run: node --import tsx bench/v86.bench.ts [msix] [intx] [v86]
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { bootV86, v86UnavailableReason } from '../examples/v86-guest.js';
import { NetNamespace, netnsUnavailableReason } from '../lib/host/netns.js';
import { TapBackend } from '../lib/tap/tap-backend.js';

const PEER = join(import.meta.dirname, '../test/guest/tcp-peer.mjs');
const HOST = '10.77.7.1';
const GUEST = '10.77.7.2';
const BYTES = 4 << 20;

const INIT = `export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mount -t tmpfs tmp /tmp
dmesg -n 1
echo "RESULT init=1"
for m in failover net_failover virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_net; do
  insmod /mods/$m.ko
done
echo "RESULT stage=modules"
ip link set eth0 up && ip addr add ${GUEST}/24 dev eth0
up() { cut -d' ' -f1 /proc/uptime; }
ping -c 2 -W 5 ${HOST} >/dev/null
echo "RESULT stage=pinged"
dd if=/dev/urandom of=/tmp/tx bs=65536 count=${BYTES / 65536} 2>/dev/null
echo "RESULT stage=tx"
a=$(up); nc -w 10 ${HOST} 5001 < /tmp/tx; b=$(up); echo "RESULT tx_s=$(echo $b $a | awk '{print $1 - $2}')"
rm /tmp/tx
nc -l -p 5002 > /tmp/rx & p=$!; sleep 0.2; echo "RESULT rx_listening=5002"
while [ ! -s /tmp/rx ]; do sleep 0.05; done; a=$(up); wait $p; b=$(up)
echo "RESULT rx_s=$(echo $b $a | awk '{print $1 - $2}') rx_bytes=$(wc -c < /tmp/rx)"
echo "RESULT done=1"
poweroff -f
`;

function lineFrom(child: ChildProcess, re: RegExp): Promise<string> {
  return new Promise((resolve) => {
    let buf = '';
    child.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = buf.split('\n').find((l) => re.test(l));
      if (m) resolve(m);
    });
  });
}

async function run(nic: 'virtio-net-ts' | 'v86 virtio', acpi: boolean): Promise<string> {
  const ns = NetNamespace.create('vntb');
  const tap = TapBackend.open({ name: 'vntb0', netns: ns.name, vnetHeader: nic === 'virtio-net-ts' });
  ns.configure('vntb0', `${HOST}/24`);
  const recv = ns.spawn('node', [PEER, 'recv', HOST, '5001']);
  await lineFrom(recv, /^ready$/);
  try {
    const g = await bootV86({
      initSh: INIT,
      device: nic === 'virtio-net-ts' ? { backend: tap, mac: '52:54:00:77:07:02' } : { v86Nic: 'virtio' },
      acpi,
      cmdline: acpi ? 'quiet' : 'quiet pci=nomsi',
      params: {},
      onResult: (k, v) => {
        if (k === 'rx_listening') ns.spawn('node', [PEER, 'send', GUEST, v, String(BYTES)]);
      },
    });
    if (nic === 'v86 virtio') {
      // v86's NIC: its frames to the tap and back (no vnet header, one queue).
      const e = g.emulator as unknown as { bus: { send(ev: string, data: Uint8Array): void } };
      tap.attach({ receive: (frame: Uint8Array) => e.bus.send('net0-receive', frame.slice()) });
      g.emulator.add_listener('net0-send', (frame: Uint8Array) => {
        tap.transmit(frame, 0, null);
        tap.flushTransmit?.(0);
      });
    }
    await g.done(400_000);
    await g.destroy();
    const r = g.results;
    const mbps = (s: string | undefined) => ((BYTES * 8) / Number(s) / 1e6).toFixed(1);
    return `| ${nic}, ${acpi ? 'ACPI, MSI-X' : 'no ACPI, INTx (8259 PIC)'} | ${g.bootMs === null ? '?' : (g.bootMs / 1000).toFixed(1)} s | ${mbps(r.tx_s)} Mbit/s (${r.tx_s} s) | ${mbps(r.rx_s)} Mbit/s (${r.rx_s} s, ${r.rx_bytes} B) |`;
  } finally {
    if (nic !== 'virtio-net-ts') tap.close();
    ns.delete();
  }
}

const why = v86UnavailableReason() ?? netnsUnavailableReason();
if (why) {
  console.error(`v86 bench: ${why}`);
  process.exit(1);
}
console.log('| NIC | boot to /init | guest → host TCP | host → guest TCP |\n| --- | --- | --- | --- |');
// v86's own NIC has no MSI-X, and with ACPI its guest loses every PCI slot but the bridges (SeaBIOS's
// hotplug ports read as all ones, which the adapter fixes only for itself): it runs without ACPI, beside
// ours both ways.
// Arguments pick rows (msix, intx, v86); none: all three.
const rows = process.argv.slice(2);
const want = (r: string) => rows.length === 0 || rows.includes(r);
if (want('msix')) console.log(await run('virtio-net-ts', true));
if (want('intx')) console.log(await run('virtio-net-ts', false));
if (want('v86')) console.log(await run('v86 virtio', false));
process.exit(0);
