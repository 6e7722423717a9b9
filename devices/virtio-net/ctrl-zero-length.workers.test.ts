// The suite of ctrl-zero-length.test.ts again, with the device's queue pairs on worker threads (docs/workers.md) and
// the MemoryBackend's frames crossing through its shared-memory rings; `settle` makes each inject and
// kick a synchronous round trip, so the suite's expectations hold as written.
import { setWorkerMode } from './bench.test-support.js';

setWorkerMode(true);
await import('./ctrl-zero-length.test.js');
