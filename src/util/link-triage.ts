/**
 * Which links a frame too short for all of them shows: those that need attention first (a state
 * other than streaming, lag, an error, then the most conflicts), drawn in their original order so
 * that rows do not jump about between refreshes; one line sums up the others. Shared by the demo's
 * live view and `pgbidi status --watch`.
 */
import type { LinkState } from '../observability/metrics.js';
import { firstFitting } from './text-layout.js';

/** What the triage reads from a link, whichever view it comes from. */
export interface LinkHealth {
  readonly state: LinkState;
  readonly lagSeconds: number;
  /** The link reports a last error (it stays after the link recovers). */
  readonly hasError: boolean;
  readonly conflicts: number;
}

/** From this lag on a link is lagging: shown before the others (and in yellow by the demo). */
export const LAGGING_SECONDS = 5;

/** States from the most to the least in need of attention; streaming is where every link should be. */
const STATE_ATTENTION: Readonly<Record<LinkState, number>> = { error: 0, paused: 1, backoff: 2, connecting: 3, parted: 4, stopped: 5, streaming: 6 };

/** A link a frame shows before it gives up any other detail: not streaming, or lagging. */
export function needsAttention(h: LinkHealth): boolean {
  return h.state !== 'streaming' || h.lagSeconds >= LAGGING_SECONDS;
}

/** Negative when `a` needs attention before `b`. */
export function compareAttention(a: LinkHealth, b: LinkHealth): number {
  return (
    STATE_ATTENTION[a.state] - STATE_ATTENTION[b.state] ||
    Number(b.lagSeconds >= LAGGING_SECONDS) - Number(a.lagSeconds >= LAGGING_SECONDS) ||
    Number(b.hasError) - Number(a.hasError) ||
    b.conflicts - a.conflicts ||
    b.lagSeconds - a.lagSeconds
  );
}

/** The `count` links that need attention most, in their original order, and the others (also in order). */
export function pickLinks<T>(links: readonly T[], count: number, health: (l: T) => LinkHealth): { shown: T[]; hidden: T[] } {
  const ranked = links.map((l, i) => ({ i, h: health(l) })).sort((a, b) => compareAttention(a.h, b.h) || a.i - b.i);
  const keep = new Set(ranked.slice(0, Math.max(0, count)).map((r) => r.i));
  return { shown: links.filter((_, i) => keep.has(i)), hidden: links.filter((_, i) => !keep.has(i)) };
}

const plural = (n: number, word: string): string => `${n} ${word}${n === 1 ? '' : 's'}`;

/**
 * One line for the links a frame leaves out: how many, their states, the highest lag, their
 * conflicts and how many report an error, as much of it as fits `width`. `afterShown`: some links
 * are shown above ("… 14 more links"), or none are ("20 links").
 */
export function hiddenLinksLine(hidden: readonly LinkHealth[], afterShown: boolean, width: number): string {
  const head = afterShown ? `… ${plural(hidden.length, 'more link')}` : plural(hidden.length, 'link');
  const byState = new Map<LinkState, number>();
  for (const h of hidden) byState.set(h.state, (byState.get(h.state) ?? 0) + 1);
  const states =
    byState.size === 1
      ? `${hidden.length === 1 ? '' : 'all '}${[...byState.keys()].join('')}`
      : [...byState]
          .sort(([a], [b]) => STATE_ATTENTION[a] - STATE_ATTENTION[b])
          .map(([state, n]) => `${n} ${state}`)
          .join(', ');
  const lag = `lag ≤ ${Math.max(0, ...hidden.map((h) => h.lagSeconds)).toFixed(1)}s`;
  const conflicts = plural(
    hidden.reduce((sum, h) => sum + h.conflicts, 0),
    'conflict',
  );
  const errors = hidden.filter((h) => h.hasError).length;
  const withErrors = errors > 0 ? `, ${errors} with an error` : '';
  if (hidden.length === 0) return head;
  return firstFitting(
    [
      `${head}: ${states}, ${lag}, ${conflicts}${withErrors}`,
      `${head}: ${states}, ${lag}${withErrors}`,
      `${head}: ${states}, ${lag}`,
      `${head}: ${states}`,
      head,
    ],
    width,
  );
}
