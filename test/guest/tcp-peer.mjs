// Host side of the guest's TCP steps, run inside the test's network namespace (`ip netns exec NS node tcp-peer.mjs …`).
//   recv ADDR PORT         accept one connection, print `ready`, then `ms=T` (first byte to the peer's close)
//                          and `bytes=N sha256=HEX` when the peer closes
//   send ADDR PORT BYTES   connect (retrying for 10 s), print `connected`, send BYTES random bytes, print
//                          `bytes=N sha256=HEX` when the kernel has them (not yet when the peer has)
//   udp ADDR PORT COUNT FLOWS [P1,P2,...] [BURST] [MS]  send COUNT datagrams to ADDR:PORT round-robin from
//                          FLOWS sockets (source ports P1..., or kernel-chosen; RSS spreads them), BURST (8)
//                          every MS (2) milliseconds; print `sent=N`
// Exits by itself after 60 s (VNT_PEER_TIMEOUT_MS) whatever happens.
import { createHash, randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { connect, createServer } from 'node:net';

const [mode, addr, portText, bytesText] = process.argv.slice(2);
const port = Number(portText);
setTimeout(
  () => {
    console.log('timeout');
    process.exit(3);
  },
  Number(process.env.VNT_PEER_TIMEOUT_MS ?? 60_000),
).unref();

if (mode === 'recv') {
  const server = createServer((sock) => {
    const h = createHash('sha256');
    let n = 0;
    let t0 = 0;
    sock.on('data', (d) => {
      if (n === 0) t0 = performance.now();
      n += d.length;
      h.update(d);
    });
    sock.on('end', () => {
      console.log(`ms=${(performance.now() - t0).toFixed(1)}`);
      console.log(`bytes=${n} sha256=${h.digest('hex')}`);
      server.close();
      sock.destroy();
    });
    sock.on('error', (e) => {
      console.log(`error=${e.code}`);
      process.exit(1);
    });
  });
  server.listen(port, addr, () => console.log('ready'));
} else if (mode === 'send') {
  const total = Number(bytesText);
  const data = randomBytes(total);
  const sha = createHash('sha256').update(data).digest('hex');
  const t0 = Date.now();
  const attempt = () => {
    const sock = connect(port, addr, () => {
      console.log('connected');
      sock.end(data, () => console.log(`bytes=${total} sha256=${sha}`));
    });
    sock.on('error', (e) => {
      if (Date.now() - t0 < 10_000) setTimeout(attempt, 200);
      else {
        console.log(`error=${e.code}`);
        process.exit(1);
      }
    });
  };
  attempt();
} else if (mode === 'udp') {
  const count = Number(bytesText);
  const flows = Number(process.argv[6] ?? 16);
  // Source ports: a comma-separated list (one per flow), or the kernel's choice.
  const ports = (process.argv[7] ?? '').split(',').filter(Boolean).map(Number);
  const socks = Array.from({ length: flows }, () => createSocket('udp4'));
  const payload = Buffer.from('virtio-net-ts rss probe');
  const per = Number(process.argv[8] ?? 8);
  const everyMs = Number(process.argv[9] ?? 2);
  let sent = 0;
  const burst = () => {
    for (let i = 0; i < per && sent < count; i++, sent++) socks[sent % flows].send(payload, port, addr);
    if (sent < count) setTimeout(burst, everyMs);
    else
      setTimeout(() => {
        console.log(`sent=${sent}`);
        for (const s of socks) s.close();
      }, 50);
  };
  let bound = 0;
  for (const [i, s] of socks.entries())
    s.bind(ports[i] ?? 0, () => {
      if (++bound === flows) burst();
    });
} else {
  console.error(
    'usage: tcp-peer.mjs recv ADDR PORT | send ADDR PORT BYTES | udp ADDR PORT COUNT FLOWS [P1,P2,...] [BURST] [MS]',
  );
  process.exit(2);
}
