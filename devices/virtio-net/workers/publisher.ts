/**
 * When a queue-pair worker publishes its counters to the shared block the main thread reads
 * (`WorkerPool.workerCounters`, `stats()`): every PUBLISH_MS while anything moves, and not at all once
 * QUIET_ROUNDS rounds in a row changed nothing, so an idle worker sleeps (a fixed 5 ms timer cost
 * ~1.6 % of a core per idle worker). The worker calls `active()` from every callback that can change a
 * counter; a request or an interrupt publishes at once besides (pair-worker.ts).
 */

/** Counters are published at least this often while the worker runs. */
const PUBLISH_MS = 5;
/** Publishing rounds that changed nothing before the timer stops. */
const QUIET_ROUNDS = 20;

export class CounterPublisher {
  /** Rounds run so far (tests: `WorkerPool.publishRounds`). */
  rounds = 0;
  private timer: NodeJS.Timeout | null = null;
  private quiet = 0;
  private closed = false;
  /** The counters as last published, to tell a quiet round. */
  private readonly last: Float64Array;
  /** Keeps the thread's event loop alive while the timer sleeps (Atomics.waitAsync does not). */
  private readonly keepAlive = setInterval(() => {}, 2 ** 31 - 1);

  /** `publish` writes the worker's counters into `out`. */
  constructor(
    private readonly out: Float64Array,
    private readonly publish: () => void,
  ) {
    this.last = new Float64Array(out.length);
  }

  /** Something moved: publish every PUBLISH_MS until QUIET_ROUNDS rounds change nothing. */
  active(): void {
    this.quiet = 0;
    if (this.timer === null && !this.closed) this.timer = setInterval(this.round, PUBLISH_MS);
  }

  private readonly round = () => {
    this.rounds++;
    this.publish();
    const { out, last } = this;
    let same = true;
    for (let i = 0; i < out.length; i++)
      if (out[i] !== last[i]) {
        same = false;
        last[i] = out[i]!;
      }
    if (!same) this.quiet = 0;
    else if (++this.quiet >= QUIET_ROUNDS) this.stopTimer();
  };

  private stopTimer(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  /** No more rounds; the thread may exit once its other handles are gone. */
  close(): void {
    this.closed = true;
    this.stopTimer();
    clearInterval(this.keepAlive);
  }
}
