/** How command handlers answer a request (the server sends, counts and logs). */

/** The header fields a reply is built from. */
export interface RequestHeader {
  id: number;
  command: number;
  flags: number;
}

export interface Responder {
  /** A success reply with `body` and descriptors to pass (still owned by the caller); nothing for NO_REPLY. */
  reply(h: RequestHeader, body?: Uint8Array, fds?: number[]): void;
  /** An error reply (counted and logged; nothing sent for NO_REPLY requests). */
  error(h: RequestHeader, errno: number, why: string): void;
  /** Runs a device callback; false (logged) when it threw. */
  safe(fn: () => void): boolean;
  log(line: string): void;
}
