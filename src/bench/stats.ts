/**
 * Pure statistics of the benchmark: medians over repetitions, percentiles of lag samples, and the
 * ratio of two engines' figures. Nothing here knows what is measured.
 */

/** The median; NaN for no values. Even counts average the two middle values. */
export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((x, y) => x - y);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

/**
 * Nearest-rank percentile (p in 0..100): the smallest sample with at least p % of the samples at or
 * below it, so p99 of 100 samples is the 99th smallest and every result is a measured sample (a lag
 * probe's figures stay upper bounds at its resolution). NaN for no values.
 */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  if (!(p >= 0 && p <= 100)) throw new RangeError(`percentile must be within 0..100, got ${p}`);
  const sorted = [...values].sort((x, y) => x - y);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1] as number;
}

/** a / b when both are finite and b is not 0, else null (a missing figure has no ratio). */
export function ratio(a: number | null, b: number | null): number | null {
  if (a === null || b === null || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return null;
  return a / b;
}

/** Median of the values that were measured; null when none was. */
export function medianOf(values: readonly (number | null)[]): number | null {
  const measured = values.filter((v): v is number => v !== null && Number.isFinite(v));
  return measured.length ? median(measured) : null;
}

export interface LagSummary {
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
  readonly samples: number;
}

/** p50, p99 and max of lag samples (seconds); null for no samples. */
export function summarizeLag(samples: readonly number[]): LagSummary | null {
  if (samples.length === 0) return null;
  return {
    p50: percentile(samples, 50),
    p99: percentile(samples, 99),
    max: samples.reduce((m, v) => Math.max(m, v), Number.NEGATIVE_INFINITY),
    samples: samples.length,
  };
}
