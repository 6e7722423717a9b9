/**
 * `npm run demo -- --v86`: v86 (npm `v86`) boots Debian's i386 kernel with virtio-net-ts as its only NIC
 * (attachToV86) and the guest pings an in-memory peer (MemoryBackend + PeerResponder: no privileges).
 * Needs the kit of test/v86/prepare.sh (run it once as root) and the v86 package; takes about a minute.
 */
import { PeerResponder } from '../devices/testing/frames.js';
import { MemoryBackend } from '../lib/net/memory-backend.js';
import { bootV86, v86UnavailableReason } from './v86-guest.js';

const PEER = { ip: '10.0.0.1', mac: '02:00:00:00:00:01' };
const GUEST_IP = '10.0.0.2';

/** The guest's /init.sh: the stock virtio modules, eth0 up, three pings; console lines marked DEMO. */
const INIT = `export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
dmesg -n 1
echo "RESULT init=1"
for m in failover net_failover virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_net; do
  insmod /mods/$m.ko
done
ip link set eth0 up && ip addr add ${GUEST_IP}/24 dev eth0
P=$(readlink -f /sys/class/net/eth0/device/..)
echo "DEMO eth0 $(cat /sys/class/net/eth0/address), PCI $(basename $P), driver $(basename $(readlink $P/driver))"
ping -c 3 ${PEER.ip} 2>&1 | sed 's/^/DEMO /'
echo "RESULT done=1"
poweroff -f
`;

export async function v86Demo(): Promise<number> {
  const why = v86UnavailableReason();
  if (why) {
    console.error(`demo --v86: ${why}`);
    return 1;
  }
  const backend = new MemoryBackend();
  const peer = new PeerResponder(PEER.mac, PEER.ip);
  backend.onFrame((frame, q) => {
    const reply = peer.handle(frame);
    if (reply) backend.inject(reply, q);
  });
  console.log(`v86 boots Debian's i386 kernel; virtio-net-ts is its NIC, an in-memory peer is ${PEER.ip}`);
  const t0 = performance.now();
  const g = await bootV86({
    initSh: INIT,
    device: { backend, mac: '52:54:00:12:34:56' },
    acpi: true,
    cmdline: 'quiet',
    params: {},
    onLine: (line) => {
      if (line.startsWith('DEMO ')) console.log(`guest: ${line.slice(5)}`);
    },
  });
  try {
    await g.done(240_000);
  } finally {
    await g.destroy();
  }
  const s = g.attachment!.stats();
  console.log(
    `booted to /init in ${g.bootMs === null ? '?' : (g.bootMs / 1000).toFixed(1)} s, done after ${((performance.now() - t0) / 1000).toFixed(1)} s; ` +
      `peer answered ${peer.arpAnswered} ARP, ${peer.echoAnswered} echo; ${s.msiDelivered} MSI-X messages, wasm memory re-viewed ${s.memoryRemaps}x`,
  );
  return peer.echoAnswered >= 3 ? 0 : 1;
}
