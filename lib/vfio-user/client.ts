/**
 * A minimal vfio-user client on Node's event loop, for tests and diagnostics: sends requests (with
 * descriptors) and matches replies by message id. It can also send raw bytes, to test how a server treats
 * malformed input.
 */
import { MessageChannel, type ReceivedMessage } from './channel.js';
import { encodeMessage, type MessageHeader, MsgFlag } from './protocol.js';
import * as sys from '../host/socket.js';

export interface ClientReply {
  header: MessageHeader;
  body: Uint8Array;
  /** Descriptors that came with a reply to `request` (the caller owns them); always empty for unmatched. */
  fds: number[];
}

export class VfioUserClient {
  readonly #ch: MessageChannel;
  readonly #pending = new Map<number, { resolve: (r: ClientReply) => void; reject: (e: Error) => void }>();
  #nextId = 1;
  #closed: Promise<void>;
  /** Messages that matched no pending request (e.g. replies to requests sent with `sendRaw`). */
  readonly unmatched: ClientReply[] = [];

  /** Wraps a connected socket fd (the client then owns it). */
  constructor(fd: number) {
    let done: () => void = () => {};
    this.#closed = new Promise((r) => {
      done = r;
    });
    this.#ch = new MessageChannel(
      fd,
      {
        message: (m: ReceivedMessage) => {
          const p = this.#pending.get(m.header.id);
          if (p && (m.header.flags & MsgFlag.TYPE_MASK) === MsgFlag.REPLY) {
            this.#pending.delete(m.header.id);
            p.resolve({ header: m.header, body: m.body, fds: m.fds });
          } else {
            for (const f of m.fds) sys.close(f);
            this.unmatched.push({ header: m.header, body: m.body, fds: [] });
          }
        },
        rejected: () => {},
        closed: () => {
          for (const p of this.#pending.values()) p.reject(new Error('connection closed'));
          this.#pending.clear();
          done();
        },
      },
      { maxMessageSize: 64 << 20, maxFds: 16 },
    );
  }

  static connect(path: string): VfioUserClient {
    const fd = sys.connectUnix(path);
    return new VfioUserClient(fd);
  }

  /** Sends a request and resolves with its reply (error replies resolve too: check header.flags/error). */
  request(
    command: number,
    body: Uint8Array = new Uint8Array(0),
    fds: number[] = [],
    flags = 0,
  ): Promise<ClientReply> {
    const id = this.#nextId++ & 0xffff;
    const p = new Promise<ClientReply>((resolve, reject) => this.#pending.set(id, { resolve, reject }));
    this.#ch.send(encodeMessage({ id, command, flags: MsgFlag.REQUEST | flags, error: 0 }, body), fds);
    return p;
  }

  /** Sends a request flagged NO_REPLY (a posted write); nothing to wait for. */
  post(command: number, body: Uint8Array): void {
    const id = this.#nextId++ & 0xffff;
    this.#ch.send(encodeMessage({ id, command, flags: MsgFlag.REQUEST | MsgFlag.NO_REPLY, error: 0 }, body));
  }

  /** Sends bytes as they are (any framing), with optional descriptors. */
  sendRaw(bytes: Uint8Array, fds: number[] = []): void {
    this.#ch.send(bytes, fds);
  }

  /** Resolves with the next message that matches no request. */
  async nextUnmatched(timeoutMs = 2000): Promise<ClientReply> {
    const t0 = Date.now();
    while (this.unmatched.length === 0) {
      if (Date.now() - t0 > timeoutMs) throw new Error('no unmatched message arrived');
      await new Promise((r) => setTimeout(r, 2));
    }
    return this.unmatched.shift() as ClientReply;
  }

  get closed(): Promise<void> {
    return this.#closed;
  }

  close(): void {
    this.#ch.close();
  }
}
