import * as B from '../../../lib/net/frames.test-support.js';
import { ParsedPacket, parsePacket } from '../../../lib/net/packet-parser.js';
import { RssHashResult, rssHashParsed } from '../../../lib/net/rss-hash.js';
import { ToeplitzKey } from '../../../lib/net/toeplitz.js';

const KEY = B.hex('6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa');
const f = B.eth(
  0x86dd,
  B.ipv6(
    '2001:db8::1',
    '2001:db8::2',
    60,
    B.concat(
      B.optionsHeader(43, B.homeAddressOption('2001:db8::aaaa')),
      B.routingType2(6, '2001:db8::bbbb'),
      B.tcp(1, 2),
    ),
  ),
);
const p = new ParsedPacket(),
  k = new ToeplitzKey(KEY),
  r = new RssHashResult();
let s = 0;
for (let i = 0; i < 1e6; i++) {
  parsePacket(f, p);
  rssHashParsed(f, p, 0x1ff, k, r);
  s ^= r.hash;
}
(globalThis as { gc?: () => void }).gc?.();
const before = process.memoryUsage().heapUsed;
for (let i = 0; i < 5e6; i++) {
  parsePacket(f, p);
  rssHashParsed(f, p, 0x1ff, k, r);
  s ^= r.hash;
}
const after = process.memoryUsage().heapUsed;
console.log('heap delta over 5e6 parse+hash (no gc between):', after - before, 'bytes', s === 0.5);
