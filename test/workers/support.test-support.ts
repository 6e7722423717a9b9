import { readdirSync } from 'node:fs';

/** Sends `count` datagrams from the namespace, ports round-robin; payload = u32 seq + a pattern. */
export const PY_SEQ_SEND = `
import socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
dst, ports, size, count, pace = sys.argv[1], [int(p) for p in sys.argv[2].split(',')], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
pattern = bytes((i * 7) & 0xff for i in range(size))
for i in range(count):
    s.sendto(struct.pack('!I', i) + pattern[4:], (dst, ports[i % len(ports)]))
    if pace and i % 50 == 49: time.sleep(pace)
print('sent', flush=True)
`;

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
/** Threads and fds of this process. */
export const tasks = () => readdirSync('/proc/self/task').length;
export const fds = () => readdirSync('/proc/self/fd').length;

/** Waits until the thread and fd counts stop moving (threads and fds being closed settle first). */
export async function settled(): Promise<void> {
  let last = '';
  for (let i = 0; i < 100; i++) {
    const now = `${tasks()} ${fds()}`;
    if (now === last) return;
    last = now;
    await sleep(50);
  }
}
