/**
 * The device's BackendSink methods, as VirtioNet implements them, over a queue-pair worker's own paths
 * (pair-worker.ts): frames for pairs the worker does not own, or out of bounds, are counted
 * `rxDroppedNotReady`; a guest error in a path is the device's, never the backend's exception.
 */
import type { NetOffload, ReceiveTarget } from '../../../lib/net/backend.js';
import { MAX_FRAME } from '../../../lib/net/backend.js';
import type { DirectReceiver } from '../direct-rx.js';
import type { Receiver } from '../rx.js';
import type { NetShared } from '../shared.js';

export interface WorkerSinkParts {
  readonly shared: NetShared;
  readonly rx: Receiver;
  readonly direct: DirectReceiver;
  /** The queue pairs this worker runs. */
  readonly pairs: readonly number[];
  /** Something moved that may change a counter (publisher.ts). */
  active(): void;
  transmitReady(queue: number): void;
}

export function workerSink(w: WorkerSinkParts) {
  const s = w.shared;
  const valid = (q: number) => w.pairs.includes(q);
  const receiveRange = (
    bytes: Uint8Array,
    offset: number,
    length: number,
    q: number,
    offload: NetOffload | null,
  ): void => {
    w.active();
    if (!valid(q) || offset < 0 || length < 0 || offset + length > bytes.length || length > MAX_FRAME + 64) {
      s.deviceStats.rxDroppedNotReady++;
      return;
    }
    try {
      w.rx.receive(bytes, offset, length, q, offload);
    } catch (e) {
      s.deviceStats.rxDroppedNotReady++;
      s.guestError(e);
    }
  };
  return {
    receive: (frame: Uint8Array, q: number, offload: NetOffload | null) =>
      receiveRange(frame, 0, frame.length, q, offload),
    receiveRange,
    lendReceive: (q: number, hs: number, t: ReceiveTarget) => {
      if (!valid(q)) return false;
      try {
        return w.direct.lend(q, hs, t);
      } catch (e) {
        s.guestError(e);
        return false;
      }
    },
    completeReceive: (length: number, overflow: Uint8Array) => {
      w.active();
      try {
        w.direct.complete(length, overflow);
      } catch (e) {
        s.deviceStats.rxDroppedNotReady++;
        s.guestError(e);
      }
    },
    cancelReceive: () => {
      w.active();
      w.direct.cancel();
    },
    beginReceiveBurst: () => s.beginReceiveBurst(),
    endReceiveBurst: () => {
      w.active();
      s.endReceiveBurst();
    },
    transmitReady: (q: number) => {
      w.active();
      w.transmitReady(q);
    },
  };
}
