import { readFileSync, writeFileSync } from 'node:fs';
import * as B from '../../../lib/net/frames.test-support.js';
import { rssHash } from '../../../lib/net/rss-hash.js';

const KEY = B.hex('6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa');
const h = (u: Uint8Array) => Buffer.from(u).toString('hex');
const pad = (f: Uint8Array) => (f.length >= 60 ? f : B.concat(f, new Uint8Array(60 - f.length)));
const v4 = { src: '66.9.149.187', dst: '161.142.100.80', sp: 2794, dp: 1766 };
const v6 = { src: '3ffe:2501:200:1fff::7', dst: '3ffe:2501:200:3::1', sp: 2794, dp: 1766 };
const tcp4 = (sp = v4.sp, dp = v4.dp, fragField = 0x4000) =>
  B.eth(
    0x0800,
    B.ipv4({ src: v4.src, dst: v4.dst, proto: 6, fragField, payload: B.tcp(sp, dp, new Uint8Array(20)) }),
  );
const udp4 = () =>
  B.eth(
    0x0800,
    B.ipv4({ src: v4.src, dst: v4.dst, proto: 17, payload: B.udp(v4.sp, v4.dp, new Uint8Array(20)) }),
  );
const tcp6 = (sp = v6.sp, dp = v6.dp) =>
  B.eth(0x86dd, B.ipv6(v6.src, v6.dst, 6, B.tcp(sp, dp, new Uint8Array(20))));
const udp6 = () => B.eth(0x86dd, B.ipv6(v6.src, v6.dst, 17, B.udp(v6.sp, v6.dp, new Uint8Array(20))));
const exTcp6 = () =>
  B.eth(
    0x86dd,
    B.ipv6(
      v6.src,
      v6.dst,
      60,
      B.concat(
        B.optionsHeader(43, B.homeAddressOption('2001:db8::aaaa')),
        B.routingType2(6, '2001:db8::bbbb'),
        B.tcp(v6.sp, v6.dp, new Uint8Array(20)),
      ),
    ),
  );
const hbhTcp6 = () =>
  B.eth(
    0x86dd,
    B.ipv6(
      v6.src,
      v6.dst,
      0,
      B.concat(B.optionsHeader(6, new Uint8Array(4)), B.tcp(v6.sp, v6.dp, new Uint8Array(20))),
    ),
  );
const frag6 = (off: number) =>
  B.eth(
    0x86dd,
    B.ipv6(
      v6.src,
      v6.dst,
      44,
      B.concat(B.fragmentHeader(6, off, true), B.tcp(1111, 2222, new Uint8Array(20))),
    ),
  );
const vlan2 = () =>
  B.eth(0x0800, tcp4().slice(14), [
    [0x88a8, 5],
    [0x8100, 7],
  ]);
const badVer4 = () => {
  const f = tcp4();
  f[14] = 0x05;
  return f;
}; // version 0, IHL 5
const ihl3 = () => {
  const f = tcp4();
  f[14] = 0x43;
  return f;
};
const ALL = 0x1ff;
const cases: { name: string; frame: string; hash_types: number }[] = [];
const add = (name: string, f: Uint8Array, t: number) => cases.push({ name, frame: h(pad(f)), hash_types: t });
add('tcp4 all', tcp4(), ALL);
add('udp4 all', udp4(), ALL);
add('tcp6 all', tcp6(), ALL);
add('udp6 all', udp6(), ALL);
add('vlan2 tcp4 all', vlan2(), ALL);
add('tcp4 prev (ports 1111/2222)', tcp4(1111, 2222), ALL);
add('ipv4 MF fragment after tcp4 1111/2222', tcp4(3333, 4444, 0x2000), ALL);
add('ipv4 offset fragment', tcp4(3333, 4444, 0x0005), ALL);
add('ipv4 version 0', badVer4(), ALL);
add('ipv4 ihl 3', ihl3(), ALL);
add('tcp6 noext (prev ports)', tcp6(1111, 2222), ALL);
add('ipv6 non-first fragment after 1111/2222', frag6(10), ALL);
add('ipv6 first fragment', frag6(0), ALL);
add('hbh tcp6 all', hbhTcp6(), ALL);
add('ex tcp6 all', exTcp6(), ALL);
const T = { IPv4: 1, TCPv4: 2, UDPv4: 4, IPv6: 8, TCPv6: 16, UDPv6: 32, IP_EX: 64, TCP_EX: 128, UDP_EX: 256 };
add('ex tcp6 TCPv6|IPv6', exTcp6(), T.TCPv6 | T.IPv6);
add('ex tcp6 TCPv6|IP_EX', exTcp6(), T.TCPv6 | T.IP_EX);
add('ex tcp6 IP_EX', exTcp6(), T.IP_EX);
add('tcp6 noext TCP_EX only', tcp6(), T.TCP_EX);
add('tcp6 noext TCP_EX|TCPv6', tcp6(), T.TCP_EX | T.TCPv6);
add('tcp6 noext IP_EX only', tcp6(), T.IP_EX);
add('tcp4 TCPv6 only', tcp4(), T.TCPv6);
add('udp4 TCPv4 only', udp4(), T.TCPv4);
add('hbh tcp6 TCPv6|IP_EX', hbhTcp6(), T.TCPv6 | T.IP_EX);

if (process.argv[2] === 'gen') writeFileSync('/tmp/rssoracle/cases.json', JSON.stringify(cases, null, 1));
else {
  const res = JSON.parse(readFileSync(process.argv[3] ?? '/tmp/rssoracle/out.json', 'utf8'));
  for (const r of res) {
    const ours = rssHash(B.hex(r.frame), r.hash_types, KEY);
    const q = r.qemu;
    const oq = ours ? (ours.hash & 127) % 4 : 0;
    const same =
      q && (ours ? q.report === ours.reportType && q.hash === ours.hash : q.report === 0) && q.queue === oq;
    console.log(
      `${same ? 'SAME' : 'DIFF'} ${r.name.padEnd(42)} types=0x${r.hash_types.toString(16).padStart(3, '0')} qemu=${q ? `q${q.queue} rep${q.report} 0x${q.hash.toString(16).padStart(8, '0')}` : 'none'}  ours=${ours ? `q${oq} rep${ours.reportType} 0x${ours.hash.toString(16).padStart(8, '0')}` : 'q0 rep0 (unclassified)'}`,
    );
  }
}
