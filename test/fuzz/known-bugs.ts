/**
 * Library bugs the fuzz targets found and that are not fixed yet (fixing library code is not the
 * fuzzer's job). A run tolerates the ones named in `--known-bugs` (counting each hit, so a report shows
 * they still happen); by default every one of them fails the run like any other invariant.
 * `npm test` tolerates them in its short runs and checks each minimal reproduction with `it.fails`:
 * when a fix lands, that test fails and the entry goes.
 */
export interface KnownBug {
  summary: string;
  /** A minimal step list that shows it. */
  repro: string;
}

export const KNOWN_BUGS: Record<string, KnownBug> = {
  'rx-recheck-spin': {
    summary:
      'A frame waits in the device backlog for more mergeable rx buffers than the guest posted: recheckRx sees ' +
      '"buffers available" and reschedules drainBacklog with setImmediate forever (~13k turns/s, one core busy) ' +
      'until the guest posts more; dev.close() does not stop it (only a device reset does).',
    repro: 'npm run fuzz -- --target guest-rings --seed 3 --case 0 --only 11',
  },
  'rx-frame-lost-on-guest-error': {
    summary:
      'A frame the backend hands over while the rx ring holds a broken chain sets DEVICE_NEEDS_RESET and is ' +
      'counted nowhere (not rxDropped, not rxDroppedNotReady): the device took it and it vanished from the stats.',
    repro: 'npm run fuzz -- --target guest-rings --seed 1 --case 3 --only 4,13,15',
  },
};

export const ALL_KNOWN_BUGS = Object.keys(KNOWN_BUGS);
