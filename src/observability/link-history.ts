/**
 * A few minutes of each link's lag and applied changes, sampled at a fixed interval, for the web view's
 * chart and its changes/s. Prometheus keeps the real history; this is what a page opened without
 * Prometheus can still show. Pure: the caller samples with its clock.
 */
export interface LinkSample {
  readonly lagSeconds: number;
  readonly changesApplied: number;
}

export interface HistoryPoint {
  /** Unix ms. */
  readonly at: number;
  readonly links: Readonly<Record<string, LinkSample>>;
}

export const HISTORY_INTERVAL_MS = 2_000;
export const HISTORY_WINDOW_MS = 10 * 60_000;

export class LinkHistory {
  private readonly points: HistoryPoint[] = [];

  constructor(private readonly windowMs = HISTORY_WINDOW_MS) {}

  sample(at: number, links: readonly { readonly peer: string; readonly lagSeconds: number; readonly changesApplied: number }[]): void {
    const entry: Record<string, LinkSample> = {};
    for (const l of links) entry[l.peer] = { lagSeconds: l.lagSeconds, changesApplied: l.changesApplied };
    this.points.push({ at, links: entry });
    let drop = 0;
    while (drop < this.points.length && (this.points[drop] as HistoryPoint).at < at - this.windowMs) drop++;
    if (drop > 0) this.points.splice(0, drop);
  }

  /** Oldest first. */
  all(): readonly HistoryPoint[] {
    return this.points;
  }

  /** Changes/s between the last two samples that both saw the peer; 0 before there are two. */
  changesPerSecond(peer: string): number {
    const n = this.points.length;
    const last = this.points[n - 1];
    const before = this.points[n - 2];
    const a = before?.links[peer];
    const b = last?.links[peer];
    if (!last || !before || !a || !b || last.at <= before.at) return 0;
    // A restarted agent counts from 0 again: no negative rate.
    return Math.max(0, ((b.changesApplied - a.changesApplied) * 1000) / (last.at - before.at));
  }
}
