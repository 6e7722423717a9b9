import * as B from '../../../lib/net/frames.test-support.js';
import { toeplitzHash } from '../../../lib/net/toeplitz.js';

const KEY = B.hex('6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa');
const ip = (s: string) => B.ipv4Addr(s);
console.log(
  'ihl3 ports-from-IP-header',
  toeplitzHash(KEY, B.concat(ip('66.9.149.187'), ip('161.142.100.80'), ip('66.9.149.187'))).toString(16),
);
