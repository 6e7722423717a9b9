/**
 * A port of the embedded switch: the NetBackend a function (the PF or a VF) is given. The PF's port passes
 * straight through to the uplink while no VF is enabled (zero copy, batching, kernel RSS all kept); with VFs
 * every frame goes through the switch's forwarding (switch.ts).
 */
import type {
  BackendCapabilities,
  BackendOffloads,
  BackendRssConfig,
  BackendSink,
  NetBackend,
  NetOffload,
  TransmitResult,
} from '../../lib/net/backend.js';
import type { VfInfo } from './policy.js';
import { TokenBucket, type Clock } from './token-bucket.js';

/** What the switch needs to know of the function behind a port; the device glue provides it. */
export interface PortOwner {
  /** The function's current MAC (live bytes: a trusted guest's MAC_ADDR_SET changes them). */
  readonly mac: Uint8Array;
  /** Whether its own receive filter (rx mode, MAC table, VLAN filter) takes the frame. */
  accepts(bytes: Uint8Array, offset: number, length: number): boolean;
}

/** Per-port counters (monotonic). `rx` is towards the function, `tx` from it. */
export class PortStats {
  rxFrames = 0;
  rxBytes = 0;
  txFrames = 0;
  txBytes = 0;
  /** Frames from the function whose source MAC was not its own (spoof check on). */
  dropSpoof = 0;
  /** Flooded frames the function's receive filter rejected. */
  dropFilter = 0;
  /** Frames dropped by the port VLAN (a tagged frame from a VST port, or another VLAN's frame). */
  dropVlan = 0;
  /** Frames for the function while its receive queue was paused (no receive buffers). */
  dropNoBuffer = 0;
  /** Frames for or from the function while its link was down. */
  dropLinkDown = 0;
  /** Unicast nobody owns (uplink port: frames from outside no function took). */
  dropNoOwner = 0;
  /** Times transmit was held back by the rate limit (the frames waited in the guest's ring). */
  txRateLimited = 0;
}

/** The part of the switch a port calls. */
export interface SwitchCore {
  readonly uplink: NetBackend;
  forward(
    src: SwitchPort,
    bytes: Uint8Array,
    offset: number,
    length: number,
    queuePair: number,
    offload: NetOffload | null,
    stable: boolean,
  ): TransmitResult;
  /** Delivers the unicast queued for function-to-function forwarding (at a sender's flushTransmit). */
  flushPending(): void;
  /** The switch is in passthrough mode (no VF enabled). */
  readonly passthrough: boolean;
  /** The uplink's link state. */
  readonly uplinkUp: boolean;
}

/** One port: a NetBackend for the function, and the switch's view of that function. */
export class SwitchPort implements NetBackend {
  readonly capabilities: BackendCapabilities;
  readonly stats = new PortStats();
  sink: BackendSink | null = null;
  owner: PortOwner | null = null;
  /** Port VLAN (VST) and its 802.1p priority; 0: none. */
  vlan = 0;
  qos = 0;
  spoofCheck = false;
  linkState: VfInfo['linkState'] = 'auto';
  readonly paused: boolean[];
  private readonly bucket: TokenBucket;
  private readonly waiting: boolean[];
  private timer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(
    readonly core: SwitchCore,
    /** 'pf' or the VF index. */
    readonly id: 'pf' | number,
    queuePairs: number,
    clock?: Clock,
  ) {
    const up = core.uplink.capabilities;
    // The guest may only use offloads the uplink takes: every frame entering the switch can leave by it.
    this.capabilities = {
      vnetHeader: up.vnetHeader,
      offloads: { ...up.offloads },
      queuePairs: id === 'pf' ? up.queuePairs : queuePairs,
      ...(id === 'pf' && up.steersFlows !== undefined ? { steersFlows: up.steersFlows } : {}),
    };
    this.paused = new Array<boolean>(this.capabilities.queuePairs).fill(false);
    this.waiting = new Array<boolean>(this.capabilities.queuePairs).fill(false);
    this.bucket = new TokenBucket(clock);
  }

  get isPf(): boolean {
    return this.id === 'pf';
  }

  /** Link as the function sees it: a VF's link state policy, or the uplink's. */
  get linkUp(): boolean {
    if (this.linkState === 'enable') return true;
    if (this.linkState === 'disable') return false;
    return this.core.uplinkUp;
  }

  setMaxTxRate(mbps: number): void {
    this.bucket.setRateMbps(mbps);
    if (!this.bucket.limited) this.wake();
  }

  attach(sink: BackendSink): void {
    this.sink = sink;
  }

  transmit(frame: Uint8Array, queuePair: number, offload: NetOffload | null): TransmitResult {
    if (this.isPf && this.core.passthrough) return this.core.uplink.transmit(frame, queuePair, offload);
    return this.core.forward(this, frame, 0, frame.length, queuePair, offload, false);
  }

  transmitRange(
    bytes: Uint8Array,
    offset: number,
    length: number,
    queuePair: number,
    offload: NetOffload | null,
  ): TransmitResult {
    const up = this.core.uplink;
    if (this.isPf && this.core.passthrough) {
      return up.transmitRange
        ? up.transmitRange(bytes, offset, length, queuePair, offload)
        : up.transmit(bytes.subarray(offset, offset + length), queuePair, offload);
    }
    return this.core.forward(this, bytes, offset, length, queuePair, offload, true);
  }

  flushTransmit(queuePair: number): number {
    this.core.flushPending();
    const up = this.core.uplink;
    if (up.flushTransmit === undefined) return 0;
    return up.flushTransmit(queuePair % up.capabilities.queuePairs);
  }

  /** Rate limit: whether the device may take the next frame now; if not, `transmitReady` follows. */
  transmitAllowed(queuePair: number): boolean {
    if (this.bucket.allowed()) return true;
    this.stats.txRateLimited++;
    if (queuePair >= 0 && queuePair < this.waiting.length) this.waiting[queuePair] = true;
    if (this.timer === null && !this.closed) {
      this.timer = setTimeout(() => this.wake(), this.bucket.waitMs());
    }
    return false;
  }

  /** Charges a frame the switch took from this function against its rate. */
  charge(bytes: number): void {
    this.bucket.consume(bytes);
  }

  pause(queuePair: number): void {
    if (queuePair >= 0 && queuePair < this.paused.length) this.paused[queuePair] = true;
    // Only the PF alone may stop the uplink: with VFs it keeps reading for them (frames for the PF are
    // then counted as dropNoBuffer, as a hardware switch drops for a full ring).
    if (this.isPf && this.core.passthrough) this.core.uplink.pause(queuePair);
  }

  resume(queuePair: number): void {
    if (queuePair >= 0 && queuePair < this.paused.length) this.paused[queuePair] = false;
    if (this.isPf) this.core.uplink.resume(queuePair);
  }

  setOffloads(offloads: BackendOffloads): void {
    if (this.isPf) this.core.uplink.setOffloads?.(offloads);
  }

  setVnetHeaderSize(size: number): void {
    if (this.isPf) this.core.uplink.setVnetHeaderSize?.(size);
  }

  setQueuePairEnabled(queuePair: number, enabled: boolean): void {
    if (this.isPf) this.core.uplink.setQueuePairEnabled?.(queuePair, enabled);
  }

  setCarrier(up: boolean): void {
    if (this.isPf) this.core.uplink.setCarrier?.(up);
  }

  setRssSteering(config: BackendRssConfig | null): boolean {
    if (!this.isPf || this.core.uplink.setRssSteering === undefined) return false;
    return this.core.uplink.setRssSteering(config);
  }

  /** A VF's port closes with the VF; the PF's closes the uplink (the switch owns it). */
  close(): void {
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    if (this.isPf) this.core.uplink.close();
  }

  private wake(): void {
    this.timer = null;
    const sink = this.sink;
    for (let q = 0; q < this.waiting.length; q++) {
      if (!this.waiting[q]) continue;
      this.waiting[q] = false;
      sink?.transmitReady?.(q);
    }
  }
}
