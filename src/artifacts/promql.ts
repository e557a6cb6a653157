/**
 * Small PromQL text helpers shared by the rules and the dashboards. Metric names are typed against the
 * catalogue, so a renamed metric is a compile error here before it is a test failure.
 */
import { metricSpec } from './metric-names.js';
import type { HistogramName, MetricName } from './metric-names.js';

/** Series queried by name: every catalogue entry except histogram families (use bucket/sum/count). */
export type SeriesName = Exclude<MetricName, HistogramName>;

export interface Selectors {
  /** `metric{base matchers, extra matchers}`. */
  m(metric: SeriesName, ...extra: string[]): string;
  bucket(metric: HistogramName, ...extra: string[]): string;
  sum(metric: HistogramName, ...extra: string[]): string;
  count(metric: HistogramName, ...extra: string[]): string;
}

/**
 * @param base matchers on every selector, e.g. `job="pgbidi"`
 * @param perLink matchers added only to metrics that carry the `peer` label (dashboards' `$peer`)
 */
export function selectors(base: readonly string[], perLink: readonly string[] = []): Selectors {
  const build = (series: string, family: MetricName, extra: readonly string[]): string => {
    const hasPeer = metricSpec(family)?.labels.includes('peer') ?? false;
    const all = [...base, ...(hasPeer ? perLink : []), ...extra];
    return `${series}{${all.join(',')}}`;
  };
  return {
    m: (metric, ...extra) => build(metric, metric, extra),
    bucket: (metric, ...extra) => build(`${metric}_bucket`, metric, extra),
    sum: (metric, ...extra) => build(`${metric}_sum`, metric, extra),
    count: (metric, ...extra) => build(`${metric}_count`, metric, extra),
  };
}

/** `by (a, b)` */
export function by(labels: readonly string[]): string {
  return `by (${labels.join(', ')})`;
}

/** `on (a, b)` */
export function on(labels: readonly string[]): string {
  return `on (${labels.join(', ')})`;
}

/** A number as PromQL writes it, without exponent notation for the byte sizes used here. */
export function num(n: number): string {
  if (!Number.isFinite(n)) throw new RangeError(`not a finite number: ${n}`);
  return Number.isInteger(n) ? n.toFixed(0) : String(n);
}

/** 17179869184 → "16 GiB", for annotation text. */
export function bytesText(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${Number.isInteger(v) ? v : v.toFixed(1)} ${units[i]}`;
}
