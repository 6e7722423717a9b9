// The suite of virtio-net-pci.test.ts again, with the device's queue pairs on worker threads
// (docs/workers.md) where the suite's benches make the device; `settle` keeps its expectations synchronous.
import { setWorkerMode } from './virtio-net/bench.test-support.js';

setWorkerMode(true);
await import('./virtio-net-pci.test.js');
