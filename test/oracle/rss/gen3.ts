import { writeFileSync } from 'node:fs';
import * as B from '../../../lib/net/frames.test-support.js';
import { toeplitzHash } from '../../../lib/net/toeplitz.js';

const KEY = B.hex('6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa');
const h = (u: Uint8Array) => Buffer.from(u).toString('hex');
const a = B.eth(
  0x0800,
  B.ipv4({ src: '10.9.9.9', dst: '1.2.3.4', proto: 6, payload: B.tcp(5, 6, new Uint8Array(20)) }),
);
const t = B.eth(
  0x0800,
  B.ipv4({ src: '66.9.149.187', dst: '161.142.100.80', proto: 6, payload: B.tcp(7, 8, new Uint8Array(20)) }),
).slice(0, 30);
const a6 = B.eth(0x86dd, B.ipv6('2001:db8::1', '2001:db8::99', 6, B.tcp(5, 6, new Uint8Array(20))));
const t6 = B.eth(
  0x86dd,
  B.ipv6('3ffe:2501:200:1fff::7', '3ffe:2501:200:3::1', 6, B.tcp(7, 8, new Uint8Array(20))),
).slice(0, 40);
writeFileSync(
  '/tmp/rssoracle/cases3.json',
  JSON.stringify([
    { name: 'A: tcp4 10.9.9.9 -> 1.2.3.4', frame: h(a), hash_types: 0x3f },
    { name: 'B: 30-byte frame, src 66.9.149.187, no dst', frame: h(t), hash_types: 0x3f },
    { name: 'A6: tcp6 2001:db8::1 -> ::99', frame: h(a6), hash_types: 0x3f },
    { name: 'B6: 40-byte frame, src 3ffe:2501:200:1fff::7 partial', frame: h(t6), hash_types: 0x3f },
  ]),
);
console.log(
  'H(66.9.149.187, 1.2.3.4) =',
  toeplitzHash(KEY, B.concat(B.ipv4Addr('66.9.149.187'), B.ipv4Addr('1.2.3.4'))).toString(16),
);
const src6 = B.ipv6Addr('3ffe:2501:200:1fff::7');
const prev = B.ipv6Addr('2001:db8::1');
// 40-byte frame holds IPv6 bytes 0..25: src bytes 0..17 of 16? src is at 8..23 → complete; dst 24..39 → 2 bytes
const dstMix = B.ipv6Addr('2001:db8::99');
const newDst = B.ipv6Addr('3ffe:2501:200:3::1');
dstMix[0] = newDst[0]!;
dstMix[1] = newDst[1]!;
console.log(
  'H6(src, first 2 bytes new dst + rest of previous dst) =',
  toeplitzHash(KEY, B.concat(src6, dstMix)).toString(16),
);
void prev;
