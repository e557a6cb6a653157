/**
 * Pure: runs in, one summary per (workload, version) out. Each figure gets the median of each side
 * over its repetitions and the median of the per-repetition ratio subject ÷ baseline: the two runs
 * of one repetition are measured back to back, so their ratio cancels most of a noisy machine's
 * drift (the baselines' interleaved comparison).
 */
import type { RunResult, Side, WorkloadId } from './bench-results.js';
import { runFailed } from './bench-results.js';
import { medianOf, ratio } from './stats.js';
import { figureApplies, WORKLOADS } from './workload-specs.js';
import type { FigureSpec } from './workload-specs.js';

export interface SideFigure {
  /** Median over the repetitions that measured it; null if none did or the figure does not apply. */
  readonly median: number | null;
  /** The value of every repetition, in rep order (null: not measured). */
  readonly runs: readonly (number | null)[];
  readonly applies: boolean;
}

export interface FigureSummary {
  readonly spec: FigureSpec;
  readonly baseline: SideFigure;
  readonly subject: SideFigure;
  /** Median over repetitions of subject ÷ baseline; null when no repetition has both. */
  readonly ratio: number | null;
}

export interface SideRuns {
  readonly side: Side;
  readonly runs: readonly RunResult[];
  /** Runs that converged / runs that checked. */
  readonly converged: number;
  readonly checked: number;
  readonly failed: number;
  readonly skipped: string | null;
}

export interface WorkloadSummary {
  readonly workload: WorkloadId;
  readonly major: number;
  readonly version: string;
  readonly baseline: SideRuns;
  readonly subject: SideRuns;
  readonly figures: readonly FigureSummary[];
}

const sameSide = (run: RunResult, side: Side): boolean => run.engine === side.engine && run.variant === side.variant;

export function summarize(runs: readonly RunResult[]): WorkloadSummary[] {
  const groups = new Map<string, RunResult[]>();
  for (const run of runs) {
    const key = `${run.workload}|${run.major}`;
    groups.set(key, [...(groups.get(key) ?? []), run]);
  }
  return [...groups.values()].map((group) => {
    const first = group[0] as RunResult;
    const spec = WORKLOADS[first.workload];
    const sideRuns = (side: Side): SideRuns => {
      const mine = group.filter((r) => sameSide(r, side)).sort((x, y) => x.rep - y.rep);
      return {
        side,
        runs: mine,
        converged: mine.filter((r) => r.converged === true).length,
        checked: mine.filter((r) => r.converged !== null).length,
        failed: mine.filter(runFailed).length,
        skipped: mine.find((r) => r.skipped !== null)?.skipped ?? null,
      };
    };
    const baseline = sideRuns(spec.baseline);
    const subject = sideRuns(spec.subject);
    const reps = [...new Set(group.map((r) => r.rep))].sort((x, y) => x - y);
    const figures = spec.figures.map((figure): FigureSummary => {
      const side = (s: SideRuns): SideFigure => {
        const applies = figureApplies(figure, s.side.engine);
        const values = reps.map((rep) => (applies ? (s.runs.find((r) => r.rep === rep)?.figures[figure.key] ?? null) : null));
        return { median: medianOf(values), runs: values, applies };
      };
      const b = side(baseline);
      const s = side(subject);
      const perRep = reps.map((_, i) => ratio(s.runs[i] ?? null, b.runs[i] ?? null));
      return { spec: figure, baseline: b, subject: s, ratio: medianOf(perRep) };
    });
    const version = group.find((r) => r.version.includes('.'))?.version ?? String(first.major);
    return { workload: first.workload, major: first.major, version, baseline, subject, figures };
  });
}

/**
 * How much worse subject is than baseline, in %, from their ratio: for a time (lower is better)
 * ratio − 1, for a rate (higher is better) 1 − ratio. Null for informational figures.
 */
export function overheadPercent(figure: FigureSpec, r: number | null): number | null {
  if (r === null) return null;
  if (figure.better === 'lower') return (r - 1) * 100;
  if (figure.better === 'higher') return (1 - r) * 100;
  return null;
}
