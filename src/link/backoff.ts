/**
 * Capped exponential backoff with full jitter: delay_n = random(0.5..1) * min(max, initial * 2^n).
 * Pure apart from the injected random source.
 *
 * progress(lsn) resets it only on new ground: a position past every one seen before. After a
 * reconnect the link replays, from the origin's progress, the transactions that commit nothing (a
 * peer's heartbeats) up to the one that keeps failing (a full disk); counting those as progress reset
 * the delay at every attempt, a reconnect loop at the initial delay (fault suite, disk-full).
 */
export class Backoff {
  private attempt = 0;
  private furthest = -1n;

  constructor(
    private readonly initialMs: number,
    private readonly maxMs: number,
    private readonly random: () => number = Math.random,
  ) {}

  next(): number {
    const ceiling = Math.min(this.maxMs, this.initialMs * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    return Math.round(ceiling * (0.5 + this.random() / 2));
  }

  reset(): void {
    this.attempt = 0;
  }

  /** A transaction ending at `lsn` is done: resets the delay when no attempt got that far before. */
  progress(lsn: bigint): void {
    if (lsn <= this.furthest) return;
    this.furthest = lsn;
    this.attempt = 0;
  }

  get attempts(): number {
    return this.attempt;
  }
}
