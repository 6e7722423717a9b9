// The suite of rss-device.test.ts again, with the device's queue pairs on worker threads (docs/workers.md):
// software RSS steers a frame from the worker that read it to the worker that runs the chosen pair
// (forward.ts), its hash and report type with it; `settle` makes each inject and kick a round trip.
import { setWorkerMode } from './bench.test-support.js';

setWorkerMode(true);
await import('./rss-device.test.js');
