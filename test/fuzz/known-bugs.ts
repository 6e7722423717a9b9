/**
 * Library bugs the fuzz targets found and that are not fixed yet (fixing library code is not the
 * fuzzer's job). A run tolerates the ones named in `--known-bugs` (counting each hit, so a report shows
 * they still happen); by default every one of them fails the run like any other invariant.
 * `npm test` tolerates them in its short runs and checks each minimal reproduction with `it.fails`:
 * when a fix lands, that test fails and the entry goes.
 */
export interface KnownBug {
  summary: string;
  /**
   * A run that shows it: steps `only` of case `caseIndex` of `seed` (a minimal step list), or `runs`
   * steps of `seed` with the heap bound `heapMb` (a leak).
   */
  repro:
    | { target: string; seed: number; caseIndex: number; only: number[] }
    | { target: string; seed: number; runs: number; heapMb: number };
}

/** The command that replays a known bug's reproduction. */
export function reproCommand(b: KnownBug): string {
  const r = b.repro;
  const base = `npm run fuzz -- --target ${r.target} --seed ${r.seed}`;
  return 'only' in r
    ? `${base} --case ${r.caseIndex} --only ${r.only.join(',')}`
    : `${base} --runs ${r.runs} --heap-mb ${r.heapMb}`;
}

export const KNOWN_BUGS: Record<string, KnownBug> = {
  'rx-recheck-spin': {
    summary:
      'A frame waits in the device backlog for more mergeable rx buffers than the guest posted: recheckRx sees ' +
      '"buffers available" and reschedules drainBacklog with setImmediate forever (~13k turns/s, one core busy) ' +
      'until the guest posts more; dev.close() does not stop it (only a device reset does).',
    repro: { target: 'guest-rings', seed: 3, caseIndex: 0, only: [86] },
  },
  'rx-frame-lost-on-guest-error': {
    summary:
      'A frame the backend hands over while the rx ring holds a broken chain sets DEVICE_NEEDS_RESET and is ' +
      'counted nowhere (not rxDropped, not rxDroppedNotReady): the device took it and it vanished from the stats.',
    repro: { target: 'guest-rings', seed: 3, caseIndex: 0, only: [110, 111] },
  },
  'restore-accepts-read-only-changes': {
    summary:
      "restore() writes the snapshot's config-space bytes wholesale (PciFunction.restore): a corrupted or " +
      'mismatched state changes read-only registers (capability list links, virtio capability offsets, IDs) and ' +
      'the function stays wrong even after a reset. QEMU refuses such a state (get_pci_config_device: "Bad config ' +
      'data"); here it is taken, even when restore() then throws for another field.',
    repro: { target: 'guest-snapshot', seed: 2, caseIndex: 1, only: [167] },
  },
  'sink-bad-queue-index': {
    summary:
      'BackendSink.receive() with a queue index that is negative or not an integer (-1, 0.5, NaN) throws a ' +
      'TypeError out of the device (queueStats[pair] is undefined in receiveFrame) instead of counting a drop; ' +
      'MemoryBackend filters such indexes itself, but another backend reaches the device with them.',
    repro: { target: 'backend', seed: 1, caseIndex: 0, only: [246] },
  },
  'segmenter-lost-frame': {
    summary:
      'Software segmentation (lib/net/segmentation.ts) of a backend frame whose offload gsoSize is NaN or at ' +
      'least 2^31 emits no segment and still returns SEGMENT_OK (UFO: gsoSize & ~7 turns negative; TSO/USO: ' +
      'ceil(payload / NaN)): the device took the frame and it vanished uncounted.',
    repro: { target: 'backend', seed: 424242, caseIndex: 15, only: [390, 394] },
  },
  'poll-handle-leak': {
    summary:
      "Every MessageChannel (each vfio-user connection, on the server side and on a client's) leaves ~4.5 KiB of " +
      'JS heap behind after close(): the callback given to koffi.node.poll in lib/vfio-user/sys.ts pollFd stays ' +
      'reachable after the handle is closed (a bare pollFd start/close shows it), and with it the channel. A ' +
      'client that reconnects in a loop grows the server without bound (~160 MiB over 17 000 connections in ' +
      'three minutes of the vfio-user target).',
    repro: { target: 'vfio-user', seed: 424242, runs: 5000, heapMb: 4 },
  },
};

export const ALL_KNOWN_BUGS = Object.keys(KNOWN_BUGS);
