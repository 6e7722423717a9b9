import type { BackendSink, NetBackend } from '../../lib/net/backend.js';

/**
 * Wraps `backend.attach` so that the device's `BackendSink` (lib/net/backend.ts) is kept: a test or a
 * bench can then call it as a backend of its own would (bursts, ranges, lends). Call before the device
 * is created; the returned function throws until the device attached.
 */
export function captureSink(backend: NetBackend): () => BackendSink {
  let sink: BackendSink | null = null;
  const attach = backend.attach.bind(backend);
  backend.attach = (s) => {
    sink = s;
    attach(s);
  };
  return () => {
    if (sink === null) throw new Error('captureSink: the device has not attached to the backend yet');
    return sink;
  };
}
