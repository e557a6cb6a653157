/**
 * Pure: the goals pgbidi is measured against, and whether a summary meets them. A target whose
 * figure was not measured (failed, timed out, version not run) is missed. Targets never change the
 * exit code: they are printed for people to read.
 */
import type { WorkloadId } from './bench-results.js';
import { overheadPercent } from './bench-summary.js';
import type { WorkloadSummary } from './bench-summary.js';
import { WORKLOADS } from './workload-specs.js';

export type Comparison = '<=' | '<' | '>=';

export interface TargetSpec {
  readonly id: string;
  readonly label: string;
  readonly workload: WorkloadId;
  readonly figure: string;
  /** ratio: subject ÷ baseline (pgbidi/native); subject: pgbidi's own median; overhead: % worse. */
  readonly measure: 'ratio' | 'subject' | 'overhead';
  readonly op: Comparison;
  readonly threshold: number;
  /** Printed after measured value and threshold. */
  readonly unit: string;
}

export const TARGETS: readonly TargetSpec[] = [
  {
    id: 'w2-backlog-catch-up',
    label: 'W2 backlog catch-up time, pgbidi/native',
    workload: 'w2',
    figure: 'backlog.catchUpSeconds',
    measure: 'ratio',
    op: '<=',
    threshold: 1.0,
    unit: 'x',
  },
  {
    id: 'w2-live-lag-p99',
    label: 'W2 live heartbeat lag p99, pgbidi',
    workload: 'w2',
    figure: 'live.lagP99',
    measure: 'subject',
    op: '<',
    threshold: 1,
    unit: 's',
  },
  {
    id: 'w2-live-source-tps',
    label: 'W2 live source TPS, pgbidi/native',
    workload: 'w2',
    figure: 'live.sourceTps',
    measure: 'ratio',
    op: '>=',
    threshold: 0.9,
    unit: 'x',
  },
  {
    id: 'w1-backlog-rate',
    label: 'W1 backlog rows/s, pgbidi/native',
    workload: 'w1',
    figure: 'backlog.rowsPerSecond',
    measure: 'ratio',
    op: '>=',
    threshold: 1.0,
    unit: 'x',
  },
  {
    id: 'w1-streaming-rate',
    label: 'W1 streaming rows/s, pgbidi/native',
    workload: 'w1',
    figure: 'streaming.rowsPerSecond',
    measure: 'ratio',
    op: '>=',
    threshold: 1.0,
    unit: 'x',
  },
  {
    id: 'w5-rate',
    label: 'W5 single-row apply txn/s, pgbidi',
    workload: 'w5',
    figure: 'txnPerSecond',
    measure: 'subject',
    op: '>=',
    threshold: 20_000,
    unit: 'txn/s',
  },
  {
    id: 'w2-server-us',
    label: 'W2 server exec+plan µs per transaction, pgbidi',
    workload: 'w2',
    figure: 'profile.serverUsPerTxn',
    measure: 'subject',
    op: '<=',
    threshold: 150,
    unit: 'µs',
  },
  {
    id: 'w2-agent-cpu',
    label: 'W2 agent CPU µs per transaction, pgbidi',
    workload: 'w2',
    figure: 'backlog.agentCpuUsPerTxn',
    measure: 'subject',
    op: '<=',
    threshold: 100,
    unit: 'µs',
  },
  { id: 'w4-peak-rss', label: 'W4 agent peak RSS, pgbidi', workload: 'w4', figure: 'peakRssMiB', measure: 'subject', op: '<', threshold: 300, unit: 'MiB' },
  {
    id: 'w4-apply-time',
    label: 'W4 backlog apply time, pgbidi/native',
    workload: 'w4',
    figure: 'backlog.seconds',
    measure: 'ratio',
    op: '<=',
    threshold: 1.0,
    unit: 'x',
  },
  // On the apply rate, not the catch-up time: both runs' pgbench ran equally long but not equally fast.
  {
    id: 'obs-overhead',
    label: 'Observability overhead on the W2 backlog apply rate',
    workload: 'obs',
    figure: 'backlog.txnPerSecond',
    measure: 'overhead',
    op: '<=',
    threshold: 5,
    unit: '%',
  },
];

export interface TargetResult {
  readonly target: TargetSpec;
  readonly major: number;
  /** The server version measured, or the major when that workload did not run there. */
  readonly version: string;
  readonly value: number | null;
  readonly met: boolean;
}

export function compare(value: number, op: Comparison, threshold: number): boolean {
  switch (op) {
    case '<=':
      return value <= threshold;
    case '<':
      return value < threshold;
    case '>=':
      return value >= threshold;
  }
}

/** Every target of a selected workload, for every version asked for. */
export function evaluateTargets(summaries: readonly WorkloadSummary[], workloads: readonly WorkloadId[], majors: readonly number[]): TargetResult[] {
  const results: TargetResult[] = [];
  for (const target of TARGETS) {
    if (!workloads.includes(target.workload)) continue;
    const figureSpec = WORKLOADS[target.workload].figures.find((f) => f.key === target.figure);
    if (!figureSpec) throw new Error(`target ${target.id} names unknown figure ${target.workload}/${target.figure}`);
    for (const major of majors) {
      const summary = summaries.find((s) => s.workload === target.workload && s.major === major);
      const figure = summary?.figures.find((f) => f.spec.key === target.figure);
      let value: number | null = null;
      if (figure) {
        if (target.measure === 'ratio') value = figure.ratio;
        else if (target.measure === 'subject') value = figure.subject.median;
        else value = overheadPercent(figureSpec, figure.ratio);
      }
      results.push({ target, major, version: summary?.version ?? String(major), value, met: value !== null && compare(value, target.op, target.threshold) });
    }
  }
  return results;
}
