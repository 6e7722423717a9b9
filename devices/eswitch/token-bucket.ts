/**
 * A token bucket in bytes for a VF's `max_tx_rate`. A frame may start while the balance is positive and
 * may take it negative (one frame of debt), so the achieved rate converges on the set rate for any frame
 * size without splitting frames; over-rate frames wait in the guest's ring (the device asks
 * `transmitAllowed` before it takes a chain), they are never dropped.
 */

/** Nanoseconds from an arbitrary origin. */
export type Clock = () => number;

// performance.now() rather than hrtime.bigint(): a rate-limited port reads the clock per frame, and a
// BigInt per read would allocate.
export const monotonicNs: Clock = () => performance.now() * 1e6;

export class TokenBucket {
  /** Bytes per nanosecond; 0: unlimited. */
  private rate = 0;
  /** Most bytes the bucket holds (a burst). */
  private depth = 0;
  private tokens = 0;
  private last = 0;

  constructor(private readonly clock: Clock = monotonicNs) {}

  /** Sets the rate; 0 turns limiting off. The bucket starts full (a burst of `depth` bytes). */
  setRateMbps(mbps: number): void {
    this.rate = mbps > 0 ? (mbps * 1e6) / 8 / 1e9 : 0;
    // 2 ms of traffic, at least one 64 KiB GSO frame: smooth enough for a 10 % accuracy at any rate.
    this.depth = Math.max(65_536, this.rate * 2e6);
    this.tokens = this.depth;
    this.last = this.clock();
  }

  get limited(): boolean {
    return this.rate > 0;
  }

  /** Whether a frame may start now. */
  allowed(): boolean {
    if (this.rate === 0) return true;
    this.refill();
    return this.tokens > 0;
  }

  /** Charges a sent frame. */
  consume(bytes: number): void {
    if (this.rate > 0) this.tokens -= bytes;
  }

  /** Milliseconds until `allowed()` can turn true again (0 when it already is). */
  waitMs(): number {
    if (this.rate === 0) return 0;
    this.refill();
    return this.tokens > 0 ? 0 : Math.ceil((1 - this.tokens) / this.rate / 1e6);
  }

  private refill(): void {
    const now = this.clock();
    this.tokens = Math.min(this.depth, this.tokens + (now - this.last) * this.rate);
    this.last = now;
  }
}
