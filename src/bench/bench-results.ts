/**
 * What one measured run produces, for every workload and engine alike: named figures (numbers, or
 * null when a figure failed or does not apply), whether the nodes converged, and why the run stopped
 * early if it did. Workloads fill it in through RunRecorder; summaries and reports only read it.
 */
import type { StatementProfile } from './statement-profile.js';

export type Engine = 'native' | 'pgbidi';

/**
 * Variants of one engine measured in the same run. 'default' everywhere except the observability
 * comparison, which runs pgbidi twice: everything off (silent logs, no tracing, nobody scrapes) and
 * everything on (info logs to a file, a trace per transaction over OTLP/HTTP, /metrics every second),
 * the synchronous-link comparison, which runs B's link from A asynchronous and synchronous, and the
 * conflict storm, which runs pgbidi (everything on) on B's rows as they were before the group began
 * (conflict-free) and on rows B wrote itself after it began (conflict-storm).
 */
export type Variant = 'default' | 'observability-off' | 'observability-on' | 'asynchronous' | 'synchronous' | 'conflict-free' | 'conflict-storm';

export const WORKLOAD_IDS = ['w1', 'w2', 'w3', 'w4', 'w5', 'mesh', 'obs', 'storm', 'sync'] as const;
export type WorkloadId = (typeof WORKLOAD_IDS)[number];

/** One engine in one variant: a column of the report. */
export interface Side {
  readonly engine: Engine;
  readonly variant: Variant;
}

export interface RunResult {
  readonly workload: WorkloadId;
  readonly major: number;
  /** "18.4": the server's version, or the major alone when no server came up. */
  readonly version: string;
  readonly engine: Engine;
  readonly variant: Variant;
  readonly rep: number;
  /** Every figure of the workload's spec; null = not measured (failed, cut short, or not applicable). */
  readonly figures: Readonly<Record<string, number | null>>;
  /** Whether the nodes held identical data at the end; null when not checked. */
  readonly converged: boolean | null;
  /** What cut the run short (a timeout, a tool failure); null when it ran to the end. */
  readonly error: string | null;
  /** Why the run was not made at all (native W3 on PostgreSQL 15); such a run is not a failure. */
  readonly skipped: string | null;
  /** pg_stat_statements on the applying node during the W2 backlog (W2, obs and storm only). */
  readonly profile: StatementProfile | null;
  readonly seconds: number;
}

/** Whether a run failed: cut short, or the nodes ended different. Skipped runs do not fail. */
export function runFailed(run: RunResult): boolean {
  return run.skipped === null && (run.error !== null || run.converged === false);
}

/** Collects one run's figures while it happens; every figure of the spec exists in the result. */
export class RunRecorder {
  private readonly figures: Record<string, number | null>;
  private versionLabel: string;
  private convergedValue: boolean | null = null;
  private errorValue: string | null = null;
  private skippedValue: string | null = null;
  private profileValue: StatementProfile | null = null;
  private readonly startedAt = Date.now();

  constructor(
    private readonly key: { workload: WorkloadId; major: number; engine: Engine; variant: Variant; rep: number },
    figureKeys: readonly string[],
  ) {
    this.figures = Object.fromEntries(figureKeys.map((k) => [k, null]));
    this.versionLabel = String(key.major);
  }

  /** Sets a figure of the spec; a key outside the spec is a programming error. */
  set(key: string, value: number | null): void {
    if (!(key in this.figures)) throw new Error(`figure ${key} is not in the ${this.key.workload} spec`);
    this.figures[key] = value === null || Number.isFinite(value) ? value : null;
  }

  get(key: string): number | null {
    return this.figures[key] ?? null;
  }

  /** server_version_num of the nodes, e.g. 180004 → "18.4". */
  version(versionNum: number): void {
    this.versionLabel = `${Math.floor(versionNum / 10_000)}.${versionNum % 10_000}`;
  }

  /** Records one convergence check; a run converged only if every check did. */
  converged(ok: boolean): void {
    this.convergedValue = (this.convergedValue ?? true) && ok;
  }

  fail(message: string): void {
    this.errorValue = message;
  }

  skip(reason: string): void {
    this.skippedValue = reason;
  }

  profile(profile: StatementProfile): void {
    this.profileValue = profile;
  }

  result(): RunResult {
    return {
      ...this.key,
      version: this.versionLabel,
      figures: { ...this.figures },
      converged: this.convergedValue,
      error: this.errorValue,
      skipped: this.skippedValue,
      profile: this.profileValue,
      seconds: (Date.now() - this.startedAt) / 1000,
    };
  }
}
