/**
 * Checks shared by the dashboard linter and the rule tests: every series a query names exists in the
 * catalogue (src/artifacts/metric-names.ts), its matchers use labels the series has, and cumulative
 * series (counters, histogram buckets/sums/counts) are only ever read through rate()/irate()/increase().
 */
import { isCumulative, seriesLabels, seriesRef } from '../../../src/artifacts/metric-names.js';
import type { MetricStatus } from '../../../src/artifacts/metric-names.js';
import type { SelectorUse } from './promql-tree.js';

export const RATE_FUNCTIONS: ReadonlySet<string> = new Set(['rate', 'irate', 'increase']);
const CUMULATIVE_SUFFIX = /_(total|bucket|count|sum)$/;

export interface SeriesProblem {
  readonly rule: 'target-catalogue-rule' | 'target-label-rule' | 'target-counter-agg-rule';
  readonly message: string;
}

/**
 * @param extraSeries series that are not in the catalogue but legitimate here (recording rule
 *   outputs), with the labels they carry
 */
export function checkSelector(use: SelectorUse, extraSeries: ReadonlyMap<string, readonly string[]> = new Map()): SeriesProblem[] {
  const problems: SeriesProblem[] = [];
  const ref = seriesRef(use.metric);
  const extra = extraSeries.get(use.metric);
  if (!ref && !extra) {
    problems.push({ rule: 'target-catalogue-rule', message: `${use.metric || use.text} is not in the metric catalogue (src/artifacts/metric-names.ts)` });
    return problems;
  }
  if (ref && !ref.spec.openLabels) {
    const known = seriesLabels(ref);
    for (const m of use.matchers) {
      if (!known.includes(m.label))
        problems.push({ rule: 'target-label-rule', message: `${use.metric} has no label "${m.label}" (it has ${known.join(', ')})` });
    }
  }
  if (extra) {
    for (const m of use.matchers) {
      if (!extra.includes(m.label)) problems.push({ rule: 'target-label-rule', message: `${use.metric} has no label "${m.label}"` });
    }
  }
  const cumulative = ref ? isCumulative(ref) : CUMULATIVE_SUFFIX.test(use.metric);
  if ((cumulative || CUMULATIVE_SUFFIX.test(use.metric)) && !(use.range !== null && use.func !== null && RATE_FUNCTIONS.has(use.func))) {
    problems.push({ rule: 'target-counter-agg-rule', message: `${use.text}: a counter must be read through rate(), irate() or increase()` });
  }
  return problems;
}

export function statusOf(series: string): MetricStatus | undefined {
  return seriesRef(series)?.spec.status;
}
