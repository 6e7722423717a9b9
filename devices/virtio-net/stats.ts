/** Counters of the virtio-net device: per queue pair and device-wide (read by `VirtioNetPci.stats()`). */

/** Per-queue-pair counters. */
export class QueueStats {
  rxPackets = 0;
  rxBytes = 0;
  /** Frames for this pair dropped: no buffers and a full backlog, too big for the buffer, reset. */
  rxDropped = 0;
  /** Frames the receive filter rejected (not counted in rxDropped). */
  rxFiltered = 0;
  /** Frames that went into the backlog (each is later counted again: delivered or dropped). */
  rxBacklogged = 0;
  /** Frames waiting in the backlog now (a gauge, not a counter). */
  rxBacklogDepth = 0;
  /**
   * Frames another worker's software steering sent to this pair that wait in a ring or the sender's spill
   * now (a gauge; docs/workers.md). Always 0 on one thread.
   */
  rxCrossingDepth = 0;
  rxInterrupts = 0;
  /** Driver notifications (kicks) of the rx queue (DEVICE_STATS rx_notifications). */
  rxKicks = 0;
  /** Frames dropped because the guest had no buffers and the backlog was full (rx_drop_overruns; in rxDropped too). */
  rxDropOverruns = 0;
  /** Frames delivered with DATA_VALID / NEEDS_CSUM / neither in their header (DEVICE_STATS RX_CSUM). */
  rxCsumValid = 0;
  rxNeedsCsum = 0;
  rxCsumNone = 0;
  /** Frames delivered with a gso_type, and their bytes (RX_GSO). */
  rxGsoPackets = 0;
  rxGsoBytes = 0;
  /** Of those, UDP tunnel GSO frames (VIRTIO 1.4 §5.1.6.4: gso_type with a UDP_TUNNEL bit). */
  rxTunnelGsoPackets = 0;
  txPackets = 0;
  txBytes = 0;
  /** Frames taken from the tx queue and not sent: malformed, too big, backend refused, link down. */
  txDropped = 0;
  txInterrupts = 0;
  /** Frames dropped as malformed: too short or long, an offload that cannot be done (in txDropped too). */
  txDropMalformed = 0;
  /** Frames from the driver without / with NEEDS_CSUM (DEVICE_STATS TX_CSUM). */
  txCsumNone = 0;
  txNeedsCsum = 0;
  /** GSO frames from the driver and their bytes; the segments we made of some, and their bytes (TX_GSO). */
  txGsoPackets = 0;
  txGsoBytes = 0;
  txGsoSegments = 0;
  txGsoSegmentsBytes = 0;
  /** GSO frames from the driver that were UDP tunnel GSO (VIRTIO 1.4 §5.1.6.2; in txGsoPackets too). */
  txTunnelGsoPackets = 0;
  /** GSO frames handed to the backend unsegmented, and their bytes. */
  txGsoPacketsNoseg = 0;
  txGsoBytesNoseg = 0;
  txKicks = 0;
  /**
   * VIRTIO_F_IN_ORDER: buffers completed without a used entry of their own (folded into a batch whose
   * one entry names the last buffer, §2.7.9 / §2.8).
   */
  rxUsedFolded = 0;
  txUsedFolded = 0;
}

/** Device-wide counters. */
export interface NetDeviceStats {
  /**
   * Frames dropped before a queue was chosen (device not running, queue pair disabled), handed over on a
   * queue the backend does not have, or lost with a guest error that broke the device mid-frame.
   */
  rxDroppedNotReady: number;
  ctrlCommands: number;
  ctrlErrors: number;
  /** Guest errors that set DEVICE_NEEDS_RESET. */
  guestErrors: number;
}

/**
 * Counts a delivered frame's header in the RX_CSUM and RX_GSO groups, and tunnel GSO frames (no
 * allocation).
 */
export function countRxHeader(
  s: QueueStats,
  flags: number,
  gso: boolean,
  length: number,
  tunnel: boolean,
): void {
  if (flags & 1) s.rxNeedsCsum++;
  else if (flags & 2) s.rxCsumValid++;
  else s.rxCsumNone++;
  if (gso) {
    s.rxGsoPackets++;
    s.rxGsoBytes += length;
    if (tunnel) s.rxTunnelGsoPackets++;
  }
}
