// The suite of virtio-net-rx.test.ts again, with frames taking the device's copying receive path
// (BackendSink.receive) instead of direct receive into lent buffers, the MemoryBackend default.
import { setDefaultReceive } from './bench.test-support.js';

setDefaultReceive('copy');
await import('./rx.test.js');
